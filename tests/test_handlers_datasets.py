"""Trainer / Validator / Calculator, the datasets, and the example end to end."""

import os
import pickle
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


def _writeCifar(folder, n=4):
    rng = np.random.default_rng(1)
    folder.mkdir()
    batches = {}
    for name in ["data_batch_%d" % i for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = list(rng.integers(0, 10, n))
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, f)
        batches[name] = (data, labels)
    return batches


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
