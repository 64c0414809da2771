"""Batch-norm kernels (numba; see jit.py): per-channel sums, and the passes that apply them.

x, dy, y and dx are (N, C, L) views of NCHW tensors (L = H*W); per-channel arrays are (C,).
Channel-major (channelMajorTrain, channelMajorBackward): one channel of a (N, C, L) tensor is N
blocks of L floats (256 KB for 64 images of 32x32), so the statistics pass leaves it in the core's
L2 cache and the pass that applies them reads it from there, not from main memory. Image-major
(channelSums, then channelAffine or backwardApply): small planes (8x8: 256 bytes, 64 KB apart for
256 channels) go image by image instead, since channel-major reads of such short runs defeat the
hardware prefetcher (measured inside a MobileNet step: 2-3x the time of the same call on warm
data). Sums run in float64, where E[x^2] - mean^2 loses nothing unless mean/std exceeds ~1e6.
"""

import numpy as np

from minidl.backend.numpy import jit
from minidl.backend.numpy.elementwise.kernels import clipGradient, clipValue
from minidl.backend.numpy.jit import chunk, prange


# Division by a zero sqrt(var + epsilon) (a constant channel with an epsilon that rounds to zero in
# float32, or a variance of exactly -epsilon) raises ZeroDivisionError in numba's compiled code, where
# NumPy's formulas give infinities and NaN. The coefficients test for it and give x / +0 by hand
# (_quotient), or report the channel not finite so the caller runs the NumPy formula.


@jit.inline
def _quotient(x, d):
    """x / d in IEEE arithmetic for d >= 0 or NaN: x * inf (NaN for x = 0 or NaN) when d is zero."""
    return x / d if d != 0 else x * np.inf


# A batch norm fused with the in-place activation after it (ReLU or clip: minidl.containers.sequential)
# clips its output as it writes it, and masks the incoming gradient by that output as it reads it:
# the activation's two passes over memory are gone. The rules are the activation kernels' own
# (elementwise/kernels.py: clipValue, clipGradient). The products after the mask may round in other
# places than the unfused passes' do (fast-math may fuse a multiply into an add): a few float32 ulps
# of batch norm's input gradient.


@jit.inline
def _trainCoefficients(s, q, count, scale, bias, epsilon):
    """(mean, biased var, a, b) of one channel from its float64 sums of x and x^2, with
    y = x * a + b the normalised, scaled and shifted output."""
    mu = s / count
    sigma2 = q / count - mu * mu
    if sigma2 < 0.0:        # rounding below zero; NaN fails the comparison and stays NaN
        sigma2 = 0.0
    a = np.float32(_quotient(scale, np.sqrt(np.float32(sigma2) + epsilon)))
    return mu, sigma2, a, np.float32(bias - np.float32(mu) * a)


@jit.inline
def _backwardCoefficients(s1, s2, count, scale, mean, var, epsilon, useBatchStats):
    """(a, k2, k3, dscale) of one channel from its sums of dy and dy * (x - mean), with
    dx = a*dy + k2*x + k3: the batch-statistics terms folded into per-channel constants."""
    mu = np.float64(mean)
    invStd = _quotient(1.0, np.sqrt(np.float64(var) + epsilon))
    a = scale * invStd
    k2 = -a * invStd * invStd * s2 / count if useBatchStats else 0.0
    k3 = -a * s1 / count - k2 * mu if useBatchStats else 0.0
    return np.float32(a), np.float32(k2), np.float32(k3), s2 * invStd


@jit.inline
def _affineRow(src, dst, a, b, lo, hi, clip):
    """dst = src * a + b over one image's plane of one channel, clipped to [lo, hi] with clip."""
    if clip:
        for k in range(src.shape[0]):
            dst[k] = clipValue(src[k] * a + b, lo, hi)
    else:
        for k in range(src.shape[0]):
            dst[k] = src[k] * a + b


@jit.inline
def _affineRowInPlace(row, a, b, lo, hi, clip):
    """_affineRow with dst = src: row = row * a + b, clipped to [lo, hi] with clip."""
    if clip:
        for k in range(row.shape[0]):
            row[k] = clipValue(row[k] * a + b, lo, hi)
    else:
        for k in range(row.shape[0]):
            row[k] = row[k] * a + b


@jit.parallel
def channelMajorTrain(x, scale, bias, y, mean, var, epsilon, lo, hi, clip):
    """Per channel c: mean[c], biased var[c] of x[:, c, :] (float64), then
    y[:, c, :] = (x - mean) / sqrt(var + epsilon) * scale[c] + bias[c], clipped to [lo, hi] with clip."""
    n, c, l = x.shape
    for ci in prange(c):
        s = 0.0
        q = 0.0
        for i0 in range(n):
            for k in range(l):
                v = np.float64(x[i0, ci, k])
                s += v
                q += v * v
        mean[ci], var[ci], a, b = _trainCoefficients(s, q, n * l, scale[ci], bias[ci], epsilon)
        for i0 in range(n):
            _affineRow(x[i0, ci], y[i0, ci], a, b, lo, hi, clip)


