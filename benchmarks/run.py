"""minidl against PyTorch, in one process on one backend, and each library alone in its own process.

    python benchmarks/run.py                       # NumPy backend vs PyTorch CPU, all cases, in one process
    python benchmarks/run.py --backend cuda        # CUDA backend vs PyTorch on the same GPU
    python benchmarks/run.py --cases depthwise --repeat 9 --json out.json
    python benchmarks/run.py --mode separate       # each side alone in its own process (separate.py)
    python benchmarks/run.py --mode both --json out.json    # both reports, one after the other

Each case is checked first (outputs and gradients equal to PyTorch's with identical
weights), then timed as forward and as forward+backward (input and weight gradients):
minidl and PyTorch alternate, run after run, and the median of --repeat runs after
--warmup is reported with the median of the per-pair ratios minidl/PyTorch. Both sides get the same thread
count (OMP, OpenBLAS, MKL, numba and torch.set_num_threads); every other setting is each library's
default as it stands with PyTorch imported first (minidl still runs its kernels on an OpenMP runtime
of its own with passive waiting: see README, "Speed on the CPU"; --omp-passive sets
OMP_WAIT_POLICY=passive for both, PyTorch's runtime included, as rounds 1-5 of RESULTS.md did).
The machine's SGEMM GFLOP/s and copy GB/s are measured in the same run and each case's fraction of
the relevant one is printed. Without PyTorch, minidl's figures alone. The separate-process mode
(--mode separate or both) is benchmarks/separate.py: each side alone with its own defaults.
"""

import os
import sys


def _threadsFromArgv():
    for i, arg in enumerate(sys.argv):
        if arg == "--threads" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return str(os.cpu_count() or 1)


# the environment as the user gave it: what the separate-process mode's sides start from
_USER_ENV = dict(os.environ)
# thread pools read these at import, so they are set before numpy (or torch) loads
_THREADS = _threadsFromArgv()
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = _THREADS
if "--omp-passive" in sys.argv:
    os.environ["OMP_WAIT_POLICY"] = "passive"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))     # torchmirror: PyTorch twins of the models

import minidl.backend as B  # noqa: E402
from minidl.backend import gpuarray  # noqa: E402

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None

from cases import CONV_CASES  # noqa: E402   (name, kwargs of the minidl module, input shape)

# (name, kind): "-224" kinds are full width at 224x224 with 1000 classes (training step at batch 32,
# eval forwards at batches 1 and 64), the others CIFAR-sized at --batch
MODEL_CASES = [("mobilenetv1_0.5", "v1"), ("mobilenetv2_0.5", "v2"), ("mobilenetv3_small", "v3-small"),
               ("mobilenetv1_224", "v1-224"), ("mobilenetv2_224", "v2-224")]
# (name, rule): one optimizer step (zeroGradParams + update) over MobileNetV2 1.0's 3.5M parameters in
# 158 Variables, per-Variable state against setupOn(net, useGlobalState=True), and PyTorch's step
OPTIM_CASES = [("update_sgd", "SGD"), ("update_momentum", "MomentumSGD"), ("update_adam", "Adam")]


class Side:
    """Synchronisation and placement for one backend."""

    def __init__(self, backend):
        self.backend = backend
        # PyTorch on the GPU against minidl's CUDA backend; a CPU-only PyTorch (the rehearsal of
        # scripts/gpu_check.sh on the CPU execution of CUDA) stays on the CPU, and the header says so
        self.device = "cuda" if backend == "cuda" and torch is not None and torch.cuda.is_available() else "cpu"

    def syncMinidl(self):
        if self.backend == "cuda":
            from minidl.backend.cuda import context
            context.synchronize()

    def syncTorch(self):
        if self.device == "cuda":
            torch.cuda.synchronize()


PAUSE = 0.05
# a timed run repeats the call back to back until it lasts at least this long (--min-run-ms)
MIN_RUN = 0.1


