"""The NumPy backend: the embedded default, complete for every op in
``minidl.backend.interface``. Each op's implementation lives in the file named
after its family (conv.py, depthwise.py, pool.py, ...)."""

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
