"""im2col and col2im for the general convolution: the NumPy reference and the numba kernels.

The columns of an image are a (C*kh*kw, L) matrix, row (c, i, j) holding what tap (i, j) of
channel c reads at each of the L output positions, so that a conv is one GEMM with the weights
(O, C*kh*kw) per group (general.py). Without numba the whole batch's columns are one strided-view
copy (``im2col``). With numba, the kernels below run one image at a time, serially, from the GEMM
threads (gemm.overBatch): the columns of one image (~1 MB) are made and consumed while they sit in
that core's L2 cache, instead of the whole batch's columns going out to memory and back. Each plane
goes through a zero-bordered copy, and whole rows move through pre-sliced views indexed by the
bare loop variable, so no per-pixel bounds checks or possibly negative indices stop vectorisation.

Three forms, chosen by plan.py and carried out by ``ColumnLayout``: "im2col" (any geometry, L =
Ho*Wo), "im2col-wide" (stride 1, L = Ho*Wp with garbage columns) and "im2col-flat" (stride 1 with
"same" padding, no padded copies).
"""

import numpy as np

from minidl.backend.numpy import jit
from minidl.backend.numpy.array import new
from minidl.backend.numpy.gemm import parts
from minidl.backend.numpy.windows import padded, tapRangeArray, windows


def im2col(x, size, stride, pad, dilation, outsize):
    """(N, C*kh*kw, Ho*Wo) columns of x, row (c, i, j) holding what tap (i, j) of channel c reads:
    the NumPy reference, one copy through the strided window view."""
    n, c = x.shape[:2]
    (kh, kw), (ho, wo) = size, outsize
    return windows(padded(x, pad), size, stride, dilation, outsize).reshape(n, c * kh * kw, ho * wo)


@jit.serial
def im2colImage(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo):
    """cols (C*kh*kw, Ho*Wo) of one image x (C, H, W): row (c, i, j) holds what tap (i, j) of
    channel c reads."""
    c, h, wd = x.shape
    buf = np.zeros((h + 2 * ph, wd + 2 * pw), dtype=np.float32)    # the border stays zero
    for ci in range(c):
        plane = x[ci]
        for r in range(h):      # rows by loop, not buf[...] = x[ci]: see jit.py on compiling
            line = buf[ph + r, pw:pw + wd]
            for q in range(wd):
                line[q] = plane[r, q]
        for i in range(kh):
            for j in range(kw):
                row = cols[(ci * kh + i) * kw + j]
                for oy in range(ho):
                    dst = row[oy * wo:(oy + 1) * wo]
                    src = buf[oy * sh + i * dh]
                    if sw == 1:
                        unit = src[j * dw:j * dw + wo]
                        for ox in range(wo):
                            dst[ox] = unit[ox]
                    else:
                        strided = src[j * dw:j * dw + sw * (wo - 1) + 1:sw]
                        for ox in range(wo):
                            dst[ox] = strided[ox]


@jit.serial
def col2imImage(cols, dx, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo):
    """dx (C, H, W) of one image = the sum of what each row of cols (C*kh*kw, Ho*Wo) read
    (im2colImage's adjoint); dx is overwritten."""
    c, h, wd = dx.shape
    buf = np.empty((h + 2 * ph, wd + 2 * pw), dtype=np.float32)
    for ci in range(c):
        buf[:, :] = 0.0
        for i in range(kh):
            for j in range(kw):
                row = cols[(ci * kh + i) * kw + j]
                for oy in range(ho):
                    src = row[oy * wo:(oy + 1) * wo]
                    dst = buf[oy * sh + i * dh]
                    if sw == 1:
                        unit = dst[j * dw:j * dw + wo]
                        for ox in range(wo):
                            unit[ox] += src[ox]
                    else:
                        strided = dst[j * dw:j * dw + sw * (wo - 1) + 1:sw]
                        for ox in range(wo):
                            strided[ox] += src[ox]
        plane = dx[ci]
        for r in range(h):
            line = buf[ph + r, pw:pw + wd]
            for q in range(wd):
                plane[r, q] = line[q]


# Stride 1 has a cheaper "wide" form: columns span the padded width, Ho rows of Wp = W + 2*pw,
# so row (c, i, j) is one contiguous run of the flat padded plane starting at tap (i, j)'s
# offset: a single copy of Ho*Wp floats instead of Ho copies of Wo (for 16x16 maps, 16-float
# copies made im2col cost more than the GEMM). The GEMM then computes Wp - Wo garbage columns
# per row, which the caller drops (forward) or keeps at zero (backward), ~6-12% more arithmetic.


@jit.inline
def _paddedPlanes(c, h, wd, ph, pw):
    """Zeroed flat padded planes (C, (H + 2ph + 1) * Wp): one spare row, since a wide row at the
    largest tap offset runs (kw - 1) * dw past the plane."""
    wp = wd + 2 * pw
    return np.zeros((c, (h + 2 * ph + 1) * wp), dtype=np.float32)


