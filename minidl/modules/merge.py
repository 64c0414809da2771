"""Modules that split or join branches: Replicate, Add, Concat, Mul.

MobileNetV2's residual block is Replicate(2) -> Parallel(body, Identity) -> Add().
"""

from minidl.backend import ops
from minidl.module import Module
from minidl.shapes import positiveInt


class Replicate(Module):
    """One input -> a list of ``times`` references to it; backward sums the branch gradients.

    times: a positive int; name: as for any Module. Any single array in (not a list).

    Example::

        >>> x = gpuarray.to_gpu(np.ones((2, 3), np.float32))
        >>> [y is x for y in Replicate(2)(x)]
        [True, True]
    """

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
    """A list of at least 2 same-shaped arrays -> their sum; backward hands the gradient to every
    input. name: as for any Module.

    Example::

        >>> x = gpuarray.to_gpu(np.ones((2, 3), np.float32))
        >>> Add()([x, x, x]).get()[0]
        array([3., 3., 3.], dtype=float32)
    """

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
    """A list of arrays -> one array joined along ``axis`` (an int, negative counting from the end);
    the arrays differ only along it. name: as for any Module. Backward splits the gradient.

    Example::

        >>> a, b = gpuarray.zeros((2, 3, 4, 4)), gpuarray.zeros((2, 5, 4, 4))
        >>> Concat(axis=1)([a, b]).shape
        (2, 8, 4, 4)
    """

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


class Mul(Module):
    """A list of 2 arrays [a, b] -> their elementwise product a * b: squeeze-and-excitation's gate.

    b has a's shape, or (N, C, 1, ..., 1) for a of shape (N, C, ...) (rank 3 or more): one factor per
    map, broadcast over the map's positions, as PyTorch's ``scale * input`` in MobileNetV3. The
    output has a's shape; backward gives [d a, d b], the latter summed over the positions b was
    broadcast to. name: as for any Module. A single array, a list of another length, or a b of any
    other shape raises ModuleError naming both shapes.

    Example::

        >>> x = gpuarray.to_gpu(np.ones((1, 2, 2, 2), np.float32))
        >>> gate = gpuarray.to_gpu(np.array([2, 3], np.float32).reshape(1, 2, 1, 1))
        >>> Mul(name="scale")([x, gate]).get()[0, :, 0, 0]
        array([2., 3.], dtype=float32)
    """

    def __init__(self, name=None):
        super().__init__(name)
        self.registerBlueprint(locals())

    def checkDataShape(self, shape):
        if not isinstance(shape, list) or len(shape) != 2 or any(isinstance(s, list) for s in shape):
            raise self.error("expected a list of 2 arrays [a, b], got %s"
                             % ("a list of %d" % len(shape) if isinstance(shape, list) else
                                "a single array of shape %s" % (tuple(shape),)))
        a, b = (tuple(s) for s in shape)
        perMap = len(a) >= 3 and b == a[:2] + (1,) * (len(a) - 2)
        if b != a and not perMap:
            if len(a) < 3:
                raise self.error("expected b of a's shape %s, got a %s and b %s" % (a, a, b))
            raise self.error("expected b of a's shape %s or one value per map %s, got a %s and b %s"
                             % (a, a[:2] + (1,) * (len(a) - 2), a, b))

    def dataShapeFrom(self, shape):
        return tuple(shape[0])

    def updateData(self, data):
        self.data = ops.mul(data[0], data[1])

    def updateGrad(self, grad):
        self.grad = list(ops.mulBackward(self.inData[0], self.inData[1], grad))
