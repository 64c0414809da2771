"""General and pointwise 2-D convolution on the NumPy backend.

Stride-1 3x3 convs with enough maps per group go through Winograd F(2x2, 3x3) (winograd.py) for
the forward and input-gradient passes when numba is present. Otherwise general conv is im2col +
GEMM, groups a batch dimension of the GEMM. With numba the GEMM threads go image by image (im2col
-> GEMM -> output, see below). Without it, the im2col matrix is a strided *view* of the padded
input, materialised once by the reshape that feeds one batched matmul, and the backward-data pass
scatters columns back with one vectorised add per kernel tap. Pointwise (1x1, stride 1, pad 0,
groups 1) is GEMMs over the batch with no im2col at all (gemm.batchLeft / batchGram).

Non-finite values go through as the formula over the zero-padded input says (a NaN times a padding
zero is NaN): the columns hold exactly what each tap reads, and the GEMMs are IEEE sums. Two
shortcuts are not exact, and checked: Winograd (see winograd.py; a non-finite result is computed
again on im2col), and the wide columns' garbage entries (see _Geometry).
"""

import functools

import numpy as np
from numpy.lib.stride_tricks import as_strided

from minidl.backend.numpy import accel, winograd
from minidl.backend.numpy.array import allFinite, host, new
from minidl.backend.numpy.gemm import batchGram, batchLeft, matmul, overBatch, parts
from minidl.shapes import tapRanges, windowOutSize

_EMPTY = np.empty(0, dtype=np.float32)
# the weight gradient copies dy^T row-major before its GEMM for groups of at most SMALL_GROUP output
# maps with at least COPY_MIN_ROWS column rows (see _Geometry.copyGradT)
SMALL_GROUP, COPY_MIN_ROWS = 16, 64


def dense(a):
    """A C-contiguous plain ndarray view of a (copied only when it is not contiguous)."""
    return np.ascontiguousarray(np.asarray(a))


def flatOrEmpty(a):
    """A bias or its gradient as a flat array the kernels can test for size 0 (None -> empty)."""
    return _EMPTY if a is None else np.asarray(a).reshape(-1)


def padded(x, pad, value=0.0):
    """x (N, C, H, W) padded with value by pad=(ph, pw) on each side; x itself when pad is 0."""
    ph, pw = pad
    if ph == 0 and pw == 0:
        return np.asarray(x)
    n, c, h, w = x.shape
    xp = np.full((n, c, h + 2 * ph, w + 2 * pw), value, dtype=x.dtype)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    return xp


def outSize(inshape, size, stride, pad, dilation):
    return (windowOutSize(inshape[2], size[0], stride[0], pad[0], dilation[0]),
            windowOutSize(inshape[3], size[1], stride[1], pad[1], dilation[1]))


def windows(xp, size, stride, dilation, outsize):
    """Strided view (N, C, kh, kw, Ho, Wo) of padded input xp: element [n, c, i, j, y, x] is
    xp[n, c, y*sh + i*dh, x*sw + j*dw]. No copy."""
    n, c = xp.shape[:2]
    sN, sC, sH, sW = xp.strides
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = size, stride, dilation, outsize
    return as_strided(xp, (n, c, kh, kw, ho, wo), (sN, sC, sH * dh, sW * dw, sH * sh, sW * sw), writeable=False)


def tapSlice(i, j, stride, dilation, outsize):
    """Index of padded-input pixels that kernel tap (i, j) touches, as (H, W) slices."""
    (sh, sw), (dh, dw), (ho, wo) = stride, dilation, outsize
    return (slice(i * dh, i * dh + sh * (ho - 1) + 1, sh), slice(j * dw, j * dw + sw * (wo - 1) + 1, sw))


def unpadded(xp, pad, inshape):
    ph, pw = pad
    if ph == 0 and pw == 0:
        return xp
    return np.ascontiguousarray(xp[:, :, ph:ph + inshape[2], pw:pw + inshape[3]])


