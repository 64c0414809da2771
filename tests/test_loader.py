"""The background loader: order, determinism, augmentation, errors from the worker, shutdown,
overlap with a slow consumer, and Trainer.trainFromLoader."""

import threading
import time

import h5py
import numpy as np
import pytest

from minidl.backend import gpuarray
from minidl.containers import Sequential
from minidl.cost import CrossEntropy
from minidl.datasets import Loader, RandomCrop
from minidl.handlers import Trainer
from minidl.modules import Activation, Linear
from minidl.optimizers import MomentumSGD


def _data(n=50):
    x = np.arange(n * 2 * 3 * 3, dtype=np.float32).reshape(n, 2, 3, 3)
    y = (np.arange(n) % 7).astype(np.int32)
    return x, y


def _collect(iterable):
    return [(b.data.copy(), b.labels.copy(), b.indices.copy()) for b in iterable]


def test_in_order_without_shuffle():
    x, y = _data(50)
    loader = Loader(x, y, macroBatchSize=16, shuffle=False)
    batches = _collect(loader)
    assert len(loader) == 4 and [len(b[2]) for b in batches] == [16, 16, 16, 2]
    assert np.array_equal(np.concatenate([b[2] for b in batches]), np.arange(50))
    assert np.array_equal(np.concatenate([b[0] for b in batches]), x)
    assert np.array_equal(np.concatenate([b[1] for b in batches]), y)


def test_shuffled_batches_hold_their_samples_and_cover_the_data_once():
    x, y = _data(50)
    for batch in Loader(x, y, macroBatchSize=16, seed=3):
        assert np.array_equal(batch.data, x[batch.indices]) and np.array_equal(batch.labels, y[batch.indices])
    indices = np.concatenate([b.indices for b in Loader(x, y, macroBatchSize=16, seed=3)])
    assert sorted(indices) == list(range(50)) and not np.array_equal(indices, np.arange(50))


def test_order_follows_the_documented_generator():
    x, y = _data(30)
    loader = Loader(x, y, macroBatchSize=8, seed=5)
    for epoch in range(2):
        indices = np.concatenate([b.indices for b in loader])
        assert np.array_equal(indices, np.random.default_rng([5, epoch]).permutation(30)), epoch


def test_deterministic_given_the_seed_whatever_the_timing():
    x, y = _data(40)
    crop = RandomCrop(3, pad=1)

    def slowCrop(images, rng):
        time.sleep(0.002 * np.random.default_rng().integers(0, 5))   # timing noise, not from the seeded rng
        return crop(images, rng)
    first, second = Loader(x, y, 8, augment=crop, seed=9), Loader(x, y, 8, augment=slowCrop, seed=9)
    for _ in range(2):
        a, b = _collect(first), _collect(second)
        assert all(np.array_equal(p, q) for u, v in zip(a, b) for p, q in zip(u, v))
    resumed = Loader(x, y, 8, augment=crop, seed=9)
    resumed.epoch = 1
    replay = _collect(Loader(x, y, 8, augment=crop, seed=9))   # epoch 0 of a fresh loader
    epochOne = _collect(resumed)
    again = Loader(x, y, 8, augment=crop, seed=9)
    _collect(again)
    assert all(np.array_equal(p, q) for u, v in zip(epochOne, _collect(again)) for p, q in zip(u, v))
    assert not np.array_equal(replay[0][2], epochOne[0][2]), "each epoch has its own order"
    other = _collect(Loader(x, y, 8, augment=crop, seed=10))
    assert not np.array_equal(other[0][2], replay[0][2])


def test_augmentation_runs_on_each_macro_batch_with_the_epochs_generator():
    x, y = _data(20)
    crop = RandomCrop(3, pad=1)
    batches = _collect(Loader(x, y, macroBatchSize=8, augment=crop, seed=2))
    rng = np.random.default_rng([2, 0])
    order = rng.permutation(20)
    for k, (data, labels, indices) in enumerate(batches):
        part = order[8 * k:8 * k + 8]
        assert np.array_equal(indices, part)
        assert np.array_equal(data, crop(x[part], rng)), k         # draws continue batch after batch
        assert np.array_equal(labels, y[part])
    assert np.array_equal(x, _data(20)[0]), "the loader's data is not changed"


def test_reads_h5py_datasets(tmp_path):
    x, y = _data(30)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["x"], f["y"] = x, y
    with h5py.File(tmp_path / "d.h5", "r") as f:
        for batch in Loader(f["x"], f["y"], macroBatchSize=7, seed=1):
            assert np.array_equal(batch.data, x[batch.indices]) and np.array_equal(batch.labels, y[batch.indices])


def test_an_error_in_the_worker_is_raised_in_the_caller():
    x, y = _data(40)
    calls = []

    def failing(images, rng):
        calls.append(len(images))
        if len(calls) == 2:
            raise ValueError("bad augmentation on purpose")
        return images
    iterator = iter(Loader(x, y, macroBatchSize=10, augment=failing))
    first = next(iterator)
    assert len(first.indices) == 10
    with pytest.raises(ValueError, match="bad augmentation on purpose") as info:
        next(iterator)
    assert "failing" in "".join(__import__("traceback").format_tb(info.value.__traceback__)), "the worker's frames"
    assert not iterator.thread.is_alive()
    with pytest.raises(StopIteration):
        next(iterator)


