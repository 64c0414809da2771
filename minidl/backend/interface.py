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
    leakyRelu (slope alpha), elu (alpha), sigmoid, tanh, softPlus. out: an array of x's shape to
    write into (x itself for in place); the result is returned either way, and may be a new array
    when out cannot be written directly (not contiguous)."""


def activationBackward(x, y, dy, kind, alpha, beta, out=None):
    """dx for activation(x) = y. out as for activation (dy itself for in place)."""


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


# ---- normalisation ---------------------------------------------------------------------------------


def batchNormTrain(x, scale, bias, runMean, runVar, epsilon, factor):
    """Batch statistics over (N, H, W) per channel of x (N, C, H, W); scale/bias/run* are (1, C, 1, 1).

    Updates runMean/runVar in place: run = (1 - factor) * run + factor * batch
    (runVar takes the unbiased batch variance). Returns (y, mean, var) with the
    batch mean and biased batch variance, each (1, C, 1, 1), for the backward pass.
    """


def batchNormEval(x, scale, bias, mean, var, epsilon):
    """y = (x - mean) / sqrt(var + epsilon) * scale + bias with the given statistics."""


def batchNormBackward(x, dy, scale, mean, var, epsilon, useBatchStats):
    """Returns (dx, dscale, dbias). useBatchStats: mean/var came from this batch
    (train mode), so the gradient flows through them; otherwise they are constants."""


# ---- costs -----------------------------------------------------------------------------------------


def crossEntropy(scores, labels):
    """Softmax cross-entropy on raw scores (N, C) with int32 labels (N,).
    Returns (loss, grad): loss = mean over the batch (0-d array), grad = d loss / d scores."""


def classificationErrors(scores, labels):
    """Number of rows whose argmax differs from the label, as a 0-d float32 array."""


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


def opNames():
    """Names of every op in this contract, in file order."""
    import inspect
    import sys

    module = sys.modules[__name__]
    return [
        name for name, fn in inspect.getmembers(module, inspect.isfunction)
        if fn.__module__ == __name__ and name != "opNames"
    ]