def addBias(y, b):
    if b is not None:
        y += np.asarray(b).reshape(1, -1, *([1] * (y.ndim - 2)))


def accBiasGrad(bgrad, dy):
    """bgrad += dy summed over all axes but the channel axis 1. Each (image, channel) row is summed
    by a matrix-vector product: numpy's reduction over axes (0, 2, 3) took 0.45 ms for an 8 MB dy,
    the product and a sum over images 0.30. The product goes through gemm.matmul, on the GEMM
    threads with BLAS pinned to one thread: left to itself OpenBLAS threaded it, and its spinning
    workers then held back the numba kernel that ran next (measured 4.0 -> 7.2 ms)."""
    if bgrad is not None:
        dy = np.asarray(dy)
        n, o = dy.shape[:2]
        rows = dy.reshape(n * o, int(np.prod(dy.shape[2:])))
        sums = matmul(rows, np.ones((rows.shape[1], 1), np.float32), np.empty((n * o, 1), np.float32))
        bgrad += sums.reshape(n, o).sum(axis=0).reshape(bgrad.shape)


def im2col(x, size, stride, pad, dilation, outsize):
    """(N, C*kh*kw, Ho*Wo) columns of x, row (c, i, j) holding what tap (i, j) of channel c reads."""
    n, c = x.shape[:2]
    (kh, kw), (ho, wo) = size, outsize
    return windows(padded(x, pad), size, stride, dilation, outsize).reshape(n, c * kh * kw, ho * wo)  # one copy


@functools.lru_cache(maxsize=256)
def tapRangeArray(insize, outsize, size, stride, pad, dilation):
    """shapes.tapRanges as an int64 (kh*kw, 4) array for the numba kernels, cached per geometry
    (a training loop asks for the same few every step; building one costs ~15 us). Read-only."""
    ranges = np.array(tapRanges(insize, outsize, size, stride, pad, dilation), dtype=np.int64)
    ranges.flags.writeable = False
    return ranges


def _flatColumnTaps(h, w, kh, kw, pad, dilation):
    """(valid (kh*kw, 4), offsets (kh*kw,), margin) for accel.im2colFlat at stride 1 with "same"
    padding: tap t = (i, j) of pixel q reads q + offsets[t] of its flat plane, inside the image for
    the rows and columns valid[t] bounds (shapes.tapRanges)."""
    offs = np.array([(i * dilation[0] - pad[0]) * w + j * dilation[1] - pad[1] for i in range(kh) for j in range(kw)],
                    dtype=np.int64)
    valid = tapRangeArray((h, w), (h, w), (kh, kw), (1, 1), tuple(pad), tuple(dilation))
    return valid, offs, int(np.abs(offs).max())


