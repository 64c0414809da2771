"""Synchronised batch normalisation: batch statistics over every rank's batch.

In train mode each rank computes its per-channel mean and variance
(``ops.batchNormMoments``); the ranks combine them exactly (minidl.distributed.stats)
into the statistics of the union of their batches, which normalise every rank's
part and update the running statistics (with the global count). Backward sums
``dy`` and ``dy * xhat`` per channel on each rank (``ops.batchNormBackwardSums``),
adds them up over the ranks, and each rank takes its part of dx from the sums
(``ops.batchNormBackwardData``). So N ranks at batch B compute what one process
computes at batch N * B, up to float32 rounding: the output, dx, the running
statistics and, once DataParallel has averaged them, the parameter gradients.

The parameter gradients are each rank's own sums (not the global ones): every
rank's loss is a mean over its B samples, N times the share of the global mean
loss, and DataParallel's average divides that factor back out. dx is built from
the global sums of the same N-times-scaled dy, so it carries the same factor as
every other gradient of that rank.

Two exchanges per layer and step (forward: every rank's C means, C variances
and count; backward: 2C sums), each a blocking collective on minidl.distributed's
world group, so every rank must run the same layers in the same order (equal
step counts: DistributedSampler). Eval mode uses the running statistics and
talks to nobody. With one process the layer computes what BatchNorm2D does.
"""

from minidl.backend import ops
from minidl.modules.batchnorm import BatchNorm, BatchNorm2D


class SyncBatchNorm2D(BatchNorm2D):
    """BatchNorm2D whose train-mode statistics span every rank's batch (the module docstring).

    The arguments (maps, epsilon, initFactor, minFactor, sscale, affine, name, empty), Variables,
    attrs, file layout and eval mode are BatchNorm2D's, so weights move between the two freely.
    ``group``: None (minidl.distributed's world group, the default) or a group of its own.
    ``convertSyncBatchNorm(net)`` turns a model's batch norms into these.

    Example::

        >>> from minidl.modules import SyncBatchNorm2D
        >>> bn = SyncBatchNorm2D(8)          # alone, it normalises as BatchNorm2D does
        >>> bn(gpuarray.to_gpu(np.random.randn(4, 8, 5, 5).astype(np.float32))).shape
        (4, 8, 5, 5)
    """

    # the running statistics are the same on every rank already (DataParallel leaves them alone)
    synchronisedStatistics = True

    def __init__(self, maps, epsilon=1e-5, initFactor=1.0, minFactor=0.1, sscale=0.01, affine=True, name=None,
                 empty=False):
        super().__init__(maps, epsilon, initFactor, minFactor, sscale, affine, name, empty)
        self.group = None
        self.count = None       # values per channel behind the last batch statistics, over every rank

    def _group(self):
        if self.group is not None:
            return self.group
        from minidl import distributed
        return distributed.group()

    def updateData(self, data):
        if not self.train:
            return super().updateData(data)
        from minidl.distributed.stats import combineMoments
        x = self._asMaps(data)
        scale, bias = self._affine()
        mean, var = ops.batchNormMoments(x)
        mean, var, self.count = combineMoments(self._group(), mean, var, x.size // self.maps)
        factor = max(self.initFactor / (self.numOfUpdates + 1), self.minFactor)
        ops.batchNormUpdateRunning(self.attrs["mean"], self.attrs["var"], mean, var, self.count, factor)
        self.numOfUpdates += 1
        self.saveMean, self.saveVar = mean, var
        self.data = ops.batchNormEval(x, scale, bias, mean, var, self.epsilon).reshape(data.shape)

    def _backward(self, grad):
        if not self.train:
            return super()._backward(grad)
        from minidl.distributed.stats import sumOverRanks
        x, dy = self._asMaps(self.inData), self._asMaps(grad)
        scale, _ = self._affine()
        dscale, dbias = ops.batchNormBackwardSums(x, dy, self.saveMean, self.saveVar, self.epsilon)
        allScale, allBias = sumOverRanks(self._group(), [dscale, dbias])
        dx = ops.batchNormBackwardData(x, dy, scale, self.saveMean, self.saveVar, allScale, allBias, self.count,
                                       self.epsilon)
        return dx, dscale, dbias

    def reset(self):
        super().reset()
        self.count = None


class SyncBatchNorm(SyncBatchNorm2D):
    """BatchNorm of (N, maps) data with SyncBatchNorm2D's statistics over every rank; the same
    arguments (maps, epsilon, initFactor, minFactor, sscale, affine, name, empty).

    Example::

        >>> from minidl.modules import SyncBatchNorm
        >>> SyncBatchNorm(10)(gpuarray.to_gpu(np.random.randn(4, 10).astype(np.float32))).shape
        (4, 10)
    """

    _asMaps = BatchNorm._asMaps
    checkDataShape = BatchNorm.checkDataShape


def convertSyncBatchNorm(net):
    """net with every BatchNorm2D (BatchNorm) in it replaced by a SyncBatchNorm2D (SyncBatchNorm) that
    takes over its name, hyperparameters, Variables, statistics and update count, so an optimizer set
    up before still holds the right Variables; returns net (a lone batch norm comes back converted).
    Containers are walked through their ``modules``; the replacements are new objects, so take
    references to layers after converting."""
    from minidl.containers.container import Container
    if isinstance(net, Container):
        for name, child in list(net.modules.items()):
            net.modules[name] = convertSyncBatchNorm(child)
        return net
    if type(net) not in (BatchNorm2D, BatchNorm):
        return net
    cls = SyncBatchNorm2D if type(net) is BatchNorm2D else SyncBatchNorm
    sync = cls.__new__(cls)
    sync.__dict__.update(net.__dict__)
    # a hook DataParallel installed belongs to the old object (its buckets know that one): convert
    # before wrapping the optimizer
    sync.__dict__.pop("backwardHook", None)
    sync.group, sync.count = None, None
    return sync
