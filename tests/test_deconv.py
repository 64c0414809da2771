"""Deconv2D (transposed convolution) against naive loops, finite differences and (when installed)
PyTorch's conv_transpose2d, on every backend."""

import numpy as np
import pytest

from gradcheck import assertClose, checkGradients
from minidl.backend import gpuarray, ops
from minidl.errors import ModuleError
from minidl.modules import Deconv2D

# (id, Deconv2D kwargs, input shape). "conv" marks geometries the NumPy backend runs through the conv's
# passes (minidl/backend/numpy/conv/); "postpad >= stride" (allowed where dilation > stride) takes its explicit-size path.
CONFIGS = [
    ("basic", dict(inmaps=3, outmaps=4, size=3), (2, 3, 4, 5)),
    ("stride2", dict(inmaps=3, outmaps=4, size=3, stride=2), (2, 3, 4, 4)),
    ("stride2_pad1_postpad1", dict(inmaps=3, outmaps=2, size=3, stride=2, pad=1, postpad=1), (2, 3, 4, 5)),
    ("stride3_size4_postpad2", dict(inmaps=2, outmaps=3, size=4, stride=3, pad=1, postpad=2), (2, 2, 3, 4)),
    ("pad2_shrinks", dict(inmaps=2, outmaps=3, size=3, pad=2), (2, 2, 6, 5)),
    ("dil2", dict(inmaps=3, outmaps=2, size=3, dilation=2, pad=1), (2, 3, 4, 4)),
    ("dil2_postpad1_over_stride1", dict(inmaps=2, outmaps=3, size=3, dilation=2, pad=1, postpad=1), (2, 2, 4, 3)),
    ("dil3_stride2_postpad2", dict(inmaps=2, outmaps=2, size=2, stride=2, dilation=3, postpad=2), (2, 2, 3, 4)),
    ("size1_stride2_postpad1", dict(inmaps=4, outmaps=3, size=1, stride=2, postpad=1), (2, 4, 3, 3)),
    ("groups2", dict(inmaps=4, outmaps=6, size=3, stride=2, pad=1, groups=2), (2, 4, 4, 3)),
    ("groups2_postpad1", dict(inmaps=4, outmaps=2, size=3, stride=2, pad=1, postpad=1, groups=2), (2, 4, 3, 4)),
    ("depthwise", dict(inmaps=4, outmaps=4, size=3, stride=2, pad=1, postpad=1, groups=4), (2, 4, 4, 4)),
    ("depthwise_x2", dict(inmaps=3, outmaps=6, size=3, pad=1, groups=3), (2, 3, 5, 4)),
    ("hw_pairs", dict(inmaps=2, outmaps=3, size=(3, 2), stride=(2, 1), pad=(1, 0), dilation=(1, 2), postpad=(1, 1)),
     (2, 2, 4, 3)),
    ("hw_stride3_dil2", dict(inmaps=3, outmaps=3, size=(2, 3), stride=(3, 2), pad=(0, 2), dilation=(2, 1),
                             postpad=(1, 0), groups=3), (1, 3, 3, 5)),
    ("nobias", dict(inmaps=3, outmaps=4, size=2, stride=2, useBias=False), (2, 3, 3, 4)),
]
IDS = [c[0] for c in CONFIGS]


def _build(kwargs):
    deconv = Deconv2D(**kwargs, initscheme="gaussian")
    if deconv.useBias:
        deconv.vars["b"].data.set(np.random.randn(1, deconv.outmaps, 1, 1).astype(np.float32))
    return deconv