def timeIt(fn, sync, calls=1):
    """Seconds per call of `calls` back-to-back calls of fn, started after an idle pause."""
    sync()
    # each side's thread pools (OpenMP, OpenBLAS, numba) may spin for a while after a call; a short
    # idle pause lets them park, so each timed run starts from a quiet machine whichever ran before
    time.sleep(PAUSE)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    sync()
    return (time.perf_counter() - start) / calls


def callsPerRun(fn, sync):
    """How many back-to-back calls make a timed run of at least MIN_RUN seconds.

    Why: right after the idle pause the cores are cold (this VM measured a lone 7 ms conv taking
    15 ms after 50 ms asleep, on both sides alike), so a single short call measures wake-up, not
    the op. A run of consecutive calls measures the steady state a training loop sees."""
    once = timeIt(fn, sync)
    return max(1, min(1000, int(MIN_RUN / max(once, 1e-6)) + 1)) if MIN_RUN > 0 else 1


def interleaved(fnA, syncA, fnB, syncB, warmup, repeat):
    """(median seconds per call of fnA, median of fnB, median of the per-pair ratios A/B), run
    alternately after warm-up. The machine's speed drifts between runs; a pair run back to back sees
    nearly the same machine, so the ratio is taken per pair."""
    for _ in range(warmup):
        fnA()
        if fnB:
            fnB()
    callsA = callsPerRun(fnA, syncA)
    callsB = callsPerRun(fnB, syncB) if fnB else 0
    a, b = [], []
    for _ in range(repeat):
        a.append(timeIt(fnA, syncA, callsA))
        if fnB:
            b.append(timeIt(fnB, syncB, callsB))
    if not b:
        return statistics.median(a), None, None
    return statistics.median(a), statistics.median(b), statistics.median(x / y for x, y in zip(a, b))


# ---- machine limits ---------------------------------------------------------------------------

def machineLimits(side, repeat):
    n = 2048
    if side.backend == "cuda":
        from minidl.backend.cuda import cublas
        from minidl.backend.cuda.compiler import ptr
        import pycuda.driver as drv
        a = gpuarray.to_gpu(np.random.rand(n, n).astype(np.float32))
        c = gpuarray.empty((n, n), np.float32)
        gemm = lambda: cublas.gemm(False, False, n, n, n, 1.0, ptr(a), n, ptr(a), n, 0.0, ptr(c), n)  # noqa: E731
        big = gpuarray.empty((256 * 2 ** 20,), np.float32)
        dst = gpuarray.empty((256 * 2 ** 20,), np.float32)
        copy = lambda: drv.memcpy_dtod(dst.gpudata, big.gpudata, big.nbytes)  # noqa: E731
        nbytes = big.nbytes
    else:
        a = np.random.rand(n, n).astype(np.float32)
        c = np.empty((n, n), np.float32)
        gemm = lambda: np.matmul(a, a, out=c)  # noqa: E731
        big = np.random.rand(64 * 2 ** 20).astype(np.float32)
        dst = np.empty_like(big)
        copy = lambda: np.copyto(dst, big)  # noqa: E731
        nbytes = big.nbytes
    tg = interleaved(gemm, side.syncMinidl, None, None, 1, repeat)[0]
    tc = interleaved(copy, side.syncMinidl, None, None, 1, repeat)[0]
    return {"sgemm_gflops": 2 * n ** 3 / tg / 1e9, "copy_gbs": 2 * nbytes / tc / 1e9}


# ---- conv cases -------------------------------------------------------------------------------

