"""Layers. One file per family; every module follows the protocol in module.py."""

from minidl.modules.conv import Conv2D, DepthwiseConv2D, PointwiseConv2D  # noqa: F401
from minidl.module import Module  # noqa: F401
from minidl.modules.separable import SeparableConv2D  # noqa: F401
