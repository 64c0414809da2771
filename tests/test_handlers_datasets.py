"""Trainer / Validator / Calculator, the datasets, and the example end to end."""

import os
import pickle
import struct
import subprocess
import sys

import h5py
import numpy as np
import pytest
from emulation import cudaEmulated

from minidl.backend import gpuarray
from minidl.containers import Sequential
from minidl.cost import CrossEntropy
from minidl.datasets import loadCifar10, loadDigits
from minidl.handlers import Calculator, Trainer, Validator
from minidl.modules import Activation, Linear
from minidl.optimizers import MomentumSGD

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _problem(n=256):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int32) + 2 * (x[:, 2] > 0.5).astype(np.int32)
    return x, y


def _net():
    np.random.seed(2)
    return Sequential("mlp").append(Linear(4, 16, name="l1")).append(Activation("relu")).append(Linear(16, 4, name="l2"))


def test_trainer_learns_and_reports_progress(backend):
    x, y = _problem()
    net = _net()
    calls = []
    trainer = Trainer(net, CrossEntropy(), MomentumSGD(learnRate=0.05).setupOn(net), batchsize=32,
                      onBatchFinish=lambda t: calls.append(t.cost.numSamples))
    xd, yd = gpuarray.to_gpu(x), gpuarray.to_gpu(y)
    first = trainer.train(xd, yd)
    assert calls == [32 * (i + 1) for i in range(8)], "onBatchFinish after every batch"
    for _ in range(30):
        last = trainer.train(xd, yd)
    assert last < 0.3 * first
    validator = Validator(net, CrossEntropy(), batchsize=100)
    rate = validator.validate(xd, yd)
    out = Calculator(net, batchsize=50).calc(xd)
    assert out.shape == (256, 4)
    assert np.allclose(out, net(xd).get())
    assert rate == pytest.approx(np.mean(out.argmax(1) != y)) and rate < 0.1
    assert validator.validateFromHost(x, y, macroBatchSize=100) == pytest.approx(rate)
    assert np.allclose(Calculator(net).calcFromHost(x, macroBatchSize=100), out)


def test_train_from_host_shuffles_reproducibly_from_numpy_or_h5py(backend, tmp_path):
    x, y = _problem(200)
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f["x"], f["y"] = x, y
    results = []
    with h5py.File(path, "r") as f:
        for data, target in ((x, y), (f["x"], f["y"])):
            net = _net()
            trainer = Trainer(net, CrossEntropy(), MomentumSGD(learnRate=0.05).setupOn(net), batchsize=16, seed=9)
            for _ in range(2):
                trainer.trainFromHost(data, target, macroBatchSize=64)
            results.append(net["l1"].W.get())
    assert np.array_equal(results[0], results[1]), "same seed and samples: same weights from numpy or h5py"
    net = _net()
    inOrder = Trainer(net, CrossEntropy(), MomentumSGD(learnRate=0.05).setupOn(net), batchsize=16)
    inOrder.train(gpuarray.to_gpu(x), gpuarray.to_gpu(y))
    assert not np.array_equal(net["l1"].W.get(), results[0]), "trainFromHost shuffles"


def test_handler_errors(backend):
    net = _net()
    trainer = Trainer(net, CrossEntropy(), MomentumSGD().setupOn(net))
    with pytest.raises(ValueError, match="Trainer: data has 3 samples but target has 2"):
        trainer.trainFromHost(np.zeros((3, 4), np.float32), np.zeros(2, np.int32))
    with pytest.raises(ValueError, match="batchsize must be >= 1, got 0"):
        Trainer(net, CrossEntropy(), MomentumSGD(), batchsize=0)


CIFAR_NAMES = ["data_batch_%d" % i for i in range(1, 6)] + ["test_batch"]


def _writeCifar(folder, n=4, replace=None):
    """Six batches the way the real files are: a pickled dict of a uint8 (n, 3072) array, a list of
    Python ints, a bytes batch label and a list of bytes file names. replace: {file name: bytes} to
    write instead of that batch."""
    rng = np.random.default_rng(1)
    folder.mkdir()
    batches = {}
    for name in CIFAR_NAMES:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        batch = {b"data": data, b"labels": labels, b"batch_label": name.encode(),
                 b"filenames": [b"img_%d.png" % i for i in range(n)]}
        (folder / name).write_bytes((replace or {}).get(name) or pickle.dumps(batch))
        batches[name] = (data, labels)
    return batches


