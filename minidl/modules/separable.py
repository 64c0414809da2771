"""SeparableConv2D: a depthwise conv followed by a pointwise conv, as a container.

Children are named "depthwise" (DepthwiseConv2D, W (inmaps*multiplier, 1, kh, kw))
and "pointwise" (PointwiseConv2D, W (outmaps, inmaps*multiplier, 1, 1)), so
``sep["depthwise"].W`` and saved keys like ``net.sep.depthwise.W`` work as for
any container.
"""

from minidl.containers.sequential import Sequential
from minidl.modules.conv import DepthwiseConv2D, PointwiseConv2D


class SeparableConv2D(Sequential):
    """A depthwise then a pointwise convolution, children ``depthwise`` and ``pointwise``.

    inmaps, outmaps, size, stride (1), pad (0), dilation (1), useBias (True), initscheme (None) and
    empty (False) as Conv2D's; multiplier (1): depthwise filters per input map; name: as for any
    Module. Input (N, inmaps, H, W) -> (N, outmaps, Ho, Wo), Ho and Wo as the depthwise conv's.
    No batch norm or activation between the two: build a Sequential for that.

    Example::

        >>> sep = SeparableConv2D(8, 16, 3, pad=1, name="sep")
        >>> sep(gpuarray.to_gpu(np.zeros((2, 8, 10, 10), np.float32))).shape, sep["depthwise"].W.shape
        ((2, 16, 10, 10), (8, 1, 3, 3))
    """

    def __init__(self, inmaps, outmaps, size, stride=1, pad=0, dilation=1, multiplier=1, useBias=True, name=None,
                 initscheme=None, empty=False):
        super().__init__(name)
        self.registerBlueprint(locals())
        self.append(DepthwiseConv2D(inmaps, size, stride=stride, pad=pad, dilation=dilation, multiplier=multiplier,
                                    useBias=useBias, name="depthwise", initscheme=initscheme, empty=empty))
        self.append(PointwiseConv2D(inmaps * multiplier, outmaps, useBias=useBias, name="pointwise",
                                    initscheme=initscheme, empty=empty))
