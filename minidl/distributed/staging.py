"""Getting a bucket of gradient arrays to MPI and back, on either backend.

A bucket's ``Transfer`` owns ``buffer``, the float32 array MPI sums in place:
``pack()`` fills it from the gradients, ``unpack(scale)`` writes buffer * scale
back. Which one a bucket gets is decided here, once, from its arrays:

- HostView (NumPy backend, gradients packed by ``setupOn(net, useGlobalState=True)``):
  the gradients are consecutive segments of one flat buffer, so ``buffer`` is a
  view of that run and nothing is copied (the zero padding between segments
  stays zero under a sum);
- HostCopy (NumPy backend otherwise): one staging array, copied in and out;
- DeviceStaged (CUDA backend): staged through host memory, one copy each way
  for a packed run, one per gradient otherwise; works with any MPI. The copy
  down waits for the kernels that wrote the gradients (a synchronisation
  per bucket);
- DeviceDirect (CUDA backend, CUDA-aware MPI): MPI reads and writes device
  memory (through ``__cuda_array_interface__``), after a context
  synchronisation so the gradients are complete.

Whether the MPI is CUDA-aware is asked once, at init (group.queryCudaAware:
``MPIX_Query_cuda_support()`` of the loaded libmpi; MINIDL_MPI_CUDA_AWARE=1/0
overrides). The mpich wheel is not, so GPUs stage through host memory.

What NCCL would add, and where it would go: reductions that stay on the GPUs
(NVLink, PCIe peer copies, GPUDirect RDMA over InfiniBand) as kernels on a
stream of their own, ordered after backward's kernels by an event recorded
when a bucket's last gradient is written, so neither the host copies nor the
per-bucket synchronisation above remain, and topology-aware ring and tree
algorithms. It plugs in as a group and a transfer: an ``NCCLGroup`` with the
methods of group.MPIGroup (its ``iallreduce`` enqueues ncclAllReduce on its
stream and returns a Request whose ``done()`` queries an event; the
communicator is bootstrapped by broadcasting ncclGetUniqueId's bytes over the
MPI world group) and a transfer like DeviceDirect without the synchronisation
(it records the event instead). DataParallel and synchronised batch norm are
unchanged: they only call the group's methods. It needs a binding of libnccl
(a ctypes one, as minidl's cuBLAS binding, or cupy's).
"""

import numpy as np

from minidl.optimizers.globalstate import ALIGN

_ITEM = 4   # float32


def _address(a):
    return a.__array_interface__["data"][0] if isinstance(a, np.ndarray) else int(a.gpudata)


def rootOf(a):
    """The array a is a view of (numpy's or pycuda's base chain), a itself when it owns its memory."""
    while True:
        base = getattr(a, "base", None)
        if base is None or not (isinstance(base, np.ndarray) if isinstance(a, np.ndarray) else type(base) is type(a)):
            return a
        a = base


def packedRun(arrays):
    """(root, start, stop) in elements when the arrays are consecutive segments of one flat float32
    buffer as globalstate lays them out (each segment padded to ALIGN elements), else None."""
    roots = {id(rootOf(a)): rootOf(a) for a in arrays}
    if len(roots) != 1:
        return None
    root = next(iter(roots.values()))
    if len(root.shape) != 1 or root.dtype != np.float32 or not root.flags.c_contiguous:
        return None
    base = _address(root)
    spans = sorted(((_address(a) - base) // _ITEM, a.size) for a in arrays)
    for (offset, size), (nextOffset, _) in zip(spans, spans[1:]):
        if nextOffset != offset + -(-size // ALIGN) * ALIGN:
            return None
    if any(not a.flags.c_contiguous or a.dtype != np.float32 for a in arrays):
        return None
    return root, spans[0][0], spans[-1][0] + spans[-1][1]


def _offsets(arrays):
    offsets, total = [], 0
    for a in arrays:
        offsets.append(total)
        total += a.size
    return offsets, total


class HostView:
    def __init__(self, root, start, stop):
        self.buffer = np.asarray(root)[start:stop]

    def pack(self):
        pass

    def unpack(self, scale):
        np.multiply(self.buffer, np.float32(scale), out=self.buffer)


class HostCopy:
    def __init__(self, arrays):
        self.arrays = arrays
        self.offsets, total = _offsets(arrays)
        self.buffer = np.empty(total, np.float32)

    def pack(self):
        for a, o in zip(self.arrays, self.offsets):
            self.buffer[o:o + a.size] = np.asarray(a).reshape(-1)

    def unpack(self, scale):
        for a, o in zip(self.arrays, self.offsets):
            np.multiply(self.buffer[o:o + a.size].reshape(a.shape), np.float32(scale), out=np.asarray(a))


class DeviceStaged:
    def __init__(self, arrays):
        from minidl.backend.cuda import context
        self.context = context
        self.arrays = arrays
        run = packedRun(arrays)
        self.span = run[0][run[1]:run[2]] if run is not None else None
        self.offsets, total = _offsets(arrays)
        self.buffer = np.empty(self.span.size if self.span is not None else total, np.float32)

    def pack(self):
        self.context.activate()
        if self.span is not None:
            self.span.get(ary=self.buffer)
        else:
            for a, o in zip(self.arrays, self.offsets):
                a.get(ary=self.buffer[o:o + a.size].reshape(a.shape))

    def unpack(self, scale):
        np.multiply(self.buffer, np.float32(scale), out=self.buffer)
        self.context.activate()
        if self.span is not None:
            self.span.set(self.buffer)
        else:
            for a, o in zip(self.arrays, self.offsets):
                a.set(self.buffer[o:o + a.size].reshape(a.shape))


class DeviceDirect:
    def __init__(self, arrays):
        import pycuda.driver as drv
        from minidl.backend import gpuarray
        from minidl.backend.cuda import context
        self.drv, self.context = drv, context
        self.arrays = arrays
        run = packedRun(arrays)
        self.offsets, total = _offsets(arrays)
        self.buffer = run[0][run[1]:run[2]] if run is not None else gpuarray.empty((total,), np.float32)
        self.staged = run is None

    def pack(self):
        self.context.activate()
        if self.staged:
            for a, o in zip(self.arrays, self.offsets):
                self.drv.memcpy_dtod(int(self.buffer.gpudata) + o * _ITEM, int(a.gpudata), a.nbytes)
        self.drv.Context.synchronize()      # MPI reads the memory behind the driver's back

    def unpack(self, scale):
        from minidl.backend import ops
        ops.axpy(self.buffer, self.buffer, scale - 1.0)       # buffer *= scale
        self.context.activate()
        if self.staged:
            for a, o in zip(self.arrays, self.offsets):
                self.drv.memcpy_dtod(int(a.gpudata), int(self.buffer.gpudata) + o * _ITEM, a.nbytes)


def transferFor(arrays, cudaAware=False):
    """The Transfer for a bucket of float32 gradient arrays of the current backend."""
    if all(isinstance(a, np.ndarray) for a in arrays):
        run = packedRun(arrays)
        return HostView(*run) if run is not None else HostCopy(arrays)
    return DeviceDirect(arrays) if cudaAware else DeviceStaged(arrays)


def toHost(arrays):
    """One float32 host vector of the arrays' contents, one after another (broadcasts, sums)."""
    return np.concatenate([np.asarray(a.get(), np.float32).reshape(-1) for a in arrays]) if arrays \
        else np.empty(0, np.float32)


def fromHost(arrays, flat):
    """Write toHost's layout back into the arrays."""
    offset = 0
    for a in arrays:
        a.set(flat[offset:offset + a.size].reshape(a.shape))
        offset += a.size
