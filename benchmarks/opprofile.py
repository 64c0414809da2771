"""Where a MobileNet step's time goes: every op of the NumPy backend timed inside the step.

    python benchmarks/opprofile.py                                  # V1-0.5, CIFAR, batch 64, train
    python benchmarks/opprofile.py --model v1 --width 1 --size 224 --batch 1 --mode eval
    python benchmarks/opprofile.py --width 1 --size 224 --batch 1 --mode eval --fold   # BN folded
    python benchmarks/opprofile.py --width 1 --size 224 --batch 1 --mode eval --nograd # minidl.noGrad()
    python benchmarks/opprofile.py --first torch                    # with PyTorch imported first
    python benchmarks/opprofile.py --shapes batchNormTrain,activation   # one row per op and shape
    python benchmarks/opprofile.py --side torch --shapes aten::mkldnn_convolution   # PyTorch's step

Each backend op the modules call (minidl.backend.ops) is wrapped in a timer; after --warmup steps,
--steps steps are timed and each op's time per step is printed, largest first, with its calls per
step, beside the step's time with and without the timers (the wrappers cost ~1 us per call). What
is not inside an op (module bookkeeping, the Python between ops) is the difference. The backend is
the NumPy one; threads and settings are the process's defaults.

--side torch profiles the same model mirrored in PyTorch (tests/torchmirror.py), the same step as
separate.py's (eval: under no_grad; --fold: torch.fx's fuse) in a process like its PyTorch worker's
(minidl's numba kernels off: minidl only builds the model), with torch.profiler: each profiled
op's self CPU time per step (time inside the ops it calls is theirs), so rows compare with minidl's
layer by layer (--shapes takes aten names: one row per shape of the op's first two inputs, data and
weight for a convolution's forward). Rows under 5 us per step are left out, on both sides.
"""

import argparse
import collections
import inspect
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=("v1", "v2"), default="v1")
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--size", type=int, choices=(32, 224), default=32, help="input size (32: CIFAR stem, 10 classes)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--mode", choices=("train", "eval"), default="train")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--fold", action="store_true", help="eval: fold batch norm into the convs first "
                   "(minidl.inference.foldBatchNorm)")
    p.add_argument("--nograd", action="store_true", help="eval: run the forward inside minidl.noGrad()")
    p.add_argument("--first", choices=("torch", "sklearn"), help="import this library before minidl")
    p.add_argument("--shapes", default="", help="comma-separated ops to break down by input shape")
    p.add_argument("--side", choices=("minidl", "torch"), default="minidl",
                   help="profile minidl's step (default) or PyTorch's on the mirrored model")
    args = p.parse_args()
    if (args.fold or args.nograd) and args.mode != "eval":
        p.error("--fold and --nograd are for inference: they need --mode eval")
    if args.side == "torch":
        if args.first or args.nograd:
            p.error("--first and --nograd are for minidl's side (PyTorch's eval always runs inside no_grad)")
        return torchProfile(args)
    if args.first == "torch":
        import torch  # noqa: F401
    elif args.first == "sklearn":
        import sklearn.cluster  # noqa: F401
    import numpy as np
    import minidl.backend as B
    B.setBackend("numpy")
    from minidl.backend import gpuarray
    from minidl.models import loadMobileNetV1, loadMobileNetV2
    from separate import minidlTrainStep

    np.random.seed(0)
    loader = loadMobileNetV1 if args.model == "v1" else loadMobileNetV2
    classes = 10 if args.size == 32 else 1000
    net = loader(width=args.width, numClasses=classes, smallInput=args.size == 32, dropout=0)
    x = gpuarray.to_gpu(np.random.rand(args.batch, 3, args.size, args.size).astype(np.float32))
    if args.mode == "train":
        labels = gpuarray.to_gpu(np.random.randint(0, classes, args.batch).astype(np.int32))
        step = minidlTrainStep(net, x, labels)
    else:
        net.evalMode()
        if args.fold:
            from minidl.inference import foldBatchNorm
            net = foldBatchNorm(net, inplace=True)

        import minidl
        import contextlib
        scope = minidl.noGrad if args.nograd else contextlib.nullcontext

        def step():
            with scope():
                net(x)

    timeSteps = _stepTimer(step, args)
    plain = timeSteps()

    backend = B.current()
    spent, calls = collections.defaultdict(float), collections.Counter()
    byShape = set(filter(None, args.shapes.split(",")))
    for name in dir(backend):
        fn = getattr(backend, name)
        if name.startswith("_") or inspect.isclass(fn) or inspect.ismodule(fn) or not callable(fn):
            continue

        def timed(*a, _fn=fn, _name=name, **k):
            start = time.perf_counter()
            try:
                return _fn(*a, **k)
            finally:
                key = (_name, tuple(a[0].shape)) if _name in byShape and hasattr(a[0], "shape") else (_name, None)
                spent[key] += time.perf_counter() - start
                calls[key] += 1
        setattr(backend, name, timed)
    step()
    spent.clear()
    calls.clear()
    timedMs = timeSteps()

    _title(args, "", plain, timedMs, sum(spent.values()) / args.steps * 1e3)
    _table({key: seconds * 1e3 for key, seconds in spent.items()}, calls, args.steps)


