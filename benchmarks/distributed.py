"""Data-parallel scaling of minidl.distributed on this machine (a benchmark, not a test).

    python benchmarks/distributed.py         # 1, 2 and 4 ranks: benchmarks/results/distributed_scaling.txt (and .json)
    python benchmarks/distributed.py --ranks 1,2 --steps 4 --out /tmp/scaling.txt
    python benchmarks/distributed.py --report benchmarks/results/distributed_scaling.json   # the text again

Workload: MobileNetV2-0.5 with smallInput (32x32x3 images, 10 classes; 0.70 M parameters, 2.8 MB
of float32 gradients in 158 Variables), NumPy backend, synthetic data, batch 64 PER RANK (weak
scaling: the global batch is 64 x ranks), MomentumSGD with setupOn(net, useGlobalState=True) and
DataParallel with its default 1 MB buckets (3 buckets: one Iallreduce each per step). Threads per
rank (numba, OpenMP, BLAS): 2 for 1 rank, 1 for 2 and 4 ranks; 4 ranks on 2 cores is 2x
oversubscribed, so its compute runs at half speed per rank by construction. Each configuration
runs --warmup steps, then --steps timed ones between barriers, with overlap on and off.

Figures (rank 0's, and the slowest rank's step): step time, images/s (global batch / step),
the time update() spends completing the gradient average (with overlap off that is the whole
allreduce, so "allreduce per step" and its share of the step), the hooks' time during backward,
how many buckets had finished before update() began (overlap on), and the communication hidden
behind backward = exposed time without overlap - exposed time with it (exposed: hooks + update).
A micro-benchmark times bare allreduces of 4 KB to 4 MB at 2 and 4 ranks (idle ranks, no compute).

The model of step time (written out with the numbers in the results file)
-----------------------------------------------------------------------------
For N ranks, P float32 parameters in k buckets, link bandwidth W (bytes/s), per-message
latency a, a ring allreduce of one bucket of b bytes costs 2(N-1)/N * b/W + 2(N-1) * a, so a
step's communication is

    T_ar(N) = 2(N-1)/N * 4P/W + 2(N-1) * k * a

and the step T(N) = T_comp(B) + max(0, T_ar(N) - H) + T_skew, where T_comp(B) is one process's
compute at the per-rank batch B, H the part of the allreduce that overlaps the rest of backward
(at most the backward time after the first bucket is ready) and T_skew the waiting for the
slowest rank (stragglers, oversubscription). Throughput is N * B / T(N); efficiency
T_comp / T(N). The bandwidth term tends to 2 * 4P / W as N grows (constant per rank: ring
allreduce scales), the latency term grows linearly in N (a tree or recursive-doubling algorithm,
which MPICH picks for small messages, makes it log2 N), so for many nodes: few large buckets
and P large enough that 8P/W, not 2Nka, dominates, and T_comp large enough to hide both.
W and a are fitted to the 2-rank micro-benchmark (T = 2a + b/W at N = 2), separately for messages
up to 512 KB and from 2 MB on (the times jump between the two on this machine), and checked
against the 4-rank micro-benchmark and the in-training allreduce.

Measured (benchmarks/results/distributed_scaling.txt; 2 cores shared with other work, so figures
move by 10-30% between runs): 2 ranks of one thread 247 images/s against 186 for one process of two
threads (x1.33; 4 ranks, 2x oversubscribed, x1.32); averaging 2.8 MB of gradients takes 4.8 ms per
step at 2 ranks and 24 ms at 4 (0.9% and 2.3% of the step), of which 2 of the 3 buckets (67% of the
bytes) complete during backward; the step time is the same with overlap on and off within the noise,
the allreduce being that small a share. The 2-rank fit (a = 3.6 us, W = 6.6 GB/s up to 512 KB)
predicts the bare allreduce of the 3 buckets (0.44 ms, measured 0.45 ms); in training the same
reduction takes ~10x that (waking the waiting rank, cold caches, unpacking). At 4 ranks on 2 cores
every allreduce takes 1.5 ms or more whatever its size: the scheduler's latency of oversubscribed
ranks, not the link's.
"""

import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

BATCH = 64
SIZES = [4 << 10, 16 << 10, 64 << 10, 256 << 10, 512 << 10, 1 << 20, 2 << 20, 2800 << 10, 4 << 20, 8 << 20,
         16 << 20]
