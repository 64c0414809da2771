"""Conv2D / DepthwiseConv2D / PointwiseConv2D against naive loops, finite
differences, the general path and (when installed) PyTorch."""

import numpy as np
import pytest

from gradcheck import assertClose, checkGradients
from minidl.backend import gpuarray, ops
from minidl.modules import Conv2D, DepthwiseConv2D, PointwiseConv2D, SeparableConv2D
from reference import naiveConv2d, naiveDepthwise

# (id, Conv2D kwargs, input shape, expected algo)
CONFIGS = [
    ("basic", dict(inmaps=3, outmaps=4, size=3), (2, 3, 6, 6), "general"),
    ("stride2", dict(inmaps=3, outmaps=4, size=3, stride=2), (2, 3, 7, 7), "general"),
    ("pad1", dict(inmaps=3, outmaps=4, size=3, pad=1), (2, 3, 5, 5), "general"),
    ("pad_hw", dict(inmaps=2, outmaps=3, size=3, pad=(2, 0)), (2, 2, 5, 6), "general"),
    ("stride_hw", dict(inmaps=2, outmaps=3, size=2, stride=(1, 3), pad=1), (2, 2, 6, 7), "general"),
    ("dil2", dict(inmaps=3, outmaps=2, size=3, dilation=2, pad=2), (2, 3, 7, 7), "general"),
    ("dil_hw", dict(inmaps=2, outmaps=2, size=2, dilation=(3, 1)), (1, 2, 6, 5), "general"),
    ("size_hw", dict(inmaps=2, outmaps=3, size=(3, 1), pad=(1, 0)), (2, 2, 5, 4), "general"),
    ("groups2", dict(inmaps=4, outmaps=6, size=3, pad=1, groups=2), (2, 4, 5, 5), "general"),
    # padding past the kernel's reach, on the stride-1 "wide" im2col path (many column rows per output map)
    ("pad3_wide", dict(inmaps=4, outmaps=2, size=3, pad=(3, 2)), (3, 4, 4, 5), "general"),
    ("groups4_stride2_dil2", dict(inmaps=8, outmaps=4, size=3, stride=2, pad=2, dilation=2, groups=4),
     (2, 8, 9, 9), "general"),
    ("pointwise", dict(inmaps=5, outmaps=3, size=1), (2, 5, 4, 3), "pointwise"),
    ("pointwise_nobias", dict(inmaps=5, outmaps=3, size=1, useBias=False), (2, 5, 4, 3), "pointwise"),
    ("1x1_stride2", dict(inmaps=4, outmaps=3, size=1, stride=2), (2, 4, 5, 5), "general"),
    ("depthwise", dict(inmaps=4, outmaps=4, size=3, pad=1, groups=4), (2, 4, 6, 6), "depthwise"),
    ("depthwise_x2", dict(inmaps=3, outmaps=6, size=3, pad=1, groups=3), (2, 3, 5, 5), "depthwise"),
    ("depthwise_x3_stride2_dil2", dict(inmaps=2, outmaps=6, size=3, stride=2, pad=2, dilation=2, groups=2),
     (2, 2, 8, 7), "depthwise"),
    ("depthwise_hw", dict(inmaps=3, outmaps=3, size=(3, 2), stride=(2, 1), pad=(1, 0), groups=3),
     (2, 3, 6, 5), "depthwise"),
    # kernels of 10x10 and more: more taps than the weight reduction's shared buffer holds at once
    ("depthwise_10x10", dict(inmaps=2, outmaps=2, size=10, pad=4, groups=2), (2, 2, 11, 12), "depthwise"),
    ("depthwise_x2_11x11_dil2", dict(inmaps=2, outmaps=4, size=11, pad=10, dilation=2, groups=2), (1, 2, 9, 8),
     "depthwise"),
]
IDS = [c[0] for c in CONFIGS]


def _build(kwargs):
    conv = Conv2D(**kwargs, initscheme="gaussian")
    if conv.useBias:
        conv.vars["b"].data.set(np.random.randn(1, conv.outmaps, 1, 1).astype(np.float32))
    return conv


def _hyper(conv):
    return dict(stride=conv.stride, pad=conv.pad, dilation=conv.dilation, groups=conv.groups)


@pytest.mark.parametrize("name,kwargs,shape,algo", CONFIGS, ids=IDS)
def test_forward_and_backward_match_naive_loops(backend, name, kwargs, shape, algo):
    conv = _build(kwargs)
    assert conv.algo == algo
    x = np.random.randn(*shape).astype(np.float32)
    y = conv(gpuarray.to_gpu(x)).get()
    dy = np.random.randn(*y.shape).astype(np.float32)
    conv.backward(gpuarray.to_gpu(dy))
    b = conv.b.get() if conv.useBias else None
    ry, rdx, rdW, rdb = naiveConv2d(x, conv.W.get(), b, dy=dy, **_hyper(conv))
    assert y.shape == conv.dataShapeFrom(shape)
    assertClose(y, ry, 1e-5, 1e-5, "forward")
    assertClose(conv.grad.get(), rdx, 1e-5, 1e-5, "input gradient")
    assertClose(conv.vars["W"].grad.get(), rdW, 1e-5, 1e-4, "weight gradient")
    if conv.useBias:
        assertClose(conv.vars["b"].grad.get(), rdb, 1e-5, 1e-4, "bias gradient")


