"""minidl.distributed: data-parallel training equals one process on the whole batch.

The MPI tests launch ``mpiexec`` themselves on tests/distributed_worker.py (one thread per rank,
so four ranks do not fight over a small machine's cores) and are skipped where mpi4py or mpiexec
is missing. The CUDA cases run where the CUDA backend loads in this process (a GPU, or
``MINIDL_BACKEND=cuda tools/cudaemu/run python -m pytest tests/test_distributed.py``: the ranks
inherit the emulator's environment through mpiexec).

Equivalence tolerance: after K = 4 steps (MomentumSGD, lr 0.1, momentum 0.9) every parameter and
batch-norm statistic of rank 0 must match the single-process run at the global batch within
EQUIV_RTOL * (1 + max |reference array|). The two runs do the same arithmetic in different
orders only: per-rank gradient sums added over the ranks instead of one sum over N * B samples,
per-rank means and variances combined instead of taken at once, the batch-norm sums summed over
ranks. Each differs by a few float32 ulps (1.2e-7 relative) per step; batch norm's 1/std and four
momentum steps compound that to the 1e-7..1e-6 observed (largest differences: printed with -s).
2e-5 leaves a 20x margin over the worst observed, while any real mistake is orders larger: a rank's
gradient missing or not divided, local instead of synchronised statistics, a shared Variable sent
before its second user ran, all move weights by 1e-3 or more (the weights move by ~0.1-1 here;
test_training_moved_the_weights makes sure).
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import distributed_worker as worker
import minidl.backend as B
from minidl import distributed
from minidl.backend import gpuarray
from minidl.cost import CrossEntropy
from minidl.distributed import DataParallel, DistributedError, DistributedSampler
from minidl.distributed.group import Request
from minidl.modules import BatchNorm, BatchNorm2D, Linear, SyncBatchNorm, SyncBatchNorm2D, convertSyncBatchNorm
from minidl.optimizers import MomentumSGD

from emulation import cudaEmulated

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "distributed_worker.py")
EQUIV_RTOL = 2e-5
LAUNCH_TIMEOUT = 120


def _mpiexec():
    """The mpiexec beside this Python (the mpich wheel installs it there), else the one on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.access(beside, os.X_OK) else shutil.which("mpiexec")


needsMPI = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or _mpiexec() is None,
    reason="needs mpi4py and an mpiexec (pip install 'minidl[mpi]': mpi4py and mpich)")


