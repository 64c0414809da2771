"""Where a MobileNet step's time goes: every op of the NumPy backend timed inside the step.

    python benchmarks/opprofile.py                                  # V1-0.5, CIFAR, batch 64, train
    python benchmarks/opprofile.py --model v1 --width 1 --size 224 --batch 1 --mode eval
    python benchmarks/opprofile.py --width 1 --size 224 --batch 1 --mode eval --fold   # BN folded
    python benchmarks/opprofile.py --first torch                    # with PyTorch imported first
    python benchmarks/opprofile.py --shapes batchNormTrain,activation   # one row per op and shape

Each backend op the modules call (minidl.backend.ops) is wrapped in a timer; after --warmup steps,
--steps steps are timed and each op's time per step is printed, largest first, with its calls per
step, beside the step's time with and without the timers (the wrappers cost ~1 us per call). What
is not inside an op (module bookkeeping, the Python between ops) is the difference. The backend is
the NumPy one; threads and settings are the process's defaults.
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
    p.add_argument("--first", choices=("torch", "sklearn"), help="import this library before minidl")
    p.add_argument("--shapes", default="", help="comma-separated ops to break down by input shape")
    args = p.parse_args()
    if args.fold and args.mode != "eval":
        p.error("--fold folds batch norm for inference: it needs --mode eval")
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

        def step():
            net(x)

    def timeSteps():
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        return (time.perf_counter() - start) / args.steps * 1e3

    for _ in range(args.warmup):
        step()
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

    inOps = sum(spent.values()) / args.steps * 1e3
    print("MobileNet%s-%g, %dx%d, batch %d, %s step%s: %.1f ms (%.1f with the timers), %.1f ms in backend ops, "
          "%.1f outside" % (args.model.upper(), args.width, args.size, args.size, args.batch, args.mode,
                             ", %s imported first" % args.first if args.first else "", plain, timedMs, inOps,
                             timedMs - inOps))
    print("%-32s %-22s %9s %7s" % ("op", "input shape", "ms/step", "calls"))
    for (name, shape), seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
        print("%-32s %-22s %9.2f %7d" % (name, "" if shape is None else shape, seconds / args.steps * 1e3,
                                         calls[(name, shape)] // args.steps))


if __name__ == "__main__":
    main()