SMALL, LARGE = 512 << 10, 2 << 20       # the two regimes fitted (the times jump in between)


def _mpiexec():
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.access(beside, os.X_OK) else "mpiexec"


# ---- the programs each rank runs ------------------------------------------------------------------

def workerTrain(steps, warmup, overlap):
    import numpy as np
    from minidl import distributed
    from minidl.backend import gpuarray
    from minidl.cost import CrossEntropy
    from minidl.models import loadMobileNetV2
    from minidl.optimizers import MomentumSGD

    group = distributed.init()
    np.random.seed(group.rank)
    net = loadMobileNetV2(width=0.5, numClasses=10, smallInput=True, dropout=0)
    optimizer = MomentumSGD(learnRate=0.01, momRate=0.9).setupOn(net, useGlobalState=True)
    optimizer = distributed.DataParallel(net, optimizer, overlap=overlap)
    cost = CrossEntropy()
    x = gpuarray.to_gpu(np.random.randn(BATCH, 3, 32, 32).astype(np.float32))
    y = gpuarray.to_gpu(np.random.randint(0, 10, BATCH).astype(np.int32))
    times = {"forward": 0.0, "backward": 0.0, "skew": 0.0, "update": 0.0}
    for i in range(warmup + steps):
        if i == warmup:
            group.barrier()
            optimizer.stats.reset()
            times = dict.fromkeys(times, 0.0)
            start, cpuStart = time.perf_counter(), time.process_time()
        t0 = time.perf_counter()
        net(x)
        cost(net.data, y, queryError=False)
        optimizer.zeroGradParams()
        t1 = time.perf_counter()
        net.backward(cost.grad, updGrad=False)
        t2 = time.perf_counter()
        if not overlap and group.size > 1:
            # overlap off: wait for the slowest rank first, so update() times the allreduce proper
            group.barrier()
        t3 = time.perf_counter()
        optimizer.update()
        t4 = time.perf_counter()
        times["forward"] += t1 - t0
        times["backward"] += t2 - t1
        times["skew"] += t3 - t2
        times["update"] += t4 - t3
    group.barrier()
    wall = (time.perf_counter() - start) / steps
    cpu = (time.process_time() - cpuStart) / steps
    mine = {"step": wall, "cpu": cpu, **{k: v / steps for k, v in times.items()}, **optimizer.stats.perStep(),
            "params": net.numOfParams(), "bucketsPerStep": len(optimizer._buckets) if group.size > 1 else 0,
            "bucketSizes": [b.nbytes for b in optimizer._buckets] if group.size > 1 else []}
    text = np.frombuffer(json.dumps(mine).ljust(4096).encode(), np.uint8)
    every = group.allgather(text, "results")                            # (ranks, 4096) bytes
    if group.rank == 0:
        print("RESULT " + json.dumps([json.loads(row.tobytes().decode()) for row in every]))


