"""Optimizer update rules on the NumPy backend, all in place.

Gradients are true gradients of the loss, so every rule subtracts. ``wc`` is
L2 weight decay folded into the gradient: g = grad + wc * param.
"""

import math

import numpy as np


def _decayed(param, grad, wc):
    return np.asarray(grad) if wc == 0 else np.asarray(grad) + np.float32(wc) * np.asarray(param)


def sgdUpdate(param, grad, learnRate, wc):
    param -= np.float32(learnRate) * _decayed(param, grad, wc)


def momentumUpdate(param, grad, mom, learnRate, momRate, wc):
    mom *= np.float32(momRate)
    mom -= np.float32(learnRate) * _decayed(param, grad, wc)
    param += mom


def nesterovUpdate(param, grad, mom, learnRate, momRate, wc):
    old = np.array(mom, copy=True, subok=False)
    mom *= np.float32(momRate)
    mom -= np.float32(learnRate) * _decayed(param, grad, wc)
    param += np.float32(1.0 + momRate) * np.asarray(mom) - np.float32(momRate) * old


def adamUpdate(param, grad, mg, ms, alpha, beta1, beta2, epsilon, t, wc):
    g = _decayed(param, grad, wc)
    mg *= np.float32(beta1)
    mg += np.float32(1 - beta1) * g
    ms *= np.float32(beta2)
    ms += np.float32(1 - beta2) * g * g
    lr = alpha * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
    param -= np.float32(lr) * np.asarray(mg) / (np.sqrt(ms) + np.float32(epsilon))


def rmspropUpdate(param, grad, ms, learnRate, factor, epsilon, wc):
    g = _decayed(param, grad, wc)
    ms *= np.float32(factor)
    ms += np.float32(1 - factor) * g * g
    param -= np.float32(learnRate) * g / (np.sqrt(ms) + np.float32(epsilon))


def adagradUpdate(param, grad, h, learnRate, epsilon, wc):
    g = _decayed(param, grad, wc)
    h += g * g
    param -= np.float32(learnRate) * g / (np.sqrt(h) + np.float32(epsilon))
