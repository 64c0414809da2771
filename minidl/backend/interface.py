"""The backend contract: every op a module may call, with its signature.

``minidl/backend/numpy`` and ``minidl/backend/cuda`` each export a function of
the same name and the same signature for every entry here (a test compares
them with ``inspect.signature``). This file holds signatures and contracts
only; it is never called.

Conventions shared by all ops:
- arrays are float32 NCHW unless stated; labels are int32;
- ``stride``, ``pad``, ``dilation``, ``size`` are (h, w) pairs (see ``minidl.shapes``);
- ``...BackwardParams`` ops *accumulate* into ``wgrad``/``bgrad`` (``bgrad`` may be None);
- gradients are true gradients of the loss; update rules subtract them;
- scalar results (losses, error counts) come back as 0-d backend arrays so that
  no host synchronisation happens until the caller asks with ``.get()``.
"""

# ---- arrays --------------------------------------------------------------------------------------


def to_gpu(ary):
    """Copy a host array (anything numpy.asarray takes) to a new contiguous backend array."""


def empty(shape, dtype):
    """Uninitialised backend array."""


def zeros(shape, dtype):
    """Zero-filled backend array."""


def isArray(obj):
    """True when obj is an array of this backend."""


def copy(x):
    """A new array with x's contents."""


def axpy(y, x, alpha):
    """In place: y += alpha * x (same shape)."""


def addArrays(xs):
    """Elementwise sum of a list of same-shaped arrays, as a new array."""


def concat(xs, axis):
    """Concatenate along axis."""


def split(x, sections, axis):
    """Split x along axis into pieces of the given lengths; returns a list of new arrays."""


def mayShareMemory(a, b):
    """True when arrays a and b may overlap in memory (their address ranges intersect, as
    numpy.may_share_memory answers): a Graph asks before an in-place module writes over an array
    that another node may still read."""


# ---- convolution family ------------------------------------------------------------------------


def conv2d(x, W, b, stride, pad, dilation, groups):
    """x (N, C, H, W), W (O, C/groups, kh, kw), b (1, O, 1, 1) or None -> (N, O, Ho, Wo)."""


def conv2dBackwardData(dy, W, inshape, stride, pad, dilation, groups):
    """dy (N, O, Ho, Wo) -> dx of shape inshape."""


def conv2dBackwardParams(x, dy, wgrad, bgrad, stride, pad, dilation, groups):
    """Accumulate dL/dW into wgrad (O, C/groups, kh, kw) and dL/db into bgrad (1, O, 1, 1)."""


def depthwiseConv2d(x, W, b, stride, pad, dilation):
    """Depthwise conv. x (N, C, H, W), W (C*M, 1, kh, kw) -> (N, C*M, Ho, Wo).

    Output channel c*M + m sees input channel c only (M = W.shape[0] // C, the
    channel multiplier), as Chainer, TensorFlow and PyTorch's groups=C.
    """


def depthwiseConv2dBackwardData(dy, W, inshape, stride, pad, dilation):
    """dy (N, C*M, Ho, Wo) -> dx of shape inshape."""


def depthwiseConv2dBackwardParams(x, dy, wgrad, bgrad, stride, pad, dilation):
    """Accumulate dL/dW into wgrad (C*M, 1, kh, kw) and dL/db into bgrad."""


def depthwiseConv2dBackward(x, dy, W, wgrad, bgrad, stride, pad, dilation):
    """Both backward passes at once: returns dx (depthwiseConv2dBackwardData) and accumulates
    wgrad and bgrad (depthwiseConv2dBackwardParams). A backend may share work between the two."""


def pointwiseConv2d(x, W, b):
    """1x1 conv as one GEMM over the batch: x (N, C, H, W), W (O, C, 1, 1) -> (N, O, H, W)."""


def pointwiseConv2dBackwardData(dy, W):
    """dy (N, O, H, W) -> dx (N, C, H, W)."""


def pointwiseConv2dBackwardParams(x, dy, wgrad, bgrad):
    """Accumulate dL/dW into wgrad (O, C, 1, 1) and dL/db into bgrad."""


def deconv2d(x, W, b, stride, pad, dilation, postpad, groups):
    """Transposed conv (PyTorch's conv_transpose2d): x (N, C, H, W), W (C, O/groups, kh, kw) (PyTorch's
    ConvTranspose2d layout), b (1, O, 1, 1) or None -> (N, O, Ho, Wo), Ho = (H - 1)*stride_h - 2*pad_h +
    dilation_h*(kh - 1) + postpad_h + 1 (shapes.deconv2dOutShape). It is conv2dBackwardData with x as dy:
    y[n, g*O/G + o, iy*sh - ph + i*dh, ix*sw - pw + j*dw] += W[g*C/G + c, o, i, j] * x[n, g*C/G + c, iy, ix]."""


def deconv2dBackwardData(dy, W, inshape, stride, pad, dilation, groups):
    """dy (N, O, Ho, Wo) -> dx of shape inshape (N, C, H, W): the conv2d of dy with W (C maps out)."""