@pytest.mark.parametrize("name,kwargs,shape,algo", CONFIGS, ids=IDS)
def test_gradients_match_finite_differences(backend, name, kwargs, shape, algo):
    conv = _build(kwargs)
    checkGradients(conv, np.random.randn(*shape).astype(np.float32), kind="linear")


@pytest.mark.parametrize("name,kwargs,shape,algo", [c for c in CONFIGS if c[3] != "general"],
                         ids=[c[0] for c in CONFIGS if c[3] != "general"])
def test_dedicated_paths_equal_general_path(backend, name, kwargs, shape, algo):
    conv = _build(kwargs)
    x = gpuarray.to_gpu(np.random.randn(*shape).astype(np.float32))
    y = conv(x)
    dy = gpuarray.to_gpu(np.random.randn(*y.shape).astype(np.float32))
    conv.backward(dy)
    W, b, h = conv.W, conv.b if conv.useBias else None, _hyper(conv)
    assertClose(y.get(), ops.conv2d(x, W, b, **h).get(), 1e-5, 1e-5, "forward vs general")
    assertClose(conv.grad.get(), ops.conv2dBackwardData(dy, W, x.shape, **h).get(), 1e-5, 1e-5, "dx vs general")
    wgrad = gpuarray.zeros(W.shape)
    bgrad = gpuarray.zeros(b.shape) if b is not None else None
    ops.conv2dBackwardParams(x, dy, wgrad, bgrad, **h)
    assertClose(conv.vars["W"].grad.get(), wgrad.get(), 1e-5, 1e-4, "dW vs general")
    if b is not None:
        assertClose(conv.vars["b"].grad.get(), bgrad.get(), 1e-5, 1e-4, "db vs general")


@pytest.mark.parametrize("multiplier,stride,pad,dilation", [(1, 1, 1, 1), (2, 1, 1, 1), (3, 2, 2, 2), (2, (2, 1), (0, 1), 1)],
                         ids=["x1", "x2", "x3_stride2_dil2", "x2_hw"])
def test_depthwise_module_channel_order_and_weight_interchange(backend, multiplier, stride, pad, dilation):
    dw = DepthwiseConv2D(3, 3, stride=stride, pad=pad, dilation=dilation, multiplier=multiplier, useBias=False)
    assert dw.W.shape == (3 * multiplier, 1, 3, 3)
    assert dw.algo == "depthwise"
    x = np.random.randn(2, 3, 7, 6).astype(np.float32)
    y = dw(gpuarray.to_gpu(x)).get()
    assertClose(y, naiveDepthwise(x, dw.W.get(), multiplier, stride, pad, dilation), 1e-5, 1e-5, "depthwise")
    conv = Conv2D(3, 3 * multiplier, 3, stride=stride, pad=pad, dilation=dilation, groups=3, useBias=False)
    conv.W.set(dw.W.get())
    assertClose(conv(gpuarray.to_gpu(x)).get(), y, 1e-6, 1e-6, "Conv2D(groups=inmaps) with the same weights")


def test_depthwise_default_init_uses_filter_fan_in(backend):
    np.random.seed(0)
    dw = DepthwiseConv2D(64, 3, multiplier=2)
    bound = np.sqrt(3.0 / 9)   # xavier_uniform with fan-in kh*kw
    w = dw.W.get()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound


@pytest.mark.parametrize("stride,pad", [(1, 1), (2, 1), (1, 0)], ids=["same", "same_s2", "valid"])
def test_depthwise_backward_parts_match_the_joint_pass(backend, stride, pad):
    """backward() with both gradients takes the joint op (updateGradAndParams); asking for one at a
    time takes the separate ones: the same input gradient and accumulated weight gradients."""
    x = np.random.randn(3, 4, 9, 8).astype(np.float32)
    dw = DepthwiseConv2D(4, 3, stride=stride, pad=pad, multiplier=2)
    y = dw(gpuarray.to_gpu(x))
    dy = gpuarray.to_gpu(np.random.randn(*y.shape).astype(np.float32))
    dw.zeroGradParams()
    joint = dw.backward(dy).get()
    wj, bj = dw.vars["W"].grad.get(), dw.vars["b"].grad.get()
    dw.zeroGradParams()
    alone = dw.backward(dy, updParamGrads=False).get()
    assert not dw.vars["W"].grad.get().any(), "updParamGrads=False must leave the weight gradient alone"
    dw.backward(dy, updGrad=False)
    dw.backward(dy, updGrad=False)     # accumulates
    assertClose(alone, joint, 1e-6, 1e-6, "input gradient")
    assertClose(dw.vars["W"].grad.get(), 2 * wj, 1e-5, 1e-5, "weight gradient")
    assertClose(dw.vars["b"].grad.get(), 2 * bj, 1e-5, 1e-5, "bias gradient")