def convWork(kwargs, shape):
    """(forward FLOPs, forward bytes) of a conv case, for its fraction of the machine's limits."""
    from minidl.shapes import conv2dOutShape, pair
    out = conv2dOutShape(shape, kwargs["outmaps"], pair(kwargs["size"]), pair(kwargs.get("stride", 1)),
                         pair(kwargs.get("pad", 0)), pair(kwargs.get("dilation", 1)))
    g = kwargs.get("groups", 1)
    k = pair(kwargs["size"])
    flops = 2 * np.prod(out) * (shape[1] // g) * k[0] * k[1]
    nbytes = 4 * (np.prod(shape) + np.prod(out))
    return float(flops), float(nbytes)


def convPlan(side, conv, shape):
    """The NumPy backend's routing plan for the conv module on input shape (None on CUDA): what each
    pass runs (minidl/backend/numpy/routing.py). On Winograd's passes "% of sgemm" counts
    direct-conv FLOPs, an effective rate."""
    if side.backend != "numpy":
        return None
    from minidl.backend.numpy import routing
    return routing.plan(conv.algo, shape, conv.W.shape, conv.stride, conv.pad, conv.dilation, conv.groups)


def runConvCase(side, name, kwargs, shape, args, limits):
    from minidl.modules import Conv2D
    np.random.seed(0)
    conv = Conv2D(**kwargs, initscheme="gaussian")
    conv.vars["b"].data.set(np.random.randn(1, conv.outmaps, 1, 1).astype(np.float32))
    xh = np.random.randn(*shape).astype(np.float32)
    x = gpuarray.to_gpu(xh)
    y = conv(x)
    dyh = np.random.randn(*y.shape).astype(np.float32)
    dy = gpuarray.to_gpu(dyh)

    def mForward():
        conv(x)

    def mTrain():
        conv(x)
        conv.backward(dy)

    tFwd = tTrain = None
    plan = convPlan(side, conv, shape)
    result = {"case": name, "algo": conv.algo, "path": conv.algo if plan is None else plan["forward"],
              "plan": None if plan is None else {p: route.impl for p, route in plan.routes.items()},
              "plan_text": None if plan is None else str(plan)}
    if torch is not None:
        tx = torch.tensor(xh, device=side.device, requires_grad=True)
        tW = torch.tensor(conv.W.get(), device=side.device, requires_grad=True)
        tb = torch.tensor(conv.b.get().ravel(), device=side.device, requires_grad=True)
        tdy = torch.tensor(dyh, device=side.device)
        h = dict(stride=conv.stride, padding=conv.pad, dilation=conv.dilation, groups=conv.groups)

        # correctness first: a fast wrong path must not pass
        conv.zeroGradParams()
        conv(x)
        conv.backward(dy)
        ty = F.conv2d(tx, tW, tb, **h)
        ty.backward(tdy)
        errs = [relErr(conv.data.get(), ty.detach().cpu().numpy()), relErr(conv.grad.get(), tx.grad.cpu().numpy()),
                relErr(conv.vars["W"].grad.get(), tW.grad.cpu().numpy())]
        result["max_rel_error"] = max(errs)
        if max(errs) > 1e-3:
            raise SystemExit("%s: minidl disagrees with PyTorch (relative errors y, dx, dW: %s)" % (name, errs))

        def tForward():
            with torch.no_grad():
                F.conv2d(tx, tW, tb, **h)

        def tTrainStep():
            tx.grad = tW.grad = tb.grad = None
            F.conv2d(tx, tW, tb, **h).backward(tdy)

        tFwd, tTrain = tForward, tTrainStep
    fwd = interleaved(mForward, side.syncMinidl, tFwd, side.syncTorch, args.warmup, args.repeat)
    train = interleaved(mTrain, side.syncMinidl, tTrain, side.syncTorch, args.warmup, args.repeat)
    flops, nbytes = convWork(kwargs, shape)
    depthwise = conv.algo == "depthwise"
    for mode, (m, t, ratio), work in (("forward", fwd, (flops, nbytes)), ("fwd+bwd", train, (3 * flops, 3 * nbytes))):
        frac = (work[1] / m / 1e9 / limits["copy_gbs"]) if depthwise else (work[0] / m / 1e9 / limits["sgemm_gflops"])
        result[mode] = {"minidl_ms": 1e3 * m, "torch_ms": None if t is None else 1e3 * t, "ratio": ratio,
                        "limit_fraction": frac, "limit": "copy" if depthwise else "sgemm"}
    return result


def relErr(a, b):
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12))


# ---- MobileNet cases --------------------------------------------------------------------------

