"""minidl's training step when other libraries are loaded, or compute, in the same process.

    python benchmarks/interference.py                       # MobileNetV1-0.5 CIFAR step, 3 rounds
    python benchmarks/interference.py --model v2 --rounds 5 --json out.json

Scenarios, each in a fresh process with the user's environment (nothing set by this script), the
order rotating from round to round:
- solo: minidl alone;
- torch-imported: `import torch` before minidl, then minidl's steps only;
- torch-computing: a PyTorch training step (the same model, mirrored) before each minidl step, as a
  teacher model or a torch-based augmentation would;
- torch-after: the same, with PyTorch imported after minidl's backend is selected (PyTorch then
  shares numba's OpenMP runtime, passive waiting included: README, "Speed on the CPU");
- sklearn-imported: `import sklearn.cluster` first (another OpenMP user), where installed.
Reported: the median over rounds of each scenario's median minidl step, and its ratio to solo's (the
target: within 1.10); in the torch-computing scenarios also PyTorch's median step.
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
SCENARIOS = ("solo", "torch-imported", "torch-computing", "torch-after", "sklearn-imported")


def worker(scenario, model, steps, batch):
    if scenario in ("torch-imported", "torch-computing"):
        import torch  # noqa: F401   (loads PyTorch, and its OpenMP runtime, before minidl)
    elif scenario == "sklearn-imported":
        import sklearn.cluster  # noqa: F401
    import numpy as np
    from minidl.backend import gpuarray
    from minidl.models import loadMobileNetV1, loadMobileNetV2
    from separate import minidlTrainStep
    np.random.seed(0)
    net = (loadMobileNetV1 if model == "v1" else loadMobileNetV2)(width=0.5, numClasses=10, smallInput=True,
                                                                  dropout=0)
    x = gpuarray.to_gpu(np.random.rand(batch, 3, 32, 32).astype(np.float32))
    labels = gpuarray.to_gpu(np.random.randint(0, 10, batch).astype(np.int32))
    step = minidlTrainStep(net, x, labels)
    other = None
    if scenario in ("torch-computing", "torch-after"):
        import torch
        import torch.nn.functional as F
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        from torchmirror import mirror
        tnet, _ = mirror(net, torch.float32)
        tx, tl = torch.tensor(x.get()), torch.tensor(labels.get().astype(np.int64))
        topt = torch.optim.SGD(tnet.parameters(), lr=0.01, momentum=0.9)

        def other():
            topt.zero_grad(set_to_none=False)
            F.cross_entropy(tnet(tx), tl).backward()
            topt.step()
    times, otherTimes = [], []
    for i in range(steps + 2):
        if other is not None:
            start = time.perf_counter()
            other()
            if i >= 2:
                otherTimes.append(time.perf_counter() - start)
        start = time.perf_counter()
        step()
        if i >= 2:      # two warm-up steps
            times.append(time.perf_counter() - start)
    import numba
    from minidl.backend.numpy import jit
    print(json.dumps({"scenario": scenario, "ms": 1e3 * statistics.median(times),
                      "openmp_runtimes": sorted(jit._openmpFiles() or ()),
                      "torch_ms": 1e3 * statistics.median(otherTimes) if otherTimes else None,
                      "layer": numba.threading_layer(), "user_omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}))


def available(scenario):
    import importlib.util
    need = {"torch-imported": "torch", "torch-computing": "torch", "torch-after": "torch",
            "sklearn-imported": "sklearn"}.get(scenario)
    return need is None or importlib.util.find_spec(need) is not None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=("v1", "v2"), default="v1")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--json")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.model, args.steps, args.batch)
        return
    scenarios = [s for s in SCENARIOS if available(s)]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    rounds = []
    for r in range(args.rounds):
        order = scenarios[r % len(scenarios):] + scenarios[:r % len(scenarios)]
        got = {}
        for s in order:
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", s, "--model", args.model, "--steps",
                   str(args.steps), "--batch", str(args.batch)]
            proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=1800)
            if proc.returncode != 0:
                raise SystemExit("%s failed:\n%s" % (s, proc.stderr[-3000:]))
            got[s] = json.loads(proc.stdout.strip().splitlines()[-1])
        rounds.append(got)
    print("MobileNet%s-0.5 CIFAR training step, batch %d, %d rounds (OMP_WAIT_POLICY in the environment: %s)"
          % (args.model.upper(), args.batch, args.rounds, os.environ.get("OMP_WAIT_POLICY")))
    print("%-18s %10s %10s  %-12s %s" % ("scenario", "step ms", "vs solo", "numba layer", "PyTorch step ms"))
    summary = {}
    for s in scenarios:
        ms = statistics.median(rd[s]["ms"] for rd in rounds)
        ratio = statistics.median(rd[s]["ms"] / rd["solo"]["ms"] for rd in rounds)
        torchMs = statistics.median(rd[s]["torch_ms"] for rd in rounds) if rounds[0][s]["torch_ms"] else None
        summary[s] = {"ms": ms, "vs_solo": ratio, "layer": rounds[0][s]["layer"], "torch_ms": torchMs}
        print("%-18s %10.1f %10.2f  %-12s %s" % (s, ms, ratio, rounds[0][s]["layer"],
                                                 "-" if torchMs is None else "%.1f" % torchMs))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "batch": args.batch, "rounds": rounds, "summary": summary}, f, indent=2)


if __name__ == "__main__":
    main()
