"""The 2-D convolution family: Conv2D and its depthwise and pointwise forms.

Shapes: input (N, inmaps, H, W) float32 -> output (N, outmaps, Ho, Wo) with
Ho = (H + 2*pad_h - dil_h*(size_h - 1) - 1) // stride_h + 1 (likewise Wo).
Weight W is (outmaps, inmaps/groups, kh, kw); bias b is (1, outmaps, 1, 1).

Conv2D picks its backend path at construction (``module.algo``):
- "depthwise" when groups == inmaps (each output map sees one input map;
  outmaps = inmaps * multiplier), a direct kernel with no im2col;
- "pointwise" for a 1x1, stride-1, pad-0, groups-1 conv, one GEMM;
- "general" otherwise: im2col + GEMM batched over groups.
All three compute the same function; tests hold them to the general path.

inmaps, outmaps and groups are positive ints (Python or numpy integers);
size, stride, pad and dilation ints or (h, w) pairs; wscale a finite number
> 0 (the spread of the "gaussian" and "uniform" init schemes). Anything else
raises ValueError naming the class and the argument.

Not supported: asymmetric padding (put a Pad2D in front), transposed conv
(that is Deconv2D, minidl/modules/deconv.py), float16/float64 data.
"""

from minidl.backend import gpuarray, ops
from minidl.initschemes import initWeight, parseScheme
from minidl.module import Module
from minidl.shapes import conv2dOutShape, convArgs, positiveInt, realInRange
from minidl.variable import Variable