def modelModes(kind, batch):
    """{mode: batch} of a model case."""
    if kind.endswith("-224"):
        # "_folded": batch norm folded into the convs first (foldBatchNorm; PyTorch: torch.fx's fuse)
        return {"eval_b1": 1, "eval_b1_folded": 1, "eval_b64": 64, "train_step": 32}
    return {"inference": batch, "train_step": batch}


def modelInputs(kind, batch):
    """(images, int32 labels) for a model case at this batch."""
    size, classes = (224, 1000) if kind.endswith("-224") else (32, 10)
    return (np.random.rand(batch, 3, size, size).astype(np.float32),
            np.random.randint(0, classes, batch).astype(np.int32))


def buildModels(kind, side, batch):
    from minidl.models import loadMobileNetV1, loadMobileNetV2, loadMobileNetV3
    np.random.seed(0)
    if kind == "v3-small":      # width 1.0: 1.5M parameters at 10 classes, as V2 0.5's 0.7M and V1 0.5's 0.8M
        net = loadMobileNetV3("small", width=1.0, numClasses=10, smallInput=True, dropout=0)
    elif kind.endswith("-224"):
        loader = loadMobileNetV1 if kind.startswith("v1") else loadMobileNetV2
        net = loader(width=1.0, numClasses=1000, dropout=0)
    else:
        loader = loadMobileNetV1 if kind == "v1" else loadMobileNetV2
        net = loader(width=0.5, numClasses=10, smallInput=True, dropout=0)
    tnet = None
    if torch is not None:
        from torchmirror import mirror
        tnet, _ = mirror(net, torch.float32)
        tnet = tnet.to(side.device)
    x, labels = modelInputs(kind, batch)
    return net, tnet, x, labels


def minidlStep(net, optimizer, cost, x, labels):
    net(x)
    cost(net.data, labels, queryError=False)
    optimizer.zeroGradParams()
    net.backward(cost.grad, updGrad=False)
    optimizer.update()


def runModelCase(side, name, kind, args):
    """Each mode of a model case (modelModes), minidl and PyTorch alternating; outputs checked first."""
    from minidl.cost import CrossEntropy
    from minidl.optimizers import MomentumSGD
    modes = modelModes(kind, args.batch)
    batch = modes["train_step"]
    net, tnet, _, _ = buildModels(kind, side, batch)
    opt = MomentumSGD(learnRate=0.01).setupOn(net)
    cost = CrossEntropy()
    topt = torch.optim.SGD(tnet.parameters(), lr=0.01, momentum=0.9) if tnet is not None else None
    result = {"case": name, "batch": batch, "modes": list(modes)}
    for mode, size in modes.items():
        xh, lh = modelInputs(kind, size)
        x, labels = gpuarray.to_gpu(xh), gpuarray.to_gpu(lh)
        tx = torch.tensor(xh, device=side.device) if tnet is not None else None
        tl = torch.tensor(lh.astype(np.int64), device=side.device) if tnet is not None else None
        train = mode == "train_step"
        net.trainMode() if train else net.evalMode()
        if tnet is not None:
            tnet.train(train)
        if tnet is not None and "max_rel_error" not in result:
            with torch.no_grad():
                result["max_rel_error"] = relErr(net(x).get(), tnet(tx).cpu().numpy())
            if result["max_rel_error"] > 1e-3:
                raise SystemExit("%s: minidl disagrees with PyTorch (relative error %g)"
                                 % (name, result["max_rel_error"]))
        if train:
            mFn = lambda: minidlStep(net, opt, cost, x, labels)  # noqa: E731

            def tFn():
                topt.zero_grad(set_to_none=False)
                F.cross_entropy(tnet(tx), tl).backward()
                topt.step()
        else:
            model, tmodel = net, tnet
            if mode.endswith("_folded"):
                from minidl.inference import foldBatchNorm
                model = foldBatchNorm(net)
                err = relErr(model(x).get(), net(x).get())
                if err > 1e-4:
                    raise SystemExit("%s: the folded model disagrees with the model (relative error %g)" % (name, err))
                if tnet is not None:
                    from torch.fx.experimental.optimization import fuse
                    tmodel = fuse(tnet)
            mFn = lambda: model(x)  # noqa: E731

            def tFn():
                with torch.no_grad():
                    tmodel(tx)
        m, t, ratio = interleaved(mFn, side.syncMinidl, tFn if tnet is not None else None, side.syncTorch,
                                  args.warmup, args.repeat)
        result[mode] = {"minidl_ms": 1e3 * m, "torch_ms": None if t is None else 1e3 * t, "ratio": ratio,
                        "batch": size, "minidl_images_s": size / m, "torch_images_s": None if t is None else size / t}
    result["peak_memory_mb"] = {who: memoryProbe(side, who, kind, batch) for who in
                                (("minidl", "torch") if torch is not None else ("minidl",))}
    mem = result["peak_memory_mb"]
    result["memory_ratio"] = mem["minidl"] / mem["torch"] if "torch" in mem and mem["torch"] else None
    return result


