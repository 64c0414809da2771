"""Batch normalisation: BatchNorm2D for (N, C, H, W) and BatchNorm for (N, C).

Train mode normalises with the batch's statistics (biased variance) and folds
them into the running statistics; eval mode uses the running statistics.
Vars: ``scale`` ~ N(1, sscale) and ``bias`` = 0, each (1, maps, 1, 1) (only
when affine). Attrs (saved and loaded, not trained): running ``mean`` (0) and
``var`` (1), each (1, maps, 1, 1).

Running-average factor: the k-th update (k = 0, 1, ...) uses
max(initFactor / (k + 1), minFactor), so the first batches form a cumulative
average and later ones an exponential average with weight minFactor (0.1, as
PyTorch's momentum). The running variance takes the unbiased batch variance.
The update count is not part of PuzzleLib's file layout, so a loaded
BatchNorm counts as warmed up and continues with minFactor: resuming from a
checkpoint reproduces an uninterrupted run once the checkpoint is past the
warm-up (initFactor / minFactor updates, 10 by default).

Hyperparameters: maps a positive int (Python or numpy integer); epsilon
finite and > 0; initFactor and minFactor in (0, 1]; sscale finite and >= 0.
Anything else raises ValueError naming the class and the argument.
"""

import math

import numpy as np

from minidl.backend import gpuarray, ops
from minidl.module import Module
from minidl.shapes import positiveInt, realInRange
from minidl.variable import Variable


