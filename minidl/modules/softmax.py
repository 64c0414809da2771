"""SoftMax over axis 1 of (N, C) or (N, C, H, W). For training with class
labels use minidl.cost.CrossEntropy on raw scores instead (fused and stable)."""

from minidl.backend import ops
from minidl.module import Module


class SoftMax(Module):
    """Softmax over axis 1 of (N, C) or (N, C, H, W) float32 data; same shape out. name: as for any
    Module. Not supported: other axes. To train on labels, give raw scores to CrossEntropy instead.

    Example::

        >>> p = SoftMax()(gpuarray.to_gpu(np.zeros((2, 4), np.float32)))
        >>> p.get()[0]
        array([0.25, 0.25, 0.25, 0.25], dtype=float32)
    """

    def __init__(self, name=None):
        super().__init__(name)
        self.registerBlueprint(locals())

    def checkDataShape(self, shape):
        if isinstance(shape, list) or len(shape) not in (2, 4):
            raise self.error("expected (N, C) or (N, C, H, W) input, got shape %s" % (shape,))

    def dataShapeFrom(self, shape):
        return tuple(shape)

    def updateData(self, data):
        self.data = ops.softmax(data)

    def updateGrad(self, grad):
        self.grad = ops.softmaxBackward(self.data, grad)
