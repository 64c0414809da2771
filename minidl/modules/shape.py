"""Shape-only modules: Flatten, Reshape, Identity (views, no arithmetic)."""

from minidl.module import Module
from minidl.shapes import isInt


class Identity(Module):
    """Returns its input itself (any shape and dtype), and the gradient itself backward; name: as
    for any Module. A residual block's shortcut branch in a Parallel.

    Example::

        >>> x = gpuarray.to_gpu(np.ones((2, 3), np.float32))
        >>> Identity()(x) is x
        True
    """

    def __init__(self, name=None):
        super().__init__(name)
        self.registerBlueprint(locals())

    def checkDataType(self, dtype, what="input"):
        """Accept any dtype: Identity passes every array through (what: as for Module)."""

    def dataShapeFrom(self, shape):
        return shape

    def updateData(self, data):
        self.data = data

    def updateGrad(self, grad):
        self.grad = grad


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1*d2*...), a view; name: as for any Module.

    Example::

        >>> Flatten()(gpuarray.zeros((2, 8, 3, 3))).shape
        (2, 72)
    """

    def __init__(self, name=None):
        super().__init__(name)
        self.registerBlueprint(locals())

    def checkDataShape(self, shape):
        if isinstance(shape, list) or len(shape) < 2:
            raise self.error("expected input of rank >= 2, got shape %s" % (shape,))

    def dataShapeFrom(self, shape):
        size = 1
        for d in shape[1:]:
            size *= d
        return (shape[0], size)

    def updateData(self, data):
        self.data = data.reshape(self.dataShapeFrom(data.shape))

    def updateGrad(self, grad):
        self.grad = grad.reshape(self.inData.shape)


class Reshape(Module):
    """Reshape to ``shape``: 0 copies the input's dimension at that position, -1 (once) is inferred.
    name: as for any Module. The batch is not special: use 0 to keep it.

    Example::

        >>> Reshape((0, 4, -1))(gpuarray.zeros((2, 8, 3, 3))).shape
        (2, 4, 18)
    """

    def __init__(self, shape, name=None):
        super().__init__(name)
        self.registerBlueprint(locals())
        shape = tuple(shape)
        if sum(1 for d in shape if isInt(d) and d == -1) > 1 or any(not isInt(d) or d < -1 for d in shape):
            raise ValueError("Reshape: shape may hold ints >= 0 and at most one -1, got %r" % (shape,))
        self.shape = tuple(int(d) for d in shape)

    def dataShapeFrom(self, inshape):
        """The output shape for an input of shape inshape; ModuleError when the sizes disagree."""
        if isinstance(inshape, list):
            raise self.error("expected a single array, got a list")
        out = []
        for i, d in enumerate(self.shape):
            if d == 0:
                if i >= len(inshape):
                    raise self.error("0 at position %d copies a dimension the input %s does not have"
                                     % (i, tuple(inshape)))
                d = inshape[i]
            out.append(d)
        total = 1
        for d in inshape:
            total *= d
        known = 1
        for d in out:
            known *= d if d != -1 else 1
        if -1 in out:
            if known == 0 or total % known:
                raise self.error("cannot reshape input of shape %s to %s" % (tuple(inshape), self.shape))
            out[out.index(-1)] = total // known
        elif known != total:
            raise self.error("cannot reshape input of shape %s to %s" % (tuple(inshape), self.shape))
        return tuple(out)

    def checkDataShape(self, shape):
        self.dataShapeFrom(shape)

    def updateData(self, data):
        self.data = data.reshape(self.dataShapeFrom(data.shape))

    def updateGrad(self, grad):
        self.grad = grad.reshape(self.inData.shape)
