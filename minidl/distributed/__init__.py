"""Data-parallel training over many processes, with MPI (mpi4py) underneath.

One script runs both ways::

    python train.py                  # one process: every call below is a no-op or the identity
    mpiexec -n 4 python train.py     # four ranks, each training on its quarter of every batch

    from minidl import distributed
    distributed.init()                                   # MPI when an MPI launcher started us
    net = distributed.convertSyncBatchNorm(net)          # optional: batch statistics over all ranks
    optimizer.setupOn(net, useGlobalState=True)
    optimizer = distributed.DataParallel(net, optimizer) # broadcasts rank 0's weights; averages gradients
    sampler = distributed.DistributedSampler(len(trainX), seed=0)
    for epoch in range(epochs):
        shard = sampler.indices(epoch)                   # this rank's slice, reshuffled every epoch
        loss = trainer.trainFromHost(trainX[shard], trainY[shard], macroBatchSize=len(shard), random=False)
        loss = distributed.average(loss, len(shard))     # the same global figure on every rank
        if distributed.isMain():
            print(epoch, loss)
    distributed.saveOnMain(net, "net.h5")                # rank 0 writes; every rank may load it afterwards

``init()`` decides once: under mpiexec/mpirun (the launcher's PMI_RANK, PMIX_RANK or
OMPI_COMM_WORLD_SIZE in the environment) it imports mpi4py and joins the job, and refuses with a
DistributedError when mpi4py is missing (rather than run N copies that never talk); otherwise it
runs alone and never imports mpi4py. ``MINIDL_DISTRIBUTED=mpi`` or ``=none`` overrides the guess.
Importing minidl (or this package) never imports mpi4py: ``pip install 'minidl[mpi]'`` adds it.

Under MPI, ``init()`` also makes a failing rank end the whole job: an uncaught exception prints
``minidl.distributed: rank R of N failed`` with its traceback and, half a second later (time for
the launcher to forward it), MPI_Abort stops every rank (they would otherwise wait forever for the
failed one in their next collective). Waits poll with a timeout (MINIDL_DIST_TIMEOUT seconds, 300
by default, 0 for none), so a rank that stops without an exception (an early ``sys.exit``) makes
the others raise DistributedTimeout, and abort.

The pieces: ``DataParallel`` (minidl/distributed/dataparallel.py: bucketed, overlapped gradient
averaging; its docstring says how), ``SyncBatchNorm2D`` (minidl/modules/syncbatchnorm.py),
``DistributedSampler`` (minidl/distributed/sampler.py) and the small functions here.
"""

import os
import sys
import time
import traceback

import numpy as np

from minidl.distributed.dataparallel import DataParallel  # noqa: F401
from minidl.distributed.group import (  # noqa: F401
    DistributedError, DistributedTimeout, LocalGroup, MPIGroup, launchedByMPI, queryCudaAware,
    timeoutFromEnvironment,
)
from minidl.distributed.sampler import DistributedSampler  # noqa: F401

_group = None

# seconds a failing rank waits, after writing its traceback, before MPI_Abort (_installAbortHook)
ABORT_GRACE_S = 0.5


