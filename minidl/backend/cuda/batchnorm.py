"""Batch normalisation on the CUDA backend: per-channel block reductions for
the statistics and the parameter gradients, elementwise kernels for the rest."""

import numpy as np

from minidl.backend.cuda.array import empty, mayShareMemory
from minidl.backend.cuda.compiler import BLOCK, f32, function, i32, i64, launch, launchBlocks, planes, ptr
from minidl.backend.cuda.elementwise import activation, activationBackward
from minidl.shapes import checkOut, fusedActivation


def batchNormTrain(x, scale, bias, runMean, runVar, epsilon, factor, act=None):
    fusedActivation("batchNormTrain", act)
    n, c, l = planes(x.shape)
    mean, var = empty((1, c, 1, 1), np.float32), empty((1, c, 1, 1), np.float32)
    launchBlocks(function("batchnorm.cu", "bnStats"), c, BLOCK, ptr(x), ptr(mean), ptr(var), ptr(runMean),
                 ptr(runVar), i32(n), i32(c), i32(l), f32(factor))
    return batchNormEval(x, scale, bias, mean, var, epsilon, act), mean, var


# A fused activation (act) is composed here, the activation's kernel run in place after the batch
# norm's: on a GPU the extra pass is cheap, and the results equal the separate modules' exactly.

def batchNormEval(x, scale, bias, mean, var, epsilon, act=None, out=None):
    fusedActivation("batchNormEval", act)
    checkOut("batchNormEval", x, out, mayShareMemory)
    n, c, l = planes(x.shape)
    # bnApply reads x[i] and writes y[i] only, so y may be x
    y = empty(x.shape, np.float32) if out is None else out
    launch(function("batchnorm.cu", "bnApply"), x.size, ptr(x), ptr(y), ptr(scale), ptr(bias), ptr(mean), ptr(var),
           f32(epsilon), i32(c), i32(l), i64(x.size))
    if act is not None:
        activation(y, *act, out=y)
    return y


def batchNormBackward(x, dy, scale, mean, var, epsilon, useBatchStats, act=None, y=None):
    fusedActivation("batchNormBackward", act, x.shape, y)
    if act is not None:
        dy = activationBackward(y, y, dy, *act)
    n, c, l = planes(x.shape)
    dscale, dbias = empty((1, c, 1, 1), np.float32), empty((1, c, 1, 1), np.float32)
    launchBlocks(function("batchnorm.cu", "bnBackwardReduce"), c, BLOCK, ptr(x), ptr(dy), ptr(mean), ptr(var),
                 f32(epsilon), ptr(dscale), ptr(dbias), i32(n), i32(c), i32(l))
    dx = empty(x.shape, np.float32)
    launch(function("batchnorm.cu", "bnBackwardData"), x.size, ptr(x), ptr(dy), ptr(dx), ptr(scale), ptr(mean),
           ptr(var), ptr(dscale), ptr(dbias), f32(epsilon), i32(c), i32(l), i64(n * l), i32(bool(useBatchStats)),
           i64(x.size))
    return dx, dscale, dbias


# ---- synchronised batch norm: the per-channel sums on their own (minidl.distributed) -----------------

def batchNormMoments(x):
    n, c, l = planes(x.shape)
    mean, var = empty((1, c, 1, 1), np.float32), empty((1, c, 1, 1), np.float32)
    launchBlocks(function("batchnorm.cu", "bnMoments"), c, BLOCK, ptr(x), ptr(mean), ptr(var), i32(n), i32(c), i32(l))
    return mean, var


def batchNormUpdateRunning(runMean, runVar, mean, var, count, factor):
    c = runMean.size
    launch(function("batchnorm.cu", "bnUpdateRunning"), c, ptr(runMean), ptr(runVar), ptr(mean), ptr(var), i32(c),
           i64(count), f32(factor))


def batchNormBackwardSums(x, dy, mean, var, epsilon):
    n, c, l = planes(x.shape)
    dscale, dbias = empty((1, c, 1, 1), np.float32), empty((1, c, 1, 1), np.float32)
    launchBlocks(function("batchnorm.cu", "bnBackwardReduce"), c, BLOCK, ptr(x), ptr(dy), ptr(mean), ptr(var),
                 f32(epsilon), ptr(dscale), ptr(dbias), i32(n), i32(c), i32(l))
    return dscale, dbias


def batchNormBackwardData(x, dy, scale, mean, var, dscale, dbias, count, epsilon):
    n, c, l = planes(x.shape)
    dx = empty(x.shape, np.float32)
    launch(function("batchnorm.cu", "bnBackwardData"), x.size, ptr(x), ptr(dy), ptr(dx), ptr(scale), ptr(mean),
           ptr(var), ptr(dscale), ptr(dbias), f32(epsilon), i32(c), i32(l), i64(count), i32(1), i64(x.size))
    return dx
