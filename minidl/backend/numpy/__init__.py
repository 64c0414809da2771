"""The NumPy backend: the embedded default, complete for every op in ``minidl.backend.interface``.

Read top to bottom, the folder is:
- the shared pieces: array.py (arrays, the workspace pool), jit.py (numba set-up: whether the
  kernels are on, compile options, threads), gemm.py (GEMMs and the threads that run per-image
  work), windows.py (windows and padding of maps), bias.py, routing.py (plans: which implementation
  an op runs for a geometry, and why), notices.py (what minidl says on stderr about compiling);
- one file or package per op family, each holding its NumPy reference beside its numba kernels:
  conv/ (general and pointwise convolution: im2col columns, Winograd, GEMMs), depthwise/,
  deconv.py, batchnorm/, pool.py, elementwise/ (activations, dropout, softmax), mul.py, resample.py
  (upsampling, padding), dense.py (Linear), norm.py, cost.py, optim.py with optimkernels.py.
Families with more than one implementation choose in their planner (conv/plan.py,
depthwise/plan.py, batchnorm/, elementwise/): ``routing.plan(family, ...)`` names the choice.
"""

from minidl.backend.numpy.array import (  # noqa: F401
    ArrayType, HostArray, addArrays, axpy, concat, copy, empty, isArray, mayShareMemory, split, to_gpu, zeros,
)
from minidl.backend.numpy.batchnorm import (  # noqa: F401
    batchNormBackward, batchNormBackwardData, batchNormBackwardSums, batchNormEval, batchNormMoments, batchNormTrain,
    batchNormUpdateRunning,
)
from minidl.backend.numpy.conv import (  # noqa: F401
    conv2d, conv2dBackwardData, conv2dBackwardParams,
    pointwiseConv2d, pointwiseConv2dBackwardData, pointwiseConv2dBackwardParams,
)
from minidl.backend.numpy.cost import bce, classificationErrors, crossEntropy, labelRange, mse, smoothL1  # noqa: F401
from minidl.backend.numpy.deconv import deconv2d, deconv2dBackwardData, deconv2dBackwardParams  # noqa: F401
from minidl.backend.numpy.dense import linear, linearBackwardData, linearBackwardParams  # noqa: F401
from minidl.backend.numpy.depthwise import (  # noqa: F401
    depthwiseConv2d, depthwiseConv2dBackward, depthwiseConv2dBackwardData, depthwiseConv2dBackwardParams,
)
from minidl.backend.numpy.elementwise import (  # noqa: F401
    activation, activationBackward, dropout, dropoutBackward, softmax, softmaxBackward,
)
from minidl.backend.numpy.mul import mul, mulBackward  # noqa: F401
from minidl.backend.numpy.norm import scale, sumOfSquares  # noqa: F401
from minidl.backend.numpy.optim import (  # noqa: F401
    adagradUpdate, adamUpdate, momentumUpdate, nesterovUpdate, rmspropUpdate, sgdUpdate,
)
from minidl.backend.numpy.pool import avgPool2d, avgPool2dBackward, maxPool2d, maxPool2dBackward  # noqa: F401
from minidl.backend.numpy.resample import pad2d, pad2dBackward, upsample2d, upsample2dBackward  # noqa: F401

NAME = "numpy"