@jit.serialExact
def evalCoefficients(scale, bias, mean, var, epsilon, a, b):
    """a[c] = scale[c] / sqrt(var[c] + epsilon), b[c] = bias[c] - mean[c] * a[c], each operation
    rounded to float32 as the NumPy formula's are (no fast-math: the same bits). Returns whether
    every a, bias and mean is finite: only then may the affine pass stand in for the formula."""
    finite = True
    for ci in range(a.shape[0]):
        ai = np.float32(_quotient(scale[ci], np.float32(np.sqrt(np.float32(var[ci] + epsilon)))))
        a[ci] = ai
        b[ci] = np.float32(bias[ci] - np.float32(mean[ci] * ai))
        if not (np.isfinite(ai) and np.isfinite(bias[ci]) and np.isfinite(mean[ci])):
            finite = False
    return finite


@jit.parallel
def evalAffine(x, scale, bias, mean, var, epsilon, y, lo, hi, clip):
    """Batch norm with fixed statistics in one call: y[n, c, :] = x[n, c, :] * a[c] + b[c]
    (evalCoefficients), clipped to [lo, hi] with clip. Writes nothing and returns False when a
    coefficient is not finite (the caller then runs the NumPy formula); True otherwise. One call
    instead of a dozen small NumPy ones: at batch 1 their Python, not the pass, was the cost."""
    c = x.shape[1]
    a = np.empty(c, np.float32)
    b = np.empty(c, np.float32)
    if not evalCoefficients(scale, bias, mean, var, epsilon, a, b):
        return False
    n = x.shape[0]
    for p in prange(n * c):
        i0 = p // c
        ci = p - i0 * c
        _affineRow(x[i0, ci], y[i0, ci], a[ci], b[ci], lo, hi, clip)
    return True


@jit.parallel
def evalAffineInPlace(x, scale, bias, mean, var, epsilon, lo, hi, clip):
    """evalAffine with y = x: each value is replaced by its output. A kernel of its own because
    evalAffine's loops with y aliasing x ran 1.5x slower (LLVM's overlap check sends them to the
    scalar loop)."""
    c = x.shape[1]
    a = np.empty(c, np.float32)
    b = np.empty(c, np.float32)
    if not evalCoefficients(scale, bias, mean, var, epsilon, a, b):
        return False
    n = x.shape[0]
    for p in prange(n * c):
        i0 = p // c
        ci = p - i0 * c
        _affineRowInPlace(x[i0, ci], a[ci], b[ci], lo, hi, clip)
    return True


@jit.parallel
def channelAffine(x, a, b, y, lo, hi, clip):
    """y[n, c, :] = x[n, c, :] * a[c] + b[c], clipped to [lo, hi] with clip."""
    n, c = x.shape[0], x.shape[1]
    for p in prange(n * c):
        i0 = p // c
        ci = p - i0 * c
        _affineRow(x[i0, ci], y[i0, ci], a[ci], b[ci], lo, hi, clip)


@jit.parallel
def channelMajorBackward(x, dy, scale, mean, var, epsilon, useBatchStats, dx, dscale, dbias, z, lo, hi, bounded,
                         masked):
    """Per channel c: dbias[c] = sum(dy), dscale[c] = sum(dy * xhat), then dx for the batch
    statistics (useBatchStats) or for fixed ones, with xhat = (x - mean) * invStd. With masked, dy
    is first masked by the fused activation's output z (clipGradient)."""
    n, c, l = x.shape
    count = n * l
    for ci in prange(c):
        mu = np.float64(mean[ci])
        s1 = 0.0
        s2 = 0.0
        for i0 in range(n):
            if masked:
                for k in range(l):
                    g = clipGradient(dy[i0, ci, k], z[i0, ci, k], lo, hi, bounded)
                    s1 += g
                    s2 += g * (x[i0, ci, k] - mu)
            else:
                for k in range(l):
                    g = dy[i0, ci, k]
                    s1 += g
                    s2 += g * (x[i0, ci, k] - mu)
        a32, k2f, k3f, dscale[ci] = _backwardCoefficients(s1, s2, count, scale[ci], mean[ci], var[ci], epsilon,
                                                          useBatchStats)
        dbias[ci] = s1
        for i0 in range(n):
            if masked:
                for k in range(l):
                    dx[i0, ci, k] = clipGradient(dy[i0, ci, k], z[i0, ci, k], lo, hi, bounded) * a32 + \
                        x[i0, ci, k] * k2f + k3f
            else:
                for k in range(l):
                    dx[i0, ci, k] = dy[i0, ci, k] * a32 + x[i0, ci, k] * k2f + k3f


