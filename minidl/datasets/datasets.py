"""Datasets read from local files or installed packages; nothing is downloaded.

Images come back as float32 (N, C, H, W) scaled to [0, 1], labels as int32.
"""

import os
import pickle

import numpy as np


def loadDigits(testFraction=0.2, seed=0):
    """scikit-learn's 8x8 digits (1,797 images, 10 classes), shuffled with seed and split.

    Returns (trainData (N, 1, 8, 8), trainLabels, testData, testLabels). Needs
    scikit-learn (pip install 'minidl[digits]').
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError("loadDigits needs scikit-learn, which is not installed: "
                          "pip install 'minidl[digits]' (or scikit-learn)") from None
    if not 0 < testFraction < 1:
        raise ValueError("testFraction must be in (0, 1), got %r" % (testFraction,))
    digits = load_digits()
    data = (digits.images / 16.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(labels))
    ntest = int(round(len(labels) * testFraction))
    test, train = order[:ntest], order[ntest:]
    return data[train], labels[train], data[test], labels[test]


def _readCifarBatch(path):
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except FileNotFoundError:
        raise FileNotFoundError("CIFAR-10 batch %r not found: expected the python-pickle batches "
                                "(data_batch_1..5, test_batch) in that folder" % path) from None
    except (pickle.UnpicklingError, EOFError) as e:
        raise ValueError("CIFAR-10 batch %r is not a python pickle: %s" % (path, e)) from None
    try:
        data, labels = batch[b"data"], batch[b"labels"]
    except (KeyError, TypeError):
        raise ValueError("CIFAR-10 batch %r lacks the b'data' and b'labels' entries" % path) from None
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != data.shape[0]:
        raise ValueError("CIFAR-10 batch %r: expected data (N, 3072) with N labels, got %s and %d labels"
                         % (path, data.shape, len(labels)))
    return data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0, np.asarray(labels, dtype=np.int32)


def loadCifar10(folder):
    """CIFAR-10 from the standard python-pickle batches in folder.

    Returns (trainData (50000, 3, 32, 32), trainLabels, testData, testLabels).
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError("CIFAR-10 folder %r does not exist" % folder)
    parts = [_readCifarBatch(os.path.join(folder, "data_batch_%d" % i)) for i in range(1, 6)]
    testData, testLabels = _readCifarBatch(os.path.join(folder, "test_batch"))
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), testData, testLabels)
