"""DistributedSampler: each rank's share of a dataset, reshuffled every epoch.

Every rank draws the same permutation of the n samples from (seed, epoch), with
no communication, and takes every size-th entry from its rank on: the shares
are disjoint and together cover the permutation. ``equalize`` makes the shares
the same length, so every rank runs the same number of steps (each step holds
collectives, and a rank with one step more would wait for the others forever):

- "pad" (default): the permutation is extended by its own first entries up to
  a multiple of size, so every sample is seen and at most size - 1 twice;
- "drop": the permutation is cut down to a multiple of size (at most size - 1
  samples left out, different ones every epoch when shuffled);
- None: shares differ by at most one sample; for evaluation, where no step
  talks to other ranks and every sample must count once.
"""

import numpy as np

from minidl.shapes import intAtLeast, isInt


class DistributedSampler:
    """Indices of this rank's samples of a dataset of n, for each epoch.

    n: the dataset's size (an int >= 1). shuffle: a fresh permutation per epoch (seeded by seed and
    the epoch, the same on every rank), else the samples in order. equalize: "pad", "drop" or None
    (the module docstring). rank, size: this process's place (None: minidl.distributed's world).

    ``indices(epoch)`` is an int64 array of ``len(sampler)`` sample indices; ``steps(batchsize)`` the
    number of batches they make, equal on every rank unless equalize is None.

    Example::

        >>> from minidl.distributed import DistributedSampler
        >>> [DistributedSampler(10, shuffle=False, rank=r, size=4).indices(0).tolist() for r in range(4)]
        [[0, 4, 8], [1, 5, 9], [2, 6, 0], [3, 7, 1]]
    """

    def __init__(self, n, shuffle=True, seed=0, equalize="pad", rank=None, size=None):
        n, seed = intAtLeast("DistributedSampler", "n", n, 1), intAtLeast("DistributedSampler", "seed", seed, 0)
        if equalize not in ("pad", "drop", None):
            raise ValueError("DistributedSampler: equalize must be 'pad', 'drop' or None, got %r" % (equalize,))
        if (rank is None) != (size is None):
            raise ValueError("DistributedSampler: give both rank and size, or neither")
        if rank is None:
            from minidl import distributed
            rank, size = distributed.rank(), distributed.size()
        if not isInt(size) or size < 1 or not isInt(rank) or not 0 <= rank < size:
            raise ValueError("DistributedSampler: expected 0 <= rank < size, got rank %r, size %r" % (rank, size))
        if equalize == "drop" and n < size:
            raise ValueError("DistributedSampler: equalize='drop' leaves nothing of %d samples for %d ranks"
                             % (n, size))
        self.n, self.shuffle, self.seed, self.equalize = n, bool(shuffle), seed, equalize
        self.rank, self.size = int(rank), int(size)

    def __len__(self):
        """Samples per epoch on this rank."""
        if self.equalize == "pad":
            return -(-self.n // self.size)
        if self.equalize == "drop":
            return self.n // self.size
        return len(range(self.rank, self.n, self.size))

    def indices(self, epoch=0):
        """This rank's sample indices for epoch (an int >= 0), in the order to train on them."""
        epoch = intAtLeast("DistributedSampler.indices", "epoch", epoch, 0)
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n) if self.shuffle else np.arange(self.n)
        total = len(self) * self.size if self.equalize is not None else self.n
        if total > self.n:
            order = np.resize(order, total)         # repeats the permutation's first entries
        return order[:total][self.rank::self.size].astype(np.int64)

    def steps(self, batchsize):
        """Batches of batchsize (an int >= 1) in one epoch of this rank."""
        return -(-len(self) // intAtLeast("DistributedSampler.steps", "batchsize", batchsize, 1))