def runOptimizerCase(side, name, rule, args):
    """One optimizer step on MobileNetV2 1.0 with random gradients: per-Variable state ("local"), one
    flat state ("global", fused: one op per rule), and PyTorch's optimizer (its default foreach choice)."""
    from minidl import optimizers
    from minidl.models import loadMobileNetV2
    np.random.seed(0)
    make = lambda: loadMobileNetV2(width=1.0, numClasses=1000, dropout=0)  # noqa: E731
    nets = [make(), make()]
    opts = [getattr(optimizers, rule)(1e-3).setupOn(net, useGlobalState=g) for net, g in zip(nets, (False, True))]
    for net in nets:
        for _, var in net.namedVars():
            var.grad.set(np.random.randn(*var.grad.shape).astype(np.float32) * 1e-3)

    def step(opt):
        # the gradients stay: zeroing them is timed, but the rule must not run on zeros alone
        opt.update()
        opt.zeroGradParams()
    tStep = None
    if torch is not None:
        from torchmirror import mirror
        tnet = mirror(nets[0], torch.float32)[0].to(side.device)
        params = [p for p in tnet.parameters()]
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        kwargs = {"SGD": dict(lr=1e-3), "MomentumSGD": dict(lr=1e-3, momentum=0.9), "Adam": dict(lr=1e-3)}[rule]
        topt = (torch.optim.Adam if rule == "Adam" else torch.optim.SGD)(params, **kwargs)

        def tStep():
            topt.step()
            topt.zero_grad(set_to_none=False)
    local = interleaved(lambda: step(opts[0]), side.syncMinidl, tStep, side.syncTorch, args.warmup, args.repeat)
    glob = interleaved(lambda: step(opts[1]), side.syncMinidl, tStep, side.syncTorch, args.warmup, args.repeat)
    pair = interleaved(lambda: step(opts[1]), side.syncMinidl, lambda: step(opts[0]), side.syncMinidl,
                       args.warmup, args.repeat)
    result = {"case": name, "rule": rule, "params": nets[0].numOfParams(), "variables": len(opts[0].vars),
              "global_over_local": pair[2]}
    for mode, (m, t, ratio) in (("local", local), ("global", glob)):
        result[mode] = {"minidl_ms": 1e3 * m, "torch_ms": None if t is None else 1e3 * t, "ratio": ratio}
    return result