def init(mode=None, timeout=None):
    """Join the MPI job this process was launched in, or run alone; returns the world group.

    mode: None (MINIDL_DISTRIBUTED, else "auto"), "auto" (MPI when an MPI launcher started this
    process), "mpi" (always: a lone process becomes a job of one) or "none" (never). timeout: seconds
    a rank waits for the others before DistributedTimeout (None: MINIDL_DIST_TIMEOUT, else 300).
    Calling it again returns the same group. Under MPI with more than one rank it installs the
    abort-on-failure excepthook (the module docstring)."""
    global _group
    if _group is not None:
        return _group
    mode = (mode if mode is not None else os.environ.get("MINIDL_DISTRIBUTED", "auto")).lower()
    if mode not in ("auto", "mpi", "none"):
        raise ValueError("minidl.distributed.init: mode must be 'auto', 'mpi' or 'none', got %r" % (mode,))
    launcher = launchedByMPI()
    if mode == "none" or (mode == "auto" and launcher is None):
        _group = LocalGroup()
        return _group
    try:
        from mpi4py import MPI
    except ImportError as e:
        why = "launched by an MPI launcher (%s is set)" % launcher if launcher else "MINIDL_DISTRIBUTED=mpi"
        raise DistributedError("minidl.distributed: %s, but mpi4py cannot be imported (%s); pip install "
                               "'minidl[mpi]' (mpi4py and mpich), or run without mpiexec" % (why, e)) from None
    world = MPI.COMM_WORLD
    _group = MPIGroup(world.Dup(), timeout if timeout is not None else timeoutFromEnvironment(), queryCudaAware())
    node = world.Split_type(MPI.COMM_TYPE_SHARED)
    _group.localRank, _group.localSize = node.Get_rank(), node.Get_size()
    node.Free()
    if _group.size > 1:
        _installAbortHook(_group)
    return _group


def group():
    """The world group (init() with its defaults when not called yet)."""
    return _group if _group is not None else init()


def rank():
    """This process's rank, 0 to size() - 1 (0 alone)."""
    return group().rank


def size():
    """The number of processes in the job (1 alone)."""
    return group().size


def isMain():
    """Whether this is rank 0: the one that prints and writes files."""
    return group().rank == 0


def localRank():
    """This process's rank among the ranks on its machine (0 alone): with several GPUs per machine, set
    ``os.environ["MINIDL_DEVICE"] = str(distributed.localRank())`` before the first array is made."""
    return getattr(group(), "localRank", 0)


def barrier():
    """Wait until every rank gets here (with the group's timeout)."""
    group().barrier()


def allreduceSum(value):
    """The sum over the ranks of a number or numpy array (the same on every rank), as float or float64
    array."""
    buf = np.array(value, dtype=np.float64, ndmin=1)
    group().allreduce(buf, "allreduceSum")
    return float(buf[0]) if np.ndim(value) == 0 else buf.reshape(np.shape(value))


def average(value, weight=1.0):
    """The mean over the ranks of a per-rank figure, each weighted by weight (its sample count, say),
    as a float on every rank: a metric of the whole dataset from each rank's share. weight 0 on
    every rank gives NaN."""
    total = allreduceSum(np.array([float(value) * weight, weight]))
    return float(total[0] / total[1]) if total[1] != 0 else float("nan")


def saveOnMain(obj, path, **kwargs):
    """obj.save(path, **kwargs) on rank 0 only, then a barrier, so every rank may load path next
    (Module and optimizer files alike)."""
    if isMain():
        obj.save(path, **kwargs)
    barrier()


def convertSyncBatchNorm(net):
    """net with every BatchNorm2D and BatchNorm replaced by its synchronised twin (SyncBatchNorm2D,
    SyncBatchNorm) holding the same Variables and statistics; a lone batch-norm module comes back
    converted. See minidl/modules/syncbatchnorm.py."""
    from minidl.modules.syncbatchnorm import convertSyncBatchNorm as convert
    return convert(net)


def _installAbortHook(world):
    def abortOnFailure(kind, value, tb):
        try:
            text = "".join(traceback.format_exception(kind, value, tb))
            sys.stderr.write("minidl.distributed: rank %d of %d failed; aborting every rank\n%s"
                             % (world.rank, world.size, text))
            sys.stderr.flush()
            sys.stdout.flush()
            # The launcher forwards this rank's output from a pipe, and MPICH's hydra kills every rank
            # on MPI_Abort without draining it first: without a pause the message was lost in about
            # one failure in seven (tests/test_distributed.py). Only a failing job pays it.
            time.sleep(ABORT_GRACE_S)
        finally:
            world.abort(1)
    sys.excepthook = abortOnFailure
