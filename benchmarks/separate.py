"""minidl, PyTorch and onnxruntime each alone in its own process, as users run them.

    python benchmarks/separate.py                                   # every case, 3 rounds
    python benchmarks/separate.py --cases mobilenetv2_224 --rounds 5 --json out.json
    python benchmarks/run.py --mode separate ...                    # the same, from run.py

Each case runs in rounds; a round starts one fresh process per side (minidl, PyTorch, and
onnxruntime for eval forwards where it is installed), one after the other, the side that goes first
rotating from round to round. A side's process imports only its own library (PyTorch's process
builds its model from minidl's with minidl's kernels off, so no numba and no thread setting of
minidl's is in it) and keeps its defaults: thread counts, OMP_WAIT_POLICY, everything, unless
--threads is given, which sets OMP_NUM_THREADS and friends for every side alike. A side times its
case as benchmarks/run.py does (warm-up, then --repeat runs of back-to-back calls lasting at least
--min-run-ms, median) and prints one JSON line. Reported per case and mode: each side's median over
the rounds, the median of the per-round ratios minidl / other side, and minidl's achieved GFLOP/s
(2 FLOPs per multiply-add; a training step counted as 3 forwards) against the machine's SGEMM rate
measured in the same run.

Correctness against PyTorch is checked by run.py's in-process mode, not here.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from cases import CONV_CASES, SEPARATE_MODEL_CASES as MODEL_CASES, modeParts  # noqa: E402

SIDES = ("minidl", "torch", "onnxruntime")


# ---- worker: one side, one case, in its own process -----------------------------------------------

def _timed(fn, warmup, repeat, minRunMs):
    """Median milliseconds per call: warm-up calls, then `repeat` runs of back-to-back calls lasting
    at least minRunMs each (a lone call after an idle moment measures the cores waking up)."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    fn()
    once = time.perf_counter() - start
    calls = max(1, min(1000, int(minRunMs / 1e3 / max(once, 1e-6)) + 1)) if minRunMs > 0 else 1
    runs = []
    for _ in range(repeat):
        time.sleep(0.05)
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        runs.append((time.perf_counter() - start) / calls * 1e3)
    return statistics.median(runs)


def minidlTrainStep(net, x, labels):
    """A closure running one minidl training step of net on (x, labels): forward, cross-entropy,
    backward, momentum SGD (what every benchmark's "train_step" times)."""
    from minidl.cost import CrossEntropy
    from minidl.optimizers import MomentumSGD
    opt, cost = MomentumSGD(learnRate=0.01).setupOn(net), CrossEntropy()
    net.trainMode()

    def step():
        net(x)
        cost(net.data, labels, queryError=False)
        opt.zeroGradParams()
        net.backward(cost.grad, updGrad=False)
        opt.update()
    return step


def _minidlModel(kind, width, classes, size):
    from minidl.models import loadMobileNetV1, loadMobileNetV2
    loader = loadMobileNetV1 if kind == "v1" else loadMobileNetV2
    return loader(width=width, numClasses=classes, smallInput=size == 32, dropout=0)


def _macs(net, shape):
    import io
    return net.summary(shape, file=io.StringIO())["macs"]


def _minidlCase(case, args):
    import numpy as np
    from minidl.backend import gpuarray
    np.random.seed(0)
    out = {}
    if case[0] == "conv":
        _, kwargs, shape = case
        from minidl.modules import Conv2D
        conv = Conv2D(**kwargs, initscheme="gaussian")
        x = gpuarray.to_gpu(np.random.randn(*shape).astype(np.float32))
        dy = gpuarray.to_gpu(np.random.randn(*conv(x).shape).astype(np.float32))
        out["forward"] = _timed(lambda: conv(x), args.warmup, args.repeat, args.min_run_ms)
        out["fwd+bwd"] = _timed(lambda: (conv(x), conv.backward(dy)), args.warmup, args.repeat, args.min_run_ms)
        return out, {}
    _, kind, width, classes, size, modes = case
    net = _minidlModel(kind, width, classes, size)
    info = {"macs_per_image": _macs(net, (1, 3, size, size))}
    for mode, batch in modes.items():
        x = gpuarray.to_gpu(np.random.rand(batch, 3, size, size).astype(np.float32))
        if mode == "train_step":
            labels = gpuarray.to_gpu(np.random.randint(0, classes, batch).astype(np.int32))
            out[mode] = _timed(minidlTrainStep(net, x, labels), args.warmup, args.repeat, args.min_run_ms)
        else:
            _, folded, nograd = modeParts(mode)
            net.evalMode()
            model = net
            if folded:
                from minidl.inference import foldBatchNorm
                model = foldBatchNorm(net)
            if nograd:
                import minidl

                def infer():
                    with minidl.noGrad():
                        model(x)
            else:
                def infer():
                    model(x)
            out[mode] = _timed(infer, args.warmup, args.repeat, args.min_run_ms)
    from minidl.backend.numpy import jit
    info["threads"] = jit.numThreads()
    return out, info