def deconv2dBackwardParams(x, dy, wgrad, bgrad, stride, pad, dilation, groups):
    """Accumulate dL/dW into wgrad (C, O/groups, kh, kw) and dL/db into bgrad (1, O, 1, 1)."""


# ---- dense -----------------------------------------------------------------------------------------


def linear(x, W, b):
    """x (N, insize), W (insize, outsize), b (outsize,) or None -> (N, outsize)."""


def linearBackwardData(dy, W):
    """dy (N, outsize) -> dx (N, insize)."""


def linearBackwardParams(x, dy, wgrad, bgrad):
    """Accumulate dL/dW (insize, outsize) and dL/db (outsize,)."""


# ---- elementwise -----------------------------------------------------------------------------------


def activation(x, kind, alpha, beta, out=None):
    """Elementwise activation. kind: relu, clip (to [alpha, beta]; relu6 is clip 0..6),
    leakyRelu (slope alpha), elu (alpha), sigmoid, tanh, softPlus, hardSigmoid (relu6(x + 3) / 6)
    and hardSwish (x * relu6(x + 3) / 6; PyTorch's definitions, alpha and beta unused). out: an
    array of x's shape to write into (x itself for in place); the result is returned either way,
    and may be a new array when out cannot be written directly (not contiguous)."""


def activationBackward(x, y, dy, kind, alpha, beta, out=None):
    """dx for activation(x) = y. out as for activation (dy itself for in place). At a kink of
    hardSigmoid or hardSwish (x = -3 or 3) the derivative is the outer piece's, as PyTorch's:
    hardSigmoid 0 at both, hardSwish 0 at -3 and 1 at 3."""


def mul(a, b):
    """a (N, C, ...) times b, b of a's shape or (N, C, 1, ..., 1) (one factor per map, broadcast over
    the map's positions: squeeze-and-excitation's gate) -> a new array of a's shape."""


def mulBackward(a, b, dy):
    """(da, db) for y = mul(a, b): da = dy * b (b broadcast as in mul), of a's shape; db = dy * a,
    summed over each map's positions when b is broadcast, of b's shape."""


def dropout(x, p, seed):
    """Inverted dropout: returns (y, mask) with mask = keep / (1 - p), keep ~ Bernoulli(1 - p)."""


def dropoutBackward(dy, mask):
    """dx = dy * mask."""


def softmax(x):
    """Softmax over axis 1 of (N, C) or (N, C, H, W)."""


def softmaxBackward(y, dy):
    """dx for y = softmax(x)."""


# ---- pooling ---------------------------------------------------------------------------------------


def maxPool2d(x, size, stride, pad):
    """(N, C, H, W) -> (y, indices); padding never wins the max."""


def maxPool2dBackward(dy, indices, inshape, size, stride, pad):
    """Route dy to the argmax positions saved by maxPool2d."""


def avgPool2d(x, size, stride, pad, includePad):
    """Average pooling; includePad counts padded zeros in the divisor."""


def avgPool2dBackward(dy, inshape, size, stride, pad, includePad):
    """dx for avgPool2d."""


# ---- resampling and padding ------------------------------------------------------------------------


def upsample2d(x, scale, mode):
    """(N, C, H, W) -> (N, C, H*sh, W*sw) for scale = (sh, sw), ints >= 1. mode "nearest": y[oy, ox] =
    x[oy // sh, ox // sw] (PyTorch's 'nearest'); "bilinear": PyTorch's align_corners=False, the source
    of oy being (oy + 0.5)/sh - 0.5 clamped at 0, between rows floor(src) and min(floor(src) + 1, H - 1)
    (likewise for columns); every tap is multiplied in, weight 0 included, as PyTorch does."""


def upsample2dBackward(dy, inshape, scale, mode):
    """dx of shape inshape for upsample2d: each output's gradient goes back to the taps that made it."""


def pad2d(x, pad, mode, value):
    """(N, C, H, W) -> (N, C, H + top + bottom, W + left + right) for pad = (top, bottom, left, right),
    ints >= 0. mode "constant": the border is value; "reflect": mirrored about the edge pixel, which is
    not repeated (PyTorch's 'reflect'; each pad < the side it extends); "replicate": the edge pixel."""


def pad2dBackward(dy, inshape, pad, mode):
    """dx of shape inshape for pad2d: the inner part of dy, plus (reflect, replicate) the gradients of the
    border pixels added into the pixels they copy."""


# ---- normalisation ---------------------------------------------------------------------------------


def batchNormTrain(x, scale, bias, runMean, runVar, epsilon, factor, act=None):
    """Batch statistics over (N, H, W) per channel of x (N, C, H, W); scale/bias/run* are (1, C, 1, 1).

    Updates runMean/runVar in place: run = (1 - factor) * run + factor * batch
    (runVar takes the unbiased batch variance). Returns (y, mean, var) with the
    batch mean and biased batch variance, each (1, C, 1, 1), for the backward pass.
    act: None, or an activation fused into the output, ("relu", 0, 0) or ("clip", low, high):
    y is then activation(normalised, kind, low, high), exactly as the activation op gives it.
    """


