"""Variable: a trainable array and its gradient.

Gradients are true gradients of the loss (PyTorch's sign convention);
optimizers subtract them. ``learnRate`` and ``momRate`` are per-variable
multipliers of the optimizer's rates, ``wc`` the weight-decay factor
(L2: the optimizer adds ``wc * data`` to the gradient it uses).
"""

from minidl.backend import gpuarray


class Variable:
    def __init__(self, data, name=None, withgrad=True, grad=None, learnRate=1.0, momRate=1.0, wc=0.0):
        if not gpuarray.isArray(data):
            data = gpuarray.to_gpu(data)
        self.data = data
        self.name = name
        if grad is None and withgrad:
            grad = gpuarray.zeros(data.shape, data.dtype)
        self.grad = grad
        self.learnRate = learnRate
        self.momRate = momRate
        self.wc = wc

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self):
        return self.data.size

    def zeroGrad(self):
        if self.grad is not None:
            self.grad.fill(0)

    def __repr__(self):
        return "Variable(name=%r, shape=%s, dtype=%s)" % (self.name, self.data.shape, self.data.dtype)
