"""Winograd F(2x2, 3x3) for stride-1 3x3 convolutions on the NumPy backend (numba only).

A 2x2 block of outputs of one (output map, input map) pair needs 36 multiplies as a direct
correlation, and 16 in the Winograd domain (Lavin & Gray, "Fast Algorithms for Convolutional Neural
Networks", 2016): with the 4x4 input tile d, the 3x3 kernel g and the constant matrices below,

    y (2x2) = A^T [ (G g G^T) (.) (B^T d B) ] A

where (.) is the elementwise product. Summed over input maps, each of the 16 elements e of the
product is one GEMM: M[e] (O, T) = U[e] (O, C) @ V[e] (C, T) over the T tiles of an image, so
the convolution becomes an input transform, 16 GEMMs with 2.25x fewer multiply-adds than im2col's
one, and an output transform. The transforms are cheap adds; each thread runs them image by image
(or a few small images at a time) so V and M stay in its core's cache between them and the GEMMs.

Dilation: a dilated conv reads a stride-1 conv's taps on every dh-th row and dw-th column, so the
padded image is split into dh*dw phase planes (rows py, py + dh, ...), each an ordinary 3x3 conv
whose outputs interleave back. Every output is computed from the same additions as before; only the
tile layout changes.

Backward data: the gradient of a stride-1 correlation is the correlation of dy with the kernel
flipped and its maps swapped, padded by 2*dilation - pad (negative padding crops): this same forward.

Not done here: the weight gradient. In the Winograd domain it is dU[e] (O, C) = sum over tiles of
dM[e] (O, T) @ V[e]^T (dM the output transform's adjoint of dy), a GEMM contracting the long tile
axis of two row-major operands; OpenBLAS ran that orientation at 65-110 GFLOP/s against ~140 for
the forward's, and the whole pass measured 7.05 vs 7.16 ms (conv3x3 case), 5.25 vs 4.84 (dilated),
4.05 vs 3.54 (64 maps of 16x16) against im2col's, so plan.py keeps im2col for it.

The transforms are exact in real arithmetic; in float32 they add a rounding error comparable to
the direct sum's (the constants are 0, +-1 and 1/2). Not with non-finite values: a NaN or an
infinity in a 4x4 tile reaches all four of its outputs through differences (inf - inf = NaN), so
an output whose window holds +inf can come out NaN, and one whose window misses a NaN pixel NaN
too. It still reaches every output whose window holds it, so any such result has a non-finite
output somewhere: the output transform returns a checksum of what it computed, and conv2d returns
None when it is not finite; general.py then takes the exact im2col path. Not used: strides other
than 1, kernels other than 3x3, groups of fewer than plan.WINOGRAD_MIN_MAPS maps (plan.py routes
those to im2col), and the pure-NumPy fallback (it keeps im2col as the reference the tests hold
this path to).
"""

import numpy as np

from minidl.backend.numpy import jit
from minidl.backend.numpy.array import contiguous, host, new, vectorOrEmpty
from minidl.backend.numpy.gemm import overBatch, parts, pinnedBlas
from minidl.shapes import ceilDiv, windowOutSize2d

# G (4x3): the kernel transform U = G g G^T
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]], dtype=np.float32)
# bytes of one chunk's V and M per thread: a cache-sized piece of work
TILE_CHUNK_BYTES = 3 << 19

# Serial kernels, called from the GEMM threads (gemm.overBatch) one image at a time.
#
# Layout (see _Tiles): the phase planes are stored split by row and column parity, phases
# stacked, [Y & 1, X & 1, p*rows + (Y >> 1), X >> 1] = pixel (Y, X) of phase p, so every access
# a tile makes is a unit-stride run: tile (ty, tx) reads columns 2tx..2tx+3 = even[tx], odd[tx],
# even[tx + 1], odd[tx + 1]. Each row of tiles carries one garbage tile (tx = tw, half = tw + 1)
# so that a map's row and column passes run over all tile rows of all phases as one flat loop
# (k = row*half + tx): loops over one tile row at a time spent more on slicing than on
# arithmetic (measured: input transform 81 -> 53 us per conv3x3 image). The GEMMs compute the
# garbage tiles too (~1/(tw + 1) more work); the output transform never reads them. Per-row
# work keeps `continue` and tail `if`s out of the code around inner loops: numba's loops lost
# their vectorisation with them (measured 10x and 5x).

