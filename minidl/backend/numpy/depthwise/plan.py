"""Which depthwise implementation runs for a geometry: the only place the choice is made.

Three implementations, fastest first where they apply:
- "flat" (flat.py): multiplier 1 and "same" padding ((kh-1)*dh == 2*ph, (kw-1)*dw == 2*pw), at
  stride 1 on maps of at most FLAT_MAX_PLANE pixels, at stride 2 on maps of even height, for
  batches of at least FLAT_MIN_BATCH images (FLAT_MIN_BATCH_BACKWARD for the gradients);
- "tall" (tall.py): every other geometry, while numba is on; its forward at stride 2 is
  "tall-phases" (the block split by row parity, so only the rows kept are computed), which also
  takes the flat geometry's stride-2 forward on maps of at least PHASES_MIN_PLANE pixels;
- "numpy" (reference.py): without numba, and the exact path for values the kernels cannot take.
"""

from minidl.backend.numpy import jit
from minidl.backend.numpy.routing import Plan, Route, planner
from minidl.backend.numpy.windows import tapRangeArray
from minidl.shapes import windowOutSize2d

# largest map (H*W) the flat form takes at stride 1: measured faster through 16x16, slower from
# 24x24 on (its backward: the weight gradient's per-pixel products are written per image where the
# tall blocks' dot products stay in registers); at stride 2 it was faster than the plain tall
# kernels on every size measured, up to 112x112 (its forward has since lost maps of 56x56 and more
# to the tall phase planes: PHASES_MIN_PLANE below)
FLAT_MAX_PLANE = 256
# fewest images for the flat form: it lays each block of channels' weights out along the block's
# pixels once per call and reuses them over the images, which only pays with enough images. Measured
# on 2 cores (benchmarks/depthwise_batch.py: MobileNet shapes, 7x7 to 112x112, stride 1 and 2):
# forward, the tall form 1.3-1.8x faster at one image, the two about even at 4, the flat one ahead
# from 8; the fused backward, the tall form 1.4-2.2x faster at one image and ahead through 8, the two
# even at 16 (each ahead on half the shapes), the flat one 1.05-1.9x faster at 32 and 64. Those
# forwards were measured against the plain tall kernels. At stride 2 the phase planes (below) beat
# the flat forward on 28x28 maps at batches 8-32 as well, yet such maps still go flat from 8: moving
# the threshold there was not measured for whole steps (one such layer in MobileNetV1/V2 224).
FLAT_MIN_BATCH = 8
FLAT_MIN_BATCH_BACKWARD = 16
# the tall forward at stride 2 ("tall-phases", tall.forwardStride2) computes half the rows of the
# stride-1 correlation the plain tall forward reads out. Measured at one image on 2 cores
# (MobileNetV1's stride-2 layers, alone): 64 maps of 112x112 488 -> 339-379 us, 128 of 56x56 269 ->
# 198, 256 of 28x28 169 -> 151, 512 of 14x14 132 -> 130; whole MobileNetV1 / V2 224 eval at batch 1,
# alternating in one process: 26.1 -> 25.0 ms and 33.3 -> 32.1 ms. Splitting the columns by parity
# as well computed a quarter of the outputs but lost it to the element-by-element copies into the
# four planes (355-368 / 219 / 153 / 144 us).
# On large maps it also beats the flat forward at stride 2, at every batch measured but one
# (benchmarks/depthwise_batch.py, forward ms, flat against the phase planes; second run's raw file
# benchmarks/results/depthwise_batch_phases.txt, first run's ad hoc):
#   112x112, 64 maps: batch 32 15.4 / 14.7 vs 11.5 / 12.0, batch 64 29.9 / 28.8 vs 24.1 / 24.1
#     (96 maps, ad hoc: 22.5 vs 18.2 at 32);
#   56x56, 128 maps: batch 32 5.9 / 5.4 vs 4.4 / 5.4 (a tie in the second run), batch 64 12.0 / 12.7
#     vs 11.3 / 11.6;
#   28x28, 256 maps: the phase planes ahead at batches 1-32, but at 64 ahead in one run (7.1 vs 6.8)
#     and behind in the other (6.7 vs 7.4), so 28x28 stays flat;
#   14x14: flat ahead (2.5 vs 3.8 at 64), as on 16x16 (ad hoc, 64 maps: 0.52 vs 0.82 at 64).
# At stride 2 the flat backward stays ahead or even from batch 16 on (its FLAT_MIN_BATCH_BACKWARD).
PHASES_MIN_PLANE = 56 * 56


