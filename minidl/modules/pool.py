"""2-D pooling: MaxPool2D, AvgPool2D and GlobalAvgPool2D.

Input (N, C, H, W) -> (N, C, Ho, Wo), Ho = (H + 2*pad - size) // stride + 1.
Padding never wins a max; for AvgPool2D, includePad counts padded zeros in
the divisor (PuzzleLib's and PyTorch's count_include_pad). Ceil mode is not
supported.
"""

from minidl.backend import ops
from minidl.module import Module
from minidl.shapes import pair, positiveSize, windowOutSize2d


class Pool2D(Module):
    """What MaxPool2D and AvgPool2D share: the window's size, stride and pad, and the shape checks."""

    def __init__(self, size=2, stride=2, pad=0, name=None):
        super().__init__(name)
        kind = type(self).__name__
        self.size = positiveSize("%s: size" % kind, pair(size, "%s: size" % kind), 1)
        self.stride = positiveSize("%s: stride" % kind, pair(stride, "%s: stride" % kind), 1)
        self.pad = positiveSize("%s: pad" % kind, pair(pad, "%s: pad" % kind), 0)
        if self.pad[0] * 2 > self.size[0] or self.pad[1] * 2 > self.size[1]:
            raise ValueError("%s: pad must be at most half the window, got pad %s for size %s"
                             % (kind, self.pad, self.size))

    def checkDataShape(self, shape):
        self.checkRank(shape, 4, "(N, C, H, W)")
        out = self.dataShapeFrom(shape)
        if out[2] < 1 or out[3] < 1:
            raise self.error("input of shape %s is too small for window %s with pad %s"
                             % (tuple(shape), self.size, self.pad))

    def dataShapeFrom(self, shape):
        n, c, _, _ = shape
        return (n, c, *windowOutSize2d(shape, self.size, self.stride, self.pad, (1, 1)))


class MaxPool2D(Pool2D):
    """The maximum of each window: (N, C, H, W) -> (N, C, Ho, Wo), Ho = (H + 2*pad - size) // stride + 1.

    size (2), stride (2), pad (0): ints or (h, w) pairs, pad at most half the window; name: as for
    any Module. Not supported: ceil mode, dilation.

    Example::

        >>> pool = MaxPool2D(size=3, stride=2, pad=1)
        >>> pool(gpuarray.to_gpu(np.zeros((1, 4, 32, 32), np.float32))).shape
        (1, 4, 16, 16)
    """

    def __init__(self, size=2, stride=2, pad=0, name=None):
        super().__init__(size, stride, pad, name)
        self.registerBlueprint(locals())
        self.indices = None

    def reset(self):
        super().reset()
        self.indices = None

    def updateData(self, data):
        self.data, self.indices = ops.maxPool2d(data, self.size, self.stride, self.pad)

    def updateGrad(self, grad):
        self.grad = ops.maxPool2dBackward(grad, self.indices, self.inData.shape, self.size, self.stride, self.pad)


class AvgPool2D(Pool2D):
    """The mean of each window: (N, C, H, W) -> (N, C, Ho, Wo), Ho = (H + 2*pad - size) // stride + 1.

    size (2), stride (2), pad (0) as MaxPool2D's; includePad (True): padded zeros count in the
    divisor (PyTorch's count_include_pad); name: as for any Module. Not supported: ceil mode.

    Example::

        >>> pool = AvgPool2D(size=2, stride=2)
        >>> pool(gpuarray.to_gpu(np.ones((1, 4, 8, 8), np.float32))).shape
        (1, 4, 4, 4)
    """

    def __init__(self, size=2, stride=2, pad=0, includePad=True, name=None):
        super().__init__(size, stride, pad, name)
        self.registerBlueprint(locals())
        self.includePad = includePad

    def updateData(self, data):
        self.data = ops.avgPool2d(data, self.size, self.stride, self.pad, self.includePad)

    def updateGrad(self, grad):
        self.grad = ops.avgPool2dBackward(grad, self.inData.shape, self.size, self.stride, self.pad, self.includePad)


class GlobalAvgPool2D(Module):
    """Mean over each map: (N, C, H, W) -> (N, C, 1, 1), any H and W. name: as for any Module.

    Example::

        >>> GlobalAvgPool2D()(gpuarray.to_gpu(np.ones((2, 8, 7, 5), np.float32))).shape
        (2, 8, 1, 1)
    """

    def __init__(self, name=None):
        super().__init__(name)
        self.registerBlueprint(locals())

    def checkDataShape(self, shape):
        self.checkRank(shape, 4, "(N, C, H, W)")

    def dataShapeFrom(self, shape):
        return (shape[0], shape[1], 1, 1)

    def updateData(self, data):
        self.data = ops.avgPool2d(data, tuple(data.shape[2:]), (1, 1), (0, 0), True)

    def updateGrad(self, grad):
        shape = self.inData.shape
        self.grad = ops.avgPool2dBackward(grad, shape, tuple(shape[2:]), (1, 1), (0, 0), True)