@jit.inline
def _dealPairs(ln, a, b, n, dw):
    """a[k] = ln[2*dw*k], b[k] = ln[2*dw*k + dw]: n phase columns (source stride dw) dealt
    alternately to a and b."""
    pairs = n >> 1
    # each arm keeps its own tail: with the tail after the branch numba's loops ran 5x slower
    if dw == 1:
        for k in range(pairs):
            a[k] = ln[2 * k]
            b[k] = ln[2 * k + 1]
        if n & 1:
            a[pairs] = ln[2 * pairs]
    else:
        for k in range(pairs):
            a[k] = ln[2 * dw * k]
            b[k] = ln[2 * dw * k + dw]
        if n & 1:
            a[pairs] = ln[2 * dw * pairs]

@jit.inline
def _interleave(ev, od, dst, n, dw):
    """dst[dw*q] = (ev if q is even else od)[q >> 1] for q < n: _dealPairs' inverse."""
    pairs = n >> 1
    if dw == 1:
        for k in range(pairs):
            dst[2 * k] = ev[k]
            dst[2 * k + 1] = od[k]
        if n & 1:
            dst[2 * pairs] = ev[pairs]
    else:
        for k in range(pairs):
            dst[2 * dw * k] = ev[k]
            dst[2 * dw * k + dw] = od[k]
        if n & 1:
            dst[2 * dw * pairs] = ev[pairs]