class _Geometry:
    """A general conv's sizes, and one image's im2col / col2im through the numba kernels.

    Stride 1 uses the "wide" columns of accel.im2colWide when the image has many more column rows
    (C*kh*kw) than output channels: each output row spans the padded width wp, so a column matrix
    is (K, Ho*wp) and the GEMM's output has wp - Wo garbage columns per row, which cost a copy
    between the GEMM and the image (O*Ho rows) but save the im2col's C*kh*kw*Ho short row copies.
    `lw` is the width the GEMMs see (Ho*wp wide, else Ho*Wo).

    The wide garbage columns are exact for finite values only: in the input gradient they are W^T
    times zeros, which col2imWide adds onto real pixels (NaN for a non-finite W), and in the weight
    gradient they are real pixels times zeros (NaN for a non-finite pixel). So conv2dBackwardData
    checks W, conv2dBackwardParams its partial sums, and either takes the NumPy path when they are
    not finite."""

    def __init__(self, inshape, wshape, stride, pad, dilation, groups):
        self.n, self.c, self.h, self.w = inshape
        self.o, cg, self.kh, self.kw = wshape
        self.ho, self.wo = outSize(inshape, (self.kh, self.kw), stride, pad, dilation)
        self.g, self.og, self.k, self.l = groups, self.o // groups, cg * self.kh * self.kw, self.ho * self.wo
        # "same" size at stride 1 takes the flat columns (accel.im2colFlat): no padded copies and
        # no garbage columns
        self.flat = accel.enabled and tuple(stride) == (1, 1) and (self.ho, self.wo) == (self.h, self.w)
        # measured: a win where column rows outnumber output maps 4.5-9 to 1 (the benchmark's
        # conv3x3, grouped and dilated cases), a loss for the MobileNets' 3-channel stem (27 to 16)
        self.wide = not self.flat and tuple(stride) == (1, 1) and self.c * self.kh * self.kw >= 4 * self.o
        self.lw = self.ho * (self.w + 2 * pad[1]) if self.wide else self.l
        # measured (weight gradient, cols @ dy^T): with both operands row-major OpenBLAS ran 1.4x
        # faster for 16 maps and 144 rows (48 vs 66 us per image, the copy included); for 32 maps
        # or more it gained nothing, and MobileNet's stem (16 maps, 27 rows) lost 8% to the copy
        self.copyGradT = self.og <= SMALL_GROUP and self.k >= COPY_MIN_ROWS
        # the numba kernel pair and its trailing arguments, chosen once (the NumPy path uses neither)
        if not accel.enabled:
            self.kernels, self.args = None, ()
        elif self.flat:
            self.kernels = accel.im2colFlat, accel.col2imFlat
            self.args = _flatColumnTaps(self.h, self.w, self.kh, self.kw, pad, dilation)
        elif self.wide:
            self.kernels = accel.im2colWide, accel.col2imWide
            self.args = (self.kh, self.kw, pad[0], pad[1], dilation[0], dilation[1], self.ho)
        else:
            self.kernels = accel.im2colImage, accel.col2imImage
            self.args = (self.kh, self.kw, stride[0], stride[1], pad[0], pad[1], dilation[0], dilation[1], self.ho,
                         self.wo)

    def scratch(self, rows, zero=False):
        """(threads, G, rows, lw) per-thread matrices (zeroed when zero: their garbage columns stay 0)."""
        buf = new((parts(self.n), self.g, rows, self.lw))
        if zero:
            buf.fill(0.0)
        return buf

    def outputScratch(self, zero=False):
        """Per-thread (G, O/G, lw) output-shaped matrices for the wide form (zeroed when zero); the
        narrow form works on the images themselves, so each thread gets None."""
        return self.scratch(self.og, zero) if self.wide else [None] * parts(self.n)

    def im2col(self, image, cols):
        self.kernels[0](image, cols.reshape(self.c * self.kh * self.kw, self.lw), *self.args)

    def col2im(self, cols, image):
        self.kernels[1](cols.reshape(self.c * self.kh * self.kw, self.lw), image, *self.args)

    def gemmOut(self, scratch, image):
        """Where a GEMM writes one image's (G, O/G, lw) output: the image itself unless wide."""
        return scratch if self.wide else image.reshape(self.g, self.og, self.l)

    def toImage(self, out, image, bias):
        """image (O, Ho, Wo) = the GEMM's output out (from gemmOut) plus bias (empty for none)."""
        if self.wide:
            accel.narrow(out.reshape(self.o, self.lw), image, bias)
        elif bias.shape[0] > 0:
            accel.addBiasRows(out.reshape(self.o, self.l), bias)

    def gemmIn(self, image, scratch):
        """An output-shaped image (O, Ho, Wo) as a GEMM operand (G, O/G, lw): widened into scratch
        (whose garbage columns stay 0), or the image itself."""
        if self.wide:
            accel.widen(image, scratch.reshape(self.o, self.lw))
            return scratch
        return image.reshape(self.g, self.og, self.l)


