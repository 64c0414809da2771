"""The program tests/test_distributed.py runs under mpiexec (and alone, for the no-MPI fallback).

    python tests/distributed_worker.py train OUTDIR [--per-rank B] [--steps K] [--overlap 0|1]
    python tests/distributed_worker.py fail OUTDIR       # rank 1 raises in its second step
    python tests/distributed_worker.py quit OUTDIR       # rank 1 ends quietly before a collective

``train`` trains the tiny models of ``buildModel`` ("bn": conv, synchronised batch norm (2-D and
1-D), pooling, linear layers with one Variable shared by two of them; "plain": the same without
batch norm; "localbn": batch norm with local statistics) for K steps, every rank on its B samples
of each global batch of size * B, gradients averaged by DataParallel in buckets small enough that
every model has several. Rank 0 saves each model through saveOnMain (OUTDIR/weights_<model>.h5) and
writes its parameters and statistics to OUTDIR/weights_<model>.npz; every rank then loads the .h5
and writes OUTDIR/rank<r>.json saying whether it wrote the file, whether the loaded weights and
statistics equal its own, and the DataParallel statistics. ``referenceRun`` is the single-process
computation the test compares with (plain BatchNorm2D/BatchNorm, the whole global batch).
"""

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minidl import distributed  # noqa: E402
from minidl.backend import backendName, gpuarray  # noqa: E402
from minidl.containers import Sequential  # noqa: E402
from minidl.cost import CrossEntropy  # noqa: E402
from minidl.modules import (  # noqa: E402
    Activation, AvgPool2D, BatchNorm, BatchNorm2D, Conv2D, Flatten, Linear, SyncBatchNorm, SyncBatchNorm2D,
)
from minidl.optimizers import MomentumSGD  # noqa: E402

CLASSES = 4
SHAPE = (3, 8, 8)
# model: (with batch norm, synchronised); "localbn" keeps batch norm's statistics per rank, so it
# matches no single-process run, but its ranks must still end with the same weights and statistics
MODELS = {"bn": (True, True), "plain": (False, True), "localbn": (True, False)}
EQUIVALENT = ("bn", "plain")
# the "bn" model packs its gradients into the optimizer's flat buffer (zero-copy buckets), the
# others keep a gradient per Variable (staged buckets): both paths of DataParallel
GLOBAL_STATE = {"bn": True, "plain": False, "localbn": False}
BUCKET_MB = 0.0005


def buildModel(withBN, sync, seed):
    np.random.seed(seed)
    bn2, bn1 = (SyncBatchNorm2D, SyncBatchNorm) if sync else (BatchNorm2D, BatchNorm)
    net = Sequential("net")
    net.append(Conv2D(3, 8, 3, pad=1, name="conv"))
    if withBN:
        net.append(bn2(8, name="bn"))
    net.append(Activation("relu", name="act"))
    net.append(AvgPool2D(2, name="pool"))
    net.append(Flatten(name="flat"))
    net.append(Linear(128, 16, name="fc1"))
    if withBN:
        net.append(bn1(16, name="bn1"))
    net.append(Activation("tanh", name="act1"))
    net.append(Linear(16, 16, name="fc2"))
    net.append(Activation("tanh", name="act2"))
    net.append(Linear(16, 16, name="fc3"))
    net["fc3"].setVar("W", net["fc2"].vars["W"])       # shared: final only after fc3 and fc2 both ran
    net.append(Linear(16, CLASSES, name="out"))
    return net


def batches(globalBatch, steps, seed=7):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((steps, globalBatch) + SHAPE).astype(np.float32) * 2 + 0.5
    y = rng.integers(0, CLASSES, (steps, globalBatch)).astype(np.int32)
    return x, y


def step(net, cost, optimizer, x, y):
    """One training step, as the Trainer takes it."""
    net(gpuarray.to_gpu(x))
    cost(net.data, gpuarray.to_gpu(y))
    optimizer.zeroGradParams()
    net.backward(cost.grad, updGrad=False)
    optimizer.update()


