"""Process groups: the ranks of an MPI job, or this process alone.

``MPIGroup`` wraps an mpi4py communicator; ``LocalGroup`` is the single-process
stand-in with the same methods (reductions return their input), so code written
for many processes runs unchanged in one. Buffers are host numpy arrays (or,
on a CUDA-aware MPI, device arrays exposing ``__cuda_array_interface__``).

Every wait polls with a timeout instead of blocking in MPI: a rank that stopped
(failed, or took another path) makes the others raise ``DistributedTimeout``
naming what they waited for, rather than hang, and a waiting rank sleeps
between polls, which gives its core to the ranks still computing when there
are more ranks than cores (MPICH's own blocking waits spin).
"""

import os
import time

import numpy as np


class DistributedError(RuntimeError):
    """A failure of the processes' cooperation (a missing MPI, a rank that stopped answering)."""


class DistributedTimeout(DistributedError):
    """A wait for the other ranks ran past the group's timeout."""


# environment variables that MPI launchers set in the processes they start: hydra (MPICH, Intel
# MPI) and other PMI launchers, PMIx (Open MPI 5, Slurm), Open MPI's own, MVAPICH
LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")

DEFAULT_TIMEOUT = 300.0
SPIN_SECONDS = 2e-4     # a wait polls without sleeping this long first


def launchedByMPI(environ=os.environ):
    """Whether an MPI launcher (mpiexec, mpirun, srun with PMI) started this process: the name of the
    variable that says so, or None."""
    for name in LAUNCHER_VARIABLES:
        if name in environ:
            return name
    return None


def timeoutFromEnvironment(environ=os.environ):
    """MINIDL_DIST_TIMEOUT in seconds (a number > 0; 0 or 'none' for no timeout), DEFAULT_TIMEOUT when unset."""
    text = environ.get("MINIDL_DIST_TIMEOUT")
    if text is None:
        return DEFAULT_TIMEOUT
    if text.strip().lower() in ("0", "none"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError("MINIDL_DIST_TIMEOUT must be a number of seconds > 0 (or 0/none for no timeout), got %r"
                         % text)
    return value


class Request:
    """A started reduction: ``done()`` polls it without blocking (and lets MPI progress)."""

    def __init__(self, mpiRequest):
        self.mpiRequest = mpiRequest

    def done(self):
        return self.mpiRequest is None or self.mpiRequest.Test()


class LocalGroup:
    """This process alone (rank 0 of 1): every collective returns at once with its input."""

    rank, size, isMPI, cudaAware = 0, 1, False, False
    localRank, localSize = 0, 1
    timeout = None

    def dup(self):
        return self

    def allreduce(self, buf, what="allreduce"):
        return buf

    def iallreduce(self, buf):
        return Request(None)

    def waitall(self, requests, what="allreduce"):
        pass

    def allgather(self, buf, what="allgather"):
        return np.asarray(buf)[None]

    def bcast(self, buf, root=0, what="broadcast"):
        return buf

    def barrier(self, what="barrier"):
        pass

    def abort(self, code=1):
        os._exit(code)

    def __repr__(self):
        return "LocalGroup(rank 0 of 1)"


class MPIGroup:
    """The processes of an mpi4py communicator. Collectives must be called in the same order on every
    rank; a group made with ``dup()`` has its own order (DataParallel's gradient buckets and
    synchronised batch norm each use their own)."""

    isMPI = True

    def __init__(self, comm, timeout=DEFAULT_TIMEOUT, cudaAware=False):
        from mpi4py import MPI
        self.MPI = MPI
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.timeout = timeout
        self.cudaAware = cudaAware

    def dup(self):
        return MPIGroup(self.comm.Dup(), self.timeout, self.cudaAware)

    def iallreduce(self, buf):
        """Start summing buf (in place) over the ranks."""
        return Request(self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM))

    def waitall(self, requests, what="allreduce"):
        """Wait until every request is done; DistributedTimeout after the group's timeout."""
        reqs = [r.mpiRequest for r in requests if r.mpiRequest is not None]
        if not reqs:
            return
        start = time.monotonic()
        while not self.MPI.Request.Testall(reqs):
            waited = time.monotonic() - start
            if waited > SPIN_SECONDS:
                # a rank still computing needs the core more than this one needs to answer at once;
                # sleeping a tenth of the wait so far adds at most ~10% to it
                time.sleep(min(1e-3, 0.1 * waited))
                if self.timeout is not None and waited > self.timeout:
                    raise DistributedTimeout(
                        "minidl.distributed: rank %d of %d waited more than %g s for %s; another rank has "
                        "probably failed or stopped taking part (MINIDL_DIST_TIMEOUT sets the limit)"
                        % (self.rank, self.size, self.timeout, what))

    def allreduce(self, buf, what="allreduce"):
        """Sum buf in place over the ranks; returns buf."""
        self.waitall([self.iallreduce(buf)], what)
        return buf

    def allgather(self, buf, what="allgather"):
        """(size, *buf.shape): every rank's buf, in rank order."""
        buf = np.ascontiguousarray(buf)
        out = np.empty((self.size,) + buf.shape, buf.dtype)
        self.waitall([Request(self.comm.Iallgather(buf, out))], what)
        return out

    def bcast(self, buf, root=0, what="broadcast"):
        """Overwrite buf with root's, in place; returns buf."""
        self.waitall([Request(self.comm.Ibcast(buf, root=root))], what)
        return buf

    def barrier(self, what="barrier"):
        self.waitall([Request(self.comm.Ibarrier())], what)

    def abort(self, code=1):
        """End every rank of the job (MPI_Abort on the world communicator)."""
        self.MPI.COMM_WORLD.Abort(code)

    def __repr__(self):
        return "MPIGroup(rank %d of %d)" % (self.rank, self.size)


def queryCudaAware(environ=os.environ):
    """Whether the loaded MPI library takes device pointers: MINIDL_MPI_CUDA_AWARE=1/0 when set, else
    what MPIX_Query_cuda_support() answers (MPICH 4+, Open MPI), False where it cannot be asked."""
    forced = environ.get("MINIDL_MPI_CUDA_AWARE")
    if forced is not None:
        return forced.strip() not in ("", "0")
    import ctypes
    try:
        with open("/proc/self/maps") as maps:
            libraries = sorted({line.split()[-1] for line in maps if "/libmpi" in line and ".so" in line})
    except OSError:
        libraries = []
    for path in libraries:
        try:
            query = ctypes.CDLL(path).MPIX_Query_cuda_support
        except (OSError, AttributeError):
            continue
        query.restype = ctypes.c_int
        return bool(query())
    return False