def memoryProbe(side, who, kind, batch):
    """Peak memory (MB) a training step adds, measured in a fresh process (host RSS on CPU, the
    allocator's peak on the GPU)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-probe", who, kind, "--backend", side.backend,
           "--batch", str(batch), "--threads", _THREADS]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def _rssMB():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _peakRssMB():
    """This process's peak resident memory (VmHWM), in MB. Not getrusage's ru_maxrss: Linux carries
    that over from the parent through fork and exec, so a probe started by a driver holding 1-5 GB
    reported the driver's size, not its own (every peak-memory figure before this fix)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _resetPeak():
    """Start VmHWM afresh from the current size (Linux: "5" to /proc/self/clear_refs), so building the
    models cannot set the peak; where that is refused the peak may include the build."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def memoryProbeMain(who, kind, backend, batch):
    B.setBackend(backend)
    side = Side(backend)
    net, tnet, xh, lh = buildModels(kind, side, batch)
    if who == "minidl":
        from minidl.cost import CrossEntropy
        from minidl.optimizers import MomentumSGD
        x, labels = gpuarray.to_gpu(xh), gpuarray.to_gpu(lh)
        opt, cost = MomentumSGD(learnRate=0.01).setupOn(net), CrossEntropy()
        step = lambda: minidlStep(net, opt, cost, x, labels)  # noqa: E731
    else:
        tx, tl = torch.tensor(xh, device=side.device), torch.tensor(lh.astype(np.int64), device=side.device)
        topt = torch.optim.SGD(tnet.parameters(), lr=0.01, momentum=0.9)

        def step():
            topt.zero_grad(set_to_none=False)
            F.cross_entropy(tnet(tx), tl).backward()
            topt.step()
    if backend == "cuda":
        import pycuda.driver as drv
        side.syncMinidl()
        before = drv.mem_get_info()[0]
        step()
        step()
        side.syncMinidl()
        side.syncTorch()
        # both allocators keep what they took: free-memory drop after two steps is the step's peak footprint
        print((before - drv.mem_get_info()[0]) / 2 ** 20)
    else:
        _resetPeak()
        base = _rssMB()
        step()
        step()
        print(_peakRssMB() - base)


# ---- driver -----------------------------------------------------------------------------------

def runSeparate(args, jsonPath="from args"):
    """separate.py's driver with this run's cases, repeats and rounds, from the user's environment
    (threads as each side's default unless --threads was given)."""
    import separate
    given = any(a == "--threads" or a.startswith("--threads=") for a in sys.argv)
    sep = separate.parser().parse_args([])
    sep.cases, sep.rounds, sep.repeat, sep.warmup = args.cases, args.rounds, args.repeat, args.warmup
    sep.min_run_ms, sep.threads = args.min_run_ms, int(_THREADS) if given else 0
    sep.json = args.json if jsonPath == "from args" else jsonPath
    return separate.drive(sep, _USER_ENV)


def _numbaLayer():
    """The threading layer numba's kernels run on, or None without numba."""
    from minidl.backend.numpy import jit
    from minidl.backend.numpy.elementwise import kernels
    if not jit.enabled:
        return None
    import numba
    one = np.zeros(1, np.float32)
    kernels.clipForward(one, one, np.float32(0), np.float32(1))     # launches the threads if none ran yet
    return numba.threading_layer()


def fmt(v, spec="%.2f"):
    return "-" if v is None else spec % v


def main():
    global MIN_RUN
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("numpy", "cuda"), default="numpy")
    parser.add_argument("--threads", default=_THREADS, help="threads for both sides (default: all cores)")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64, help="MobileNet batch size")
    parser.add_argument("--cases", default="all", help="comma-separated case names or prefixes, or 'all'")
    parser.add_argument("--json", default=None, help="write results here")
    parser.add_argument("--min-run-ms", type=float, default=1e3 * MIN_RUN,
                        help="a timed run repeats the call until it lasts this long (0: one call per run)")
    parser.add_argument("--mode", choices=("inprocess", "separate", "both"), default="inprocess",
                        help="in one process (default), each side in its own process (separate.py), or both")
    parser.add_argument("--rounds", type=int, default=3, help="separate mode: rounds of one process per side")
    parser.add_argument("--omp-passive", action="store_true",
                        help="in-process mode: OMP_WAIT_POLICY=passive for both sides (PyTorch's runtime too)")
    parser.add_argument("--memory-probe", nargs=2, metavar=("WHO", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        memoryProbeMain(args.memory_probe[0], args.memory_probe[1], args.backend, args.batch)
        return
    if args.mode != "inprocess" and args.backend != "numpy":
        raise SystemExit("--mode %s: the separate-process mode is for the CPU (--backend numpy)" % args.mode)
    if args.mode == "separate":
        runSeparate(args)
        return

    MIN_RUN = args.min_run_ms / 1e3
    B.setBackend(args.backend)
    side = Side(args.backend)
    if torch is not None:
        torch.set_num_threads(int(_THREADS))
        if side.device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
    wanted = None if args.cases == "all" else args.cases.split(",")
    pick = lambda name: wanted is None or any(name.startswith(w) for w in wanted)  # noqa: E731

    limits = machineLimits(side, args.repeat)
    info = {"backend": args.backend, "threads": int(_THREADS), "python": platform.python_version(),
            "numpy": np.__version__, "torch": None if torch is None else torch.__version__, "torch_device": side.device,
            "machine": platform.machine(), "cpus": os.cpu_count(), "limits": limits,
            "tf32": None if side.device != "cuda" else "off on the PyTorch side; minidl uses plain fp32 sgemm",
            "repeat": args.repeat, "min_run_ms": args.min_run_ms, "warmup": args.warmup, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "numba_threading_layer": _numbaLayer()}
    print("backend %s, %s thread(s), numpy %s, torch %s on %s; SGEMM %.1f GFLOP/s, copy %.1f GB/s; OMP_WAIT_POLICY %s, "
          "numba layer %s" % (args.backend, _THREADS, np.__version__, info["torch"], side.device,
                              limits["sgemm_gflops"], limits["copy_gbs"], info["omp_wait_policy"],
                              info["numba_threading_layer"]))
    results = []
    print("%-18s %-12s %-14s %10s %10s %7s %8s" % ("case", "path", "mode", "minidl ms", "torch ms", "ratio",
                                                 "% limit"))
    for name, kwargs, shape in CONV_CASES:
        if not pick(name):
            continue
        r = runConvCase(side, name, kwargs, shape, args, limits)
        results.append(r)
        for mode in ("forward", "fwd+bwd"):
            m = r[mode]
            print("%-18s %-12s %-14s %10.2f %10s %7s %7.0f%% of %s" % (
                name, r["path"], mode, m["minidl_ms"], fmt(m["torch_ms"]), fmt(m["ratio"]),
                100 * m["limit_fraction"], m["limit"]), flush=True)
    for name, kind in MODEL_CASES:
        if not pick(name):
            continue
        r = runModelCase(side, name, kind, args)
        results.append(r)
        for mode in r["modes"]:
            m = r[mode]
            print("%-18s %-12s %-14s %10.2f %10s %7s   %.0f img/s (torch %s)" % (
                name, "b%d" % m["batch"], mode, m["minidl_ms"], fmt(m["torch_ms"]), fmt(m["ratio"]),
                m["minidl_images_s"], fmt(m["torch_images_s"], "%.0f")), flush=True)
        mem = r["peak_memory_mb"]
        print("%-18s %-12s %-14s %10.1f %10s %7s   peak MB of a training step" % (
            name, "", "memory", mem["minidl"], fmt(mem.get("torch"), "%.1f"), fmt(r["memory_ratio"])), flush=True)
    for name, rule in OPTIM_CASES:
        if not pick(name):
            continue
        r = runOptimizerCase(side, name, rule, args)
        results.append(r)
        for mode in ("local", "global"):
            m = r[mode]
            print("%-18s %-12s %-14s %10.2f %10s %7s" % (name, mode, "step", m["minidl_ms"], fmt(m["torch_ms"]),
                                                        fmt(m["ratio"])), flush=True)
        print("%-18s %-12s %-14s %10s %10s %7.2f   global/local, %d Variables" % (
            name, "", "ratio", "", "", r["global_over_local"], r["variables"]), flush=True)
    if args.mode == "both":
        print()
        separateResults = runSeparate(args, jsonPath=None)
    plans = [r for r in results if r.get("plan_text")]
    if plans:
        print("\nrouting plans of the conv cases (minidl/backend/numpy/routing.py):")
        for r in plans:
            print("%s: %s" % (r["case"], r["plan_text"]))
    if args.json:
        with open(args.json, "w") as f:
            report = {"info": info, "results": results}
            if args.mode == "both":
                report["separate"] = separateResults
            json.dump(report, f, indent=2)
        print("wrote", args.json)


if __name__ == "__main__":
    main()