def _waitUntil(condition, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_leaving_early_stops_the_worker():
    x, y = _data(200)
    loader = Loader(x, y, macroBatchSize=5, prefetch=1)
    with iter(loader) as iterator:
        next(iterator)
    assert not iterator.thread.is_alive(), "close() waits for the worker"

    iterator = iter(loader)
    next(iterator)
    thread = iterator.thread
    del iterator                        # dropped without close(): the worker is told to stop
    assert _waitUntil(lambda: not thread.is_alive())
    assert thread.daemon

    for batch in loader:                # break out of a for loop, then close the loader's iterator
        break
    finished = list(iter(loader))       # a full epoch ends its thread by itself
    assert len(finished) == 40


def test_the_queue_is_bounded():
    x, y = _data(100)
    made = []

    def counting(images, rng):
        made.append(1)
        return images
    iterator = iter(Loader(x, y, macroBatchSize=10, augment=counting, prefetch=1))
    next(iterator)
    # one handed out, one waiting in the queue, one made and blocked on the full queue; no more
    assert _waitUntil(lambda: len(made) >= 3)
    time.sleep(0.3)
    assert len(made) == 3
    iterator.close()
    assert len(made) == 3 and not iterator.thread.is_alive()


def test_the_worker_prepares_the_next_batch_while_the_current_one_trains():
    x, y = _data(60)
    started = [threading.Event() for _ in range(6)]

    def augment(images, rng):
        started[sum(e.is_set() for e in started)].set()
        time.sleep(0.1)                 # a slow augmentation
        return images
    loader = Loader(x, y, macroBatchSize=10, augment=augment)
    t0 = time.perf_counter()
    for k, _ in enumerate(loader):
        if k + 1 < 6:
            # while this batch is being consumed, the next one is already being made
            assert started[k + 1].wait(timeout=5), "the worker did not run ahead"
        time.sleep(0.1)                 # a slow consumer
    elapsed = time.perf_counter() - t0
    # one after the other: 6 * (0.1 + 0.1) = 1.2 s; overlapped: about 6 * 0.1 + 0.1 = 0.7 s
    assert elapsed < 1.0, elapsed


@pytest.mark.parametrize("kwargs, message", [
    (dict(macroBatchSize=0), r"Loader: macroBatchSize must be an int >= 1, got 0"),
    (dict(prefetch=0), r"Loader: prefetch must be an int >= 1, got 0"),
    (dict(seed=-1), r"Loader: seed must be an int >= 0, got -1"),
    (dict(shuffle=1), r"Loader: shuffle must be True or False, got 1"),
])
def test_arguments_are_checked(kwargs, message):
    x, y = _data(10)
    with pytest.raises(ValueError, match=message):
        Loader(x, y, **kwargs)
    with pytest.raises(ValueError, match=r"Loader: data has 10 samples but labels has 9"):
        Loader(x, y[:9])
    with pytest.raises(TypeError, match=r"Loader: augment must be None or a callable augment\(data, rng\), got int"):
        Loader(x, y, augment=3)


def test_batches_per_epoch():
    x, y = _data(50)
    assert Loader(x, y, macroBatchSize=16).batchesPerEpoch(8) == 2 + 2 + 2 + 1
    assert Loader(x, y, macroBatchSize=16).batchesPerEpoch(5) == 4 + 4 + 4 + 1
    assert Loader(x, y, macroBatchSize=64).batchesPerEpoch(8) == 7


def _net():
    np.random.seed(4)
    return Sequential("mlp").append(Linear(18, 8, name="l1")).append(Activation("relu")).append(Linear(8, 7, name="l2"))


def test_train_from_loader_equals_train_from_host_in_order(backend):
    x, y = _data(50)
    x = (x / x.max()).reshape(50, 18)
    nets = [_net(), _net()]
    trainers = [Trainer(net, CrossEntropy(), MomentumSGD(learnRate=0.1).setupOn(net), batchsize=8) for net in nets]
    seen = []
    lossHost = trainers[0].trainFromHost(x, y, macroBatchSize=16, random=False)
    lossLoader = trainers[1].trainFromLoader(Loader(x, y, macroBatchSize=16, shuffle=False),
                                             onMacroBatchFinish=lambda t: seen.append((t.currMacroBatch, t.currBatch)))
    assert lossLoader == pytest.approx(lossHost, rel=1e-6)
    for (name, a), (_, b) in zip(nets[0].namedVars(), nets[1].namedVars()):
        np.testing.assert_allclose(b.data.get(), a.data.get(), rtol=1e-6, atol=1e-7, err_msg=name)
    assert seen == [(1, 2), (2, 2), (3, 2), (4, 1)] and trainers[1].totalMacroBatches == 4
    assert len(trainers[1].history) == 1 and trainers[1].history.rows[0]["trainLoss"] == lossLoader


def test_train_from_loader_raises_the_workers_error_and_stops_it(backend):
    x, y = _data(40)
    x = x.reshape(40, 18)
    net = _net()
    trainer = Trainer(net, CrossEntropy(), MomentumSGD().setupOn(net), batchsize=10)
    before = {t for t in threading.enumerate() if t.name.startswith("minidl-loader")}

    def failing(images, rng):
        if images[0, 0] >= 0:
            raise OSError("disk gone")
    with pytest.raises(OSError, match="disk gone"):
        trainer.trainFromLoader(Loader(x, y, macroBatchSize=10, augment=failing))
    with pytest.raises(TypeError, match=r"Trainer.trainFromLoader: expected a minidl.datasets.Loader, got tuple"):
        trainer.trainFromLoader((x, y))
    assert _waitUntil(lambda: {t for t in threading.enumerate() if t.name.startswith("minidl-loader")} <= before)