@jit.serial
def im2colWide(x, cols, kh, kw, ph, pw, dh, dw, ho):
    """Stride-1 columns of one image x (C, H, W) in the wide form: cols (C*kh*kw, Ho*Wp), row
    (c, i, j) = the flat padded plane of channel c from offset i*dh*Wp + j*dw."""
    c, h, wd = x.shape
    wp = wd + 2 * pw
    buf = _paddedPlanes(c, h, wd, ph, pw)
    span = ho * wp
    for ci in range(c):
        plane = buf[ci]
        src = x[ci]
        for r in range(h):
            row = plane[(ph + r) * wp + pw:(ph + r) * wp + pw + wd]
            for q in range(wd):
                row[q] = src[r, q]
        for i in range(kh):
            for j in range(kw):
                off = i * dh * wp + j * dw
                run = plane[off:off + span]
                dst = cols[(ci * kh + i) * kw + j]
                for q in range(span):
                    dst[q] = run[q]


@jit.serial
def col2imWide(cols, dx, kh, kw, ph, pw, dh, dw, ho):
    """im2colWide's adjoint: dx (C, H, W) of one image, overwritten. The garbage columns of cols
    (wide positions past Wo) must be zero, since their runs overlap real pixels."""
    c, h, wd = dx.shape
    wp = wd + 2 * pw
    buf = _paddedPlanes(c, h, wd, ph, pw)
    span = ho * wp
    for ci in range(c):
        plane = buf[ci]
        for i in range(kh):
            for j in range(kw):
                off = i * dh * wp + j * dw
                run = plane[off:off + span]
                src = cols[(ci * kh + i) * kw + j]
                for q in range(span):
                    run[q] += src[q]
        dst = dx[ci]
        for r in range(h):
            row = plane[(ph + r) * wp + pw:(ph + r) * wp + pw + wd]
            for q in range(wd):
                dst[r, q] = row[q]


# Stride 1 with "same" padding (output size = input size) has a "flat" form with no padded
# copies and no garbage columns: in a channel's flat plane, tap (i, j) of output pixel q reads
# q + offset, offset = (i*dh - ph)*W + (j*dw - pw), so row (c, i, j) of the columns is one
# contiguous copy of the image from that offset, with the reads that fall in the padding (off
# the side of a row, or above or below the plane) then set to zero: whole rows at either end
# and a few columns per row. The image is first copied whole into a buffer with zero margins,
# so no read needs a bounds check (depthwise/flat.py does the same). A 0/1 mask multiplied in
# instead ran 2x slower than the copy.


@jit.inline
def _zeroPadded(row, valid, t, wd):
    """Zero the entries of a flat (H*W) row that tap t reads from the padding: valid[t] =
    (first valid row, end row, first valid column, end column)."""
    n = row.shape[0]
    y0, y1, x0, x1 = valid[t, 0], valid[t, 1], valid[t, 2], valid[t, 3]
    for q in range(y0 * wd):
        row[q] = 0.0
    for q in range(y1 * wd, n):
        row[q] = 0.0
    # column by column, rows inner: a 3x3 kernel's side taps zero one column each
    for xx in range(x0):
        for y in range(y0, y1):
            row[y * wd + xx] = 0.0
    for xx in range(x1, wd):
        for y in range(y0, y1):
            row[y * wd + xx] = 0.0


@jit.serial
def im2colFlat(x, cols, valid, offs, lead):
    """cols (C*T, H*W) of one image x (C, H, W): row c*T + t = x read at offs[t], zero where
    valid[t] says the read falls in the padding; lead >= every |offset|."""
    c, h, wd = x.shape
    hw = h * wd
    taps = offs.shape[0]
    buf = np.zeros(lead + c * hw + lead, dtype=np.float32)
    flat = x.reshape(c * hw)
    body = buf[lead:lead + c * hw]
    for q in range(c * hw):
        body[q] = flat[q]
    for ci in range(c):
        for t in range(taps):
            start = lead + ci * hw + offs[t]
            src = buf[start:start + hw]
            dst = cols[ci * taps + t]
            for q in range(hw):
                dst[q] = src[q]
            _zeroPadded(dst, valid, t, wd)


@jit.serial
def col2imFlat(cols, dx, valid, offs, lead):
    """im2colFlat's adjoint: dx (C, H, W) of one image, overwritten. Zeroes cols' entries for
    padding reads first (cols is scratch)."""
    c, h, wd = dx.shape
    hw = h * wd
    taps = offs.shape[0]
    buf = np.zeros(lead + c * hw + lead, dtype=np.float32)
    for ci in range(c):
        for t in range(taps):
            src = cols[ci * taps + t]
            _zeroPadded(src, valid, t, wd)
            start = lead + ci * hw + offs[t]
            dst = buf[start:start + hw]
            for q in range(hw):
                dst[q] += src[q]
    flat = dx.reshape(c * hw)
    body = buf[lead:lead + c * hw]
    for q in range(c * hw):
        flat[q] = body[q]


@jit.serial
def addBiasRows(mat, bias):
    """mat[k, :] += bias[k] for a matrix (M, L): one image's GEMM output in place (a numpy
    broadcast add cost ~4 us per image, most of it call overhead)."""
    for k in range(mat.shape[0]):
        bv = bias[k]
        row = mat[k]
        for q in range(mat.shape[1]):
            row[q] += bv


