"""Layers. One file per family; every module follows the protocol in minidl/module.py."""

from minidl.module import Module  # noqa: F401
from minidl.modules.activation import (  # noqa: F401
    Activation, clip, elu, hardSigmoid, hardSwish, leakyRelu, relu, relu6, sigmoid, softPlus, tanh,
)
from minidl.modules.batchnorm import BatchNorm, BatchNorm2D  # noqa: F401
from minidl.modules.conv import Conv2D, DepthwiseConv2D, PointwiseConv2D  # noqa: F401
from minidl.modules.deconv import Deconv2D  # noqa: F401
from minidl.modules.dropout import Dropout  # noqa: F401
from minidl.modules.linear import Linear  # noqa: F401
from minidl.modules.merge import Add, Concat, Mul, Replicate  # noqa: F401
from minidl.modules.pool import AvgPool2D, GlobalAvgPool2D, MaxPool2D  # noqa: F401
from minidl.modules.resample import Pad2D, Upsample2D  # noqa: F401
from minidl.modules.separable import SeparableConv2D  # noqa: F401
from minidl.modules.shape import Flatten, Identity, Reshape  # noqa: F401
from minidl.modules.softmax import SoftMax  # noqa: F401
from minidl.modules.syncbatchnorm import SyncBatchNorm, SyncBatchNorm2D, convertSyncBatchNorm  # noqa: F401
