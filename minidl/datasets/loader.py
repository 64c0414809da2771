"""A background loader: shuffled, augmented host macro-batches, prepared one ahead in a thread.

``Loader(data, labels, macroBatchSize, ...)`` holds host data (numpy arrays or
h5py datasets, indexed along axis 0). Each ``iter(loader)`` is one epoch: it
starts a worker thread that reads the epoch's samples in shuffled order, one
macro-batch at a time, applies the augmentation and puts the result in a
bounded queue (``prefetch`` macro-batches at most), while the caller trains on
the previous one. Items are ``LoaderBatch(data, labels, indices)``: host
arrays, data augmented, indices the samples' positions in the loader's data.

- Determinism: epoch e draws its order and then its augmentation, macro-batch
  after macro-batch, from ``np.random.default_rng([seed, e])``, in one thread,
  so the same seed gives the same batches whatever the timing, and an epoch's
  batches do not depend on how earlier ones were consumed. ``loader.epoch``
  counts the epochs started (set it to resume at an epoch).
- Exceptions in the worker (a failing read, a bad augmentation) are raised in
  the caller by the ``next()`` that would have returned that batch, the
  worker's traceback attached.
- Shutdown: an epoch that runs to its end ends its thread; leaving it early
  (``break``, an exception in the training loop) needs ``close()`` on the
  iterator, or a ``with`` block, which stop the worker and wait for it
  (Trainer.trainFromLoader does this). An iterator dropped without ``close()``
  tells its worker to stop without waiting; the worker is a daemon thread, so
  it never keeps the process alive.

The worker touches host memory only (nothing on the backend), so it needs no
GPU context; the Trainer copies each macro-batch to the backend. NumPy
releases the interpreter lock in its array operations, so a vectorised
augmentation (minidl/datasets/augment.py) overlaps the training step; a
Python loop per image would compete with it for the lock.

    loader = Loader(trainX, trainY, macroBatchSize=256, augment=RandomCrop(8, pad=1), seed=0)
    for epoch in range(epochs):
        loss = trainer.trainFromLoader(loader)      # or: for batch in loader: batch.data, ...

Not supported: several worker processes, samples of different shapes,
iterating one Loader from two threads at once.
"""

import collections
import queue
import threading

import numpy as np

from minidl.shapes import intAtLeast

LoaderBatch = collections.namedtuple("LoaderBatch", ["data", "labels", "indices"])
LoaderBatch.__doc__ = """One macro-batch from a Loader: data (augmented host array), labels (host array), indices
(int64: the samples' positions in the loader's data)."""

_END = object()
_POLL = 0.05      # seconds between checks for a stop request while the queue is full or empty


class _Failure:
    """An exception raised in the worker, carried to the caller."""

    def __init__(self, error):
        self.error = error