@jit.serial
def narrow(wide, out, bias):
    """out (M, Ho, Wo) = the valid columns of wide (M, Ho*Wp), plus bias[m] when bias is not
    empty."""
    m, ho, wo = out.shape
    wp = wide.shape[1] // ho
    for k in range(m):
        bv = bias[k] if bias.shape[0] > 0 else np.float32(0.0)
        for oy in range(ho):
            src = wide[k, oy * wp:oy * wp + wo]
            dst = out[k, oy]
            for q in range(wo):
                dst[q] = src[q] + bv


@jit.serial
def widen(src, wide):
    """wide (M, Ho*Wp) = src (M, Ho, Wo) at the valid positions; the garbage columns are left
    as they are (the caller zeroes them once)."""
    m, ho, wo = src.shape
    wp = wide.shape[1] // ho
    for k in range(m):
        for oy in range(ho):
            dst = wide[k, oy * wp:oy * wp + wo]
            row = src[k, oy]
            for q in range(wo):
                dst[q] = row[q]


def _flatColumnTaps(h, w, kh, kw, pad, dilation):
    """(valid (kh*kw, 4), offsets (kh*kw,), margin) for im2colFlat at stride 1 with "same" padding:
    tap t = (i, j) of pixel q reads q + offsets[t] of its flat plane, inside the image for the rows
    and columns valid[t] bounds (shapes.tapRanges)."""
    offs = np.array([(i * dilation[0] - pad[0]) * w + j * dilation[1] - pad[1] for i in range(kh) for j in range(kw)],
                    dtype=np.int64)
    valid = tapRangeArray((h, w), (h, w), (kh, kw), (1, 1), tuple(pad), tuple(dilation))
    return valid, offs, int(np.abs(offs).max())


class ColumnLayout:
    """One general conv's column matrices and the numba kernels that fill and empty them, in the
    form ("im2col", "im2col-wide" or "im2col-flat") plan.py chose for its geometry ("numpy": the
    sizes alone, for the NumPy path).

    Sizes: n, c, h, w (input), o, kh, kw (weights), ho, wo (output), g groups, og = O/G maps per
    group, k = C/G*kh*kw column rows per group, l = Ho*Wo, and lw the width the GEMMs see (Ho*Wp in
    the wide form, else l). In the wide form the GEMM's output has Wp - Wo garbage columns per
    row, dropped on the way to the image (forward) or kept at zero (backward).

    The wide garbage columns are exact for finite values only: in the input gradient they are W^T
    times zeros, which col2imWide adds onto real pixels (NaN for a non-finite W), and in the weight
    gradient they are real pixels times zeros (NaN for a non-finite pixel). So the general conv
    checks W, or its partial sums, and takes the NumPy path when they are not finite."""

    def __init__(self, form, inshape, wshape, stride, pad, dilation, groups, outsize):
        self.form = form
        self.n, self.c, self.h, self.w = inshape
        self.o, cg, self.kh, self.kw = wshape
        self.ho, self.wo = outsize
        self.g, self.og, self.k, self.l = groups, self.o // groups, cg * self.kh * self.kw, self.ho * self.wo
        self.wide = form == "im2col-wide"
        self.lw = self.ho * (self.w + 2 * pad[1]) if self.wide else self.l
        if form == "im2col-flat":
            self.kernels = im2colFlat, col2imFlat
            self.args = _flatColumnTaps(self.h, self.w, self.kh, self.kw, pad, dilation)
        elif self.wide:
            self.kernels = im2colWide, col2imWide
            self.args = (self.kh, self.kw, pad[0], pad[1], dilation[0], dilation[1], self.ho)
        elif form == "im2col":
            self.kernels = im2colImage, col2imImage
            self.args = (self.kh, self.kw, stride[0], stride[1], pad[0], pad[1], dilation[0], dilation[1], self.ho,
                         self.wo)
        else:   # "numpy": the sizes only, for the NumPy path
            self.kernels, self.args = None, ()

    def scratch(self, rows, zero=False):
        """(threads, G, rows, lw) per-thread matrices (zeroed when zero: their garbage columns stay 0)."""
        buf = new((parts(self.n), self.g, rows, self.lw))
        if zero:
            buf.fill(0.0)
        return buf

    def outputScratch(self, zero=False):
        """Per-thread (G, O/G, lw) output-shaped matrices for the wide form (zeroed when zero); the
        other forms work on the images themselves, so each thread gets None."""
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
            narrow(out.reshape(self.o, self.lw), image, bias)
        elif bias.shape[0] > 0:
            addBiasRows(out.reshape(self.o, self.l), bias)

    def gemmIn(self, image, scratch):
        """An output-shaped image (O, Ho, Wo) as a GEMM operand (G, O/G, lw): widened into scratch
        (whose garbage columns stay 0), or the image itself."""
        if self.wide:
            widen(image, scratch.reshape(self.o, self.lw))
            return scratch
        return image.reshape(self.g, self.og, self.l)