def batchNormEval(x, scale, bias, mean, var, epsilon, act=None, out=None):
    """y = (x - mean) / sqrt(var + epsilon) * scale + bias with the given statistics; act as for
    batchNormTrain. out: the backend array y is written into and returned, C-contiguous float32 of x's shape,
    x itself (in place: each element is read before it is written) or one that does not overlap x
    (shapes.checkOut); None: a new array."""


def batchNormBackward(x, dy, scale, mean, var, epsilon, useBatchStats, act=None, y=None):
    """Returns (dx, dscale, dbias). useBatchStats: mean/var came from this batch
    (train mode), so the gradient flows through them; otherwise they are constants.
    act: the activation fused into the forward (batchNormTrain), whose output y (x's shape) was
    returned: dy is then the gradient w.r.t. y, taken through the activation as
    activationBackward(y, y, dy, kind, low, high) does (what an in-place activation computes)."""


# Synchronised batch norm (minidl.modules.SyncBatchNorm2D) splits the two ops above around its
# exchanges between processes: each process's per-channel moments and sums come out on their own,
# are combined across processes, and go back in.


def batchNormMoments(x):
    """Per-channel batch mean and biased variance of x (N, C, H, W) over (N, H, W), each (1, C, 1, 1);
    batchNormTrain's statistics without normalising or touching running statistics."""


def batchNormUpdateRunning(runMean, runVar, mean, var, count, factor):
    """In place, as batchNormTrain does with its own statistics: run = (1 - factor) * run + factor *
    batch, runVar taking the unbiased variance var * count / (count - 1) (var itself for count 1),
    count being the number of values per channel the statistics were taken over."""


def batchNormBackwardSums(x, dy, mean, var, epsilon):
    """(dscale, dbias) = (sum of dy * xhat, sum of dy) per channel over (N, H, W), each (1, C, 1, 1),
    with xhat = (x - mean) / sqrt(var + epsilon): batchNormBackward's parameter gradients."""


def batchNormBackwardData(x, dy, scale, mean, var, dscale, dbias, count, epsilon):
    """dx of batch norm with batch statistics taken over count values per channel, dscale and dbias
    being batchNormBackwardSums summed over the same values (count may exceed x's own):
    dx = scale / sqrt(var + epsilon) * (dy - (dbias + xhat * dscale) / count)."""


# ---- costs -----------------------------------------------------------------------------------------


def crossEntropy(scores, labels):
    """Softmax cross-entropy on raw scores (N, C) with int32 labels (N,).
    Returns (loss, grad): loss = mean over the batch (0-d array), grad = d loss / d scores."""


def classificationErrors(scores, labels):
    """Number of rows whose argmax differs from the label, as a 0-d float32 array."""


def labelRange(labels):
    """(min, max) of int32 labels (N,) as Python ints, for a caller's range check; None for no labels.
    The CUDA backend returns None always and checks nothing: reading the range back would force a
    host sync every step."""


def mse(pred, target):
    """loss = sum((pred - target)^2) / (2N); returns (loss, grad)."""


def bce(scores, target):
    """Binary cross-entropy on raw scores (sigmoid fused, stable): loss = sum(softplus(s) - t*s) / N."""


def smoothL1(pred, target):
    """Huber with beta 1: loss = sum(h(pred - target)) / N, h(d) = d^2/2 if |d| < 1 else |d| - 1/2."""


# ---- optimizer update rules (in place) -------------------------------------------------------------


def sgdUpdate(param, grad, learnRate, wc):
    """param -= learnRate * (grad + wc * param)."""


def momentumUpdate(param, grad, mom, learnRate, momRate, wc):
    """mom = momRate * mom - learnRate * (grad + wc * param); param += mom."""


def nesterovUpdate(param, grad, mom, learnRate, momRate, wc):
    """Nesterov momentum (Sutskever form): m' = momRate*m - lr*g; param += -momRate*m + (1 + momRate)*m'."""


def adamUpdate(param, grad, mg, ms, alpha, beta1, beta2, epsilon, t, wc):
    """Adam with bias correction at step t (1-based); mg/ms are the first/second moments."""


def rmspropUpdate(param, grad, ms, learnRate, factor, epsilon, wc):
    """ms = factor * ms + (1 - factor) * g^2; param -= learnRate * g / (sqrt(ms) + epsilon)."""


def adagradUpdate(param, grad, h, learnRate, epsilon, wc):
    """h += g^2; param -= learnRate * g / (sqrt(h) + epsilon)."""


# ---- gradient norms (clipping) ---------------------------------------------------------------------


def sumOfSquares(xs):
    """Sum of x^2 over every element of every float32 array in the list xs (any shapes), squared and
    summed in float64; a 0-d float64 array (0 for an empty list). NaN and infinities pass through."""


def scale(x, alpha):
    """In place: x *= alpha (float32)."""


def opNames():
    """Names of every op in this contract, in file order."""
    import inspect
    import sys

    module = sys.modules[__name__]
    return [
        name for name, fn in inspect.getmembers(module, inspect.isfunction)
        if fn.__module__ == __name__ and name != "opNames"
    ]