def _python2Batch(data, labels, batchLabel, filenames):
    """A batch as the CIFAR-10 files hold it: Python 2 cPickle protocol 2, strings as py2 str
    (SHORT_BINSTRING/BINSTRING), the array through numpy.core.multiarray._reconstruct, numpy.ndarray
    and numpy.dtype (Python 3 cannot write py2 str, so the opcodes are assembled here)."""
    def string(b):
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b

    def integer(v):
        return b"K" + bytes([v]) if v < 256 else b"M" + struct.pack("<H", v)

    out = b"\x80\x02}(" + string(b"data")
    out += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + integer(0) + b"\x85" + string(b"b") + b"\x87R"
    out += b"(" + integer(1) + integer(data.shape[0]) + integer(3072) + b"\x86"
    out += b"cnumpy\ndtype\n" + string(b"u1") + integer(0) + integer(1) + b"\x87R"
    out += b"(" + integer(3) + string(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xff" + integer(0) + b"tb"
    out += b"\x89" + string(data.tobytes()) + b"tb"
    out += string(b"labels") + b"](" + b"".join(integer(v) for v in labels) + b"e"
    out += string(b"batch_label") + string(batchLabel)
    out += string(b"filenames") + b"](" + b"".join(string(f) for f in filenames) + b"eu."
    return out


def test_cifar10_loader(tmp_path):
    batches = _writeCifar(tmp_path / "cifar")
    trainX, trainY, testX, testY = loadCifar10(str(tmp_path / "cifar"))
    assert trainX.shape == (20, 3, 32, 32) and trainX.dtype == np.float32 and trainY.dtype == np.int32
    data, labels = batches["data_batch_2"]
    assert np.array_equal(trainX[4:8], data.reshape(4, 3, 32, 32) / np.float32(255))
    assert list(trainY[4:8]) == labels
    assert testX.shape == (4, 3, 32, 32) and 0 <= trainX.min() and trainX.max() <= 1
    os.remove(tmp_path / "cifar" / "test_batch")
    with pytest.raises(FileNotFoundError, match="test_batch' not found: expected the python-pickle batches"):
        loadCifar10(str(tmp_path / "cifar"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        loadCifar10(str(tmp_path / "nowhere"))
    (tmp_path / "cifar" / "test_batch").write_bytes(b"junk")
    with pytest.raises(ValueError, match="is not a python pickle"):
        loadCifar10(str(tmp_path / "cifar"))


def test_cifar10_loader_reads_the_python2_batch_format(tmp_path):
    rng = np.random.default_rng(2)
    data = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
    raw = _python2Batch(data, [9, 0, 4], b"training batch 1 of 5", [b"a.png", b"b.png", b"c.png"])
    plain = pickle.loads(raw, encoding="bytes")   # the stream is what an unrestricted reader sees
    assert np.array_equal(plain[b"data"], data) and plain[b"labels"] == [9, 0, 4]
    _writeCifar(tmp_path / "cifar", replace={"data_batch_1": raw})
    trainX, trainY, _, _ = loadCifar10(str(tmp_path / "cifar"))
    assert trainX.shape == (3 + 4 * 4, 3, 32, 32) and trainY.dtype == np.int32
    assert np.array_equal(trainX[:3], data.reshape(3, 3, 32, 32).astype(np.float32) / np.float32(255))
    assert list(trainY[:3]) == [9, 0, 4]


class _RunsCommand:
    """Unpickling this runs a shell command (the classic pickle exploit)."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _CallsEval:
    def __reduce__(self):
        return eval, ("1 + 1",)


def test_cifar10_loader_executes_nothing_from_a_crafted_batch(tmp_path):
    proof, marker = tmp_path / "proof", tmp_path / "marker"
    def batch(target):
        return {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3],
                b"batch_label": _RunsCommand("touch %s" % target), b"filenames": []}
    pickle.loads(pickle.dumps(batch(proof)))   # the payload does run under plain pickle: the test can fail
    assert proof.exists()
    evil = batch(marker)
    _writeCifar(tmp_path / "cifar", replace={"data_batch_1": pickle.dumps(evil)})
    with pytest.raises(ValueError, match=r"data_batch_1': refused global (posix|nt)\.system: a batch holds only"):
        loadCifar10(str(tmp_path / "cifar"))
    assert not marker.exists()


@pytest.mark.parametrize("payload,refused", [
    (_CallsEval(), "builtins.eval"),
    (np.int64(3), r"numpy\._?core\.multiarray\.scalar"),      # a numpy scalar: never in the real files
    (np.zeros(2, np.uint8), None),                             # protocol 5 rebuilds arrays differently
], ids=["eval", "numpy_scalar", "protocol5_array"])
def test_cifar10_loader_admits_only_the_globals_real_batches_need(tmp_path, payload, refused):
    batch = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3], b"batch_label": payload}
    raw = pickle.dumps(batch, protocol=5 if refused is None else 4)
    _writeCifar(tmp_path / "cifar", replace={"test_batch": raw})
    with pytest.raises(ValueError, match=r"test_batch': refused global %s" % (refused or r"numpy\._?core\.numeric")):
        loadCifar10(str(tmp_path / "cifar"))


def _batch(data=None, labels=None):
    data = np.full((4, 3072), 7, np.uint8) if data is None else data
    return pickle.dumps({b"data": data, b"labels": [1, 2, 3, 4] if labels is None else labels})


@pytest.mark.parametrize("raw,message", [
    (_batch(data=np.full((4, 3072), 300, np.int64)), r"expected b'data' a uint8 array, got an array of dtype int64"),
    (_batch(data=np.full((4, 3072), 0.5, np.float32)),
     r"expected b'data' a uint8 array, got an array of dtype float32"),
    (_batch(data=[[0] * 3072] * 4), r"expected b'data' a uint8 array, got list"),
    (_batch(data=np.zeros((4, 3071), np.uint8)), r"expected b'data' of shape \(N, 3072\), got \(4, 3071\)"),
    (_batch(data=np.zeros((4, 3, 1024), np.uint8)), r"expected b'data' of shape \(N, 3072\), got \(4, 3, 1024\)"),
    (_batch(labels=[1, 2, 10, 4]), r"expected labels in 0..9, got 10 at index 2"),
    (_batch(labels=[1, -1, 3, 4]), r"expected labels in 0..9, got -1 at index 1"),
    (_batch(labels=[1, 2, 3.7, 4]), r"expected b'labels' a list of ints, got 3.7 at index 2"),
    (_batch(labels=[1, True, 3, 4]), r"expected b'labels' a list of ints, got True at index 1"),
    (_batch(labels=[[1], [2], [3], [4]]), r"expected b'labels' a list of ints, got \[1\] at index 0"),
    (_batch(labels=np.zeros((4, 1), np.int64)),
     r"expected b'labels' a list of ints, got an array of dtype int64, shape \(4, 1\)"),
    (_batch(labels=[1, 2, 3]), r"expected one label per image, got 4 images and 3 labels"),
    (pickle.dumps([1, 2]), r"expected a dict with b'data' and b'labels' entries, got list"),
    (pickle.dumps({b"data": np.zeros((4, 3072), np.uint8)}), r"expected a dict .*, got a dict with keys b'data'$"),
], ids=["data_int64_wraps", "data_float", "data_list", "data_3071", "data_3d", "label_10", "label_negative",
        "label_float", "label_bool", "labels_nested", "labels_2d_array", "label_count", "not_a_dict",
        "no_labels"])
def test_cifar10_loader_refuses_malformed_batches(tmp_path, raw, message):
    _writeCifar(tmp_path / "cifar", replace={"data_batch_3": raw})
    with pytest.raises(ValueError, match=r"CIFAR-10 batch '[^']*data_batch_3': " + message):
        loadCifar10(str(tmp_path / "cifar"))


def test_digits_loader():
    pytest.importorskip("sklearn")
    trainX, trainY, testX, testY = loadDigits(seed=0)
    assert trainX.shape[1:] == (1, 8, 8) and len(trainX) + len(testX) == 1797 and len(testX) == 359
    assert trainX.dtype == np.float32 and trainY.dtype == np.int32 and trainX.max() <= 1
    again = loadDigits(seed=0)
    assert np.array_equal(again[0], trainX) and set(np.unique(trainY)) == set(range(10))


def test_example_runs_end_to_end(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "w.h5"
    backend = os.environ.get("MINIDL_BACKEND", "numpy")
    env = dict(os.environ, MINIDL_BACKEND=backend)
    # the CPU execution of CUDA runs a training step ~30x slower: there the run is cut to 1 epoch
    # on 320 images, too little to learn, so only the mechanics are checked (train, save, reload)
    small = backend == "cuda" and cudaEmulated()
    size = ["--epochs", "1", "--limit", "320"] if small else ["--epochs", "2"]
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "train_mobilenet.py"), "--width", "0.25",
                           "--out", str(out)] + size, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "test accuracy" in proc.stdout and "predicts identically" in proc.stdout and out.exists()
    accuracy = float(proc.stdout.split("test accuracy: ")[1].split("%")[0])
    assert accuracy > (0 if small else 50), proc.stdout
