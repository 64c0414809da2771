"""Optimizer update rules on the CUDA backend: one fused kernel per rule."""

import math

from minidl.backend.cuda.compiler import f32, function, i64, launch, ptr


def sgdUpdate(param, grad, learnRate, wc):
    launch(function("optim.cu", "sgdUpdate"), param.size, ptr(param), ptr(grad), f32(learnRate), f32(wc),
           i64(param.size))


def momentumUpdate(param, grad, mom, learnRate, momRate, wc):
    launch(function("optim.cu", "momentumUpdate"), param.size, ptr(param), ptr(grad), ptr(mom), f32(learnRate),
           f32(momRate), f32(wc), i64(param.size))


def nesterovUpdate(param, grad, mom, learnRate, momRate, wc):
    launch(function("optim.cu", "nesterovUpdate"), param.size, ptr(param), ptr(grad), ptr(mom), f32(learnRate),
           f32(momRate), f32(wc), i64(param.size))


def adamUpdate(param, grad, mg, ms, alpha, beta1, beta2, epsilon, t, wc):
    lr = alpha * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
    launch(function("optim.cu", "adamUpdate"), param.size, ptr(param), ptr(grad), ptr(mg), ptr(ms), f32(lr),
           f32(beta1), f32(beta2), f32(epsilon), f32(wc), i64(param.size))


def rmspropUpdate(param, grad, ms, learnRate, factor, epsilon, wc):
    launch(function("optim.cu", "rmspropUpdate"), param.size, ptr(param), ptr(grad), ptr(ms), f32(learnRate),
           f32(factor), f32(epsilon), f32(wc), i64(param.size))


def adagradUpdate(param, grad, h, learnRate, epsilon, wc):
    launch(function("optim.cu", "adagradUpdate"), param.size, ptr(param), ptr(grad), ptr(h), f32(learnRate),
           f32(epsilon), f32(wc), i64(param.size))
