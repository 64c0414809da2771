"""Which implementation a general or pointwise convolution runs for a geometry: the only place the
choice is made (Conv2D's ``algo`` picks general, depthwise or pointwise; this picks how).

General convolution (general.py), per pass:
- "winograd" (winograd.py): forward and input gradient of 3x3 convs at stride 1 with at least
  WINOGRAD_MIN_MAPS maps per group, in and out;
- "im2col-flat", "im2col-wide", "im2col" (columns.py): im2col + GEMM image by image through the
  numba column kernels, in the form that is cheapest for the geometry;
- "numpy": without numba, im2col as one strided-view copy and one batched GEMM.
Pointwise convolution (pointwise.py): GEMMs over the batch, one per image for long maps, or over
chunks of images copied map-major for short ones.
"""

from minidl.backend.numpy import jit
from minidl.backend.numpy.conv.columns import ColumnLayout
from minidl.backend.numpy.routing import Plan, Route, planner
from minidl.shapes import windowOutSize2d

# fewest maps per group (in and out) worth Winograd's transforms. Measured (2 cores, forward): 32 ->
# 64 maps of 32x32 6.9 -> 4.7 ms against im2col, dilated 32 -> 32 4.9 -> 3.9 ms, but 4 groups of 16
# maps 1.3 -> 2.1 ms: a GEMM with 16-long rows runs far from peak and the transforms dominate
WINOGRAD_MIN_MAPS = 32
# the wide columns where column rows (C*kh*kw) outnumber output maps at least WIDE_MIN_RATIO to 1:
# measured a win at 4.5-9 to 1 (the benchmark's conv3x3, grouped and dilated cases), a loss for the
# MobileNets' 3-channel stem (27 to 16)
WIDE_MIN_RATIO = 4
# the weight gradient (cols @ dy^T) copies dy^T row-major first for groups of at most SMALL_GROUP
# output maps with at least COPY_MIN_ROWS column rows: with both operands row-major OpenBLAS ran
# 1.4x faster for 16 maps and 144 rows (48 vs 66 us per image, the copy included); for 32 maps or
# more it gained nothing, and MobileNet's stem (16 maps, 27 rows) lost 8% to the copy
SMALL_GROUP, COPY_MIN_ROWS = 16, 64
# pointwise: maps of at least DIRECT_MIN_L pixels go image by image, straight from the operands;
# shorter ones a few images per GEMM, copied map-major in chunks of at most CHUNK_BYTES (a core's L2)
DIRECT_MIN_L = 256
CHUNK_BYTES = 1 << 20

_EXACT_INPUT_GRAD = "numpy when W is not finite (the wide columns' garbage terms)"
_EXACT_WEIGHT_GRAD = "numpy when the partial sums are not finite (the wide columns' garbage terms)"