def naiveDeconv2d(x, W, b, stride, pad, dilation, postpad, groups, dy):
    """The definition, loop by loop in float64: every input pixel adds W times itself onto the outputs
    its kernel taps reach (rows iy*stride - pad + i*dilation). Returns y, dx, dW and db."""
    x, W, dy = np.asarray(x, np.float64), np.asarray(W, np.float64), np.asarray(dy, np.float64)
    (sh, sw), (ph, pw), (dh, dw), (oph, opw) = stride, pad, dilation, postpad
    n, c, h, w = x.shape
    _, og, kh, kw = W.shape
    cg = c // groups
    ho = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    wo = (w - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    y = np.zeros((n, og * groups, ho, wo))
    dx, dW = np.zeros_like(x), np.zeros_like(W)
    for ci in range(c):
        for o in range(og):
            oc = (ci // cg) * og + o
            for i in range(kh):
                for j in range(kw):
                    for iy in range(h):
                        oy = iy * sh - ph + i * dh
                        if not 0 <= oy < ho:
                            continue
                        for ix in range(w):
                            ox = ix * sw - pw + j * dw
                            if not 0 <= ox < wo:
                                continue
                            y[:, oc, oy, ox] += W[ci, o, i, j] * x[:, ci, iy, ix]
                            dx[:, ci, iy, ix] += W[ci, o, i, j] * dy[:, oc, oy, ox]
                            dW[ci, o, i, j] += np.dot(x[:, ci, iy, ix], dy[:, oc, oy, ox])
    if b is not None:
        y += np.asarray(b, np.float64).reshape(1, -1, 1, 1)
    return y, dx, dW, dy.sum(axis=(0, 2, 3)).reshape(1, -1, 1, 1)


def _hyper(deconv):
    return dict(stride=deconv.stride, pad=deconv.pad, dilation=deconv.dilation, postpad=deconv.postpad,
                groups=deconv.groups)


@pytest.mark.parametrize("name,kwargs,shape", CONFIGS, ids=IDS)
def test_forward_and_backward_match_naive_loops(backend, name, kwargs, shape):
    deconv = _build(kwargs)
    x = np.random.randn(*shape).astype(np.float32)
    y = deconv(gpuarray.to_gpu(x)).get()
    assert y.shape == deconv.dataShapeFrom(shape)
    dy = np.random.randn(*y.shape).astype(np.float32)
    deconv.backward(gpuarray.to_gpu(dy))
    b = deconv.b.get() if deconv.useBias else None
    ry, rdx, rdW, rdb = naiveDeconv2d(x, deconv.W.get(), b, dy=dy, **_hyper(deconv))
    assertClose(y, ry, 1e-5, 1e-5, "forward")
    assertClose(deconv.grad.get(), rdx, 1e-5, 1e-5, "input gradient")
    assertClose(deconv.vars["W"].grad.get(), rdW, 1e-5, 1e-4, "weight gradient")
    if deconv.useBias:
        assertClose(deconv.vars["b"].grad.get(), rdb, 1e-5, 1e-4, "bias gradient")


@pytest.mark.parametrize("name,kwargs,shape", CONFIGS, ids=IDS)
def test_gradients_match_finite_differences(backend, name, kwargs, shape):
    checkGradients(_build(kwargs), np.random.randn(*shape).astype(np.float32), kind="linear")


# PyTorch sweep: the table above, plus maps enough for the NumPy backend's Winograd path (3x3, stride
# 1, >= 32 maps a group: conv/plan.py routes the forward and the input gradient there)
TORCH_CASES = CONFIGS + [
    ("winograd_32maps", dict(inmaps=32, outmaps=32, size=3, pad=1), (2, 32, 6, 5)),
    ("winograd_dil2_groups2", dict(inmaps=64, outmaps=64, size=3, pad=2, dilation=2, groups=2), (1, 64, 5, 6)),
    ("stride2_size4_wide", dict(inmaps=16, outmaps=8, size=4, stride=2, pad=1), (2, 16, 5, 6)),
]


@pytest.mark.parametrize("name,kwargs,shape", TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_matches_torch_conv_transpose2d(backend, name, kwargs, shape):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    deconv = _build(kwargs)
    x = np.random.randn(*shape).astype(np.float32)
    y = deconv(gpuarray.to_gpu(x)).get()
    dy = np.random.randn(*y.shape).astype(np.float32)
    deconv.backward(gpuarray.to_gpu(dy))
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tW = torch.tensor(deconv.W.get(), dtype=torch.float64, requires_grad=True)
    tb = torch.tensor(deconv.b.get().ravel(), dtype=torch.float64, requires_grad=True) if deconv.useBias else None
    ty = F.conv_transpose2d(tx, tW, tb, stride=deconv.stride, padding=deconv.pad, output_padding=deconv.postpad,
                            groups=deconv.groups, dilation=deconv.dilation)
    ty.backward(torch.tensor(dy, dtype=torch.float64))
    pairs = [("forward", y, ty), ("dx", deconv.grad.get(), tx.grad), ("dW", deconv.vars["W"].grad.get(), tW.grad)]
    if deconv.useBias:
        pairs.append(("db", deconv.vars["b"].grad.get().ravel(), tb.grad))
    errors = []
    for what, got, want in pairs:
        want = want.detach().numpy()
        # float32 sums of up to 288 products (the 32-map cases): rounding grows with the size of the
        # terms, so the absolute tolerance scales with the largest result
        scale = np.abs(want).max()
        assertClose(got, want, 1e-5, (1e-4 if what in ("dW", "db") else 1e-5) + 1e-6 * scale, "%s vs torch" % what)
        errors.append("%s %.2g" % (what, np.abs(got - want).max() / scale))
    print("deconv %s vs torch: max abs err / max |torch| %s" % (name, ", ".join(errors)))


def test_forward_is_the_conv_backward_data_and_back(backend):
    """The identity the backends are built on: a transposed conv is its conv's input gradient, and
    its own input gradient is that conv."""
    x = gpuarray.to_gpu(np.random.randn(2, 4, 5, 4).astype(np.float32))
    W = gpuarray.to_gpu(np.random.randn(4, 3, 3, 3).astype(np.float32))      # (C, O/G, kh, kw), G = 2
    h = dict(stride=(2, 2), pad=(1, 1), dilation=(1, 1), groups=2)
    y = ops.deconv2d(x, W, None, postpad=(1, 0), **h)
    assert y.shape == (2, 6, 10, 7)
    assertClose(y.get(), ops.conv2dBackwardData(x, W, y.shape, **h).get(), 1e-6, 1e-6, "forward vs conv dx")
    dy = gpuarray.to_gpu(np.random.randn(*y.shape).astype(np.float32))
    assertClose(ops.deconv2dBackwardData(dy, W, x.shape, **h).get(), ops.conv2d(dy, W, None, **h).get(), 1e-6, 1e-6,
                "dx vs conv forward")


def test_gradients_accumulate_until_zeroed_and_not_in_eval_mode(backend):
    deconv = Deconv2D(2, 3, 3, stride=2, pad=1, postpad=1)
    x = gpuarray.to_gpu(np.random.randn(2, 2, 3, 3).astype(np.float32))
    dy = gpuarray.to_gpu(np.random.randn(2, 3, 6, 6).astype(np.float32))
    deconv(x)
    deconv.backward(dy)
    once = deconv.vars["W"].grad.get(), deconv.vars["b"].grad.get()
    deconv(x)
    deconv.backward(dy)
    assertClose(deconv.vars["W"].grad.get(), 2 * once[0], 1e-6, 1e-6, "W accumulated twice")
    assertClose(deconv.vars["b"].grad.get(), 2 * once[1], 1e-6, 1e-6, "b accumulated twice")
    deconv.zeroGradParams()
    deconv.evalMode()
    deconv(x)
    deconv.backward(dy)
    assert not deconv.vars["W"].grad.get().any(), "eval mode must not accumulate parameter gradients"


@pytest.mark.parametrize("name,kwargs,shape", [CONFIGS[2], CONFIGS[7], CONFIGS[11]], ids=[IDS[2], IDS[7], IDS[11]])
def test_nan_reaches_exactly_the_outputs_its_formula_reaches(backend, name, kwargs, shape):
    deconv = _build(kwargs)
    x = np.random.randn(*shape).astype(np.float32)
    x[0, 0, 1, 1] = np.nan
    y = deconv(gpuarray.to_gpu(x)).get()
    dy = np.random.randn(*y.shape).astype(np.float32)
    dy[1, -1, 2, 0] = np.nan
    deconv.backward(gpuarray.to_gpu(dy))
    ry, rdx, rdW, _ = naiveDeconv2d(x, deconv.W.get(), deconv.b.get(), dy=dy, **_hyper(deconv))
    for what, got, want in (("y", y, ry), ("dx", deconv.grad.get(), rdx), ("dW", deconv.vars["W"].grad.get(), rdW)):
        assert np.isnan(want).any() and not np.isnan(want).all(), what
        assert np.array_equal(np.isnan(got), np.isnan(want)), "%s: NaN at other places than the formula's" % what


def test_macs_count_every_weight_each_input_pixel_meets():
    deconv = Deconv2D(4, 6, (3, 2), stride=2, groups=2)
    inshape = (2, 4, 5, 7)
    assert deconv.macs(inshape, deconv.dataShapeFrom(inshape)) == 2 * 4 * 5 * 7 * 3 * 3 * 2


@pytest.mark.parametrize("kwargs,message", [
    (dict(inmaps=3, outmaps=4, size=3, stride=2, postpad=2),
     r"^Deconv2D: postpad must be smaller than the stride or the dilation of its axis, got postpad \(2, 2\) for "
     r"stride \(2, 2\), dilation \(1, 1\)$"),
    (dict(inmaps=3, outmaps=4, size=3, stride=(2, 1), dilation=(1, 2), postpad=(1, 2)), r"postpad must be smaller"),
    (dict(inmaps=3, outmaps=4, size=3, postpad=-1), r"^Deconv2D: postpad must be >= 0, got \(-1, -1\)$"),
    (dict(inmaps=3, outmaps=4, size=3, groups=2), r"^Deconv2D: inmaps \(3\) and outmaps \(4\) must both be divisible "
                                                   r"by groups \(2\)$"),
    (dict(inmaps=0, outmaps=4, size=3), r"^Deconv2D: inmaps must be a positive int, got 0$"),
    (dict(inmaps=3, outmaps=4, size=(3, 0)), r"^Deconv2D: size must be >= 1, got \(3, 0\)$"),
    (dict(inmaps=3, outmaps=4, size=3, stride=(1, 2, 3)), r"^Deconv2D: stride must be an int or an \(h, w\) pair"),
    (dict(inmaps=3, outmaps=4, size=3, wscale=0), r"^Deconv2D: wscale must be > 0"),
    (dict(inmaps=3, outmaps=4, size=3, initscheme="bogus"), r"unknown init scheme 'bogus'"),
], ids=["postpad_ge_stride", "postpad_ge_both_w", "postpad_negative", "groups", "inmaps", "size", "stride_triple",
        "wscale", "initscheme"])
def test_bad_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Deconv2D(**kwargs)


def test_call_time_errors_name_the_module_and_shapes(backend):
    deconv = Deconv2D(3, 2, 3, name="up")
    with pytest.raises(ModuleError, match=r"^Deconv2D 'up': expected input with 3 maps, got shape \(1, 4, 5, 5\)$"):
        deconv(gpuarray.zeros((1, 4, 5, 5)))
    with pytest.raises(ModuleError, match=r"^Deconv2D 'up': expected 4D input \(N, C, H, W\), got shape \(2, 3\)$"):
        deconv(gpuarray.zeros((2, 3)))
    shrink = Deconv2D(1, 1, 1, pad=1, name="shrink")
    with pytest.raises(ModuleError, match=r"^Deconv2D 'shrink': input of shape \(1, 1, 2, 2\) gives no output for "
                                          r"size \(1, 1\), stride \(1, 1\), pad \(1, 1\), dilation \(1, 1\), postpad "
                                          r"\(0, 0\) \(output 0x0\)$"):
        shrink(gpuarray.zeros((1, 1, 2, 2)))


def test_default_init_uses_pytorch_fan_in():
    np.random.seed(0)
    deconv = Deconv2D(64, 16, 4, groups=2)
    bound = np.sqrt(3.0 / (8 * 16))   # xavier_uniform, fan-in outmaps/groups*kh*kw
    w = deconv.W.get()
    assert w.shape == (64, 8, 4, 4)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound


def test_empty_batch(backend):
    deconv = Deconv2D(2, 3, 3, stride=2, pad=1, postpad=1)
    y = deconv(gpuarray.to_gpu(np.zeros((0, 2, 4, 4), np.float32)))
    assert y.shape == (0, 3, 8, 8) and y.get().shape == (0, 3, 8, 8)
    assert deconv.backward(gpuarray.to_gpu(np.zeros(y.shape, np.float32))).shape == (0, 2, 4, 4)
    assert not deconv.vars["W"].grad.get().any() and not deconv.vars["b"].grad.get().any()
