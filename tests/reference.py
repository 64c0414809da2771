"""Naive reference implementations, written for clarity, sharing no code with minidl.

Everything here loops over output positions explicitly and computes in float64.
"""

import numpy as np


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def naiveConv2d(x, W, b=None, stride=1, pad=0, dilation=1, groups=1, dy=None):
    """Direct definition of grouped, dilated, strided, padded cross-correlation.

    Returns y, and when dy is given also (dx, dW, db) computed by the same loop
    (each term y += W*x contributes dx += W*dy and dW += x*dy).
    """
    x, W = np.asarray(x, np.float64), np.asarray(W, np.float64)
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(pad), _pair(dilation)
    n, c, h, w = x.shape
    o, cg, kh, kw = W.shape
    og = o // groups
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, o, ho, wo))
    dyv = None if dy is None else np.asarray(dy, np.float64)
    dx, dW = np.zeros_like(x), np.zeros_like(W)
    for oc in range(o):
        g = oc // og
        for ci in range(cg):
            cin = g * cg + ci
            for i in range(kh):
                for j in range(kw):
                    for oy in range(ho):
                        iy = oy * sh - ph + i * dh
                        if iy < 0 or iy >= h:
                            continue
                        for ox in range(wo):
                            ix = ox * sw - pw + j * dw
                            if ix < 0 or ix >= w:
                                continue
                            y[:, oc, oy, ox] += W[oc, ci, i, j] * x[:, cin, iy, ix]
                            if dyv is not None:
                                dx[:, cin, iy, ix] += W[oc, ci, i, j] * dyv[:, oc, oy, ox]
                                dW[oc, ci, i, j] += np.dot(x[:, cin, iy, ix], dyv[:, oc, oy, ox])
    if b is not None:
        y += np.asarray(b, np.float64).reshape(1, o, 1, 1)
    if dyv is None:
        return y
    return y, dx, dW, dyv.sum(axis=(0, 2, 3)).reshape(1, o, 1, 1)


def naiveDepthwise(x, W, multiplier, stride=1, pad=0, dilation=1):
    """Chainer/TensorFlow definition: out[:, c*M + m] = x[:, c] (*) W[c*M + m, 0]."""
    x, W = np.asarray(x, np.float64), np.asarray(W, np.float64)
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(pad), _pair(dilation)
    n, c, h, w = x.shape
    kh, kw = W.shape[2:]
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
    xp[:, :, ph:ph + h, pw:pw + w] = x
    y = np.zeros((n, c * multiplier, ho, wo))
    for ch in range(c):
        for m in range(multiplier):
            for oy in range(ho):
                for ox in range(wo):
                    patch = xp[:, ch, oy * sh:oy * sh + dh * (kh - 1) + 1:dh, ox * sw:ox * sw + dw * (kw - 1) + 1:dw]
                    y[:, ch * multiplier + m, oy, ox] = (patch * W[ch * multiplier + m, 0]).sum(axis=(1, 2))
    return y
