"""Variable: a trainable array and its gradient.

Gradients are true gradients of the loss (PyTorch's sign convention);
optimizers subtract them. ``learnRate`` and ``momRate`` are per-variable
multipliers of the optimizer's rates, ``wc`` the weight-decay factor
(L2: the optimizer adds ``wc * data`` to the gradient it uses). The three
are finite and >= 0 (ValueError otherwise); the dtype and shape a module
expects are checked by ``Module.setVar``.
"""

from minidl.backend import gpuarray
from minidl.shapes import realInRange


class Variable:
    """A trainable array ``data`` and its gradient ``grad``, the true gradient of the loss.

    data: a backend array, used as it is, or anything numpy takes (copied to the backend); name
    (None): for messages; grad (None): the gradient array, else a zero one is made unless withgrad
    is False; learnRate (1.0), momRate (1.0): multipliers of the optimizer's rates; wc (0.0): L2
    weight decay. Modules' parameters are float32 (``Module.setVar`` checks).

    Example::

        >>> w = Variable(np.ones((3, 2), np.float32), name="W", learnRate=0.1)
        >>> w.shape, w.grad.shape, float(w.grad.get().sum())
        ((3, 2), (3, 2), 0.0)
    """

    def __init__(self, data, name=None, withgrad=True, grad=None, learnRate=1.0, momRate=1.0, wc=0.0):
        owner = "Variable %r" % name if name is not None else "Variable"
        self.learnRate = realInRange(owner, "learnRate", learnRate, 0)
        self.momRate = realInRange(owner, "momRate", momRate, 0)
        self.wc = realInRange(owner, "wc", wc, 0)
        if not gpuarray.isArray(data):
            data = gpuarray.to_gpu(data)
        self.data = data
        self.name = name
        if grad is None and withgrad:
            grad = gpuarray.zeros(data.shape, data.dtype)
        self.grad = grad

    @property
    def shape(self):
        """data's shape."""
        return self.data.shape

    @property
    def dtype(self):
        """data's dtype."""
        return self.data.dtype

    @property
    def size(self):
        """The number of elements of data."""
        return self.data.size

    def zeroGrad(self):
        """Fill grad with zeros (nothing when there is none)."""
        if self.grad is not None:
            self.grad.fill(0)

    def __repr__(self):
        return "Variable(name=%r, shape=%s, dtype=%s)" % (self.name, self.data.shape, self.data.dtype)
