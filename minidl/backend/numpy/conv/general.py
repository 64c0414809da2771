"""General 2-D convolution on the NumPy backend: any stride, padding, dilation and groups.

x (N, C, H, W), W (O, C/G, kh, kw), b and bgrad (1, O, 1, 1) or None. Each op asks plan.py which
implementation runs (``routing.plan("general", ...)`` prints it) and follows it:
- Winograd F(2x2, 3x3) (winograd.py) for the forward and input-gradient passes of stride-1 3x3
  convs with enough maps per group;
- otherwise im2col + GEMM, groups a batch dimension of the GEMM. With numba the GEMM threads go
  image by image (im2col -> GEMM -> output, columns.py's ColumnLayout), so an image's columns stay
  in that core's cache; without it the whole batch's columns are one strided-view copy and one
  batched matmul, and the input gradient scatters columns back with one vectorised add per tap.

Non-finite values go through as the formula over the zero-padded input says (a NaN times a padding
zero is NaN): the columns hold exactly what each tap reads, and the GEMMs are IEEE sums. Two
shortcuts are not exact, and checked: Winograd (a non-finite result is computed again on the
columns), and the wide columns' garbage entries (see ColumnLayout).
"""

import numpy as np

from minidl.backend.numpy.array import allFinite, contiguous, host, new, vectorOrEmpty
from minidl.backend.numpy.bias import accBiasGrad, addBias
from minidl.backend.numpy.conv import winograd
from minidl.backend.numpy.conv.columns import im2col
from minidl.backend.numpy.conv.plan import general as _plan
from minidl.backend.numpy.gemm import matmul, overBatch, parts
from minidl.backend.numpy.windows import tapSlice, unpadded


def _planFor(inshape, wshape, stride, pad, dilation, groups):
    """plan.general for these arguments (tuples of ints, as its cache wants them)."""
    return _plan(tuple(inshape), tuple(wshape), tuple(stride), tuple(pad), tuple(dilation), int(groups))


def conv2d(x, W, b, stride, pad, dilation, groups):
    plan = _planFor(x.shape, W.shape, stride, pad, dilation, groups)
    if plan["forward"] == "winograd":
        y = winograd.conv2d(x, W, b, pad, dilation, groups)
        if y is not None:
            return y
        # a non-finite value went through Winograd's tiles: the columns below place it exactly
    layout = plan.columns
    wg = np.asarray(W).reshape(groups, layout.og, layout.k)
    y = new((layout.n, layout.o, layout.ho, layout.wo))
    if layout.form == "numpy":
        cols = _batchColumns(layout, x, stride, pad, dilation)
        matmul(wg, cols, y.reshape(layout.n, groups, layout.og, layout.l))
        addBias(y, b)
        return host(y)
    x, cols = contiguous(x), layout.scratch(layout.k)
    outs = layout.outputScratch()
    bias = vectorOrEmpty(b)

    def piece(t, lo, hi):
        for i in range(lo, hi):
            layout.im2col(x[i], cols[t])
            out = layout.gemmOut(outs[t], y[i])
            np.matmul(wg, cols[t], out=out)
            layout.toImage(out, y[i], bias)

    overBatch(layout.n, piece)
    return host(y)


def conv2dBackwardData(dy, W, inshape, stride, pad, dilation, groups):
    plan = _planFor(inshape, W.shape, stride, pad, dilation, groups)
    if plan["backwardData"] == "winograd":
        dx = winograd.conv2dBackwardData(dy, W, inshape, pad, dilation, groups)
        if dx is not None:
            return dx
        # non-finite: as in conv2d
    layout = plan.columns
    wt = np.ascontiguousarray(np.asarray(W).reshape(groups, layout.og, layout.k).transpose(0, 2, 1))   # (G, K, O/G)
    dy = contiguous(dy)
    if layout.form != "numpy" and (not layout.wide or allFinite(W)):     # see ColumnLayout on the wide form
        dx, cols = new(tuple(inshape)), layout.scratch(layout.k)
        grads = layout.outputScratch(zero=True)

        def piece(t, lo, hi):
            for i in range(lo, hi):
                np.matmul(wt, layout.gemmIn(dy[i], grads[t]), out=cols[t])
                layout.col2im(cols[t], dx[i])

        overBatch(layout.n, piece)
        return host(dx)
    n, c, h, w = inshape
    dcols = matmul(wt, dy.reshape(n, groups, layout.og, layout.l), new((n, groups, layout.k, layout.l)))
    dcols = dcols.reshape(n, c, layout.kh, layout.kw, layout.ho, layout.wo)
    dxp = np.zeros((n, c, h + 2 * pad[0], w + 2 * pad[1]), dtype=np.float32)
    for i in range(layout.kh):
        for j in range(layout.kw):
            sy, sx = tapSlice(i, j, stride, dilation, plan.outsize)
            dxp[:, :, sy, sx] += dcols[:, :, i, j]
    return host(unpadded(dxp, pad, inshape))