# Image-major: the sums are taken per parallel task over its images, in float64, and added up
# afterwards; the elementwise pass then walks the tensor in memory order (channelAffine,
# backwardApply).

@jit.parallel
def _channelSums(x, dy, mean, withGrad, chunks, z, zlo, zhi, bounded, masked):
    """channelSums, with dy an array either way (ignored without withGrad): one compiled
    signature serves both kinds of call. Per task t over a share of the images,
    part[t, :, c] are its images' sums, added up over the tasks in task order at the end. With
    masked, dy is first masked by the fused activation's output z between zlo and zhi (clipGradient)."""
    n, c, l = x.shape
    chunks = min(n, chunks)
    part = np.zeros((chunks, 2, c))
    for t in prange(chunks):
        lo, hi = chunk(t, chunks, n)
        for i0 in range(lo, hi):
            for ci in range(c):
                s = 0.0
                q = 0.0
                if not withGrad:
                    for k in range(l):
                        v = np.float64(x[i0, ci, k])
                        s += v
                        q += v * v
                elif masked:
                    mu = np.float64(mean[ci])
                    for k in range(l):
                        g = np.float64(clipGradient(dy[i0, ci, k], z[i0, ci, k], zlo, zhi, bounded))
                        s += g
                        q += g * (np.float64(x[i0, ci, k]) - mu)
                else:
                    mu = np.float64(mean[ci])
                    for k in range(l):
                        g = np.float64(dy[i0, ci, k])
                        s += g
                        q += g * (np.float64(x[i0, ci, k]) - mu)
                part[t, 0, ci] += s
                part[t, 1, ci] += q
    # loops, not part.sum(axis=0) (numba's axis sum added ~1.3 s to a cold compile) nor
    # np.zeros (in a parallel kernel numba makes that a parallel loop: one more launch)
    out = np.empty((2, c))
    for ci in range(c):
        out[0, ci] = 0.0
        out[1, ci] = 0.0
    for t in range(chunks):
        for ci in range(c):
            out[0, ci] += part[t, 0, ci]
            out[1, ci] += part[t, 1, ci]
    return out


_noMean = np.zeros(0, dtype=np.float32)
_F0 = np.float32(0)


def channelSums(x, dy, mean, chunks, mask=None):
    """(2, C) float64 sums over images and positions of x (N, C, L): of x and x^2 when dy is
    None, else of dy and dy * (x - mean[c]), dy (N, C, L) and mean (C,) float32. Taken per
    parallel task over a share of the images, then added up. mask: None, or (z, lo, hi, bounded)
    of a fused activation, by whose output z (N, C, L) dy is masked first."""
    z, lo, hi, bounded = (x, _F0, _F0, False) if mask is None else mask
    if dy is None:
        return _channelSums(x, x, _noMean, False, chunks, z, lo, hi, bounded, False)
    return _channelSums(x, dy, mean, True, chunks, z, lo, hi, bounded, mask is not None)


@jit.plain
def trainCoefficients(sums, count, scale, bias, epsilon, mean, var, a, b):
    """_trainCoefficients for every channel, from channelSums' (2, C) sums."""
    for ci in range(sums.shape[1]):
        mean[ci], var[ci], a[ci], b[ci] = _trainCoefficients(sums[0, ci], sums[1, ci], count, scale[ci],
                                                             bias[ci], epsilon)


@jit.plain
def backwardCoefficients(sums, count, scale, mean, var, epsilon, useBatchStats, a, k2, k3, dscale, dbias):
    """_backwardCoefficients for every channel, from channelSums' (2, C) sums."""
    for ci in range(sums.shape[1]):
        a[ci], k2[ci], k3[ci], dscale[ci] = _backwardCoefficients(sums[0, ci], sums[1, ci], count, scale[ci],
                                                                  mean[ci], var[ci], epsilon, useBatchStats)
        dbias[ci] = sums[0, ci]


@jit.parallel
def backwardApply(x, dy, a, k2, k3, dx, z, lo, hi, bounded, masked):
    """dx[n, c, :] = dy * a[c] + x * k2[c] + k3[c], dy masked by z first with masked (clipGradient)."""
    n, c, l = x.shape
    for p in prange(n * c):
        i0 = p // c
        ci = p - i0 * c
        av, kv2, kv3 = a[ci], k2[ci], k3[ci]
        if masked:
            for k in range(l):
                g = clipGradient(dy[i0, ci, k], z[i0, ci, k], lo, hi, bounded)
                dx[i0, ci, k] = g * av + x[i0, ci, k] * kv2 + kv3
        else:
            for k in range(l):
                dx[i0, ci, k] = dy[i0, ci, k] * av + x[i0, ci, k] * kv2 + kv3
