"""Resampling layers: Upsample2D (nearest and bilinear, integer scales) and Pad2D (constant,
reflect and replicate borders), each with PyTorch's semantics.

Shapes: Upsample2D (N, C, H, W) -> (N, C, H*scale_h, W*scale_w); Pad2D (N, C, H, W) ->
(N, C, H + top + bottom, W + left + right). Both have no parameters; their backward passes send
each output's gradient to the input pixels it was made from (so a border pixel's gradient adds into
the pixel it copies).

Not supported: fractional or downsampling scales, bilinear with align_corners=True, negative
padding (cropping), circular padding, float16/float64 data.
"""

from minidl.backend import ops
from minidl.module import Module
from minidl.shapes import borders, pad2dOutShape, pair, positiveSize, realInRange, upsample2dOutShape


def _choice(owner, name, value, allowed):
    if not (isinstance(value, str) and value in allowed):
        raise ValueError("%s: %s must be one of %s, got %r" % (owner, name, ", ".join(repr(a) for a in allowed), value))
    return value


class Upsample2D(Module):
    """Upsampling by integer factors: (N, C, H, W) -> (N, C, H*scale_h, W*scale_w).

    scale (2): an int >= 1 or an (h, w) pair of them. mode ("nearest"): "nearest" repeats each pixel
    scale_h x scale_w times (PyTorch's mode 'nearest'); "bilinear" interpolates as PyTorch's
    'bilinear' with align_corners=False: output row oy reads the source row (oy + 0.5)/scale_h - 0.5,
    clamped at 0, between the rows below and above it (the last row repeating past the edge), and
    likewise for columns (ONNX's Resize with coordinate_transformation_mode "half_pixel").
    name: as for any Module. Bad arguments raise ValueError.

    Example::

        >>> up = Upsample2D(scale=(2, 3), mode="bilinear")
        >>> up(gpuarray.to_gpu(np.ones((1, 4, 5, 5), np.float32))).shape
        (1, 4, 10, 15)
    """

    MODES = ("nearest", "bilinear")

    def __init__(self, scale=2, mode="nearest", name=None):
        super().__init__(name)
        self.registerBlueprint(locals())
        kind = type(self).__name__
        self.scale = positiveSize("%s: scale" % kind, pair(scale, "%s: scale" % kind), 1)
        self.mode = _choice(kind, "mode", mode, self.MODES)

    def checkDataShape(self, shape):
        self.checkRank(shape, 4, "(N, C, H, W)")

    def dataShapeFrom(self, shape):
        return upsample2dOutShape(shape, self.scale)

    def updateData(self, data):
        self.data = ops.upsample2d(data, self.scale, self.mode)

    def updateGrad(self, grad):
        self.grad = ops.upsample2dBackward(grad, self.inData.shape, self.scale, self.mode)

    def __str__(self):
        return "%s(name=%r, scale=%s, mode=%r)" % (type(self).__name__, self.name, self.scale, self.mode)

    __repr__ = __str__


class Pad2D(Module):
    """Padding of the four borders: (N, C, H, W) -> (N, C, H + top + bottom, W + left + right).

    pad: an int >= 0 (every border), an (h, w) pair (top = bottom = h, left = right = w) or
    (top, bottom, left, right). mode ("constant"): "constant" fills the border with value (0.0, a
    finite number; only for this mode); "reflect" mirrors the image about its edge pixel, which is not
    repeated (PyTorch's 'reflect': each pad must be smaller than the side it extends, checked at call
    time); "replicate" repeats the edge pixel. name: as for any Module. In PuzzleLib value is called
    fillValue. Bad arguments raise ValueError.

    Example::

        >>> pad = Pad2D((1, 1, 2, 2), mode="reflect")
        >>> pad(gpuarray.to_gpu(np.ones((1, 3, 4, 4), np.float32))).shape
        (1, 3, 6, 8)
    """

    MODES = ("constant", "reflect", "replicate")

    def __init__(self, pad, mode="constant", value=0.0, name=None):
        super().__init__(name)
        self.registerBlueprint(locals())
        kind = type(self).__name__
        self.pad = borders(pad, "%s: pad" % kind)
        self.mode = _choice(kind, "mode", mode, self.MODES)
        self.value = realInRange(kind, "value", value)
        if mode != "constant" and self.value != 0:
            raise ValueError("%s: value applies to mode 'constant' only, got value %r with mode %r"
                             % (kind, value, mode))

    def checkDataShape(self, shape):
        self.checkRank(shape, 4, "(N, C, H, W)")
        h, w = shape[2:]
        top, bottom, left, right = self.pad
        if self.mode == "reflect" and (max(top, bottom) >= max(h, 1) or max(left, right) >= max(w, 1)):
            raise self.error("reflect padding (top, bottom, left, right) = %s needs each pad smaller than the side it "
                             "extends (height %d, width %d), got shape %s" % (self.pad, h, w, tuple(shape)))
        if self.mode == "replicate" and ((top or bottom) and h == 0 or (left or right) and w == 0):
            raise self.error("replicate padding %s has no edge pixel to repeat in an input of shape %s"
                             % (self.pad, tuple(shape)))

    def dataShapeFrom(self, shape):
        return pad2dOutShape(shape, self.pad)

    def updateData(self, data):
        self.data = ops.pad2d(data, self.pad, self.mode, self.value)

    def updateGrad(self, grad):
        self.grad = ops.pad2dBackward(grad, self.inData.shape, self.pad, self.mode)

    def __str__(self):
        return "%s(name=%r, pad=%s, mode=%r%s)" % (type(self).__name__, self.name, self.pad, self.mode,
                                                  ", value=%r" % self.value if self.mode == "constant" else "")

    __repr__ = __str__
