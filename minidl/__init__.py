"""minidl: a small deep-learning framework with PuzzleLib's API, a NumPy backend
and a PyCUDA backend behind one seam (see minidl.backend).

Gradients everywhere are true gradients of the loss (PyTorch's sign);
optimizers subtract them.
"""

from minidl.anomaly import detectAnomaly  # noqa: F401
from minidl.backend import backendName, setBackend  # noqa: F401
from minidl.errors import BackendError, LoadError, ModuleError  # noqa: F401
from minidl.nograd import noGrad  # noqa: F401

__version__ = "0.1.0"


def load(source):
    """Rebuild a model from a weights file that stores its blueprint, weights loaded (minidl.blueprint).

    ``model = minidl.load("net.h5")`` needs no code of the model: ``model.save(path)`` stores the
    architecture beside the weights. source: a path, the file's bytes or an open h5py.File.
    LoadError when the file has none or cannot be trusted to build.

    Example::

        >>> from minidl.modules import Linear
        >>> Linear(4, 2, name="fc").save("fc.h5")
        >>> minidl.load("fc.h5")
        Linear(name='fc')
    """
    from minidl.blueprint import load as _load
    return _load(source)