def _torchModel(kind, width, classes, size):
    """The minidl model mirrored in PyTorch (float32); minidl's kernels are off in this process."""
    import torch
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from torchmirror import mirror
    tnet, _ = mirror(_minidlModel(kind, width, classes, size), torch.float32)
    return tnet


def torchTrainStep(tnet, x, labels):
    """minidlTrainStep's PyTorch twin: forward, cross-entropy, backward, momentum SGD."""
    import torch
    import torch.nn.functional as F
    opt = torch.optim.SGD(tnet.parameters(), lr=0.01, momentum=0.9)
    tnet.train()

    def step():
        opt.zero_grad(set_to_none=False)
        F.cross_entropy(tnet(x), labels).backward()
        opt.step()
    return step


def _torchCase(case, args):
    import numpy as np
    import torch
    import torch.nn.functional as F
    np.random.seed(0)
    out = {}
    if case[0] == "conv":
        _, kw, shape = case
        groups = kw.get("groups", 1)
        k = (kw["size"], kw["size"])
        x = torch.randn(*shape)
        w = torch.randn(kw["outmaps"], kw["inmaps"] // groups, *k, requires_grad=True)
        b = torch.randn(kw["outmaps"], requires_grad=True)
        xg = x.clone().requires_grad_(True)
        h = dict(stride=kw.get("stride", 1), padding=kw.get("pad", 0), dilation=kw.get("dilation", 1), groups=groups)
        dy = torch.randn_like(F.conv2d(x, w, b, **h))

        def forward():
            with torch.no_grad():
                F.conv2d(x, w, b, **h)

        def train():
            F.conv2d(xg, w, b, **h).backward(dy)
        out["forward"] = _timed(forward, args.warmup, args.repeat, args.min_run_ms)
        out["fwd+bwd"] = _timed(train, args.warmup, args.repeat, args.min_run_ms)
        return out, {"threads": torch.get_num_threads()}
    _, kind, width, classes, size, modes = case
    tnet = _torchModel(kind, width, classes, size)
    for mode, batch in modes.items():
        x = torch.rand(batch, 3, size, size)
        if mode == "train_step":
            step = torchTrainStep(tnet, x, torch.randint(0, classes, (batch,)))
            out[mode] = _timed(step, args.warmup, args.repeat, args.min_run_ms)
        else:
            tnet.eval()
            model = tnet
            if modeParts(mode)[1]:      # folded (PyTorch's eval always runs inside no_grad)
                from torch.fx.experimental.optimization import fuse
                model = fuse(tnet)      # a folded copy; tnet stays as it is

            def infer():
                with torch.no_grad():
                    model(x)
            out[mode] = _timed(infer, args.warmup, args.repeat, args.min_run_ms)
    return out, {"threads": torch.get_num_threads()}


def _onnxruntimeCase(case, args):
    import numpy as np
    import onnxruntime as ort
    import minidl.onnx
    _, kind, width, classes, size, modes = case
    net = _minidlModel(kind, width, classes, size)
    session = ort.InferenceSession(minidl.onnx.export(net, (1, 3, size, size)), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    out = {}
    for mode, batch in modes.items():
        if mode.startswith("eval"):
            x = np.random.rand(batch, 3, size, size).astype(np.float32)
            out[mode] = _timed(lambda: session.run(None, {name: x}), args.warmup, args.repeat, args.min_run_ms)
    return out, {"threads": session.get_session_options().intra_op_num_threads}


def worker(args):
    case = _case(args.case)
    if args.worker != "minidl":
        os.environ["MINIDL_NUMBA"] = "0"     # minidl only builds the model here: no numba, no thread settings
        os.environ["MINIDL_QUIET"] = "1"
    run = {"minidl": _minidlCase, "torch": _torchCase, "onnxruntime": _onnxruntimeCase}[args.worker]
    times, info = run(case, args)
    import resource
    info["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    info["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
    print(json.dumps({"side": args.worker, "case": args.case, "ms": times, "info": info}))


def _case(name):
    for cname, kwargs, shape in CONV_CASES:
        if cname == name:
            return ("conv", kwargs, shape)
    for cname, kind, width, classes, size, modes in MODEL_CASES:
        if cname == name:
            return ("model", kind, width, classes, size, modes)
    raise SystemExit("unknown case %r" % name)


# ---- driver -------------------------------------------------------------------------------------

def _sides(name):
    """The sides for a case: onnxruntime only for models with eval modes, and only where installed."""
    import importlib.util
    sides = ["minidl", "torch"]
    if _case(name)[0] == "model" and importlib.util.find_spec("onnxruntime") is not None:
        sides.append("onnxruntime")
    return sides


def _spawn(side, name, args, env):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, "--case", name, "--repeat", str(args.repeat),
           "--warmup", str(args.warmup), "--min-run-ms", str(args.min_run_ms)]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit("%s %s failed:\n%s" % (side, name, proc.stderr[-3000:]))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _workEnv(threads, baseEnv):
    env = dict(baseEnv)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    if threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            env[var] = str(threads)
    return env


def _sgemmGflops():
    import numpy as np
    n = 2048
    a = np.random.rand(n, n).astype(np.float32)
    c = np.empty((n, n), np.float32)
    np.matmul(a, a, out=c)
    best = []
    for _ in range(5):
        start = time.perf_counter()
        np.matmul(a, a, out=c)
        best.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(best) / 1e9


def _flops(case, mode, info):
    """FLOPs of one call of a model case's mode (None for conv cases: run.py reports those)."""
    if case[0] != "model" or "macs_per_image" not in info:
        return None
    batch = case[5][mode]
    return 2 * info["macs_per_image"] * batch * (3 if mode == "train_step" else 1)


def drive(args, baseEnv=None):
    baseEnv = dict(os.environ) if baseEnv is None else baseEnv
    env = _workEnv(args.threads, baseEnv)
    names = [c[0] for c in CONV_CASES] + [c[0] for c in MODEL_CASES]
    wanted = None if args.cases == "all" else args.cases.split(",")
    names = [n for n in names if wanted is None or any(n.startswith(w) for w in wanted)]
    sgemm = _sgemmGflops()
    print("separate processes, %d rounds; threads: %s; SGEMM %.1f GFLOP/s (this process, numpy)"
          % (args.rounds, args.threads or "each side's default", sgemm))
    print("%-18s %-22s %10s %10s %10s %8s %8s  %s" % ("case", "mode", "minidl ms", "torch ms", "ort ms",
                                                     "vs torch", "vs ort", "minidl GFLOP/s (% of sgemm)"))
    results = []
    for name in names:
        sides = _sides(name)
        rounds = []
        for r in range(args.rounds):
            order = sides[r % len(sides):] + sides[:r % len(sides)]
            rounds.append({side: _spawn(side, name, args, env) for side in order})
        case = _case(name)
        entry = {"case": name, "rounds": rounds, "modes": {}}
        for mode in rounds[0]["minidl"]["ms"]:
            row = {}
            for side in sides:
                vals = [rd[side]["ms"].get(mode) for rd in rounds if mode in rd[side]["ms"]]
                row[side + "_ms"] = statistics.median(vals) if vals else None
            for other in sides[1:]:
                ratios = [rd["minidl"]["ms"][mode] / rd[other]["ms"][mode] for rd in rounds if mode in rd[other]["ms"]]
                row["ratio_" + other] = statistics.median(ratios) if ratios else None
            base, folded, _ = modeParts(mode)
            plain = base if folded else None
            if plain and "torch" in sides and all(plain in rd["torch"]["ms"] for rd in rounds):
                # minidl folded against PyTorch's plain eval, the comparison for users who fold
                row["ratio_torch_plain"] = statistics.median(rd["minidl"]["ms"][mode] / rd["torch"]["ms"][plain]
                                                             for rd in rounds)
            flops = _flops(case, mode, rounds[0]["minidl"]["info"])
            row["minidl_gflops"] = None if flops is None else flops / row["minidl_ms"] / 1e6
            row["sgemm_fraction"] = None if flops is None else row["minidl_gflops"] / sgemm
            entry["modes"][mode] = row
            f = lambda v, s="%.2f": "-" if v is None else s % v  # noqa: E731
            gf = "-" if flops is None else "%.1f (%.0f%%)" % (row["minidl_gflops"], 100 * row["sgemm_fraction"])
            plainNote = "" if "ratio_torch_plain" not in row else "  (%.2f of PyTorch's %s)" % (
                row["ratio_torch_plain"], plain)
            print("%-18s %-22s %10s %10s %10s %8s %8s  %s%s" % (
                name, mode, f(row["minidl_ms"]), f(row.get("torch_ms")), f(row.get("onnxruntime_ms")),
                f(row.get("ratio_torch")), f(row.get("ratio_onnxruntime")), gf, plainNote), flush=True)
        entry["threads"] = {side: rounds[0][side]["info"].get("threads") for side in sides}
        results.append(entry)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"mode": "separate", "rounds": args.rounds, "threads": args.threads, "sgemm_gflops": sgemm,
                       "results": results}, f, indent=2)
        print("wrote", args.json)
    return results


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="all", help="comma-separated case names or prefixes, or 'all'")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--min-run-ms", type=float, default=100.0)
    p.add_argument("--threads", type=int, default=0, help="threads for every side (default: each side's own)")
    p.add_argument("--json", help="write results here")
    p.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    p.add_argument("--case", help=argparse.SUPPRESS)
    return p


if __name__ == "__main__":
    parsed = parser().parse_args()
    if parsed.worker:
        worker(parsed)
    else:
        drive(parsed)
