"""The depthwise plan's batch thresholds, measured: flat against tall kernels by batch size.

    python benchmarks/depthwise_batch.py
    python benchmarks/depthwise_batch.py --batches 1,8,32 --reps 50

For each MobileNet depthwise shape (3x3, "same" padding) that the flat kernels take, and each
batch size, times the forward (depthwiseConv2d) and the fused backward (depthwiseConv2dBackward)
on the flat kernels and on the tall ones (the plan's thresholds moved for the measurement; the tall
forward at stride 2 is its phase-plane form), median of the runs, in this one process with its
default threads. depthwise/plan.py's FLAT_MIN_BATCH, FLAT_MIN_BATCH_BACKWARD and PHASES_MIN_PLANE
come from this table.
"""

import argparse
import time

import numpy as np

# (channels, map side, stride) of MobileNetV1/V2 depthwise layers at 224x224 and on CIFAR
SHAPES = [(64, 112, 2), (128, 56, 2), (256, 28, 2), (512, 14, 1), (512, 14, 2), (1024, 7, 1), (128, 16, 1),
          (256, 8, 1)]


def median(fn, reps):
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", default="1,2,4,8,16")
    p.add_argument("--reps", type=int, default=200, help="runs at batch 1 (fewer for larger batches)")
    args = p.parse_args()
    import minidl.backend as B
    B.setBackend("numpy")
    from minidl.backend.numpy import depthwise, routing
    from minidl.backend.numpy.depthwise import plan
    print("%-18s %5s %13s %13s %13s %13s" % ("shape (C,HxW,s)", "batch", "flat fwd ms", "tall fwd ms",
                                              "flat bwd ms", "tall bwd ms"))
    saved = plan.FLAT_MIN_BATCH, plan.FLAT_MIN_BATCH_BACKWARD, plan._flat, plan.PHASES_MIN_PLANE
    rng = np.random.default_rng(0)
    try:
        for c, side, s in SHAPES:
            for n in (int(b) for b in args.batches.split(",")):
                x = rng.random((n, c, side, side), dtype=np.float32)
                w = rng.random((c, 1, 3, 3), dtype=np.float32)
                out = (side - 1) // s + 1
                dy = rng.random((n, c, out, out), dtype=np.float32)
                wgrad = np.zeros_like(w)
                row = []
                for flat in (True, False):
                    plan.FLAT_MIN_BATCH = plan.FLAT_MIN_BATCH_BACKWARD = 1
                    plan.PHASES_MIN_PLANE = 1 << 30     # the flat forward on every map size
                    plan._flat = saved[2] if flat else (lambda *a: (False, "measuring the tall kernels"))
                    routing.clearPlans()
                    taken = routing.plan("depthwise", x.shape, w.shape, (s, s), (1, 1), (1, 1))
                    want = "flat" if flat else ("tall-phases" if s == 2 else "tall")    # tall's stride-2 forward
                    if taken["forward"] != want:
                        raise SystemExit("%s: expected the %s kernels" % (taken, want))
                    reps = max(5, args.reps // n)
                    row.append(median(lambda: depthwise.depthwiseConv2d(x, w, None, (s, s), (1, 1), (1, 1)), reps))
                    row.append(median(lambda: depthwise.depthwiseConv2dBackward(x, dy, w, wgrad, None, (s, s), (1, 1),
                                                                               (1, 1)), reps))
                print("%-18s %5d %13.3f %13.3f %13.3f %13.3f" % ("%d,%dx%d,%d" % (c, side, side, s), n, row[0], row[2],
                                                                   row[1], row[3]), flush=True)
    finally:
        plan.FLAT_MIN_BATCH, plan.FLAT_MIN_BATCH_BACKWARD, plan._flat, plan.PHASES_MIN_PLANE = saved
        routing.clearPlans()


if __name__ == "__main__":
    main()
