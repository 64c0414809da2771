"""Upsample2D and Pad2D against naive loops, finite differences and (when installed) PyTorch's
F.interpolate and F.pad, on every backend."""

import math

import numpy as np
import pytest

from gradcheck import assertClose, checkGradients
from minidl.backend import gpuarray
from minidl.errors import ModuleError
from minidl.modules import Pad2D, Upsample2D

# ---- naive references (loops over output pixels, float64) ----------------------------------------


def _linearSource(o, scale, n):
    """PyTorch's align_corners=False: the source coordinate of output o, clamped at 0, and its two
    neighbours with their weights."""
    src = max((o + 0.5) / scale - 0.5, 0.0)
    i0 = int(math.floor(src))
    frac = src - i0
    return [(i0, 1.0 - frac), (min(i0 + 1, n - 1), frac)]


def naiveUpsample(x, scale, mode, dy):
    """y and dx: each output pixel a weighted sum of its source taps; dx sends dy back along them."""
    x, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    n, c, h, w = x.shape
    sh, sw = scale
    y, dx = np.zeros((n, c, h * sh, w * sw)), np.zeros_like(x)
    for oy in range(h * sh):
        for ox in range(w * sw):
            if mode == "nearest":
                taps = [(oy // sh, ox // sw, 1.0)]
            else:
                taps = [(iy, ix, wy * wx) for iy, wy in _linearSource(oy, sh, h) for ix, wx in _linearSource(ox, sw, w)]
            for iy, ix, weight in taps:
                y[:, :, oy, ox] += weight * x[:, :, iy, ix]
                dx[:, :, iy, ix] += weight * dy[:, :, oy, ox]
    return y, dx


def _padSource(o, before, n, mode):
    i = o - before
    if 0 <= i < n or mode == "constant":
        return i if 0 <= i < n else None
    if mode == "replicate":
        return min(max(i, 0), n - 1)
    return -i if i < 0 else 2 * (n - 1) - i     # reflect: about the edge pixel


def naivePad(x, pad, mode, value, dy):
    x, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    n, c, h, w = x.shape
    top, bottom, left, right = pad
    y, dx = np.full((n, c, h + top + bottom, w + left + right), float(value)), np.zeros_like(x)
    for oy in range(y.shape[2]):
        for ox in range(y.shape[3]):
            iy, ix = _padSource(oy, top, h, mode), _padSource(ox, left, w, mode)
            if iy is not None and ix is not None:
                y[:, :, oy, ox] = x[:, :, iy, ix]
                dx[:, :, iy, ix] += dy[:, :, oy, ox]
    return y, dx


# ---- configurations ---------------------------------------------------------------------------------

# (id, Upsample2D kwargs, input shape)
UPSAMPLES = [
    ("nearest2", dict(scale=2), (2, 3, 4, 5)),
    ("nearest3", dict(scale=3), (1, 2, 3, 4)),
    ("nearest_hw", dict(scale=(2, 3)), (2, 2, 3, 4)),
    ("nearest_1x4", dict(scale=(1, 4)), (1, 3, 4, 2)),
    ("nearest1_identity", dict(scale=1), (2, 2, 3, 3)),
    ("bilinear2", dict(scale=2, mode="bilinear"), (2, 3, 4, 5)),
    ("bilinear3", dict(scale=3, mode="bilinear"), (1, 2, 4, 3)),
    ("bilinear_hw", dict(scale=(3, 2), mode="bilinear"), (2, 2, 3, 4)),
    ("bilinear_1x4", dict(scale=(1, 4), mode="bilinear"), (1, 2, 3, 3)),
    ("bilinear_one_row", dict(scale=(2, 5), mode="bilinear"), (2, 2, 1, 3)),
    ("bilinear1_identity", dict(scale=1, mode="bilinear"), (1, 2, 3, 4)),
]
UP_IDS = [u[0] for u in UPSAMPLES]

# (id, Pad2D kwargs, input shape)
PADS = [
    ("constant1", dict(pad=1), (2, 3, 4, 5)),
    ("constant_hw_value", dict(pad=(1, 2), value=-2.5), (2, 2, 3, 4)),
    ("constant_tblr", dict(pad=(0, 2, 3, 1), value=1.0), (1, 3, 3, 4)),
    ("reflect1", dict(pad=1, mode="reflect"), (2, 3, 4, 5)),
    ("reflect_tblr", dict(pad=(2, 1, 0, 3), mode="reflect"), (2, 2, 4, 5)),
    ("reflect_widest", dict(pad=(3, 3, 4, 4), mode="reflect"), (1, 2, 4, 5)),
    ("replicate1", dict(pad=1, mode="replicate"), (2, 3, 4, 5)),
    ("replicate_wider_than_image", dict(pad=(5, 0, 2, 6), mode="replicate"), (1, 2, 4, 3)),
    ("replicate_one_pixel", dict(pad=2, mode="replicate"), (2, 2, 1, 1)),
    ("reflect_zero", dict(pad=0, mode="reflect"), (1, 2, 3, 3)),
]
PAD_IDS = [p[0] for p in PADS]


def _forwardBackward(module, shape):
    x = np.random.randn(*shape).astype(np.float32)
    y = module(gpuarray.to_gpu(x)).get()
    assert y.shape == module.dataShapeFrom(shape)
    dy = np.random.randn(*y.shape).astype(np.float32)
    dx = module.backward(gpuarray.to_gpu(dy)).get()
    return x, y, dy, dx


@pytest.mark.parametrize("name,kwargs,shape", UPSAMPLES, ids=UP_IDS)
def test_upsample_matches_naive_loops(backend, name, kwargs, shape):
    up = Upsample2D(**kwargs)
    x, y, dy, dx = _forwardBackward(up, shape)
    ry, rdx = naiveUpsample(x, up.scale, up.mode, dy)
    assertClose(y, ry, 1e-6, 1e-6, "forward")
    assertClose(dx, rdx, 1e-5, 1e-5, "input gradient")


@pytest.mark.parametrize("name,kwargs,shape", PADS, ids=PAD_IDS)
def test_pad_matches_naive_loops(backend, name, kwargs, shape):
    pad = Pad2D(**kwargs)
    x, y, dy, dx = _forwardBackward(pad, shape)
    ry, rdx = naivePad(x, pad.pad, pad.mode, pad.value, dy)
    assert np.array_equal(y, ry), "padding copies values exactly"
    assertClose(dx, rdx, 1e-6, 1e-6, "input gradient")


@pytest.mark.parametrize("name,kwargs,shape", UPSAMPLES + PADS, ids=UP_IDS + PAD_IDS)
def test_gradients_match_finite_differences(backend, name, kwargs, shape):
    module = Upsample2D(**kwargs) if name in UP_IDS else Pad2D(**kwargs)
    checkGradients(module, np.random.randn(*shape).astype(np.float32), kind="linear")


def _vsTorch(label, y, dx, ty, tx):
    errors = (np.abs(y - ty.detach().numpy()).max(), np.abs(dx - tx.grad.numpy()).max())
    print("%s vs torch: max abs err forward %.2g, dx %.2g" % (label, *errors))
    assertClose(y, ty.detach().numpy(), 1e-6, 1e-6, "forward vs torch")
    assertClose(dx, tx.grad.numpy(), 1e-5, 1e-5, "dx vs torch")


@pytest.mark.parametrize("name,kwargs,shape", UPSAMPLES, ids=UP_IDS)
def test_upsample_matches_torch_interpolate(backend, name, kwargs, shape):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    up = Upsample2D(**kwargs)
    x, y, dy, dx = _forwardBackward(up, shape)
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    extra = dict(align_corners=False) if up.mode == "bilinear" else {}
    ty = F.interpolate(tx, scale_factor=up.scale, mode=up.mode, **extra)
    ty.backward(torch.tensor(dy, dtype=torch.float64))
    _vsTorch("upsample %s" % name, y, dx, ty, tx)


@pytest.mark.parametrize("name,kwargs,shape", PADS, ids=PAD_IDS)
def test_pad_matches_torch_pad(backend, name, kwargs, shape):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    pad = Pad2D(**kwargs)
    x, y, dy, dx = _forwardBackward(pad, shape)
    top, bottom, left, right = pad.pad
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    extra = dict(value=pad.value) if pad.mode == "constant" else {}
    ty = F.pad(tx, (left, right, top, bottom), mode=pad.mode, **extra)
    ty.backward(torch.tensor(dy, dtype=torch.float64))
    _vsTorch("pad %s" % name, y, dx, ty, tx)


@pytest.mark.parametrize("build,shape", [
    (lambda: Upsample2D(2, "nearest"), (1, 2, 4, 5)),
    (lambda: Upsample2D((3, 2), "bilinear"), (1, 2, 4, 5)),
    (lambda: Pad2D((2, 1, 1, 3), "reflect"), (1, 2, 4, 5)),
    (lambda: Pad2D((3, 0, 2, 1), "replicate"), (1, 2, 4, 5)),
    (lambda: Pad2D(1, value=0.5), (1, 2, 4, 5)),
], ids=["nearest", "bilinear", "reflect", "replicate", "constant"])
def test_nan_reaches_exactly_what_its_formula_reaches(backend, build, shape):
    """A NaN pixel makes NaN every output that reads it (bilinear: also with weight 0, as PyTorch
    multiplies it in), a NaN output gradient every input gradient it is sent to, and nothing else."""
    module = build()
    x = np.random.randn(*shape).astype(np.float32)
    x[0, 1, 0, 2] = np.nan
    y = module(gpuarray.to_gpu(x)).get()
    dy = np.random.randn(*y.shape).astype(np.float32)
    dy[0, 0, 1, -1] = dy[0, 1, 3, 3] = np.nan      # a border pixel (for Pad2D) and an inner one
    dx = module.backward(gpuarray.to_gpu(dy)).get()
    if isinstance(module, Upsample2D):
        ry, rdx = naiveUpsample(x, module.scale, module.mode, dy)
    else:
        ry, rdx = naivePad(x, module.pad, module.mode, module.value, dy)
    for what, got, want in (("y", y, ry), ("dx", dx, rdx)):
        assert np.isnan(want).any() and not np.isnan(want).all(), what
        assert np.array_equal(np.isnan(got), np.isnan(want)), "%s: NaN at other places than the formula's" % what


# ---- arguments and errors -----------------------------------------------------------------------------

def test_arguments_normalise():
    assert Upsample2D().scale == (2, 2) and Upsample2D().mode == "nearest"
    assert Upsample2D(np.int64(3)).scale == (3, 3) and Upsample2D((1, 2)).scale == (1, 2)
    assert Pad2D(2).pad == (2, 2, 2, 2) and Pad2D((1, 3)).pad == (1, 1, 3, 3)
    assert Pad2D((1, 2, 3, 4)).pad == (1, 2, 3, 4) and Pad2D(np.int32(1)).value == 0.0
    assert Pad2D((0, 1, 2, 3)).dataShapeFrom((2, 3, 4, 5)) == (2, 3, 5, 10)
    assert Upsample2D((2, 3)).dataShapeFrom((2, 3, 4, 5)) == (2, 3, 8, 15)


@pytest.mark.parametrize("make,message", [
    (lambda: Upsample2D(0), r"^Upsample2D: scale must be >= 1, got \(0, 0\)$"),
    (lambda: Upsample2D(1.5), r"^Upsample2D: scale must be an int or an \(h, w\) pair, got 1.5$"),
    (lambda: Upsample2D((2, 2, 2)), r"^Upsample2D: scale must be an int or an \(h, w\) pair"),
    (lambda: Upsample2D(True), r"^Upsample2D: scale must be an int or an \(h, w\) pair, got True$"),
    (lambda: Upsample2D(2, "bicubic"), r"^Upsample2D: mode must be one of 'nearest', 'bilinear', got 'bicubic'$"),
    (lambda: Pad2D(-1), r"^Pad2D: pad must be >= 0, got -1$"),
    (lambda: Pad2D((1, 2, 3)), r"^Pad2D: pad must be an int, an \(h, w\) pair or \(top, bottom, left, right\), "
                               r"got \(1, 2, 3\)$"),
    (lambda: Pad2D(1.0), r"^Pad2D: pad must be an int"),
    (lambda: Pad2D(1, "circular"), r"^Pad2D: mode must be one of 'constant', 'reflect', 'replicate', got "
                                   r"'circular'$"),
    (lambda: Pad2D(1, "reflect", value=1.0), r"^Pad2D: value applies to mode 'constant' only, got value 1.0 with "
                                             r"mode 'reflect'$"),
    (lambda: Pad2D(1, value=float("nan")), r"^Pad2D: value must be a finite number, got nan$"),
    (lambda: Pad2D(1, value="0"), r"^Pad2D: value must be a finite number, got '0'$"),
], ids=["scale0", "scale_float", "scale_triple", "scale_bool", "mode", "pad_negative", "pad_triple", "pad_float",
        "pad_mode", "value_not_constant", "value_nan", "value_str"])
def test_bad_arguments_raise_value_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_call_time_errors_name_the_module_and_shapes(backend):
    with pytest.raises(ModuleError, match=r"^Upsample2D 'up': expected 4D input \(N, C, H, W\), got shape "
                                          r"\(2, 3, 4\)$"):
        Upsample2D(name="up")(gpuarray.zeros((2, 3, 4)))
    with pytest.raises(ModuleError, match=r"^Pad2D 'pad': reflect padding \(top, bottom, left, right\) = "
                                          r"\(1, 1, 3, 3\) needs each pad smaller than the side it extends "
                                          r"\(height 4, width 3\), got shape \(1, 2, 4, 3\)$"):
        Pad2D((1, 3), "reflect", name="pad")(gpuarray.zeros((1, 2, 4, 3)))
    with pytest.raises(ModuleError, match=r"^Pad2D 'pad': replicate padding \(1, 1, 0, 0\) has no edge pixel to repeat "
                                          r"in an input of shape \(1, 2, 0, 3\)$"):
        Pad2D((1, 0), "replicate", name="pad")(gpuarray.to_gpu(np.zeros((1, 2, 0, 3), np.float32)))


@pytest.mark.parametrize("build,outshape", [
    (lambda: Upsample2D(2, "bilinear"), (0, 2, 8, 10)),
    (lambda: Upsample2D((1, 3)), (0, 2, 4, 15)),
    (lambda: Pad2D((1, 0, 2, 1), "reflect"), (0, 2, 5, 8)),
    (lambda: Pad2D(1, value=2.0), (0, 2, 6, 7)),
], ids=["bilinear", "nearest", "reflect", "constant"])
def test_empty_batch(backend, build, outshape):
    module = build()
    y = module(gpuarray.to_gpu(np.zeros((0, 2, 4, 5), np.float32)))
    assert y.shape == outshape and y.get().shape == outshape
    assert module.backward(gpuarray.to_gpu(np.zeros(outshape, np.float32))).shape == (0, 2, 4, 5)