def _winograd(wshape, stride, groups):
    o, cg, kh, kw = wshape
    return (kh, kw) == (3, 3) and stride == (1, 1) and min(cg, o // groups) >= WINOGRAD_MIN_MAPS


def _columnsForm(inshape, wshape, stride, outsize):
    """(form, why) of the numba column kernels for this geometry."""
    c, h, w = inshape[1:]
    o, _, kh, kw = wshape
    if stride == (1, 1) and tuple(outsize) == (h, w):
        return "im2col-flat", "stride 1, 'same' size: no padded copies, no garbage columns"
    if stride == (1, 1) and c * kh * kw >= WIDE_MIN_RATIO * o:
        return "im2col-wide", ("stride 1, %d column rows >= %d x %d maps: one copy per column row"
                               % (c * kh * kw, WIDE_MIN_RATIO, o))
    return "im2col", "per-image columns (stride > 1, or few column rows per map)"


@planner("general")
def general(inshape, wshape, stride, pad, dilation, groups):
    """The Plan of a general convolution of x inshape (N, C, H, W) with W wshape (O, C/G, kh, kw):
    routes forward, backwardData and backwardParams; outsize (Ho, Wo); columns, the ColumnLayout of
    the column kernels (its form "numpy" without numba); copyGradT, whether the weight gradient copies dy^T
    row-major first."""
    outsize = windowOutSize2d(inshape, wshape[2:], stride, pad, dilation)
    geometry = "%s * %s, stride %s, pad %s, dilation %s, groups %d" % (inshape, wshape, stride, pad, dilation,
                                                                       groups)
    if not jit.enabled:
        route = Route("numpy", "numba is off (%s): im2col as one strided-view copy, one batched GEMM"
                      % jit.disabledBy)
        columns = ColumnLayout("numpy", inshape, wshape, stride, pad, dilation, groups, outsize)
        return Plan("general", geometry, [("forward", route), ("backwardData", route), ("backwardParams", route)],
                    outsize=outsize, columns=columns, copyGradT=False)
    form, why = _columnsForm(inshape, wshape, stride, outsize)
    columns = ColumnLayout(form, inshape, wshape, stride, pad, dilation, groups, outsize)
    copyGradT = columns.og <= SMALL_GROUP and columns.k >= COPY_MIN_ROWS
    wide = form == "im2col-wide"
    dataRoute = Route(form, why, _EXACT_INPUT_GRAD if wide else "")
    if _winograd(wshape, stride, groups):
        winograd = "3x3 at stride 1 with >= %d maps per group" % WINOGRAD_MIN_MAPS
        forward = Route("winograd", winograd, "%s when the result is not finite" % form)
        backwardData = Route("winograd", winograd, "%s when the result is not finite%s"
                             % (form, ", then " + _EXACT_INPUT_GRAD if wide else ""))
    else:
        forward, backwardData = Route(form, why), dataRoute
    paramsWhy = why + ("; dy^T copied row-major (<= %d maps per group, >= %d column rows)"
                       % (SMALL_GROUP, COPY_MIN_ROWS) if copyGradT else "")
    backwardParams = Route(form, paramsWhy, _EXACT_WEIGHT_GRAD if wide else "")
    return Plan("general", geometry, [("forward", forward), ("backwardData", backwardData),
                                      ("backwardParams", backwardParams)],
                outsize=outsize, columns=columns, copyGradT=copyGradT)


@planner("pointwise")
def pointwise(inshape, wshape):
    """The Plan of a pointwise (1x1, stride 1, no padding, one group) convolution of x inshape
    (N, C, H, W) with W wshape (O, C, 1, 1): routes forward, backwardData, backwardParams; chunk,
    the images per GEMM of the chunked forms (1 for the direct ones); transposed, whether the weight
    gradient's GEMM computes dW^T (C, O) and copies it back. A chunk of one image is the direct form:
    each GEMM reads its image in place."""
    n, c, h, w = inshape
    o = wshape[0]
    l = h * w
    transposed = o < c
    chunk = 1 if l >= DIRECT_MIN_L else max(1, min(n, CHUNK_BYTES // (4 * (o + c) * l)))
    # short maps whose chunk still holds one image (a batch of one, or an image over CHUNK_BYTES)
    shortWhy = "" if l >= DIRECT_MIN_L else "maps of %d < %d pixels, but a chunk holds one image: " % (
        l, DIRECT_MIN_L)
    geometry = "%s * %s" % (inshape, wshape)
    if chunk == 1:
        gemm = Route("gemm", (shortWhy or "maps of %d >= %d pixels: " % (l, DIRECT_MIN_L))
                     + "one GEMM per image, read in place")
        gram = "one GEMM per image, read in place"
    else:
        gemm = Route("gemm-chunked", "maps of %d < %d pixels: %d images per GEMM, copied map-major"
                     % (l, DIRECT_MIN_L, chunk))
        gram = "%d images per GEMM, copied map-major" % chunk
    # OpenBLAS ran big @ small^T 10-30% faster than small @ big^T on these shapes (measured on
    # MobileNetV2's projection layers): with fewer output than input maps, compute dW^T
    gram += "; dW^T computed (%d < %d maps) and copied back" % (o, c) if transposed else ""
    params = Route("gram" if chunk == 1 else "gram-chunked", gram)
    return Plan("pointwise", geometry, [("forward", gemm), ("backwardData", gemm), ("backwardParams", params)],
                chunk=chunk, transposed=transposed)