def _flat(inshape, wshape, stride, pad, dilation):
    """(whether the flat kernels take this geometry, why or why not)."""
    c, h, wd = inshape[1:]
    kh, kw = wshape[2:]
    if wshape[0] != c:
        return False, "channel multiplier %d: the flat kernels take 1" % (wshape[0] // c)
    if h * wd == 0:
        return False, "empty maps"
    if (kh - 1) * dilation[0] != 2 * pad[0] or (kw - 1) * dilation[1] != 2 * pad[1]:
        return False, "padding not 'same'"
    if stride == (1, 1) and h * wd <= FLAT_MAX_PLANE:
        return True, "multiplier 1, 'same' padding, stride 1 on a map of <= %d pixels" % FLAT_MAX_PLANE
    if stride == (2, 2) and h % 2 == 0:
        return True, "multiplier 1, 'same' padding, stride 2 on an even height"
    if stride == (1, 1):
        return False, "stride 1 on a map of %d > %d pixels" % (h * wd, FLAT_MAX_PLANE)
    return False, "stride %s" % (stride,) if stride != (2, 2) else "stride 2 on an odd height"


@planner("depthwise")
def depthwise(inshape, wshape, stride, pad, dilation):
    """The Plan of a depthwise convolution of x inshape (N, C, H, W) with W wshape (C*M, 1, kh, kw):
    routes forward, backwardData, backwardParams and backward (both gradients in one call), and the
    kernels' arguments: outsize (Ho, Wo), hyper (sh, sw, ph, pw, dh, dw), valid (the taps' ranges,
    shapes.tapRanges, for the flat kernels)."""
    outsize = windowOutSize2d(inshape, wshape[2:], stride, pad, dilation)
    kh, kw = wshape[2:]
    geometry = "%s * %s, stride %s, pad %s, dilation %s" % (inshape, wshape, stride, pad, dilation)
    data = dict(outsize=outsize, hyper=stride + pad + dilation, valid=None)
    if not jit.enabled:
        why = "numba is off (%s)" % jit.disabledBy
        return Plan("depthwise", geometry, [(p, Route("numpy", why)) for p in
                                            ("forward", "backwardData", "backwardParams", "backward")], **data)
    flat, reason = _flat(inshape, wshape, stride, pad, dilation)
    same = (kh - 1) * dilation[0] == 2 * pad[0] and (kw - 1) * dilation[1] == 2 * pad[1]
    gather = (kh - 1) * dilation[0] >= pad[0] and (kw - 1) * dilation[1] >= pad[1]
    tallData = (Route("tall-gather", "padding within the kernel's reach", "numpy when W is not finite") if gather
                else Route("tall-scatter", "padding wider than the kernel's reach", "numpy when W is not finite"))
    n = inshape[0]
    phases = stride == (2, 2) and inshape[2] * inshape[3] >= PHASES_MIN_PLANE
    flatForward = flat and n >= FLAT_MIN_BATCH and not phases
    flatBackward = flat and n >= FLAT_MIN_BATCH_BACKWARD

    def tallWhy(minimum, otherwise):
        """Why a tall route, where the flat geometry holds but the batch is too small for it."""
        if not flat:
            return otherwise
        return "%s, but a batch of %d < %d: the flat form's weight layout would not pay" % (reason, n, minimum)
    if flatForward or flatBackward:
        data["valid"] = tapRangeArray(inshape[2:], outsize, (kh, kw), stride, pad, dilation)
    if flatForward:
        forward = Route("flat", reason, "tall when the result is not finite")
    elif phases and flat:
        forward = Route("tall-phases", "stride 2 on a map of %d >= %d pixels: two row-parity planes, only the "
                        "rows kept computed (faster than the flat form there)" % (inshape[2] * inshape[3],
                                                                                 PHASES_MIN_PLANE))
    elif stride == (2, 2):
        forward = Route("tall-phases", tallWhy(FLAT_MIN_BATCH, reason) + "; two row-parity planes, only the rows "
                        "kept computed")
    else:
        forward = Route("tall", tallWhy(FLAT_MIN_BATCH, reason))
    if flatBackward:
        backward = [
            ("backwardData", Route("flat", reason, "tall-gather when the result is not finite, then numpy when W "
                                   "is not")),
            ("backwardParams", Route("flat", reason, "numpy when the result is not finite")),
            ("backward", Route("flat", reason + "; both gradients in one pass",
                               "the separate passes when the result is not finite")),
        ]
    else:
        small = FLAT_MIN_BATCH_BACKWARD
        backward = [
            ("backwardData", Route(tallData.impl, tallWhy(small, tallData.why), tallData.fallback)),
            ("backwardParams", Route("tall", tallWhy(small, reason), "numpy when the result is not finite")),
            ("backward", Route("tall-fused", tallWhy(small, "'same' padding: one gather of dy serves both "
                                                            "gradients"),
                               "the separate passes when W or the result is not finite") if same
             else Route("separate", "padding not 'same': backwardData, then backwardParams")),
        ]
    return Plan("depthwise", geometry, [("forward", forward)] + backward, **data)