def _stepTimer(step, args):
    """Runs step --warmup times, then returns a function timing --steps steps (ms per step)."""
    for _ in range(args.warmup):
        step()

    def timeSteps():
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        return (time.perf_counter() - start) / args.steps * 1e3
    return timeSteps


def _title(args, side, plain, timedMs, inOps):
    extra = "".join(", %s" % what for what, on in (("folded", args.fold),
                                                   ("inside minidl.noGrad()", args.nograd and not side)) if on)
    print("%sMobileNet%s-%g, %dx%d, batch %d, %s step%s%s: %.1f ms (%.1f with the timers), %.1f ms in %s ops, "
          "%.1f outside" % (side, args.model.upper(), args.width, args.size, args.size, args.batch, args.mode,
                             extra, ", %s imported first" % args.first if args.first else "", plain, timedMs, inOps,
                             "profiled" if side else "backend", timedMs - inOps))


def torchProfile(args):
    """--side torch: PyTorch's step on the mirrored model, per profiled op (self CPU time)."""
    # as separate.py's PyTorch worker: minidl only builds the model, its numba runtime stays unloaded
    os.environ["MINIDL_NUMBA"] = "0"
    os.environ["MINIDL_QUIET"] = "1"
    import numpy as np
    import torch
    from torch.profiler import profile
    from separate import _torchModel, torchTrainStep

    np.random.seed(0)
    torch.manual_seed(0)
    classes = 10 if args.size == 32 else 1000
    tnet = _torchModel(args.model, args.width, classes, args.size)
    x = torch.rand(args.batch, 3, args.size, args.size)
    if args.mode == "train":
        step = torchTrainStep(tnet, x, torch.randint(0, classes, (args.batch,)))
    else:
        tnet.eval()
        if args.fold:
            from torch.fx.experimental.optimization import fuse
            tnet = fuse(tnet)

        def step():
            with torch.no_grad():
                tnet(x)

    timeSteps = _stepTimer(step, args)
    plain = timeSteps()
    byShape = set(filter(None, args.shapes.split(",")))
    with profile(record_shapes=bool(byShape)) as prof:
        timedMs = timeSteps()
    spent, calls = collections.defaultdict(float), collections.Counter()
    for e in prof.key_averages(group_by_input_shape=bool(byShape)):
        key = (e.key, _shapes(e.input_shapes) if e.key in byShape else None)
        spent[key] += e.self_cpu_time_total / 1e3
        calls[key] += e.count
    _title(args, "PyTorch ", plain, timedMs, sum(spent.values()) / args.steps)
    _table(spent, calls, args.steps)


def _shapes(inputs):
    """The shapes of an aten op's first two inputs ("[1, 32, 112, 112] * [32, 1, 3, 3]": data and weight
    for a convolution's forward), so a depthwise and a pointwise conv on the same input get rows of
    their own."""
    shown = [str(shape) for shape in inputs[:2] if shape]
    return " * ".join(shown) if shown else None


def _table(spent, calls, steps):
    """Rows (op, input shape, ms per step, calls per step) from ms and calls over steps, largest first;
    rows under 5 us per step are left out (PyTorch's profile lists every small tensor op)."""
    print("%-32s %-36s %9s %7s" % ("op", "input shape", "ms/step", "calls"))
    for (name, shape), ms in sorted(spent.items(), key=lambda kv: -kv[1]):
        if ms / steps >= 0.005:
            print("%-32s %-36s %9.2f %7d" % (name, "" if shape is None else shape, ms / steps, calls[(name, shape)] // steps))


if __name__ == "__main__":
    main()
