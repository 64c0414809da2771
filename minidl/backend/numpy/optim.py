"""Optimizer update rules on the NumPy backend, all in place.

Gradients are true gradients of the loss, so every rule subtracts. ``wc`` is
L2 weight decay folded into the gradient: g = grad + wc * param. With numba,
each rule is one compiled pass without temporaries (optimkernels.py); these
NumPy formulas are the reference and the fallback.
"""

import math

import numpy as np

from minidl.backend.numpy import optimkernels


def _decayed(param, grad, wc):
    return np.asarray(grad) if wc == 0 else np.asarray(grad) + np.float32(wc) * np.asarray(param)


def sgdUpdate(param, grad, learnRate, wc):
    arrays = optimkernels.flat("sgdUpdate", (param, grad))
    if arrays is not None:
        optimkernels.sgd(*arrays, *_f32(learnRate, wc))
        return
    param -= np.float32(learnRate) * _decayed(param, grad, wc)


def momentumUpdate(param, grad, mom, learnRate, momRate, wc):
    arrays = optimkernels.flat("momentumUpdate", (param, grad, mom))
    if arrays is not None:
        optimkernels.momentum(*arrays, *_f32(learnRate, momRate, wc))
        return
    mom *= np.float32(momRate)
    mom -= np.float32(learnRate) * _decayed(param, grad, wc)
    param += mom


def nesterovUpdate(param, grad, mom, learnRate, momRate, wc):
    arrays = optimkernels.flat("nesterovUpdate", (param, grad, mom))
    if arrays is not None:
        optimkernels.nesterov(*arrays, *_f32(learnRate, momRate, 1.0 + momRate, wc))
        return
    old = np.array(mom, copy=True, subok=False)
    mom *= np.float32(momRate)
    mom -= np.float32(learnRate) * _decayed(param, grad, wc)
    param += np.float32(1.0 + momRate) * np.asarray(mom) - np.float32(momRate) * old


def adamUpdate(param, grad, mg, ms, alpha, beta1, beta2, epsilon, t, wc):
    lr = alpha * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
    arrays = optimkernels.flat("adamUpdate", (param, grad, mg, ms))
    if arrays is not None:
        optimkernels.adam(*arrays, *_f32(lr, beta1, beta2, 1 - beta1, 1 - beta2, epsilon, wc))
        return
    g = _decayed(param, grad, wc)
    mg *= np.float32(beta1)
    mg += np.float32(1 - beta1) * g
    ms *= np.float32(beta2)
    ms += np.float32(1 - beta2) * g * g
    param -= np.float32(lr) * np.asarray(mg) / (np.sqrt(ms) + np.float32(epsilon))


def rmspropUpdate(param, grad, ms, learnRate, factor, epsilon, wc):
    arrays = optimkernels.flat("rmspropUpdate", (param, grad, ms))
    if arrays is not None:
        optimkernels.rmsprop(*arrays, *_f32(learnRate, factor, 1 - factor, epsilon, wc))
        return
    g = _decayed(param, grad, wc)
    ms *= np.float32(factor)
    ms += np.float32(1 - factor) * g * g
    param -= np.float32(learnRate) * g / (np.sqrt(ms) + np.float32(epsilon))


def adagradUpdate(param, grad, h, learnRate, epsilon, wc):
    arrays = optimkernels.flat("adagradUpdate", (param, grad, h))
    if arrays is not None:
        optimkernels.adagrad(*arrays, *_f32(learnRate, epsilon, wc))
        return
    g = _decayed(param, grad, wc)
    h += g * g
    param -= np.float32(learnRate) * g / (np.sqrt(h) + np.float32(epsilon))


def _f32(*values):
    return [np.float32(v) for v in values]
