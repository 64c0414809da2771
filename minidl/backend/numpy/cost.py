"""Loss functions on the NumPy backend. Each returns (loss, grad): loss a 0-d
array (mean over the batch), grad the true gradient of that loss."""

import numpy as np

from minidl.backend.numpy.array import host


def _scalar(v):
    return host(np.asarray(v, dtype=np.float32).reshape(()))


def crossEntropy(scores, labels):
    s = np.asarray(scores)
    labels = np.asarray(labels)
    n = s.shape[0]
    shifted = s - s.max(axis=1, keepdims=True)   # stable for large logits
    e = np.exp(shifted)
    total = e.sum(axis=1)
    rows = np.arange(n)
    loss = (np.log(total) - shifted[rows, labels]).sum(dtype=np.float64) / n
    grad = e / total[:, None]
    grad[rows, labels] -= 1.0
    grad /= np.float32(n)
    return _scalar(loss), host(grad)


def classificationErrors(scores, labels):
    return _scalar(np.count_nonzero(np.asarray(scores).argmax(axis=1) != np.asarray(labels)))


def labelRange(labels):
    labels = np.asarray(labels)
    return (int(labels.min()), int(labels.max())) if labels.size else None


def mse(pred, target):
    n = pred.shape[0]
    diff = np.asarray(pred) - np.asarray(target)
    return _scalar(np.square(diff).sum(dtype=np.float64) / (2 * n)), host(diff / np.float32(n))


def bce(scores, target):
    s, t = np.asarray(scores), np.asarray(target)
    n = s.shape[0]
    loss = (np.log1p(np.exp(-np.abs(s))) + np.maximum(s, 0) - t * s).sum(dtype=np.float64) / n
    sig = np.where(s >= 0, 1 / (1 + np.exp(-np.abs(s))), np.exp(-np.abs(s)) / (1 + np.exp(-np.abs(s))))
    return _scalar(loss), host(((sig - t) / np.float32(n)).astype(np.float32))


def smoothL1(pred, target):
    n = pred.shape[0]
    d = np.asarray(pred) - np.asarray(target)
    ad = np.abs(d)
    loss = np.where(ad < 1, 0.5 * d * d, ad - 0.5).sum(dtype=np.float64) / n
    return _scalar(loss), host(np.clip(d, -1, 1) / np.float32(n))
