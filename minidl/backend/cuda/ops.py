"""Every op of minidl.backend.interface on the GPU. Each op's implementation
lives in the file named after its family, as in minidl/backend/numpy."""

from minidl.backend.cuda.array import (  # noqa: F401
    ArrayType, addArrays, axpy, concat, copy, empty, isArray, mayShareMemory, split, to_gpu, zeros,
)
from minidl.backend.cuda.batchnorm import (  # noqa: F401
    batchNormBackward, batchNormBackwardData, batchNormBackwardSums, batchNormEval, batchNormMoments, batchNormTrain,
    batchNormUpdateRunning,
)
from minidl.backend.cuda.conv import (  # noqa: F401
    conv2d, conv2dBackwardData, conv2dBackwardParams,
    pointwiseConv2d, pointwiseConv2dBackwardData, pointwiseConv2dBackwardParams,
)
from minidl.backend.cuda.cost import bce, classificationErrors, crossEntropy, labelRange, mse, smoothL1  # noqa: F401
from minidl.backend.cuda.deconv import deconv2d, deconv2dBackwardData, deconv2dBackwardParams  # noqa: F401
from minidl.backend.cuda.dense import linear, linearBackwardData, linearBackwardParams  # noqa: F401
from minidl.backend.cuda.depthwise import (  # noqa: F401
    depthwiseConv2d, depthwiseConv2dBackward, depthwiseConv2dBackwardData, depthwiseConv2dBackwardParams,
)
from minidl.backend.cuda.elementwise import (  # noqa: F401
    activation, activationBackward, dropout, dropoutBackward, softmax, softmaxBackward,
)
from minidl.backend.cuda.mul import mul, mulBackward  # noqa: F401
from minidl.backend.cuda.norm import scale, sumOfSquares  # noqa: F401
from minidl.backend.cuda.optim import (  # noqa: F401
    adagradUpdate, adamUpdate, momentumUpdate, nesterovUpdate, rmspropUpdate, sgdUpdate,
)
from minidl.backend.cuda.pool import avgPool2d, avgPool2dBackward, maxPool2d, maxPool2dBackward  # noqa: F401
from minidl.backend.cuda.resample import pad2d, pad2dBackward, upsample2d, upsample2dBackward  # noqa: F401

NAME = "cuda"
