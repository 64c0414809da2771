"""The PyCUDA backend. Importing this package never imports pycuda; ``load()``
does, checks that a driver and a device answer, creates the backend's own
context and returns the ops module (``minidl.backend.cuda.ops``)."""

from minidl.errors import BackendError

_HOWTO = ("install pycuda (pip install 'minidl[cuda]', or offline with scripts/download_pycuda.sh and "
          "scripts/install_pycuda.sh), or run on the NumPy backend with MINIDL_BACKEND=numpy")


def load():
    try:
        import pycuda.driver as drv
    except ImportError as e:
        raise BackendError("CUDA backend unavailable: pycuda is not importable (%s); %s" % (e, _HOWTO)) from None
    try:
        drv.init()
    except Exception as e:  # pycuda raises its own driver errors (or a RuntimeError without libcuda)
        raise BackendError("CUDA backend unavailable: the CUDA driver did not initialise (%s); check that the "
                           "NVIDIA driver is installed and libcuda.so is on the loader path, or use "
                           "MINIDL_BACKEND=numpy" % e) from None
    if drv.Device.count() == 0:
        raise BackendError("CUDA backend unavailable: the driver found no CUDA device; use MINIDL_BACKEND=numpy")
    from minidl.backend.cuda import context
    context.ensureContext()
    from minidl.backend.cuda import ops
    return ops