class Conv2D(Module):
    """2-D convolution with stride, padding, dilation and groups; the docstring of minidl.modules.conv
    says which path (``algo``: depthwise, pointwise or general) runs for which arguments.

    inmaps, outmaps: input and output maps, both divisible by groups (1 by default); size, stride
    (1), pad (0), dilation (1): ints or (h, w) pairs; wscale (1.0): the spread of the "gaussian" and
    "uniform" schemes; useBias (True): add b; name: as for any Module; initscheme (None: xavier_uniform
    over the fan-in; see minidl.initschemes); empty (False): zero weights, for loading them.
    W: (outmaps, inmaps/groups, kh, kw); b: (1, outmaps, 1, 1). Input (N, inmaps, H, W) float32 ->
    (N, outmaps, Ho, Wo), Ho = (H + 2*pad - dilation*(size - 1) - 1) // stride + 1, Wo likewise.
    Not supported: asymmetric padding (put a Pad2D in front), dtypes other than float32.

    Example::

        >>> conv = Conv2D(3, 16, 3, stride=2, pad=1)
        >>> conv(gpuarray.to_gpu(np.zeros((2, 3, 32, 32), np.float32))).shape, conv.W.shape, conv.algo
        ((2, 16, 16, 16), (16, 3, 3, 3), 'general')
    """

    def __init__(self, inmaps, outmaps, size, stride=1, pad=0, dilation=1, wscale=1.0, useBias=True, name=None,
                 initscheme=None, empty=False, groups=1):
        super().__init__(name)
        self.registerBlueprint(locals())
        kind = type(self).__name__
        inmaps, outmaps, groups, self.size, self.stride, self.pad, self.dilation = convArgs(
            kind, inmaps, outmaps, groups, size, stride, pad, dilation)
        self.inmaps, self.outmaps, self.groups = inmaps, outmaps, groups
        realInRange(kind, "wscale", wscale, 0, lowOpen=True)
        parseScheme(initscheme)

        if groups == inmaps:
            self.algo = "depthwise"
        elif self.size == (1, 1) and self.stride == (1, 1) and self.pad == (0, 0) and groups == 1:
            self.algo = "pointwise"
        else:
            self.algo = "general"

        wshape = (outmaps, inmaps // groups) + self.size
        self.setVar("W", Variable(initWeight(initscheme, wshape, wscale, empty)))
        self.useBias = useBias
        if useBias:
            self.setVar("b", Variable(gpuarray.zeros((1, outmaps, 1, 1))))

    def _bias(self):
        return self.vars["b"].data if self.useBias else None

    def checkDataShape(self, shape):
        self.checkRank(shape, 4, "(N, C, H, W)")
        if shape[1] != self.inmaps:
            raise self.error("expected input with %d maps, got shape %s" % (self.inmaps, tuple(shape)))
        out = self.dataShapeFrom(shape)
        if out[2] < 1 or out[3] < 1:
            raise self.error("input of shape %s is too small for size %s, pad %s, dilation %s (output %dx%d)"
                             % (tuple(shape), self.size, self.pad, self.dilation, out[2], out[3]))

    def dataShapeFrom(self, shape):
        return conv2dOutShape(shape, self.outmaps, self.size, self.stride, self.pad, self.dilation)

    def macs(self, inshape, outshape):
        n, o, ho, wo = outshape
        return n * o * ho * wo * (self.inmaps // self.groups) * self.size[0] * self.size[1]

    def updateData(self, data):
        W, b = self.vars["W"].data, self._bias()
        if self.algo == "depthwise":
            self.data = ops.depthwiseConv2d(data, W, b, self.stride, self.pad, self.dilation)
        elif self.algo == "pointwise":
            self.data = ops.pointwiseConv2d(data, W, b)
        else:
            self.data = ops.conv2d(data, W, b, self.stride, self.pad, self.dilation, self.groups)

    def updateGrad(self, grad):
        W, inshape = self.vars["W"].data, self.inData.shape
        if self.algo == "depthwise":
            self.grad = ops.depthwiseConv2dBackwardData(grad, W, inshape, self.stride, self.pad, self.dilation)
        elif self.algo == "pointwise":
            self.grad = ops.pointwiseConv2dBackwardData(grad, W)
        else:
            self.grad = ops.conv2dBackwardData(grad, W, inshape, self.stride, self.pad, self.dilation, self.groups)

    def updateGradAndParams(self, grad):
        if self.algo != "depthwise":
            super().updateGradAndParams(grad)
            return
        # one op for both: the NumPy backend gathers each block of grad once for the two passes
        bgrad = self.vars["b"].grad if self.useBias else None
        self.grad = ops.depthwiseConv2dBackward(self.inData, grad, self.vars["W"].data, self.vars["W"].grad, bgrad,
                                                self.stride, self.pad, self.dilation)

    def accGradParams(self, grad):
        wgrad = self.vars["W"].grad
        bgrad = self.vars["b"].grad if self.useBias else None
        if self.algo == "depthwise":
            ops.depthwiseConv2dBackwardParams(self.inData, grad, wgrad, bgrad, self.stride, self.pad, self.dilation)
        elif self.algo == "pointwise":
            ops.pointwiseConv2dBackwardParams(self.inData, grad, wgrad, bgrad)
        else:
            ops.conv2dBackwardParams(self.inData, grad, wgrad, bgrad, self.stride, self.pad, self.dilation,
                                     self.groups)

    def __str__(self):
        return "%s(name=%r, %d->%d, size=%s, stride=%s, pad=%s, dilation=%s, groups=%d, algo=%s)" % (
            type(self).__name__, self.name, self.inmaps, self.outmaps, self.size, self.stride, self.pad,
            self.dilation, self.groups, self.algo)

    __repr__ = __str__


class DepthwiseConv2D(Conv2D):
    """Depthwise conv with a channel multiplier (Chainer's DepthwiseConvolution2D).

    Output channel c*multiplier + m is input channel c filtered by its m-th
    filter. W is (inmaps*multiplier, 1, kh, kw), so weights interchange with
    ``Conv2D(inmaps, inmaps*multiplier, size, groups=inmaps)``. The default
    init uses the fan-in of one filter, kh*kw.

    multiplier (1): filters per input map; inmaps, size, stride, pad, dilation, wscale, useBias,
    name, initscheme and empty as Conv2D's. Input (N, inmaps, H, W) -> (N, inmaps*multiplier, Ho, Wo).

    Example::

        >>> dw = DepthwiseConv2D(32, 3, stride=2, pad=1, multiplier=2)
        >>> dw(gpuarray.to_gpu(np.zeros((1, 32, 16, 16), np.float32))).shape, dw.W.shape, dw.algo
        ((1, 64, 8, 8), (64, 1, 3, 3), 'depthwise')
    """

    def __init__(self, inmaps, size, stride=1, pad=0, dilation=1, multiplier=1, wscale=1.0, useBias=True, name=None,
                 initscheme=None, empty=False):
        inmaps = positiveInt("DepthwiseConv2D", "inmaps", inmaps)
        self.multiplier = multiplier = positiveInt("DepthwiseConv2D", "multiplier", multiplier)
        super().__init__(inmaps, inmaps * multiplier, size, stride=stride, pad=pad, dilation=dilation, wscale=wscale,
                         useBias=useBias, name=name, initscheme=initscheme, empty=empty, groups=inmaps)
        self.registerBlueprint(locals())


class PointwiseConv2D(Conv2D):
    """1x1 conv (a GEMM over the batch): W is (outmaps, inmaps, 1, 1); (N, inmaps, H, W) ->
    (N, outmaps, H, W). inmaps, outmaps, wscale, useBias, name, initscheme and empty as Conv2D's.

    Example::

        >>> pw = PointwiseConv2D(32, 64)
        >>> pw(gpuarray.to_gpu(np.zeros((1, 32, 7, 7), np.float32))).shape, pw.W.shape, pw.algo
        ((1, 64, 7, 7), (64, 32, 1, 1), 'pointwise')
    """

    def __init__(self, inmaps, outmaps, wscale=1.0, useBias=True, name=None, initscheme=None, empty=False):
        super().__init__(inmaps, outmaps, 1, wscale=wscale, useBias=useBias, name=name, initscheme=initscheme,
                         empty=empty)
        self.registerBlueprint(locals())
