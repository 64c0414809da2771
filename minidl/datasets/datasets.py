"""Datasets read from local files or installed packages; nothing is downloaded.

Images come back as float32 (N, C, H, W) scaled to [0, 1], labels as int32.
"""

import os
import pickle

import numpy as np

from minidl.shapes import isInt


def loadDigits(testFraction=0.2, seed=0):
    """scikit-learn's 8x8 digits (1,797 images, 10 classes), shuffled with seed and split.

    testFraction (0.2): the share held out for testing, in (0, 1) (ValueError otherwise); seed
    (0): the shuffle's. Returns (trainData (N, 1, 8, 8) float32 in [0, 1], trainLabels (N,) int32,
    testData, testLabels). Needs scikit-learn (pip install 'minidl[digits]').

    Example::

        >>> trainData, trainLabels, testData, testLabels = loadDigits(testFraction=0.2, seed=0)
        >>> trainData.shape, trainLabels.dtype, testData.shape
        ((1438, 1, 8, 8), dtype('int32'), (359, 1, 8, 8))
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


# The globals a CIFAR-10 python batch needs: its b"data" is a pickled uint8 ndarray, rebuilt by
# numpy's array reconstructor (named numpy.core.multiarray in the original files and by numpy 1,
# numpy._core.multiarray by numpy 2), numpy.ndarray and numpy.dtype. Labels, file names and the
# batch label are lists, ints and bytes, which need no global. Nothing else is admitted, so no
# pickle can call anything else (os.system, eval, ...) while it is read.
_RECONSTRUCT = np.empty(0).__reduce__()[0]     # the function numpy itself pickles arrays with
_CIFAR_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _Refused(pickle.UnpicklingError):
    """A pickle asked for something a CIFAR-10 batch never holds."""


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in _CIFAR_GLOBALS and refuses every other one."""

    def find_class(self, module, name):
        try:
            return _CIFAR_GLOBALS[(module, name)]
        except KeyError:
            raise _Refused("refused global %s.%s: a batch holds only a uint8 array, lists, bytes and ints, so "
                           "only %s may appear" % (module, name, ", ".join("%s.%s" % k for k in _CIFAR_GLOBALS))
                           ) from None

    def persistent_load(self, pid):
        raise _Refused("refused persistent id %r: a batch has none" % (pid,))


def _readCifarBatch(path):
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise FileNotFoundError("CIFAR-10 batch %r not found: expected the python-pickle batches "
                                "(data_batch_1..5, test_batch) in that folder" % path) from None
    except _Refused as e:
        raise ValueError("CIFAR-10 batch %r: %s" % (path, e)) from None
    except pickle.UnpicklingError as e:
        raise ValueError("CIFAR-10 batch %r is not a python pickle of a batch: %s" % (path, e)) from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as e:
        # what a truncated or malformed stream raises while it is rebuilt from admitted objects
        raise ValueError("CIFAR-10 batch %r is not a python pickle of a batch: %s: %s"
                         % (path, type(e).__name__, e)) from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError("CIFAR-10 batch %r: expected a dict with b'data' and b'labels' entries, got %s"
                         % (path, "a dict with keys %s" % ", ".join(sorted(repr(k) for k in batch))
                            if isinstance(batch, dict) else type(batch).__name__))
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        got = "an array of dtype %s" % data.dtype if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError("CIFAR-10 batch %r: expected b'data' a uint8 array, got %s" % (path, got))
    if data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError("CIFAR-10 batch %r: expected b'data' of shape (N, 3072), got %s" % (path, data.shape))
    labels = _cifarLabels(path, labels)
    if len(labels) != data.shape[0]:
        raise ValueError("CIFAR-10 batch %r: expected one label per image, got %d images and %d labels"
                         % (path, data.shape[0], len(labels)))
    return data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0, labels


def _cifarLabels(path, labels):
    """The labels as an int32 (N,) array: a list of ints (or a 1-D integer array), each in 0..9."""
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise ValueError("CIFAR-10 batch %r: expected b'labels' a list of ints, got an array of dtype %s, shape %s"
                             % (path, labels.dtype, labels.shape))
        labels = labels.tolist()
    elif not isinstance(labels, list):
        raise ValueError("CIFAR-10 batch %r: expected b'labels' a list of ints, got %s" % (path, type(labels).__name__))
    for index, label in enumerate(labels):
        if not isInt(label):
            raise ValueError("CIFAR-10 batch %r: expected b'labels' a list of ints, got %r at index %d"
                             % (path, label, index))
        if not 0 <= label <= 9:
            raise ValueError("CIFAR-10 batch %r: expected labels in 0..9, got %d at index %d" % (path, label, index))
    return np.array(labels, dtype=np.int32).reshape(len(labels))


def loadCifar10(folder):
    """CIFAR-10 from the standard python-pickle batches in folder (cifar-10-batches-py).

    Returns (trainData (50000, 3, 32, 32) float32 in [0, 1], trainLabels (50000,) int32,
    testData (10000, 3, 32, 32), testLabels (10000,)) from data_batch_1..5 and test_batch.

    Each batch must be a pickled dict with b"data" a uint8 numpy array of shape (N, 3072) (the
    channel-major 3x32x32 pixels of N images) and b"labels" a list of N ints in 0..9; other
    entries (b"batch_label", b"filenames") are ignored. Anything else raises ValueError naming the
    file. The batches are read without executing anything: the unpickler resolves only numpy's
    array reconstructor, numpy.ndarray and numpy.dtype, so a crafted file that would call another
    function (os.system, ...) is refused before it runs. A hostile file can still make the reader
    allocate a lot of memory, so the folder should come from a source you would trust with that.

    Example::

        >>> trainData, trainLabels, testData, testLabels = loadCifar10("cifar-10-batches-py")
        >>> trainData.shape[1:], trainData.dtype, testLabels.dtype
        ((3, 32, 32), dtype('float32'), dtype('int32'))
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError("CIFAR-10 folder %r does not exist" % folder)
    parts = [_readCifarBatch(os.path.join(folder, "data_batch_%d" % i)) for i in range(1, 6)]
    testData, testLabels = _readCifarBatch(os.path.join(folder, "test_batch"))
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), testData, testLabels)