@jit.plain
def _toPhases(src, planes, ph, pw, dh, dw):
    """Place src (H, W), padded by (ph, pw), into parity-split phase planes stacked by phase,
    (2, 2, dh*dw*rows, half): padded pixel (Y*dh + py, X*dw + px) goes to
    [Y & 1, X & 1, (py*dw + px)*rows + (Y >> 1), X >> 1]. Pixels outside the planes (negative
    padding crops) are skipped; the rest is left as it is."""
    h, wd = src.shape
    rows, half = planes.shape[2] // (dh * dw), planes.shape[3]
    rlo, rhi = max(0, -ph), min(h, 2 * rows * dh - ph)
    for px in range(dw):
        q0 = (px - pw) % dw                     # first source column of phase px
        x0 = (q0 + pw) // dw                    # its phase column (negative: cropped)
        k0 = max(0, -x0)
        n = max(0, min((wd - q0 + dw - 1) // dw, 2 * half - x0) - k0)
        xs, c0 = x0 + k0, q0 + k0 * dw
        for r in range(rlo, rhi):
            pr = r + ph
            yy = pr // dh
            row = ((pr % dh) * dw + px) * rows + (yy >> 1)
            _dealPairs(src[r, c0:], planes[yy & 1, xs & 1, row, xs >> 1:],
                  planes[yy & 1, 1 - (xs & 1), row, (xs + 1) >> 1:], n, dw)

@jit.serial
def winogradInput(x, planes, v, col0, ph, pw, dh, dw, th, tw):
    """v[:, c, col0 + tile] = B^T d B for every 4x4 input tile d of every map c of one image
    x (C, H, W) padded by (ph, pw); planes is zeroed (2, 2, dh*dw*(th + 1), tw + 1) scratch
    (every map writes the same pixels, so its zero border outlives the call)."""
    half = tw + 1
    span = (dh * dw * (th + 1) - 1) * half          # all tiles of all phases, one flat run
    rt = np.zeros((4, 2, span + 1), np.float32)     # + 1: the last garbage tile reads one past
    for ci in range(x.shape[0]):
        _toPhases(x[ci], planes, ph, pw, dh, dw)
        for s in range(2):                          # rows: B^T d, column parity s
            ev, od = planes[0, s].ravel(), planes[1, s].ravel()
            r0, r1, r2, r3 = ev[:span], od[:span], ev[half:half + span], od[half:half + span]
            t0, t1, t2, t3 = rt[0, s], rt[1, s], rt[2, s], rt[3, s]
            for k in range(span):
                t0[k] = r0[k] - r2[k]
                t1[k] = r1[k] + r2[k]
                t2[k] = r2[k] - r1[k]
                t3[k] = r1[k] - r3[k]
        for a in range(4):                          # columns: (B^T d) B
            e0, e1 = rt[a, 0, :span], rt[a, 0, 1:span + 1]
            d0, d1 = rt[a, 1, :span], rt[a, 1, 1:span + 1]
            o0, o1 = v[4 * a, ci, col0:col0 + span], v[4 * a + 1, ci, col0:col0 + span]
            o2, o3 = v[4 * a + 2, ci, col0:col0 + span], v[4 * a + 3, ci, col0:col0 + span]
            for k in range(span):
                o0[k] = e0[k] - e1[k]
                o1[k] = d0[k] + e1[k]
                o2[k] = e1[k] - d0[k]
                o3[k] = d0[k] - d1[k]

@jit.serial
def winogradOutput(m, col0, y, bias, dh, dw, th, tw):
    """y (O, Ho, Wo) of one image = A^T M A of its tiles, columns col0.. of m (16, O, cols), plus
    bias[o] when bias is not empty; outputs past Ho, Wo are dropped. Returns the sum of every
    output computed (those dropped too), a check for non-finite values."""
    o, ho, wo = y.shape
    half = tw + 1
    span = (dh * dw * (th + 1) - 1) * half          # as winogradInput's
    rows = np.empty((4, span), np.float32)          # top even, top odd, bottom even, bottom odd
    te, to, be, bo = rows[0], rows[1], rows[2], rows[3]
    check = np.float32(0.0)
    for oc in range(o):
        bv = bias[oc] if bias.shape[0] > 0 else np.float32(0.0)
        m0, m1, m2, m3 = (m[0, oc, col0:col0 + span], m[1, oc, col0:col0 + span],
                          m[2, oc, col0:col0 + span], m[3, oc, col0:col0 + span])
        m4, m5, m6, m7 = (m[4, oc, col0:col0 + span], m[5, oc, col0:col0 + span],
                          m[6, oc, col0:col0 + span], m[7, oc, col0:col0 + span])
        m8, m9, m10, m11 = (m[8, oc, col0:col0 + span], m[9, oc, col0:col0 + span],
                            m[10, oc, col0:col0 + span], m[11, oc, col0:col0 + span])
        m12, m13, m14, m15 = (m[12, oc, col0:col0 + span], m[13, oc, col0:col0 + span],
                              m[14, oc, col0:col0 + span], m[15, oc, col0:col0 + span])
        for k in range(span):
            s10 = m4[k] + m5[k] + m6[k]
            s11 = m5[k] - m6[k] - m7[k]
            s20 = m8[k] + m9[k] + m10[k]
            s21 = m9[k] - m10[k] - m11[k]
            te[k] = m0[k] + m1[k] + m2[k] + s10 + s20 + bv
            to[k] = m1[k] - m2[k] - m3[k] + s11 + s21 + bv
            be[k] = s10 - s20 - (m12[k] + m13[k] + m14[k]) + bv
            bo[k] = s11 - s21 - (m13[k] - m14[k] - m15[k]) + bv
            check += (te[k] + to[k]) + (be[k] + bo[k])
        for p in range(dh * dw):
            py, px = p // dw, p % dw
            count = max(0, (wo - px + dw - 1) // dw)    # phase columns inside Wo
            for ty in range(th):
                # output rows py + dh*(2ty + j) inside Ho: j < jn
                jn = max(0, min(2, (ho - py - 2 * dh * ty + dh - 1) // dh))
                at = (p * (th + 1) + ty) * half
                for j in range(jn):
                    _interleave(rows[2 * j, at:at + half], rows[2 * j + 1, at:at + half],
                                y[oc, py + dh * (2 * ty + j), px:], count, dw)
    return check


class _Tiles:
    """How an output (Ho, Wo) with dilation (dh, dw) splits into 2x2 tiles.

    Phase (py, px) holds output rows py, py + dh, ... and columns px, px + dw, ...: at most
    ceil(Ho/dh) x ceil(Wo/dw), rounded up to th x tw tiles of 2x2 (outputs past Ho, Wo are computed
    from zeros and dropped). Its input is a phase plane of (2*th + 2, 2*tw + 2) padded pixels,
    stored split by row and column parity with the phases stacked: (2, 2, dh*dw*(th + 1), tw + 1).
    The kernels run over all phases as one flat run of tile rows, so each tile row carries one
    garbage tile and each phase but the last one garbage tile row (the tile row that would start
    at its spare last row): T = (dh*dw*(th + 1) - 1)*(tw + 1) tiles per image, tile (p, ty, tx) at
    column (p*(th + 1) + ty)*(tw + 1) + tx of V and M."""

    def __init__(self, outsize, dilation):
        self.ho, self.wo = outsize
        self.dh, self.dw = dilation
        self.th = ceilDiv(ceilDiv(self.ho, self.dh), 2)
        self.tw = ceilDiv(ceilDiv(self.wo, self.dw), 2)
        self.t = (self.dh * self.dw * (self.th + 1) - 1) * (self.tw + 1)

    def planes(self):
        """Zeroed input phase planes: (2*th + 2) x (2*tw + 2) pixels each, a tile's 4x4 reach."""
        return np.zeros((2, 2, self.dh * self.dw * (self.th + 1), self.tw + 1), np.float32)

    def chunk(self, n, maps):
        """Images per chunk: `maps` maps of 16 x T floats per image fit TILE_CHUNK_BYTES (1 to n)."""
        return max(1, min(n, TILE_CHUNK_BYTES // (64 * maps * self.t)))


def kernelTransform(W, groups):
    """U (16, G, O/G, C/G) = G g G^T of every 3x3 kernel g of W (O, C/G, 3, 3), element e = 4a + b."""
    o, cg = W.shape[:2]
    with pinnedBlas():      # einsum may call BLAS (see gemm.pinnedBlas)
        u = np.einsum("ai,ocij,bj->aboc", _G, np.asarray(W, dtype=np.float32), _G, optimize=True)
    return np.ascontiguousarray(u.reshape(16, groups, o // groups, cg), dtype=np.float32)


def conv2d(x, W, b, pad, dilation, groups):
    """Stride-1 3x3 correlation y (N, O, Ho, Wo) of x (N, C, H, W); b (1, O, 1, 1) or None. None
    when a non-finite value went through the transforms (see the module's docstring)."""
    n, c = x.shape[:2]
    o = W.shape[0]
    ho, wo = windowOutSize2d(x.shape, (3, 3), (1, 1), pad, dilation)
    y = new((n, o, ho, wo))
    if n == 0 or ho <= 0 or wo <= 0:
        return host(y)
    tiles = _Tiles((ho, wo), dilation)
    u = kernelTransform(W, groups)
    x, bias = contiguous(x), vectorOrEmpty(None if b is None else np.asarray(b, dtype=np.float32))
    k = tiles.chunk(n, c + o)
    cg, og = c // groups, o // groups

    # per-thread V and M from the workspace pool (reused across calls, like im2col's columns)
    vs, ms = new((parts(n), 16, c, k * tiles.t)), new((parts(n), 16, o, k * tiles.t))

    def piece(t, lo, hi):
        planes, v, m = tiles.planes(), vs[t], ms[t]
        check = np.float32(0.0)
        for s in range(lo, hi, k):
            e = min(hi, s + k)
            cols = (e - s) * tiles.t
            for i in range(s, e):
                winogradInput(x[i], planes, v, (i - s) * tiles.t, pad[0], pad[1], tiles.dh, tiles.dw,
                              tiles.th, tiles.tw)
            # M[e] = U[e] @ V[e] for each element e and group: (16, G) GEMMs of (O/G, C/G) @ (C/G, cols)
            np.matmul(u, v[:, :, :cols].reshape(16, groups, cg, cols),
                      out=m[:, :, :cols].reshape(16, groups, og, cols))
            for i in range(s, e):
                check += winogradOutput(m, (i - s) * tiles.t, y[i], bias, tiles.dh, tiles.dw, tiles.th, tiles.tw)
        return check

    finite = np.isfinite(overBatch(n, piece)).all()
    return host(y) if finite else None


def flippedTransposed(W, groups):
    """W' (C, O/G, 3, 3) with W'[g*C/G + c, o] = W[g*O/G + o, c] rotated 180 degrees: the kernel whose
    correlation with dy is the input gradient."""
    o, cg = W.shape[:2]
    wg = np.asarray(W).reshape(groups, o // groups, cg, 3, 3)[:, :, :, ::-1, ::-1]
    return np.ascontiguousarray(wg.transpose(0, 2, 1, 3, 4).reshape(groups * cg, o // groups, 3, 3))


def conv2dBackwardData(dy, W, inshape, pad, dilation, groups):
    """dx (N, C, H, W) for conv2d's output gradient dy: a stride-1 correlation of dy with the flipped,
    transposed kernel, padded by 2*dilation - pad. None as for conv2d."""
    back = (2 * dilation[0] - pad[0], 2 * dilation[1] - pad[1])
    dx = conv2d(dy, flippedTransposed(W, groups), None, back, dilation, groups)
    if dx is None:
        return None
    if dx.shape != tuple(inshape):
        raise ValueError("conv2dBackwardData: dy of shape %s does not come from an input of shape %s"
                         % (tuple(dy.shape), tuple(inshape)))
    return dx