def _batchColumns(layout, x, stride, pad, dilation):
    """The NumPy path's columns of the whole batch, (N, G, K, L): one strided-view copy."""
    cols = im2col(x, (layout.kh, layout.kw), stride, pad, dilation, (layout.ho, layout.wo))
    return cols.reshape(layout.n, layout.g, layout.k, layout.l)


def _backwardParamsNumpy(layout, x, dy, wgrad, bgrad, stride, pad, dilation, groups):
    cols = _batchColumns(layout, x, stride, pad, dilation)
    # per image dy (O/G x L) @ cols^T (L x K), summed over the batch: (N, G, O/G, K) is small
    dw = matmul(dy.reshape(layout.n, groups, layout.og, layout.l), cols.transpose(0, 1, 3, 2),
                new((layout.n, groups, layout.og, layout.k))).sum(axis=0)
    wgrad += dw.reshape(wgrad.shape)
    accBiasGrad(bgrad, dy)


def conv2dBackwardParams(x, dy, wgrad, bgrad, stride, pad, dilation, groups):
    plan = _planFor(x.shape, wgrad.shape, stride, pad, dilation, groups)
    layout = plan.columns
    dy = contiguous(dy)
    if layout.form == "numpy":
        _backwardParamsNumpy(layout, x, dy, wgrad, bgrad, stride, pad, dilation, groups)
        return
    x, cols = contiguous(x), layout.scratch(layout.k)
    grads = layout.outputScratch(zero=True)
    gradsT = new((parts(layout.n), groups, layout.lw, layout.og)) if plan.copyGradT else None
    ones = np.ones(layout.l, np.float32)

    def piece(t, lo, hi):
        # each thread sums its images' products into its own transposed (G, K, O/G); the bias
        # gradient too. Transposed because OpenBLAS ran cols @ dy^T 1.3-1.6x faster than
        # dy @ cols^T on these shapes (the transposed operand is then the small one); dy^T is
        # copied row-major first where that measured faster (plan.copyGradT).
        acc = np.zeros((groups, layout.k, layout.og), np.float32)
        tmp = np.empty((groups, layout.k, layout.og), np.float32)
        bacc, btmp = np.zeros(layout.o, np.float32), np.empty(layout.o, np.float32)
        for i in range(lo, hi):
            layout.im2col(x[i], cols[t])
            g = layout.gemmIn(dy[i], grads[t]).transpose(0, 2, 1)
            if gradsT is not None:
                np.copyto(gradsT[t], g)
                g = gradsT[t]
            np.matmul(cols[t], g, out=tmp)
            acc += tmp
            if bgrad is not None:
                # a matrix-vector product: numpy's row sums took 12 us per image of 64 16x16 maps.
                # Here, not in one accBiasGrad pass after the loop, as dy[i] is in cache now
                # (measured: that pass made the grouped case's weight gradient 1.63 -> 1.72 ms)
                np.matmul(dy[i].reshape(layout.o, layout.l), ones, out=btmp)
                bacc += btmp
        return acc, bacc

    partials = overBatch(layout.n, piece)
    if layout.wide and not all(allFinite(acc) for acc, _ in partials):
        _backwardParamsNumpy(layout, x, dy, wgrad, bgrad, stride, pad, dilation, groups)   # see ColumnLayout
        return
    for acc, bacc in partials:
        wgrad += acc.transpose(0, 2, 1).reshape(wgrad.shape)
        if bgrad is not None:
            bgrad += bacc.reshape(bgrad.shape)