def _environment(backend, **extra):
    # not launched by anyone: drop whatever an outer launcher left in this process's environment
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI", "OMPI_", "MV2_", "HYDRA"))}
    env.update(MINIDL_BACKEND=backend, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1", MINIDL_DIST_TIMEOUT="60")
    env.update(extra)
    return env


def _launch(ranks, args, backend="numpy", **extra):
    command = [sys.executable, WORKER] + args
    if ranks is not None:
        command = [_mpiexec(), "-n", str(ranks)] + command
    start = time.monotonic()
    result = subprocess.run(command, env=_environment(backend, **extra), capture_output=True, text=True,
                            timeout=LAUNCH_TIMEOUT)
    return result, time.monotonic() - start


def _reports(outdir, ranks):
    return [json.load(open(os.path.join(outdir, "rank%d.json" % r))) for r in range(ranks)]


def _largestDifference(reference, got):
    """{"var"/"attr": (largest |difference|, its array's name)}; AssertionError naming an array outside
    the tolerance."""
    assert sorted(reference) == sorted(got.files)
    worst = {}
    for name, ref in reference.items():
        diff = float(np.abs(got[name] - ref).max())
        limit = EQUIV_RTOL * (1 + float(np.abs(ref).max()))
        assert diff <= limit, "%s differs from the single-process run by %g (limit %g)" % (name, diff, limit)
        kind = name.split(".")[0]
        worst[kind] = max(worst.get(kind, (0.0, None)), (diff, name), key=lambda t: t[0])
    return worst


# ---- N ranks at batch B equal one process at batch N * B ---------------------------------------------

@needsMPI
@pytest.mark.parametrize("ranks", [2, 4], ids=["ranks2", "ranks4"])
def test_ranks_train_like_one_process_at_the_global_batch(backend, ranks, tmp_path):
    extra = {}
    if backend == "cuda" and ranks == 4 and cudaEmulated():
        # the emulator's device memory is host memory, so even this MPI can take device pointers:
        # runs the CUDA-aware path (DeviceDirect) where it cannot run on a GPU without such an MPI
        extra["MINIDL_MPI_CUDA_AWARE"] = "1"
    perRank, steps = 4, 4
    result, _ = _launch(ranks, ["train", str(tmp_path), "--per-rank", str(perRank), "--steps", str(steps)],
                        backend, **extra)
    assert result.returncode == 0, result.stdout + result.stderr
    reports = _reports(tmp_path, ranks)
    for r, report in enumerate(reports):
        assert (report["rank"], report["size"], report["mpi"], report["backend"]) == (r, ranks, True, backend)
        assert report["cudaAware"] == bool(extra)
        for model in worker.MODELS:
            # only rank 0 wrote the file; every rank loaded it and found its own weights and statistics
            # (with local batch norm too: DataParallel averages the running statistics)
            assert report[model]["wrote"] == (r == 0)
            assert report[model]["loadedEqual"]
            stats = report[model]["stats"]
            # several buckets, the first started by a hook during backward (overlap); the later ones wait
            # for the one in flight, so on this tiny model some start only in update()
            assert report[model]["buckets"] >= 3 and stats["buckets"] == report[model]["buckets"]
            assert stats["startedInBackward"] >= 1
            assert report[model]["loss"] == reports[0][model]["loss"]
    for model in worker.EQUIVALENT:
        reference = worker.referenceRun(model, perRank * ranks, steps)
        worst = _largestDifference(reference, np.load(os.path.join(tmp_path, "weights_%s.npz" % model)))
        print("%s, %d ranks, model %s: largest difference %s" % (backend, ranks, model, ", ".join(
            "%.3g (%s)" % value for _, value in sorted(worst.items()))))


def test_training_moved_the_weights():
    """The equivalence above has teeth: training changes the weights far beyond its tolerance."""
    for model in worker.EQUIVALENT:
        before = worker.state(worker.buildModel(worker.MODELS[model][0], False, seed=1))
        after = worker.referenceRun(model, 8, 4)
        moved = max(float(np.abs(after[k] - before[k]).max()) for k in before if k.startswith("var."))
        assert moved > 1000 * EQUIV_RTOL * (1 + max(float(np.abs(a).max()) for a in after.values()))


# ---- without MPI ------------------------------------------------------------------------------------

def test_without_mpi_the_same_script_runs_alone_and_never_imports_mpi4py(tmp_path):
    result, _ = _launch(None, ["train", str(tmp_path), "--per-rank", "8", "--steps", "2"])
    assert result.returncode == 0, result.stdout + result.stderr
    (report,) = _reports(tmp_path, 1)
    assert (report["rank"], report["size"], report["mpi"]) == (0, 1, False)
    assert report["bn"]["wrote"] and report["bn"]["loadedEqual"]
    assert report["bn"]["stats"] == {}          # alone, DataParallel installs and counts nothing
    for model in worker.EQUIVALENT:
        _largestDifference(worker.referenceRun(model, 8, 2), np.load(os.path.join(tmp_path, "weights_%s.npz" % model)))
    check = subprocess.run([sys.executable, "-c", "import sys, minidl, minidl.modules, minidl.distributed as d; "
                            "d.init(); print('mpi4py' in sys.modules)"],
                           env=_environment("numpy"), capture_output=True, text=True, timeout=60)
    assert check.stdout.strip() == "False", check.stderr


def test_launched_by_mpi_without_mpi4py_is_refused(monkeypatch):
    monkeypatch.setattr(distributed, "_group", None)
    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(DistributedError, match=r"launched by an MPI launcher \(PMI_RANK is set\), but mpi4py cannot"):
        distributed.init()
    monkeypatch.setattr(distributed, "_group", None)
    with pytest.raises(ValueError, match="mode must be"):
        distributed.init("tcp")


def test_alone_every_helper_is_the_identity(monkeypatch):
    monkeypatch.setattr(distributed, "_group", None)
    assert distributed.init("none") is distributed.group()
    assert (distributed.rank(), distributed.size(), distributed.isMain()) == (0, 1, True)
    assert distributed.average(0.25, 10) == 0.25 and distributed.allreduceSum(3.0) == 3.0
    np.testing.assert_array_equal(distributed.allreduceSum(np.arange(3.0)), np.arange(3.0))
    distributed.barrier()


# ---- failure ------------------------------------------------------------------------------------------

@needsMPI
def test_a_failing_rank_stops_every_rank_with_its_message(tmp_path):
    result, elapsed = _launch(2, ["fail", str(tmp_path)])
    assert result.returncode != 0
    assert "minidl.distributed: rank 1 of 2 failed; aborting every rank" in result.stderr
    assert "RuntimeError: deliberate failure in step 1" in result.stderr
    assert not any(name.startswith("finished") for name in os.listdir(tmp_path))
    assert elapsed < 30        # aborted, not timed out (MINIDL_DIST_TIMEOUT is 60 s in the ranks)


@needsMPI
def test_a_rank_that_stops_quietly_makes_the_others_time_out_and_abort(tmp_path):
    result, elapsed = _launch(2, ["quit", str(tmp_path)], MINIDL_DIST_TIMEOUT="2")
    assert result.returncode != 0
    assert "DistributedTimeout: minidl.distributed: rank 0 of 2 waited more than 2 s for allreduceSum" in result.stderr
    assert "minidl.distributed: rank 0 of 2 failed; aborting every rank" in result.stderr
    assert not os.listdir(tmp_path) and elapsed < 30


# ---- the sampler ------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, size", [(10, 4), (12, 4), (7, 2), (3, 4)])
def test_sampler_shares_are_disjoint_cover_everything_and_are_equal(n, size):
    for epoch in (0, 1):
        shares = [DistributedSampler(n, seed=5, rank=r, size=size).indices(epoch) for r in range(size)]
        assert len({len(s) for s in shares}) == 1 and len(shares[0]) == -(-n // size)
        assert {len(set(s)) for s in shares} == {len(shares[0])}
        seen = np.concatenate(shares)
        assert set(seen) == set(range(n)) and len(seen) - n == (-n) % size     # padding repeats, at most size-1
        first = [i for s in shares for i in s[:1]]
        if n >= size:
            assert len(set(first)) == size
        assert len({DistributedSampler(n, rank=r, size=size).steps(2) for r in range(size)}) == 1
    shares = [DistributedSampler(n, seed=5, rank=r, size=size, equalize=None).indices(0) for r in range(size)]
    assert sorted(np.concatenate(shares)) == list(range(n))
    if n >= size:
        dropped = [DistributedSampler(n, seed=5, rank=r, size=size, equalize="drop").indices(0) for r in range(size)]
        assert len(set(np.concatenate(dropped))) == len(np.concatenate(dropped)) == n // size * size


def test_sampler_reshuffles_every_epoch_the_same_way_on_every_rank():
    a = DistributedSampler(100, seed=3, rank=1, size=4)
    b = DistributedSampler(100, seed=3, rank=1, size=4)
    assert np.array_equal(a.indices(2), b.indices(2))
    assert not np.array_equal(a.indices(0), a.indices(1))
    assert not np.array_equal(a.indices(0), DistributedSampler(100, seed=4, rank=1, size=4).indices(0))
    assert np.array_equal(DistributedSampler(9, shuffle=False, rank=0, size=2).indices(7), [0, 2, 4, 6, 8])
    with pytest.raises(ValueError, match="rank < size"):
        DistributedSampler(10, rank=4, size=4)
    with pytest.raises(ValueError, match="equalize must be"):
        DistributedSampler(10, equalize="wrap", rank=0, size=1)


# ---- DataParallel's hooks and buckets, in one process over a stand-in group -------------------------

class TwinGroup:
    """Rank 0 of two identical ranks: a reduction sums the buffer with itself, as it was when the
    reduction *started* (so a bucket sent before its gradients were final comes back wrong)."""

    rank, size, isMPI, cudaAware, timeout = 0, 2, False, False, None

    def __init__(self):
        self.started = []

    def dup(self):
        return self

    def iallreduce(self, buf):
        self.started.append(np.array(buf, copy=True))
        request = Request(None)
        request.buf, request.value = buf, self.started[-1] * 2
        return request

    def waitall(self, requests, what=""):
        for request in requests:
            if hasattr(request, "value"):
                request.buf[...] = request.value
                del request.value

    def allgather(self, buf, what=""):
        return np.stack([buf, buf])

    def bcast(self, buf, root=0, what=""):
        return buf

    def allreduce(self, buf, what=""):
        buf *= 2
        return buf


@pytest.mark.parametrize("globalState", [True, False], ids=["packed", "staged"])
def test_buckets_start_during_backward_once_every_user_of_their_variables_ran(backend, globalState):
    cost = CrossEntropy()
    xs, ys = worker.batches(8, 2)
    nets = []
    for wrap in (False, True):
        net = worker.buildModel(False, False, seed=1)
        optimizer = MomentumSGD(learnRate=0.1, momRate=0.9).setupOn(net, useGlobalState=globalState)
        if wrap:
            group = TwinGroup()
            optimizer = DataParallel(net, optimizer, bucketMB=0.0005, group=group)
        for k in range(2):
            worker.step(net, cost, optimizer, xs[k], ys[k])
        nets.append(net)
    for (name, a), (_, b) in zip(worker.state(nets[0]).items(), worker.state(nets[1]).items()):
        np.testing.assert_array_equal(a, b, err_msg=name)   # doubling and halving are exact
    stats = optimizer.stats
    assert stats.steps == 2 and stats.buckets == 2 * len(optimizer._buckets) >= 6
    assert stats.startedInBackward == stats.buckets and len(group.started) == stats.buckets


def test_a_second_backward_needs_nosync_and_then_accumulates(backend):
    cost = CrossEntropy()
    xs, ys = worker.batches(8, 2)
    net = worker.buildModel(False, False, seed=1)
    optimizer = DataParallel(net, MomentumSGD(learnRate=0.1).setupOn(net, useGlobalState=True),
                             bucketMB=0.0005, group=TwinGroup())

    def backward(k):
        net(gpuarray.to_gpu(xs[k]))
        cost(net.data, gpuarray.to_gpu(ys[k]))
        net.backward(cost.grad, updGrad=False)
    optimizer.zeroGradParams()
    backward(0)
    with pytest.raises(Exception, match="ran backward twice before update"):
        backward(1)
    optimizer.zeroGradParams()          # completes the unfinished step
    with optimizer.noSync():
        backward(0)
    backward(1)
    optimizer.update()

    reference = worker.buildModel(False, False, seed=1)
    refOptimizer = MomentumSGD(learnRate=0.1).setupOn(reference, useGlobalState=True)
    refOptimizer.zeroGradParams()
    for k in (0, 1):
        reference(gpuarray.to_gpu(xs[k]))
        cost(reference.data, gpuarray.to_gpu(ys[k]))
        reference.backward(cost.grad, updGrad=False)
    refOptimizer.update()
    for (name, a), (_, b) in zip(worker.state(reference).items(), worker.state(net).items()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_dataparallel_forwards_the_optimizer_and_alone_adds_nothing(monkeypatch):
    monkeypatch.setattr(distributed, "_group", None)
    distributed.init("none")
    net = worker.buildModel(True, True, seed=1)
    inner = MomentumSGD(learnRate=0.1).setupOn(net)
    optimizer = DataParallel(net, inner)
    optimizer.learnRate = 0.05
    assert inner.learnRate == 0.05 and optimizer.momRate == inner.momRate
    assert all(m.backwardHook is None for m in net)
    with pytest.raises(ValueError, match="not set up on this net"):
        DataParallel(worker.buildModel(False, False, seed=1), inner)
    with pytest.raises(ValueError, match="bucketMB must be"):
        DataParallel(net, inner, bucketMB=0)


def test_backward_hook_runs_after_each_leaf_and_costs_nothing_unset(backend):
    net = worker.buildModel(False, False, seed=1)
    order = []
    for leaf in net:
        leaf.backwardHook = lambda m: order.append((m.name, m.grad is not None or m is net[0]))
    net(gpuarray.to_gpu(worker.batches(2, 1)[0][0]))
    net.backward(gpuarray.to_gpu(np.ones(net.data.shape, np.float32)), updGrad=False)
    assert [name for name, _ in order] == [m.name for m in reversed(list(net))]
    assert all(ok for _, ok in order)
    assert "backwardHook" not in vars(Linear(2, 2)) and Linear(2, 2).backwardHook is None


# ---- synchronised batch norm alone, and its backend ops ----------------------------------------------

@pytest.mark.parametrize("sync, local, shape", [(SyncBatchNorm2D, BatchNorm2D, (6, 5, 7, 7)),
                                                (SyncBatchNorm, BatchNorm, (9, 5))], ids=["2d", "1d"])
def test_sync_batchnorm_alone_computes_what_batchnorm_does(backend, sync, local, shape):
    x = np.random.randn(*shape).astype(np.float32) * 3 + 1
    dy = np.random.randn(*shape).astype(np.float32)
    a, b = local(5), sync(5)
    b.vars["scale"].data.set(a.vars["scale"].data.get())
    for step in range(2):
        for m in (a, b):
            m(gpuarray.to_gpu(x + step))
            m.backward(gpuarray.to_gpu(dy))
    for got, want in ((b.data, a.data), (b.grad, a.grad), (b.vars["scale"].grad, a.vars["scale"].grad),
                      (b.vars["bias"].grad, a.vars["bias"].grad), (b.attrs["mean"], a.attrs["mean"]),
                      (b.attrs["var"], a.attrs["var"])):
        np.testing.assert_allclose(got.get(), want.get(), rtol=1e-5, atol=1e-5)
    a.evalMode(), b.evalMode()
    np.testing.assert_array_equal(a(gpuarray.to_gpu(x)).get(), b(gpuarray.to_gpu(x)).get())
    # non-finite values pass through as BatchNorm2D passes them
    x.reshape(-1)[3], x.reshape(-1)[-1] = np.nan, np.inf
    with np.errstate(invalid="ignore", over="ignore"):
        for m in (a, b):
            m.trainMode()
            m(gpuarray.to_gpu(x))
            m.backward(gpuarray.to_gpu(dy))
    for got, want in ((b.data, a.data), (b.grad, a.grad), (b.vars["scale"].grad, a.vars["scale"].grad)):
        np.testing.assert_array_equal(np.isfinite(got.get()), np.isfinite(want.get()))


def test_convert_sync_batchnorm_keeps_variables_and_statistics():
    net = worker.buildModel(True, False, seed=1)
    bn = net["bn"]
    scale, mean = bn.vars["scale"], bn.attrs["mean"]
    convertSyncBatchNorm(net)
    assert type(net["bn"]) is SyncBatchNorm2D and type(net["bn1"]) is SyncBatchNorm
    assert net["bn"].vars["scale"] is scale and net["bn"].attrs["mean"] is mean and net["bn"].name == "bn"
    assert net.getBlueprint()["modules"]["bn"]["classname"] == "SyncBatchNorm2D"


def test_batchnorm_sum_ops_against_float64_formulas(backend):
    from minidl.backend import ops
    x = (np.random.randn(3, 4, 5, 6) * 2 + 1).astype(np.float32)
    dy = np.random.randn(3, 4, 5, 6).astype(np.float32)
    scale = np.random.randn(1, 4, 1, 1).astype(np.float32)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    mean, var = ops.batchNormMoments(gpuarray.to_gpu(x))
    np.testing.assert_allclose(mean.get(), x64.mean(axis=(0, 2, 3), keepdims=True), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var.get(), x64.var(axis=(0, 2, 3), keepdims=True), rtol=1e-5)
    m64, v64 = mean.get().astype(np.float64), var.get().astype(np.float64)
    xhat = (x64 - m64) / np.sqrt(v64 + 1e-5)
    dscale, dbias = ops.batchNormBackwardSums(gpuarray.to_gpu(x), gpuarray.to_gpu(dy), mean, var, 1e-5)
    np.testing.assert_allclose(dbias.get(), dy64.sum(axis=(0, 2, 3), keepdims=True), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dscale.get(), (dy64 * xhat).sum(axis=(0, 2, 3), keepdims=True), rtol=1e-5, atol=1e-5)
    # sums over a larger (here: 3x) population than x's own 90 values per channel
    gs, gb, count = dscale.get() * 3, dbias.get() * 3, 270
    dx = ops.batchNormBackwardData(gpuarray.to_gpu(x), gpuarray.to_gpu(dy), gpuarray.to_gpu(scale), mean, var,
                                   gpuarray.to_gpu(gs), gpuarray.to_gpu(gb), count, 1e-5)
    want = scale / np.sqrt(v64 + 1e-5) * (dy64 - (gb + xhat * gs) / count)
    np.testing.assert_allclose(dx.get(), want, rtol=1e-4, atol=1e-5)
    runMean = gpuarray.to_gpu(np.zeros((1, 4, 1, 1), np.float32))
    runVar = gpuarray.to_gpu(np.ones((1, 4, 1, 1), np.float32))
    ops.batchNormUpdateRunning(runMean, runVar, mean, var, count, 0.25)
    np.testing.assert_allclose(runMean.get(), 0.25 * m64, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(runVar.get(), 0.75 + 0.25 * v64 * count / (count - 1), rtol=1e-6)


def test_synchronize_averages_before_update_and_update_does_not_again(backend):
    cost = CrossEntropy()
    xs, ys = worker.batches(8, 2)
    net = worker.buildModel(False, False, seed=1)
    group = TwinGroup()
    optimizer = DataParallel(net, MomentumSGD(learnRate=0.1).setupOn(net), bucketMB=0.0005, group=group)
    net(gpuarray.to_gpu(xs[0]))
    cost(net.data, gpuarray.to_gpu(ys[0]))
    optimizer.zeroGradParams()
    net.backward(cost.grad, updGrad=False)
    optimizer.synchronize()             # what the Trainer does before clipping the gradients
    assert optimizer.stats.steps == 1
    with pytest.raises(Exception, match="after synchronize"):
        net.backward(cost.grad, updGrad=False)
    optimizer.update()
    assert optimizer.stats.steps == 1 and len(group.started) == len(optimizer._buckets)


def test_sync_batchnorm_exports_to_onnx_as_batchnorm():
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import minidl.onnx as mo
    from minidl.containers import Sequential
    net = Sequential("net").append(SyncBatchNorm2D(4, name="bn"))
    net["bn"].attrs["mean"].set(np.random.randn(1, 4, 1, 1).astype(np.float32))
    net["bn"].attrs["var"].set(np.random.uniform(0.5, 2, (1, 4, 1, 1)).astype(np.float32))
    x = np.random.randn(2, 4, 5, 3).astype(np.float32)
    got = ort.InferenceSession(mo.export(net, x.shape)).run(None, {"data": x})[0]
    net.evalMode()
    np.testing.assert_allclose(got, net(gpuarray.to_gpu(x)).get(), rtol=1e-5, atol=1e-6)
