"""Transposed 2-D convolution: Deconv2D, PuzzleLib's arguments with PyTorch's ConvTranspose2d
semantics and weight layout.

Shapes: input (N, inmaps, H, W) float32 -> output (N, outmaps, Ho, Wo) with
Ho = (H - 1)*stride_h - 2*pad_h + dil_h*(size_h - 1) + postpad_h + 1 (likewise Wo).
Weight W is (inmaps, outmaps/groups, kh, kw); bias b is (1, outmaps, 1, 1).

A Deconv2D is the input gradient of the Conv2D(outmaps, inmaps, size, stride, pad, dilation,
groups) that maps its output's shape to its input's, with the same W: the backends run its forward
as that conv's backward-data pass, its input gradient as that conv's forward, and its weight
gradient as that conv's weight gradient with the two images swapped.

Not supported: asymmetric padding (crop the output with explicit slicing), float16/float64 data.
"""

from minidl.backend import gpuarray, ops
from minidl.initschemes import initWeight, parseScheme
from minidl.module import Module
from minidl.shapes import convArgs, deconv2dOutShape, pair, positiveSize, realInRange
from minidl.variable import Variable


class Deconv2D(Module):
    """Transposed convolution (PyTorch's ConvTranspose2d), with groups and dilation.

    inmaps, outmaps: input and output maps, both divisible by groups (1 by default; groups ==
    inmaps gives one transposed filter bank per input map); size, stride (1), pad (0), dilation (1):
    ints or (h, w) pairs; pad removes pad rows and columns from each border of the full output;
    postpad (0): an int or (h, w) pair of rows and columns added at the bottom and right (PyTorch's
    output_padding), each smaller than the stride or the dilation of its axis, to reach the sizes a
    strided conv maps to the same input size; wscale (1.0): the spread of the "gaussian" and
    "uniform" schemes; useBias (True): add b; name: as for any Module; initscheme (None:
    xavier_uniform over the fan-in, which for this layout is outmaps/groups*kh*kw, as PyTorch
    computes it; see minidl.initschemes); empty (False): zero weights, for loading them.
    W: (inmaps, outmaps/groups, kh, kw); b: (1, outmaps, 1, 1). Input (N, inmaps, H, W) ->
    (N, outmaps, Ho, Wo), Ho = (H - 1)*stride - 2*pad + dilation*(size - 1) + postpad + 1.
    Bad arguments raise ValueError; an input with another number of maps, or one whose output would
    be empty, raises ModuleError.

    Example::

        >>> up = Deconv2D(16, 8, 4, stride=2, pad=1)
        >>> up(gpuarray.to_gpu(np.zeros((2, 16, 7, 7), np.float32))).shape, up.W.shape
        ((2, 8, 14, 14), (16, 8, 4, 4))
    """

    def __init__(self, inmaps, outmaps, size, stride=1, pad=0, dilation=1, postpad=0, wscale=1.0, useBias=True,
                 name=None, initscheme=None, empty=False, groups=1):
        super().__init__(name)
        self.registerBlueprint(locals())
        kind = type(self).__name__
        inmaps, outmaps, groups, self.size, self.stride, self.pad, self.dilation = convArgs(
            kind, inmaps, outmaps, groups, size, stride, pad, dilation)
        self.inmaps, self.outmaps, self.groups = inmaps, outmaps, groups
        self.postpad = positiveSize("%s: postpad" % kind, pair(postpad, "%s: postpad" % kind), 0)
        if any(p >= max(s, d) for p, s, d in zip(self.postpad, self.stride, self.dilation)):
            raise ValueError("%s: postpad must be smaller than the stride or the dilation of its axis, got postpad "
                             "%s for stride %s, dilation %s" % (kind, self.postpad, self.stride, self.dilation))
        realInRange(kind, "wscale", wscale, 0, lowOpen=True)
        parseScheme(initscheme)

        wshape = (inmaps, outmaps // groups) + self.size
        self.setVar("W", Variable(initWeight(initscheme, wshape, wscale, empty)))
        self.useBias = useBias
        if useBias:
            self.setVar("b", Variable(gpuarray.zeros((1, outmaps, 1, 1))))

    def checkDataShape(self, shape):
        self.checkRank(shape, 4, "(N, C, H, W)")
        if shape[1] != self.inmaps:
            raise self.error("expected input with %d maps, got shape %s" % (self.inmaps, tuple(shape)))
        out = self.dataShapeFrom(shape)
        if shape[2] < 1 or shape[3] < 1 or out[2] < 1 or out[3] < 1:
            raise self.error("input of shape %s gives no output for size %s, stride %s, pad %s, dilation %s, postpad "
                             "%s (output %dx%d)" % (tuple(shape), self.size, self.stride, self.pad, self.dilation,
                                                    self.postpad, out[2], out[3]))

    def dataShapeFrom(self, shape):
        return deconv2dOutShape(shape, self.outmaps, self.size, self.stride, self.pad, self.dilation, self.postpad)

    def macs(self, inshape, outshape):
        # every input pixel meets each of its outmaps/groups * kh * kw weights once (those landing in
        # the cropped border included, as the GEMM computes them)
        n, c, h, w = inshape
        return n * c * h * w * (self.outmaps // self.groups) * self.size[0] * self.size[1]

    def updateData(self, data):
        b = self.vars["b"].data if self.useBias else None
        self.data = ops.deconv2d(data, self.vars["W"].data, b, self.stride, self.pad, self.dilation, self.postpad,
                                 self.groups)

    def updateGrad(self, grad):
        self.grad = ops.deconv2dBackwardData(grad, self.vars["W"].data, self.inData.shape, self.stride, self.pad,
                                             self.dilation, self.groups)

    def accGradParams(self, grad):
        bgrad = self.vars["b"].grad if self.useBias else None
        ops.deconv2dBackwardParams(self.inData, grad, self.vars["W"].grad, bgrad, self.stride, self.pad,
                                   self.dilation, self.groups)

    def __str__(self):
        return "%s(name=%r, %d->%d, size=%s, stride=%s, pad=%s, dilation=%s, postpad=%s, groups=%d)" % (
            type(self).__name__, self.name, self.inmaps, self.outmaps, self.size, self.stride, self.pad,
            self.dilation, self.postpad, self.groups)

    __repr__ = __str__