# With numba each GEMM thread takes a share of the images and runs im2col -> GEMM (or GEMM ->
# col2im) one image at a time, so an image's columns stay in that core's cache between the two; the
# bias is added (and its gradient summed) there too, while the image's output is still in cache.
# Without numba the whole batch's columns are one strided-view copy and one batched matmul.

def conv2d(x, W, b, stride, pad, dilation, groups):
    if winograd.applies(W.shape, stride, groups):
        y = winograd.conv2d(x, W, b, pad, dilation, groups)
        if y is not None:
            return y
        # a non-finite value went through Winograd's tiles: im2col below places it exactly
    geo = _Geometry(x.shape, W.shape, stride, pad, dilation, groups)
    wg = np.asarray(W).reshape(groups, geo.og, geo.k)
    y = new((geo.n, geo.o, geo.ho, geo.wo))
    if not accel.enabled:
        cols = im2col(x, (geo.kh, geo.kw), stride, pad, dilation, (geo.ho, geo.wo)).reshape(geo.n, groups, geo.k, geo.l)
        matmul(wg, cols, y.reshape(geo.n, groups, geo.og, geo.l))
        addBias(y, b)
        return host(y)
    x, cols = dense(x), geo.scratch(geo.k)
    outs = geo.outputScratch()
    bias = flatOrEmpty(b)

    def piece(t, lo, hi):
        for i in range(lo, hi):
            geo.im2col(x[i], cols[t])
            out = geo.gemmOut(outs[t], y[i])
            np.matmul(wg, cols[t], out=out)
            geo.toImage(out, y[i], bias)

    overBatch(geo.n, piece)
    return host(y)


def conv2dBackwardData(dy, W, inshape, stride, pad, dilation, groups):
    if winograd.applies(W.shape, stride, groups):
        dx = winograd.conv2dBackwardData(dy, W, inshape, pad, dilation, groups)
        if dx is not None:
            return dx
        # non-finite: as in conv2d
    geo = _Geometry(inshape, W.shape, stride, pad, dilation, groups)
    wt = np.ascontiguousarray(np.asarray(W).reshape(groups, geo.og, geo.k).transpose(0, 2, 1))   # (G, K, O/G)
    dy = dense(dy)
    if accel.enabled and (not geo.wide or allFinite(W)):     # see _Geometry on the wide form
        dx, cols = new(tuple(inshape)), geo.scratch(geo.k)
        grads = geo.outputScratch(zero=True)

        def piece(t, lo, hi):
            for i in range(lo, hi):
                np.matmul(wt, geo.gemmIn(dy[i], grads[t]), out=cols[t])
                geo.col2im(cols[t], dx[i])

        overBatch(geo.n, piece)
        return host(dx)
    n, c, h, w = inshape
    dcols = matmul(wt, dy.reshape(n, groups, geo.og, geo.l), new((n, groups, geo.k, geo.l)))
    dcols = dcols.reshape(n, c, geo.kh, geo.kw, geo.ho, geo.wo)
    dxp = np.zeros((n, c, h + 2 * pad[0], w + 2 * pad[1]), dtype=np.float32)
    for i in range(geo.kh):
        for j in range(geo.kw):
            sy, sx = tapSlice(i, j, stride, dilation, (geo.ho, geo.wo))
            dxp[:, :, sy, sx] += dcols[:, :, i, j]
    return host(unpadded(dxp, pad, inshape))


def _backwardParamsNumpy(geo, x, dy, wgrad, bgrad, stride, pad, dilation, groups):
    cols = im2col(x, (geo.kh, geo.kw), stride, pad, dilation, (geo.ho, geo.wo)).reshape(geo.n, groups, geo.k, geo.l)
    # per image dy (O/G x L) @ cols^T (L x K), summed over the batch: (N, G, O/G, K) is small
    dw = matmul(dy.reshape(geo.n, groups, geo.og, geo.l), cols.transpose(0, 1, 3, 2),
                new((geo.n, groups, geo.og, geo.k))).sum(axis=0)
    wgrad += dw.reshape(wgrad.shape)
    accBiasGrad(bgrad, dy)