class BatchNorm2D(Module):
    """Batch normalisation per map of (N, maps, H, W) float32 data; the output has the input's shape.
    Train mode uses the batch's statistics, eval mode the running ones (minidl.modules.batchnorm
    says how they are averaged).

    maps: C; epsilon (1e-5): added to the variance; initFactor (1.0), minFactor (0.1): the running
    averages' factors; sscale (0.01): initial scale ~ N(1, sscale); affine (True): learn ``scale``
    and ``bias`` (False: neither exists); name: as for any Module; empty (False): scale 1 instead
    of random, for weights about to be loaded. Not supported: other layouts (BatchNorm takes (N, C)).

    Example::

        >>> bn = BatchNorm2D(8)
        >>> y = bn(gpuarray.to_gpu(np.random.randn(4, 8, 5, 5).astype(np.float32)))
        >>> y.shape, bn.scale.shape, bn.mean.shape
        ((4, 8, 5, 5), (1, 8, 1, 1), (1, 8, 1, 1))
    """

    def __init__(self, maps, epsilon=1e-5, initFactor=1.0, minFactor=0.1, sscale=0.01, affine=True, name=None,
                 empty=False):
        super().__init__(name)
        self.registerBlueprint(locals())
        kind = type(self).__name__
        self.maps = maps = positiveInt(kind, "maps", maps)
        self.epsilon = realInRange(kind, "epsilon", epsilon, 0, lowOpen=True)
        self.initFactor = realInRange(kind, "initFactor", initFactor, 0, 1, lowOpen=True)
        self.minFactor = realInRange(kind, "minFactor", minFactor, 0, 1, lowOpen=True)
        realInRange(kind, "sscale", sscale, 0)
        self.affine = affine
        self.numOfUpdates = 0
        shape = (1, maps, 1, 1)
        # every buffer comes from gpuarray before any host array of its size, so a model built
        # under an allocation budget (minidl.blueprint) is refused before it allocates
        scale = _ones(shape) if empty or not affine else gpuarray.zeros(shape)
        if affine and not empty:
            scale.set(np.random.normal(1.0, sscale, shape).astype(np.float32))
        if affine:
            self.setVar("scale", Variable(scale))
            self.setVar("bias", Variable(gpuarray.zeros(shape)))
        else:
            # fixed identity transform, neither trained nor saved
            self.fixedScale, self.fixedBias = scale, gpuarray.zeros(shape)
        self.setAttr("mean", gpuarray.zeros(shape))
        self.setAttr("var", _ones(shape))
        self.saveMean = self.saveVar = None
        self.paramGrads = None
        # the in-place activation after this module in a Sequential, run inside its forward and
        # backward (minidl.containers.sequential): (kind, alpha, beta) for the pass it is set
        # for, else None
        self.fusedActivation = None

    def fuseNext(self, act):
        """Run act, the in-place ReLU or clip Activation after this module, inside the next forward
        (and its backward): Sequential's fusion (minidl.containers.sequential says when). The
        output is then act's, and the incoming gradient act's output gradient."""
        self._fuseNext = (act.kind, act.alpha, act.beta)

    def writeOverInput(self):
        """Write the next forward's output over its input, in eval mode (in train mode the pass is as
        usual): what a Sequential asks inside minidl.noGrad() when nothing reads that input
        afterwards (minidl.containers.sequential says when). Saves a buffer and the writes into it."""
        self._writeOver = True

    def _affine(self):
        if self.affine:
            return self.vars["scale"].data, self.vars["bias"].data
        return self.fixedScale, self.fixedBias

    def _asMaps(self, x):
        """The (N, C, H, W) view the ops work on."""
        return x

    def checkDataShape(self, shape):
        self.checkRank(shape, 4, "(N, C, H, W)")
        if shape[1] != self.maps:
            raise self.error("expected input with %d maps, got shape %s" % (self.maps, tuple(shape)))

    def dataShapeFrom(self, shape):
        return tuple(shape)

    def updateData(self, data):
        x = self._asMaps(data)
        scale, bias = self._affine()
        act = self.fusedActivation = self.__dict__.pop("_fuseNext", None)    # for this pass only
        overwrite = self.__dict__.pop("_writeOver", False)                  # so is this
        if self.train:
            factor = max(self.initFactor / (self.numOfUpdates + 1), self.minFactor)
            y, self.saveMean, self.saveVar = ops.batchNormTrain(x, scale, bias, self.attrs["mean"],
                                                                self.attrs["var"], self.epsilon, factor, act)
            self.numOfUpdates += 1
        else:
            y = ops.batchNormEval(x, scale, bias, self.attrs["mean"], self.attrs["var"], self.epsilon, act,
                                  out=x if overwrite else None)
        self.data = y.reshape(data.shape)

    def _backward(self, grad):
        x = self._asMaps(self.inData)
        dy = self._asMaps(grad)
        scale, _ = self._affine()
        act = self.fusedActivation
        y = None if act is None else self._asMaps(self.data)
        if self.train:
            return ops.batchNormBackward(x, dy, scale, self.saveMean, self.saveVar, self.epsilon, True, act, y)
        return ops.batchNormBackward(x, dy, scale, self.attrs["mean"], self.attrs["var"], self.epsilon, False, act,
                                     y)

    def updateGrad(self, grad):
        dx, dscale, dbias = self._backward(grad)
        self.paramGrads = (dscale, dbias)
        self.grad = dx.reshape(self.inData.shape)

    def accGradParams(self, grad):
        if not self.affine:
            return
        dscale, dbias = self.paramGrads if self.paramGrads is not None else self._backward(grad)[1:]
        self.paramGrads = None
        ops.axpy(self.vars["scale"].grad, dscale, 1.0)
        ops.axpy(self.vars["bias"].grad, dbias, 1.0)

    def reset(self):
        super().reset()
        self.saveMean = self.saveVar = self.paramGrads = None

    def afterLoad(self):
        # loaded statistics are a trained average: continue with the steady-state factor
        self.numOfUpdates = max(self.numOfUpdates, math.ceil(self.initFactor / self.minFactor))


def _ones(shape):
    ary = gpuarray.empty(shape)
    ary.fill(1.0)
    return ary


class BatchNorm(BatchNorm2D):
    """Batch normalisation of (N, maps) data (a Linear layer's output); the same arguments (maps,
    epsilon, initFactor, minFactor, sscale, affine, name, empty), parameters and statistics as
    BatchNorm2D, each of shape (1, maps, 1, 1).

    Example::

        >>> bn = BatchNorm(10)
        >>> bn(gpuarray.to_gpu(np.random.randn(4, 10).astype(np.float32))).shape
        (4, 10)
    """

    def _asMaps(self, x):
        return x.reshape(x.shape[0], x.shape[1], 1, 1)

    def checkDataShape(self, shape):
        self.checkRank(shape, 2, "(N, C)")
        if shape[1] != self.maps:
            raise self.error("expected input with %d features, got shape %s" % (self.maps, tuple(shape)))
