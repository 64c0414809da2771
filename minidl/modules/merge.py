"""Modules that split or join branches: Replicate, Add, Concat.

MobileNetV2's residual block is Replicate(2) -> Parallel(body, Identity) -> Add().
"""

from minidl.backend import ops
from minidl.module import Module
from minidl.shapes import positiveInt


class Replicate(Module):
    """One input -> a list of ``times`` references to it; backward sums the branch gradients."""

    def __init__(self, times, name=None):
        super().__init__(name)
        self.registerBlueprint(locals())
        self.times = positiveInt("Replicate", "times", times)

    def checkDataShape(self, shape):
        if isinstance(shape, list):
            raise self.error("expected a single array, got a list of %d" % len(shape))

    def dataShapeFrom(self, shape):
        return [tuple(shape)] * self.times

    def updateData(self, data):
        self.data = [data] * self.times

    def updateGrad(self, grad):
        self.grad = ops.addArrays(list(grad))


class Add(Module):
    """A list of same-shaped arrays -> their sum; backward hands the gradient to every input."""

    def __init__(self, name=None):
        super().__init__(name)
        self.registerBlueprint(locals())

    def checkDataShape(self, shape):
        if not isinstance(shape, list) or len(shape) < 2:
            raise self.error("expected a list of at least 2 arrays, got %s" % (shape,))
        if any(tuple(s) != tuple(shape[0]) for s in shape):
            raise self.error("expected arrays of one shape, got %s" % ", ".join(str(tuple(s)) for s in shape))

    def dataShapeFrom(self, shape):
        return tuple(shape[0])

    def updateData(self, data):
        self.data = ops.addArrays(list(data))

    def updateGrad(self, grad):
        self.grad = [grad] * len(self.inData)


class Concat(Module):
    """A list of arrays -> one array joined along ``axis``."""

    def __init__(self, axis, name=None):
        super().__init__(name)
        self.registerBlueprint(locals())
        self.axis = axis

    def checkDataShape(self, shape):
        if not isinstance(shape, list) or len(shape) < 1:
            raise self.error("expected a list of arrays, got %s" % (shape,))
        ref = list(shape[0])
        if not -len(ref) <= self.axis < len(ref):
            raise self.error("axis %d is out of range for rank %d" % (self.axis, len(ref)))
        axis = self.axis % len(ref)
        for s in shape:
            if len(s) != len(ref) or any(a != b for i, (a, b) in enumerate(zip(s, ref)) if i != axis):
                raise self.error("expected arrays that differ only along axis %d, got %s"
                                 % (self.axis, ", ".join(str(tuple(x)) for x in shape)))

    def dataShapeFrom(self, shape):
        out = list(shape[0])
        axis = self.axis % len(out)
        out[axis] = sum(s[axis] for s in shape)
        return tuple(out)

    def updateData(self, data):
        self.data = ops.concat(list(data), self.axis)

    def updateGrad(self, grad):
        axis = self.axis % grad.ndim
        self.grad = ops.split(grad, [x.shape[axis] for x in self.inData], axis)