class Loader:
    """Shuffled (shuffle=False: in order), augmented macro-batches of host data, prepared ahead.

    data: a numpy array or h5py dataset (N, ...); labels: one per sample (N, ...), never augmented.
    macroBatchSize: samples per item (default 1024; the last item of an epoch may be smaller);
    trainFromLoader splits each into the Trainer's batchsize, so make it a multiple of that.
    augment: None or a callable augment(data, rng) -> new data (minidl.datasets.augment, e.g.
    Compose([RandomCrop(32, pad=4), RandomHorizontalFlip()])), called on each macro-batch in the
    worker with the epoch's numpy Generator. shuffle: True (default) or False. seed: an int >= 0
    (default 0). prefetch: how many prepared macro-batches may wait in the queue (default 2, >= 1).
    sampler: None, or an object whose indices(epoch) is the epoch's sample order and len() its
    length, used instead of shuffle (minidl.distributed.DistributedSampler: this rank's share).

    Example::

        >>> x, y = np.zeros((10, 1, 8, 8), np.float32), np.arange(10, dtype=np.int32)
        >>> loader = Loader(x, y, macroBatchSize=4, augment=RandomCrop(8, pad=1), seed=0)
        >>> [len(batch.indices) for batch in loader], len(loader), loader.epoch, loader.batchesPerEpoch(3)
        ([4, 4, 2], 3, 1, 5)
    """

    def __init__(self, data, labels, macroBatchSize=1024, shuffle=True, augment=None, seed=0, prefetch=2,
                 sampler=None):
        if len(data) != len(labels):
            raise ValueError("Loader: data has %d samples but labels has %d" % (len(data), len(labels)))
        if len(data) == 0:
            raise ValueError("Loader: no samples given")
        self.macroBatchSize = intAtLeast("Loader", "macroBatchSize", macroBatchSize, 1)
        self.prefetch = intAtLeast("Loader", "prefetch", prefetch, 1)
        if not isinstance(shuffle, bool):
            raise ValueError("Loader: shuffle must be True or False, got %r" % (shuffle,))
        if augment is not None and not callable(augment):
            raise TypeError("Loader: augment must be None or a callable augment(data, rng), got %s"
                            % type(augment).__name__)
        self.data, self.labels = data, labels
        self.shuffle, self.augment, self.seed = shuffle, augment, intAtLeast("Loader", "seed", seed, 0)
        self.sampler = sampler
        self.epoch = 0

    @property
    def numSamples(self):
        """How many samples an epoch holds (len(data), or len(sampler))."""
        return len(self.data) if self.sampler is None else len(self.sampler)

    def __len__(self):
        """Macro-batches per epoch."""
        return -(-self.numSamples // self.macroBatchSize)

    def batchesPerEpoch(self, batchsize):
        """How many batches of batchsize an epoch makes when each macro-batch is split into them (the
        Trainer's updates per trainFromLoader: the totalSteps of a per-batch schedule is epochs times this)."""
        batchsize = intAtLeast("Loader", "batchsize", batchsize, 1)
        full, last = divmod(self.numSamples, self.macroBatchSize)
        return full * -(-self.macroBatchSize // batchsize) + -(-last // batchsize)

    def __iter__(self):
        """The next epoch's macro-batches (epoch = loader.epoch, then loader.epoch += 1)."""
        epoch = self.epoch
        self.epoch += 1
        return LoaderIterator(self, epoch)

    def epochBatches(self, epoch):
        """Epoch epoch's LoaderBatch items, made in the calling thread (what the worker runs; a generator)."""
        rng = np.random.default_rng([self.seed, epoch])
        if self.sampler is not None:
            order = self.sampler.indices(epoch)
        else:
            order = rng.permutation(len(self.data)) if self.shuffle else np.arange(len(self.data))
        n = len(order)
        for start in range(0, n, self.macroBatchSize):
            indices = order[start:start + self.macroBatchSize]
            ascending = np.sort(indices)                  # h5py reads increasing indices only
            back = np.searchsorted(ascending, indices)    # where each sample of the batch landed
            x = np.asarray(self.data[ascending])[back]
            y = np.asarray(self.labels[ascending])[back]
            if self.augment is not None:
                x = self.augment(x, rng)
            yield LoaderBatch(x, y, indices)


def _work(batches, items, stop):
    """The worker: put each batch (then _END, or a _Failure) in items until done or told to stop."""

    def put(item):
        while not stop.is_set():
            try:
                items.put(item, timeout=_POLL)
                return True
            except queue.Full:
                pass
        return False

    try:
        while not stop.is_set():        # checked before each batch is made, not only when it is queued
            batch = next(batches, _END)
            if not put(batch) or batch is _END:
                return
    except BaseException as error:  # noqa: B902  (carried to the caller, KeyboardInterrupt included)
        put(_Failure(error))


class LoaderIterator:
    """One epoch of a Loader, its worker thread running ahead; ``close()`` (or ``with``) stops it."""

    def __init__(self, loader, epoch):
        self.epoch = epoch
        self.items = queue.Queue(maxsize=loader.prefetch)
        self.stop = threading.Event()
        self.done = False
        # the worker holds the queue, the event and the generator, never this iterator, so dropping
        # the iterator lets __del__ stop it
        self.thread = threading.Thread(target=_work, args=(loader.epochBatches(epoch), self.items, self.stop),
                                       name="minidl-loader-epoch%d" % epoch, daemon=True)
        self.thread.start()

    def __iter__(self):
        return self

    def __next__(self):
        if self.done:
            raise StopIteration
        while True:
            try:
                item = self.items.get(timeout=_POLL)
                break
            except queue.Empty:
                if not self.thread.is_alive() and self.items.empty():
                    self.done = True
                    raise RuntimeError("Loader: the worker thread of epoch %d ended without finishing "
                                       "the epoch" % self.epoch) from None
        if item is _END:
            self.close()
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            error = item.error
            if hasattr(error, "add_note"):
                error.add_note("(raised in the Loader's worker thread, epoch %d)" % self.epoch)
            raise error
        return item

    def close(self):
        """Stop the worker and wait for it to end (it finishes the macro-batch it is making first)."""
        self.done = True
        self.stop.set()
        self._drain()
        if self.thread is not threading.current_thread():
            self.thread.join()
        self._drain()

    def _drain(self):
        try:
            while True:
                self.items.get_nowait()
        except queue.Empty:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        # no join here: a finaliser must not block; the daemon worker sees the flag and ends
        stop = getattr(self, "stop", None)
        if stop is not None:
            stop.set()
