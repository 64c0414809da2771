"""SeparableConv2D: a depthwise conv followed by a pointwise conv, as a container.

Children are named "depthwise" (DepthwiseConv2D, W (inmaps*multiplier, 1, kh, kw))
and "pointwise" (PointwiseConv2D, W (outmaps, inmaps*multiplier, 1, 1)), so
``sep["depthwise"].W`` and saved keys like ``net.sep.depthwise.W`` work as for
any container.
"""

from minidl.containers.sequential import Sequential
from minidl.modules.conv import DepthwiseConv2D, PointwiseConv2D


class SeparableConv2D(Sequential):
    def __init__(self, inmaps, outmaps, size, stride=1, pad=0, dilation=1, multiplier=1, useBias=True, name=None,
                 initscheme=None, empty=False):
        super().__init__(name)
        self.registerBlueprint(locals())
        self.append(DepthwiseConv2D(inmaps, size, stride=stride, pad=pad, dilation=dilation, multiplier=multiplier,
                                    useBias=useBias, name="depthwise", initscheme=initscheme, empty=empty))
        self.append(PointwiseConv2D(inmaps * multiplier, outmaps, useBias=useBias, name="pointwise",
                                    initscheme=initscheme, empty=empty))