def conv2dBackwardParams(x, dy, wgrad, bgrad, stride, pad, dilation, groups):
    geo = _Geometry(x.shape, wgrad.shape, stride, pad, dilation, groups)
    dy = dense(dy)
    if not accel.enabled:
        _backwardParamsNumpy(geo, x, dy, wgrad, bgrad, stride, pad, dilation, groups)
        return
    x, cols = dense(x), geo.scratch(geo.k)
    grads = geo.outputScratch(zero=True)
    gradsT = new((parts(geo.n), groups, geo.lw, geo.og)) if geo.copyGradT else None
    ones = np.ones(geo.l, np.float32)

    def piece(t, lo, hi):
        # each thread sums its images' products into its own transposed (G, K, O/G); the bias
        # gradient too. Transposed because OpenBLAS ran cols @ dy^T 1.3-1.6x faster than
        # dy @ cols^T on these shapes (the transposed operand is then the small one); dy^T is
        # copied row-major first where that measured faster (geo.copyGradT).
        acc, tmp = np.zeros((groups, geo.k, geo.og), np.float32), np.empty((groups, geo.k, geo.og), np.float32)
        bacc, btmp = np.zeros(geo.o, np.float32), np.empty(geo.o, np.float32)
        for i in range(lo, hi):
            geo.im2col(x[i], cols[t])
            g = geo.gemmIn(dy[i], grads[t]).transpose(0, 2, 1)
            if gradsT is not None:
                np.copyto(gradsT[t], g)
                g = gradsT[t]
            np.matmul(cols[t], g, out=tmp)
            acc += tmp
            if bgrad is not None:
                # a matrix-vector product: numpy's row sums took 12 us per image of 64 16x16 maps.
                # Here, not in one accBiasGrad pass after the loop, as dy[i] is in cache now
                # (measured: that pass made the grouped case's weight gradient 1.63 -> 1.72 ms)
                np.matmul(dy[i].reshape(geo.o, geo.l), ones, out=btmp)
                bacc += btmp
        return acc, bacc

    partials = overBatch(geo.n, piece)
    if geo.wide and not all(allFinite(acc) for acc, _ in partials):
        _backwardParamsNumpy(geo, x, dy, wgrad, bgrad, stride, pad, dilation, groups)   # see _Geometry
        return
    for acc, bacc in partials:
        wgrad += acc.transpose(0, 2, 1).reshape(wgrad.shape)
        if bgrad is not None:
            bgrad += bacc.reshape(bgrad.shape)


def pointwiseConv2d(x, W, b):
    n, c, h, w = x.shape
    o = W.shape[0]
    y = batchLeft(np.asarray(W).reshape(o, c), np.asarray(x).reshape(n, c, h * w), new((n, o, h * w))).reshape(n, o, h, w)
    addBias(y, b)
    return host(y)


def pointwiseConv2dBackwardData(dy, W):
    n, o, h, w = dy.shape
    c = W.shape[1]
    dx = batchLeft(np.asarray(W).reshape(o, c).T, np.asarray(dy).reshape(n, o, h * w), new((n, c, h * w)))
    return host(dx.reshape(n, c, h, w))


def pointwiseConv2dBackwardParams(x, dy, wgrad, bgrad):
    n, c, h, w = x.shape
    o = dy.shape[1]
    # dW (O, C) = sum over images of dy (O x L) @ x^T (L x C), the batch contracted in the GEMM
    dw = batchGram(np.asarray(dy).reshape(n, o, h * w), np.asarray(x).reshape(n, c, h * w),
                   np.empty((o, c), dtype=np.float32))
    wgrad += dw.reshape(wgrad.shape)
    accBiasGrad(bgrad, dy)
