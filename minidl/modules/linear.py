"""Linear(insize, outsize): y = x @ W + b with W (insize, outsize), b (outsize,).

Input (N, insize) float32 -> (N, outsize). Higher-rank input is not flattened
implicitly: put a Flatten in front. insize and outsize are positive ints
(Python or numpy integers), wscale a finite number > 0; anything else raises
ValueError.
"""

from minidl.backend import gpuarray, ops
from minidl.initschemes import initWeight, parseScheme
from minidl.module import Module
from minidl.shapes import positiveInt, realInRange
from minidl.variable import Variable


class Linear(Module):
    """A fully connected layer, y = x @ W + b.

    insize, outsize: features in and out; wscale (1.0), initscheme (None) and empty (False) as
    Conv2D's; useBias (True): add b; name: as for any Module. W is (insize, outsize), PuzzleLib's
    layout (PyTorch's weight is its transpose); b is (outsize,). Input (N, insize) -> (N, outsize).

    Example::

        >>> fc = Linear(16, 10)
        >>> fc(gpuarray.to_gpu(np.zeros((4, 16), np.float32))).shape, fc.W.shape, fc.b.shape
        ((4, 10), (16, 10), (10,))
    """

    def __init__(self, insize, outsize, wscale=1.0, useBias=True, initscheme=None, name=None, empty=False):
        super().__init__(name)
        self.registerBlueprint(locals())
        insize, outsize = positiveInt("Linear", "insize", insize), positiveInt("Linear", "outsize", outsize)
        realInRange("Linear", "wscale", wscale, 0, lowOpen=True)
        parseScheme(initscheme)
        self.insize, self.outsize, self.useBias = insize, outsize, useBias
        self.setVar("W", Variable(initWeight(initscheme, (insize, outsize), wscale, empty)))
        if useBias:
            self.setVar("b", Variable(gpuarray.zeros((outsize,))))

    def checkDataShape(self, shape):
        self.checkRank(shape, 2, "(N, insize)")
        if shape[1] != self.insize:
            raise self.error("expected input with %d features, got shape %s" % (self.insize, tuple(shape)))

    def dataShapeFrom(self, shape):
        return (shape[0], self.outsize)

    def macs(self, inshape, outshape):
        return inshape[0] * self.insize * self.outsize

    def updateData(self, data):
        self.data = ops.linear(data, self.vars["W"].data, self.vars["b"].data if self.useBias else None)

    def updateGrad(self, grad):
        self.grad = ops.linearBackwardData(grad, self.vars["W"].data)

    def accGradParams(self, grad):
        ops.linearBackwardParams(self.inData, grad, self.vars["W"].grad,
                                 self.vars["b"].grad if self.useBias else None)
