"""Backend selection.

``MINIDL_BACKEND=numpy|cuda|auto`` picks the backend at first use (default
``auto``: CUDA when pycuda imports and a device answers, else NumPy);
``setBackend(name)`` switches at run time, so one process can exercise both.
Modules reach the current backend's ops through ``minidl.backend.ops``; the
CUDA package is imported only when selected, so importing minidl never needs
pycuda.

Arrays belong to the backend that made them: build (or reload) a model after
switching backends.
"""

import importlib
import os

from minidl.errors import BackendError

_current = None
_currentName = None


def _loadCuda():
    # raises BackendError saying why (pycuda missing, no driver, no device) and what to do
    return importlib.import_module("minidl.backend.cuda").load()


def _load(name):
    if name == "numpy":
        module = importlib.import_module("minidl.backend.numpy")
        from minidl.backend.numpy import jit, notices
        if not jit.enabled:
            notices.withoutKernels(jit.disabledBy)    # once per process (MINIDL_QUIET=1: never)
        jit.configure()     # process-wide thread settings, now that this backend is chosen
        return module
    if name == "cuda":
        return _loadCuda()
    raise BackendError("unknown backend %r: expected one of numpy, cuda, auto" % (name,))


def setBackend(name):
    """Select the backend for everything created from now on; returns its name.

    name: "numpy", "cuda" or "auto" (any case). "auto" takes CUDA when it
    loads, else NumPy. Asking for "cuda" where it cannot load raises
    BackendError with the reason; another name raises BackendError too.

    Example::

        >>> minidl.setBackend("numpy"), minidl.backendName()
        ('numpy', 'numpy')
    """
    global _current, _currentName
    name = name.lower()
    if name == "auto":
        try:
            _current, _currentName = _loadCuda(), "cuda"
        except BackendError:
            _current, _currentName = _load("numpy"), "numpy"
    else:
        _current, _currentName = _load(name), name
    return _currentName


def current():
    """The module implementing the current backend's ops."""
    if _current is None:
        setBackend(os.environ.get("MINIDL_BACKEND", "auto"))
    return _current


def backendName():
    """The current backend's name, "numpy" or "cuda"; on first use it selects the backend that
    MINIDL_BACKEND names (default "auto")."""
    current()
    return _currentName


def cudaAvailable():
    """True when the CUDA backend can be loaded here (pycuda importable, a device present)."""
    try:
        _loadCuda()
    except BackendError:
        return False
    return True


class _Ops:
    """Forwards attribute access to the current backend, so modules never
    import a backend directly and a backend switch takes effect at once."""

    def __getattr__(self, name):
        return getattr(current(), name)

    def __dir__(self):
        from minidl.backend import interface
        return interface.opNames()


ops = _Ops()