def state(net):
    out = {"var." + name: var.data.get() for name, var in net.namedVars()}
    out.update({"attr." + name: a.get() for name, a in net.namedAttrs()})
    return out


def referenceRun(model, globalBatch, steps):
    """Weights after training one process on the whole global batches."""
    net = buildModel(MODELS[model][0], False, seed=1)
    optimizer = MomentumSGD(learnRate=0.1, momRate=0.9).setupOn(net, useGlobalState=GLOBAL_STATE[model])
    cost = CrossEntropy()
    xs, ys = batches(globalBatch, steps)
    for k in range(steps):
        step(net, cost, optimizer, xs[k], ys[k])
    return state(net)


def train(outdir, perRank, steps, overlap):
    group = distributed.init()
    r, n = group.rank, group.size
    report = {"rank": r, "size": n, "mpi": group.isMPI, "backend": backendName(), "cudaAware": group.cudaAware}
    for model, (withBN, sync) in MODELS.items():
        # every rank seeds differently: the weights that count are rank 0's broadcast
        net = buildModel(withBN, sync, seed=1 if r == 0 else 100 + r)
        optimizer = MomentumSGD(learnRate=0.1, momRate=0.9).setupOn(net, useGlobalState=GLOBAL_STATE[model])
        optimizer = distributed.DataParallel(net, optimizer, bucketMB=BUCKET_MB, overlap=overlap)
        cost = CrossEntropy()
        xs, ys = batches(perRank * n, steps)
        for k in range(steps):
            part = slice(r * perRank, (r + 1) * perRank)
            step(net, cost, optimizer, xs[k][part], ys[k][part])
        path = os.path.join(outdir, "weights_%s.h5" % model)
        saves = []
        original = net.save
        net.save = lambda *a, **kw: (saves.append(r), original(*a, **kw))[1]
        distributed.saveOnMain(net, path)
        fresh = buildModel(withBN, sync, seed=999)
        fresh.load(path)
        mine, loaded = state(net), state(fresh)
        if r == 0:
            np.savez(os.path.join(outdir, "weights_%s.npz" % model), **mine)
        report[model] = {
            "wrote": bool(saves), "loadedEqual": all(np.array_equal(mine[k], loaded[k]) for k in mine),
            "buckets": len(optimizer._buckets), "stats": optimizer.stats.perStep(),
            "loss": distributed.average(cost.getMeanError(), perRank),
        }
    with open(os.path.join(outdir, "rank%d.json" % r), "w") as f:
        json.dump(report, f)


def fail(outdir):
    distributed.init()
    net = buildModel(True, True, seed=1)
    optimizer = distributed.DataParallel(net, MomentumSGD(learnRate=0.1).setupOn(net, useGlobalState=True))
    cost = CrossEntropy()
    xs, ys = batches(4 * distributed.size(), 3)
    for k in range(3):
        if k == 1 and distributed.rank() == 1:
            raise RuntimeError("deliberate failure in step %d" % k)
        step(net, cost, optimizer, xs[k][:4], ys[k][:4])
    with open(os.path.join(outdir, "finished%d" % distributed.rank()), "w") as f:
        f.write("the other ranks should have been stopped")


def leaveQuietly(outdir):
    distributed.init()
    if distributed.rank() == 1:
        return              # no exception: the others must notice by the timeout
    distributed.allreduceSum(1.0)
    with open(os.path.join(outdir, "finished%d" % distributed.rank()), "w") as f:
        f.write("the allreduce should not have completed")


def main(argv):
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("train", "fail", "quit"))
    parser.add_argument("outdir")
    parser.add_argument("--per-rank", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--overlap", type=int, default=1)
    args = parser.parse_args(argv)
    if args.mode == "train":
        train(args.outdir, args.per_rank, args.steps, bool(args.overlap))
    elif args.mode == "fail":
        fail(args.outdir)
    else:
        leaveQuietly(args.outdir)


if __name__ == "__main__":
    main(sys.argv[1:])