def workerAllreduce(repeat):
    import numpy as np
    from minidl import distributed
    group = distributed.init()
    out = {}
    for nbytes in SIZES:
        buf = np.ones(nbytes // 4, np.float32)
        samples = []
        for i in range(repeat + 3):
            group.barrier()
            t0 = time.perf_counter()
            group.allreduce(buf)
            if i >= 3:
                samples.append(time.perf_counter() - t0)
        out[nbytes] = float(np.median(samples))
    if group.rank == 0:
        print("RESULT " + json.dumps(out))


# ---- the driver -------------------------------------------------------------------------------------

def _run(ranks, threads, args):
    env = dict(os.environ, MINIDL_BACKEND="numpy", NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    command = [_mpiexec(), "-n", str(ranks), sys.executable, os.path.abspath(__file__), "--worker"] + args
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError("%s failed:\n%s%s" % (" ".join(command), done.stdout, done.stderr))
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def _fit(table, low=0, high=float("inf")):
    """(per-message cost a, bandwidth W) of T = 2a + b/W (the ring model at N = 2) fitted to the bare
    allreduces of low..high bytes (least squares on relative error)."""
    import numpy as np
    sizes = np.array([s for s in sorted(table) if low <= s <= high], float)
    t = np.array([table[int(s)] for s in sizes])
    slope, intercept = np.polyfit(sizes, t, 1, w=1 / t)
    return intercept / 2, 1 / slope


def ringTime(n, nbytes, buckets, latency, bandwidth):
    """The ring model's allreduce time of nbytes in buckets messages over n ranks."""
    if n == 1:
        return 0.0
    return 2 * (n - 1) / n * nbytes / bandwidth + 2 * (n - 1) * buckets * latency


def _mean(rows, key):
    return sum(r.get(key, 0.0) for r in rows) / len(rows)


def _slowest(rows):
    return max(r["step"] for r in rows)


def measure(args, rankList):
    """Run the micro-benchmark and every training configuration; returns the data report() reads."""
    micro = {}
    for n in [r for r in rankList if r > 1]:
        micro[str(n)] = _run(n, 1, ["allreduce", "--repeat", str(args.repeat)])
    configs = ["%d_%s" % (n, o) for n in rankList for o in (("on",) if n == 1 else ("on", "off"))]
    runs, loads = {c: [] for c in configs}, []
    for _ in range(args.rounds):
        for c in configs:
            n, overlap = int(c.split("_")[0]), c.endswith("_on")
            loads.append(os.getloadavg()[0])
            runs[c].append(_run(n, 2 if n == 1 else 1, ["train", "--steps", str(args.steps), "--warmup",
                                                        str(args.warmup), "--overlap", str(int(overlap))]))
    command = ("python benchmarks/distributed.py --ranks %s --steps %d --warmup %d --rounds %d --repeat %d"
               % (args.ranks, args.steps, args.warmup, args.rounds, args.repeat))
    return {"command": command, "cores": os.cpu_count(), "micro": micro, "train": runs, "loads": loads,
            "rounds": args.rounds, "repeat": args.repeat}


def report(data):
    """The results text (a list of lines) from measure()'s data."""
    lines = []
    say = lines.append
    micro = {int(n): {int(k): v for k, v in table.items()} for n, table in data["micro"].items()}
    sizes = sorted(next(iter(micro.values()))) if micro else []      # the sizes that run measured
    runs = {(int(c.split("_")[0]), int(c.endswith("_on"))): rs for c, rs in data["train"].items()}
    rankList = sorted({n for n, _ in runs})
    say("minidl.distributed scaling: MobileNetV2-0.5 smallInput 32x32, batch %d per rank (weak scaling: the global "
        "batch is %d x ranks), NumPy backend, %d cores" % (BATCH, BATCH, data["cores"]))
    say("command: " + data["command"])
    if micro:
        say("")
        say("bare allreduce (idle ranks, 1 thread each; minidl's wait), median of %d, ms" % data["repeat"])
        say("%-10s" % "bytes" + "".join("%12s" % ("%d ranks" % n) for n in micro))
        for size in sizes:
            say("%-10d" % size + "".join("%12.3f" % (micro[n][size] * 1e3) for n in micro))

    # per configuration, the run whose slowest step is the median of the rounds
    results = {c: sorted(rs, key=_slowest)[len(rs) // 2] for c, rs in runs.items()}
    say("")
    say("training: median of %d interleaved runs per row (load average before the runs %.1f to %.1f: other work "
        "shares these cores); per step, seconds, rank 0 (the slowest rank's step in brackets)"
        % (data["rounds"], min(data["loads"]), max(data["loads"])))
    say("%-6s %-8s %-8s %-16s %-9s %-9s %-9s %-9s %-9s %-9s %-9s %-9s" % (
        "ranks", "threads", "overlap", "step", "images/s", "cpu", "forward", "backward", "barrier", "update", "hooks",
        "done<upd"))
    for (n, overlap), rows in sorted(results.items(), key=lambda item: (item[0][0], -item[0][1])):
        r0 = rows[0]
        say("%-6d %-8d %-8s %-16s %-9.1f %-9.3f %-9.3f %-9.3f %-9.4f %-9.4f %-9.4f %-9s" % (
            n, 2 if n == 1 else 1, "on" if overlap else "off", "%.3f [%.3f]" % (r0["step"], _slowest(rows)),
            n * BATCH / _slowest(rows), r0["cpu"], r0["forward"], r0["backward"], r0["skew"], r0["update"],
            r0.get("hookSeconds", 0.0), "%.1f/%d" % (_mean(rows, "doneBeforeUpdate"), r0["bucketsPerStep"])
            if n > 1 else "-"))
    say("(images/s: ranks x %d / the slowest rank's step; cpu: rank 0's CPU seconds per step, all its threads, which "
        "other processes' load does not inflate; barrier: overlap off only, the wait for the slowest rank before "
        "update(), so that update() times the allreduce alone; done<upd: buckets whose allreduce had completed "
        "when update() began)" % BATCH)
    if (1, 1) in results:
        base = _slowest(results[1, 1])
        say("throughput relative to 1 rank with 2 threads: " + ", ".join(
            "%d ranks x%.2f" % (n, n * base / _slowest(results[n, 1])) for n in rankList if n > 1)
            + " (4 ranks share the same 2 cores: 2x oversubscribed)")
    say("")
    params = results[rankList[0], 1][0]["params"]
    nbytes = 4 * params
    # the 2-rank times fall in two regimes, a few us plus the copy up to 1 MB and a larger fixed cost
    # from 2 MB on (cache sizes, MPICH's choice of algorithm), so the model is fitted to each and the
    # ~1 MB buckets are bracketed by the two
    small = _fit(micro[2], high=SMALL) if 2 in micro else None
    large = _fit(micro[2], low=LARGE) if 2 in micro else None
    buckets = results[(rankList[-1], 1)][0].get("bucketSizes") or _bucketSizes()
    say("communication per step (%d parameters, %.2f MB of gradients; figures averaged over the ranks)"
        % (params, nbytes / 1e6))
    for n in [r for r in rankList if r > 1]:
        on, off = results[(n, 1)], results[(n, 0)]
        allreduce, skew = _mean(off, "updateSeconds"), _mean(off, "skew")
        exposedOn = _mean(on, "updateSeconds") + _mean(on, "hookSeconds")
        hiddenBytes = _mean(on, "bytesDoneBeforeUpdate") / _mean(on, "bytes")
        say("  %d ranks, overlap off: allreduce %.1f ms per step = %.1f%% of the step (%.1f ms of it blocked in "
            "the wait, the rest unpacking and scaling), after %.1f ms at the barrier waiting for the slowest rank"
            % (n, allreduce * 1e3, 100 * allreduce / _slowest(off), _mean(off, "waitSeconds") * 1e3, skew * 1e3))
        say("    overlap on: %.0f%% of the gradient bytes were reduced completely during backward (%.1f of %d "
            "buckets: all but the last, the first layers' gradients, final only when backward ends), so about "
            "%.1f ms of the %.1f ms allreduce was hidden behind backward; exposed: hooks %.1f ms + update() %.1f ms "
            "(this includes the wait for the slowest rank) = %.1f ms, against %.1f ms (barrier + allreduce) with "
            "overlap off; step %.3f s on vs %.3f s off"
            % (100 * hiddenBytes, _mean(on, "doneBeforeUpdate"), on[0]["bucketsPerStep"],
               hiddenBytes * allreduce * 1e3, allreduce * 1e3, _mean(on, "hookSeconds") * 1e3,
               _mean(on, "updateSeconds") * 1e3, exposedOn * 1e3, (skew + allreduce) * 1e3, _slowest(on),
               _slowest(off)))
        if large is not None:
            low = sum(ringTime(n, b, 1, *small) for b in buckets)
            high = sum(ringTime(n, b, 1, *large) for b in buckets)
            say("    ring model of the %d buckets (%s KB): %.2f ms with the small-message fit, %.2f ms with the "
                "large-message one; measured: the same sizes as bare allreduces %.2f ms (interpolated), in "
                "training (overlap off, after the barrier, unpacking included) %.2f ms"
                % (len(buckets), "/".join(str(b >> 10) for b in buckets), low * 1e3, high * 1e3,
                   sum(_interp(micro[n], b) for b in buckets) * 1e3, allreduce * 1e3))
    if large is not None:
        say("")
        say("ring model fitted to the 2-rank bare allreduces (T = 2a + b/W at N = 2): messages up to %d KB "
            "a = %.1f us, W = %.2f GB/s; from %d MB on a = %.0f us, W = %.2f GB/s (shared memory, one machine)"
            % (SMALL >> 10, small[0] * 1e6, small[1] / 1e9, LARGE >> 20, large[0] * 1e6, large[1] / 1e9))
        if 4 in micro:
            say("checked at 4 ranks (bare allreduce, model / measured, ms): " + ", ".join(
                "%d KB %.3f / %.3f" % (size >> 10, ringTime(4, size, 1, *(small if size <= SMALL else large))
                                       * 1e3, micro[4][size] * 1e3)
                for size in sizes if size <= SMALL or size >= LARGE))
            say("  at 4 ranks on 2 cores each step of the algorithm can wait for a rank the scheduler has "
                "descheduled, so the per-message term is the scheduler's (%.1f ms for a 4 KB allreduce), not the "
                "link's: the model holds where every rank has a core of its own" % (micro[4][sizes[0]] * 1e3))
    say("")
    compute = _mean(results[rankList[0], 1], "cpu")
    k = len(buckets)
    many = [r for r in rankList if r > 1]
    hidden = sum(_mean(results[n, 1], "bytesDoneBeforeUpdate") / _mean(results[n, 1], "bytes")
                 for n in many) / len(many)
    say("many nodes, from the model (P = %.2f M parameters in k = %d buckets; W = 10 GB/s and a = 5 us per message, "
        "an InfiniBand-class link; %.0f%% of the allreduce hidden behind backward, as measured above; stragglers "
        "not counted):" % (params / 1e6, k, 100 * hidden))
    for n in (2, 8, 64, 256):
        tar = ringTime(n, nbytes, k, 5e-6, 10e9)
        exposed = (1 - hidden) * tar
        say("  N = %3d: T_ar = %.2f ms (bandwidth %.2f + latency %.2f), exposed %.2f ms: efficiency %.4f at %.2f s "
            "of compute per step (this CPU), %.3f at 10 ms (a GPU)" % (
                n, tar * 1e3, 2 * (n - 1) / n * nbytes / 10e9 * 1e3, 2 * (n - 1) * k * 5e-6 * 1e3, exposed * 1e3,
                compute / (compute + exposed), compute, 0.01 / (0.01 + exposed)))
    say("  (the bandwidth term tends to 8P/W = %.2f ms as N grows; the latency term grows as 2(N-1)ka, so at large "
        "N fewer, larger buckets pay, and MPI's tree algorithms make it log N)" % (8 * params / 10e9 * 1e3))
    return lines


def main(argv):
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", default="1,2,4")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="runs of every configuration, interleaved (median kept)")
    parser.add_argument("--repeat", type=int, default=21, help="allreduce micro-benchmark repetitions")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "distributed_scaling.txt"))
    parser.add_argument("--report", metavar="JSON", help="only write the report of an earlier run's .json")
    parser.add_argument("--reuse-train", metavar="JSON", help="measure the allreduces again, keep this run's training")
    parser.add_argument("--worker", choices=("train", "allreduce"))
    parser.add_argument("--overlap", type=int, default=1)
    args = parser.parse_args(argv)
    if args.worker == "train":
        return workerTrain(args.steps, args.warmup, bool(args.overlap))
    if args.worker == "allreduce":
        return workerAllreduce(args.repeat)
    if args.report:
        with open(args.report) as f:
            data = json.load(f)
    elif args.reuse_train:
        with open(args.reuse_train) as f:
            data = json.load(f)
        data["micro"] = {str(n): _run(n, 1, ["allreduce", "--repeat", str(args.repeat)])
                         for n in sorted({int(c.split("_")[0]) for c in data["train"]}) if n > 1}
        data["command"] += " (allreduces measured again: --reuse-train)"
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
            json.dump(data, f, indent=1)
    else:
        data = measure(args, [int(r) for r in args.ranks.split(",")])
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
            json.dump(data, f, indent=1)
    lines = report(data)
    print("\n".join(lines))
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")


def _bucketSizes():
    """DataParallel's default bucket sizes for the benchmark's model (for runs that did not record them)."""
    from minidl.models import loadMobileNetV2
    net = loadMobileNetV2(width=0.5, numClasses=10, smallInput=True, dropout=0)
    sizes, current = [], 0
    for var in reversed(list(net.getVarTable())):
        if current and current + var.grad.nbytes > 1 << 20:
            sizes.append(current)
            current = 0
        current += var.grad.nbytes
    return sizes + ([current] if current else [])


def _interp(table, nbytes):
    import numpy as np
    sizes = sorted(table)
    return float(np.interp(nbytes, sizes, [table[s] for s in sizes]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