def test_pointwise_module(backend):
    pw = PointwiseConv2D(6, 4)
    assert pw.W.shape == (4, 6, 1, 1) and pw.algo == "pointwise"
    x = np.random.randn(3, 6, 4, 5).astype(np.float32)
    want = np.einsum("oc,nchw->nohw", pw.W.get()[:, :, 0, 0].astype(np.float64), x)
    assertClose(pw(gpuarray.to_gpu(x)).get(), want, 1e-5, 1e-5, "pointwise")
    checkGradients(pw, x, kind="linear")


def test_separable_conv_is_depthwise_then_pointwise(backend):
    sep = SeparableConv2D(3, 5, 3, pad=1, multiplier=2, name="sep")
    assert list(sep.modules) == ["depthwise", "pointwise"]
    assert sep["depthwise"].W.shape == (6, 1, 3, 3) and sep["pointwise"].W.shape == (5, 6, 1, 1)
    x = np.random.randn(2, 3, 5, 5).astype(np.float32)
    mid = naiveDepthwise(x, sep["depthwise"].W.get(), 2, 1, 1, 1) + sep["depthwise"].b.get()
    want = np.einsum("oc,nchw->nohw", sep["pointwise"].W.get()[:, :, 0, 0].astype(np.float64), mid)
    assertClose(sep(gpuarray.to_gpu(x)).get(), want, 1e-5, 1e-5, "separable")
    checkGradients(sep, x, kind="linear")
    assert sorted(n for n, _ in sep.namedVars()) == ["depthwise.W", "depthwise.b", "pointwise.W", "pointwise.b"]


def test_gradients_accumulate_until_zeroed(backend):
    conv = Conv2D(2, 3, 3, pad=1)
    x = gpuarray.to_gpu(np.random.randn(2, 2, 4, 4).astype(np.float32))
    dy = gpuarray.to_gpu(np.random.randn(2, 3, 4, 4).astype(np.float32))
    conv(x)
    conv.backward(dy)
    once = conv.vars["W"].grad.get()
    conv(x)
    conv.backward(dy)
    assertClose(conv.vars["W"].grad.get(), 2 * once, 1e-6, 1e-6, "accumulated twice")
    conv.zeroGradParams()
    assert not conv.vars["W"].grad.get().any()
    conv.evalMode()
    conv(x)
    conv.backward(dy)
    assert not conv.vars["W"].grad.get().any(), "eval mode must not accumulate parameter gradients"


# ---- PyTorch parity -------------------------------------------------------------------------------

TORCH_SWEEP = [
    dict(inmaps=ci, outmaps=co, size=k, stride=s, pad=p, dilation=d, groups=g)
    for (ci, co, g) in [(4, 8, 1), (4, 8, 2), (8, 8, 8), (4, 12, 4), (6, 3, 3)]
    for k in (1, 3, (3, 5))
    for (s, p, d) in [(1, 0, 1), (2, 1, 1), (1, 2, 2), ((2, 1), (1, 2), (1, 2))]
]


@pytest.mark.parametrize("kwargs", TORCH_SWEEP, ids=lambda kw: "c%d-%d_g%d_k%s_s%s_p%s_d%s" % (
    kw["inmaps"], kw["outmaps"], kw["groups"], kw["size"], kw["stride"], kw["pad"], kw["dilation"]))
def test_matches_torch_conv2d(backend, kwargs):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    conv = _build(kwargs)
    x = np.random.randn(3, kwargs["inmaps"], 11, 10).astype(np.float32)
    y = conv(gpuarray.to_gpu(x)).get()
    dy = np.random.randn(*y.shape).astype(np.float32)
    conv.backward(gpuarray.to_gpu(dy))
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tW = torch.tensor(conv.W.get(), dtype=torch.float64, requires_grad=True)
    tb = torch.tensor(conv.b.get().ravel(), dtype=torch.float64, requires_grad=True)
    ty = F.conv2d(tx, tW, tb, stride=conv.stride, padding=conv.pad, dilation=conv.dilation, groups=conv.groups)
    ty.backward(torch.tensor(dy, dtype=torch.float64))
    assertClose(y, ty.detach().numpy(), 1e-5, 1e-5, "forward vs torch")
    assertClose(conv.grad.get(), tx.grad.numpy(), 1e-5, 1e-5, "dx vs torch")
    assertClose(conv.vars["W"].grad.get(), tW.grad.numpy(), 1e-5, 1e-4, "dW vs torch")
    assertClose(conv.vars["b"].grad.get().ravel(), tb.grad.numpy(), 1e-5, 1e-4, "db vs torch")
