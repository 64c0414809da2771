"""General and pointwise 2-D convolution on the NumPy backend.

- plan.py: which implementation runs for a geometry, and why (the only place that decides);
- general.py: the general conv's three ops (any stride, padding, dilation, groups);
- columns.py: im2col / col2im, the NumPy reference and the numba kernels;
- winograd.py: Winograd F(2x2, 3x3) for stride-1 3x3 convs;
- pointwise.py: 1x1 convs as GEMMs over the batch.
Depthwise convolution is its own family (../depthwise/), and transposed convolution runs through
these ops (../deconv.py).
"""

from minidl.backend.numpy.conv.general import conv2d, conv2dBackwardData, conv2dBackwardParams  # noqa: F401
from minidl.backend.numpy.conv.pointwise import (  # noqa: F401
    pointwiseConv2d, pointwiseConv2dBackwardData, pointwiseConv2dBackwardParams,
)
