"""Training-issue layers: values against independent references and finite differences."""

import numpy as np
import pytest

from gradcheck import assertClose, checkGradients
from minidl.backend import gpuarray
from minidl.containers import Parallel, Sequential
from minidl.errors import ModuleError
from minidl.modules import (
    Activation, Add, AvgPool2D, BatchNorm, BatchNorm2D, Concat, Dropout, Flatten, GlobalAvgPool2D, Identity, Linear,
    MaxPool2D, Replicate, Reshape, SoftMax,
)

ACTS = [
    ("relu", (), lambda x: np.maximum(x, 0)),
    ("relu6", (), lambda x: np.clip(x, 0, 6)),
    ("clip", (-1.0, 2.0), lambda x: np.clip(x, -1, 2)),
    ("leakyRelu", (), lambda x: np.where(x > 0, x, 0.01 * x)),
    ("leakyRelu", (0.2,), lambda x: np.where(x > 0, x, 0.2 * x)),
    ("elu", (), lambda x: np.where(x > 0, x, np.exp(x) - 1)),
    ("sigmoid", (), lambda x: 1 / (1 + np.exp(-x))),
    ("tanh", (), np.tanh),
    ("softPlus", (), lambda x: np.log1p(np.exp(x))),
]


def _awayFromKinks(shape, kinks=(0.0,), scale=3.0):
    """Random values at least 0.05 from every kink, so finite differences never straddle one."""
    x = np.random.uniform(-scale, scale, shape)
    for k in kinks:
        near = np.abs(x - k) < 0.05
        x[near] = k + 0.1 * np.sign(x[near] - k + 1e-9)
    return x.astype(np.float32)


@pytest.mark.parametrize("name,args,ref", ACTS, ids=["%s%s" % (a[0], a[1]) for a in ACTS])
def test_activations(backend, name, args, ref):
    act = Activation(name, args=args)
    kinks = {"relu6": (0.0, 6.0), "clip": (-1.0, 2.0)}.get(name, (0.0,))
    x = _awayFromKinks((3, 4, 5), kinks, scale=8.0 if name in ("relu6", "clip") else 3.0)
    assertClose(act(gpuarray.to_gpu(x)).get(), ref(x.astype(np.float64)), 1e-5, 1e-6, name)
    checkGradients(act, x, kind="smooth")


INPLACE_ACTS = [a for a in ACTS if a[0] != "softPlus"]


@pytest.mark.parametrize("name,args,ref", INPLACE_ACTS, ids=["%s%s" % (a[0], a[1]) for a in INPLACE_ACTS])
def test_inplace_activations(backend, name, args, ref):
    kinks = {"relu6": (0.0, 6.0), "clip": (-1.0, 2.0)}.get(name, (0.0,))
    x = _awayFromKinks((3, 4, 5), kinks, scale=8.0 if name in ("relu6", "clip") else 3.0)
    dy = np.random.randn(*x.shape).astype(np.float32)
    plain = Activation(name, args=args)
    plain(gpuarray.to_gpu(x))
    expectedGrad = plain.backward(gpuarray.to_gpu(dy)).get()

    act = Activation(name, args=args, inplace=True)
    xg, dyg = gpuarray.to_gpu(x), gpuarray.to_gpu(dy)
    y = act(xg).get()
    assertClose(y, ref(x.astype(np.float64)), 1e-5, 1e-6, name)
    assert np.array_equal(xg.get(), y), "in place: the input array now holds the output"
    grad = act.backward(dyg).get()
    assertClose(grad, expectedGrad, 1e-6, 1e-6, name + " grad")
    assert np.array_equal(dyg.get(), grad), "in place: the incoming gradient array now holds the input gradient"
    checkGradients(Activation(name, args=args, inplace=True), x, kind="smooth")


@pytest.mark.parametrize("fused", [False, True], ids=["in-place", "fused"])
def test_inplace_activation_after_batchnorm_trains_like_out_of_place(backend, monkeypatch, fused):
    """Conv -> BN -> ReLU in place: the same outputs and every gradient as out of place; also with the
    pair fused into one op (minidl.containers.sequential), as Sequential runs it by default."""
    import minidl.containers.sequential as sequential
    from minidl.modules import Conv2D
    x = np.random.randn(2, 3, 6, 6).astype(np.float32)
    dy = np.random.randn(2, 4, 6, 6).astype(np.float32)
    results = []
    if not fused:
        monkeypatch.setattr(sequential, "_fusible", lambda mod, nxt: False)
    for inplace in (False, True):
        np.random.seed(3)
        seq = Sequential("net")
        seq.extend([Conv2D(3, 4, 3, pad=1, name="conv"), BatchNorm2D(4, name="bn"),
                    Activation("relu", name="act", inplace=inplace)])
        out = seq(gpuarray.to_gpu(x)).get()
        assert seq._fused == ({id(seq["act"])} if fused and inplace else set())
        seq.zeroGradParams()
        grad = seq.backward(gpuarray.to_gpu(dy)).get()
        results.append([out, grad] + [var.grad.get() for _, var in seq.namedVars()])
    np.testing.assert_array_equal(results[1][0], results[0][0])
    # fused, the backward rounds a few products elsewhere; conv.b's true gradient is 0 here (a
    # train-mode batch norm follows), so both sides hold float32 noise: held to the largest gradient
    top = max(np.abs(a).max() for a in results[0][1:]) if fused else 1.0
    for plain, inplace in zip(results[0][1:], results[1][1:]):
        assertClose(inplace, plain, 1e-6, 1e-6 * top, "in place vs out of place")


def test_inplace_activation_refuses_kinds_that_need_the_input():
    for name, args in (("softPlus", ()), ("leakyRelu", (-0.5,))):
        with pytest.raises(ValueError, match="Activation 'act': inplace=True needs a derivative computable"):
            Activation(name, args=args, name="act", inplace=True)


def test_activation_stability_and_errors(backend):
    x = gpuarray.to_gpu(np.array([-100.0, 100.0], np.float32))
    assert np.allclose(Activation("sigmoid")(x).get(), [0, 1]) and np.allclose(Activation("softPlus")(x).get(), [0, 100])
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        Activation("gelu")
    with pytest.raises(ValueError, match=r"clip: expected low < high, got \(3.0, 1.0\)"):
        Activation("clip", args=(3.0, 1.0))


def _naivePool(x, size, stride, pad, op, includePad=True):
    n, c, h, w = x.shape
    ho, wo = (h + 2 * pad - size) // stride + 1, (w + 2 * pad - size) // stride + 1
    out = np.zeros((n, c, ho, wo))
    for i in range(ho):
        for j in range(wo):
            y0, x0 = i * stride - pad, j * stride - pad
            ys, xs = slice(max(y0, 0), min(y0 + size, h)), slice(max(x0, 0), min(x0 + size, w))
            win = x[:, :, ys, xs]
            if op == "max":
                out[:, :, i, j] = win.max(axis=(2, 3))
            else:
                out[:, :, i, j] = win.sum(axis=(2, 3)) / (size * size if includePad else win.shape[2] * win.shape[3])
    return out


@pytest.mark.parametrize("size,stride,pad", [(2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 0)], ids=["2s2", "3s2p1", "3s1p1", "2s1"])
def test_maxpool(backend, size, stride, pad):
    x = np.random.permutation(2 * 3 * 7 * 7).reshape(2, 3, 7, 7).astype(np.float32) / 10   # distinct values
    pool = MaxPool2D(size, stride, pad)
    assertClose(pool(gpuarray.to_gpu(x)).get(), _naivePool(x, size, stride, pad, "max"), 0, 0, "maxpool")
    checkGradients(pool, x, kind="smooth")


@pytest.mark.parametrize("size,stride,pad,includePad", [(2, 2, 0, True), (3, 2, 1, True), (3, 2, 1, False), (3, 1, 1, False)],
                         ids=["2s2", "3s2p1_incl", "3s2p1_excl", "3s1p1_excl"])
def test_avgpool(backend, size, stride, pad, includePad):
    x = np.random.randn(2, 3, 7, 6).astype(np.float32)
    pool = AvgPool2D(size, stride, pad, includePad=includePad)
    assertClose(pool(gpuarray.to_gpu(x)).get(), _naivePool(x, size, stride, pad, "avg", includePad), 1e-5, 1e-6, "avg")
    checkGradients(pool, x, kind="linear")


def test_global_avg_pool(backend):
    x = np.random.randn(2, 5, 4, 3).astype(np.float32)
    pool = GlobalAvgPool2D()
    assertClose(pool(gpuarray.to_gpu(x)).get(), x.mean(axis=(2, 3), keepdims=True), 1e-5, 1e-6, "gap")
    checkGradients(pool, x, kind="linear")


def test_linear(backend):
    lin = Linear(5, 3)
    lin.vars["b"].data.set(np.random.randn(3).astype(np.float32))
    assert lin.W.shape == (5, 3) and lin.b.shape == (3,)
    x = np.random.randn(4, 5).astype(np.float32)
    assertClose(lin(gpuarray.to_gpu(x)).get(), x.astype(np.float64) @ lin.W.get() + lin.b.get(), 1e-5, 1e-5, "linear")
    checkGradients(lin, x, kind="linear")
    with pytest.raises(ModuleError, match=r"Linear: expected input with 5 features, got shape \(4, 6\)"):
        lin(gpuarray.to_gpu(np.zeros((4, 6), np.float32)))


def test_batchnorm2d_train_eval_semantics(backend):
    bn = BatchNorm2D(3, name="bn")
    assert bn.train and not bn.mean.get().any() and np.all(bn.var.get() == 1)
    assert abs(bn.scale.get().mean() - 1) < 0.05 and not bn.bias.get().any()
    bn.vars["scale"].data.set(np.array([1.0, 2.0, 0.5], np.float32).reshape(1, 3, 1, 1))
    bn.vars["bias"].data.set(np.array([0.0, 1.0, -1.0], np.float32).reshape(1, 3, 1, 1))
    batches = [np.random.randn(4, 3, 5, 5).astype(np.float32) * 2 + 3 for _ in range(12)]
    runMean, runVar = np.zeros(3), np.ones(3)
    for k, x in enumerate(batches):
        y = bn(gpuarray.to_gpu(x)).get()
        x64 = x.astype(np.float64)
        mean, var = x64.mean(axis=(0, 2, 3)), x64.var(axis=(0, 2, 3))
        want = (x64 - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-5) * bn.scale.get() + bn.bias.get()
        assertClose(y, want, 1e-4, 1e-4, "train-mode output, batch %d" % k)
        factor = max(1.0 / (k + 1), 0.1)
        runMean = (1 - factor) * runMean + factor * mean
        runVar = (1 - factor) * runVar + factor * x64.var(axis=(0, 2, 3), ddof=1)
    assertClose(bn.mean.get().ravel(), runMean, 1e-5, 1e-5, "running mean")
    assertClose(bn.var.get().ravel(), runVar, 1e-5, 1e-5, "running var")
    bn.evalMode()
    x = batches[0]
    want = (x - runMean[None, :, None, None]) / np.sqrt(runVar[None, :, None, None] + 1e-5) * bn.scale.get() + bn.bias.get()
    assertClose(bn(gpuarray.to_gpu(x)).get(), want, 1e-4, 1e-4, "eval-mode output")
    before = bn.mean.get()
    bn(gpuarray.to_gpu(x * 10))
    assert np.array_equal(bn.mean.get(), before), "eval mode must not update running statistics"


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_batchnorm2d_gradients(backend, train):
    bn = BatchNorm2D(3, sscale=0.3)
    bn.vars["bias"].data.set(np.random.randn(1, 3, 1, 1).astype(np.float32))
    if not train:
        bn.attrs["mean"].set(np.random.randn(1, 3, 1, 1).astype(np.float32))
        bn.attrs["var"].set(np.random.uniform(0.5, 2, (1, 3, 1, 1)).astype(np.float32))
        bn.evalMode()
    checkGradients(bn, np.random.randn(4, 3, 3, 3).astype(np.float32), kind="smooth", params=train)


def test_batchnorm_1d(backend):
    bn = BatchNorm(4)
    x = (np.random.randn(8, 4) * 3 + 1).astype(np.float32)
    y = bn(gpuarray.to_gpu(x)).get()
    want = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5) * bn.scale.get().reshape(1, 4)
    assertClose(y, want, 1e-4, 1e-4, "batchnorm 1d")
    checkGradients(bn, x, kind="smooth")
    with pytest.raises(ModuleError, match=r"BatchNorm: expected 2D input \(N, C\), got shape \(8, 4, 1, 1\)"):
        bn(gpuarray.to_gpu(x.reshape(8, 4, 1, 1)))


def test_dropout(backend):
    np.random.seed(7)
    drop = Dropout(0.25, seed=3)
    x = np.random.randn(200, 50).astype(np.float32) + 5
    y = drop(gpuarray.to_gpu(x)).get()
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.02
    assertClose(y[kept], x[kept] / 0.75, 1e-6, 1e-6, "survivors scaled by 1/(1-p)")
    dy = np.random.randn(200, 50).astype(np.float32)
    dx = drop.backward(gpuarray.to_gpu(dy)).get()
    assertClose(dx, np.where(kept, dy / 0.75, 0), 1e-6, 1e-6, "dropout grad uses the same mask")
    again = Dropout(0.25, seed=3)(gpuarray.to_gpu(x)).get()
    assert np.array_equal(again != 0, kept), "same seed, same mask"
    drop.evalMode()
    assert np.array_equal(drop(gpuarray.to_gpu(x)).get(), x)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\), got 1.0"):
        Dropout(1.0)


def test_shape_modules(backend):
    x = np.random.randn(2, 3, 4, 5).astype(np.float32)
    flat = Flatten()
    assert flat(gpuarray.to_gpu(x)).shape == (2, 60)
    checkGradients(flat, x, kind="linear")
    r = Reshape((0, -1, 5))
    assert r(gpuarray.to_gpu(x)).shape == (2, 12, 5) and r.dataShapeFrom((2, 3, 4, 5)) == (2, 12, 5)
    assert np.array_equal(r.data.get(), x.reshape(2, 12, 5))
    checkGradients(r, x, kind="linear")
    with pytest.raises(ModuleError, match=r"cannot reshape input of shape \(2, 3, 4, 5\) to \(0, 7, -1\)"):
        Reshape((0, 7, -1))(gpuarray.to_gpu(x))
    with pytest.raises(ValueError, match="at most one -1"):
        Reshape((-1, -1))
    ident = Identity()
    assert np.array_equal(ident(gpuarray.to_gpu(x)).get(), x)


def test_softmax(backend):
    x = np.random.randn(4, 6).astype(np.float32) * 3
    e = np.exp(x.astype(np.float64) - x.max(1, keepdims=True))
    sm = SoftMax()
    assertClose(sm(gpuarray.to_gpu(x)).get(), e / e.sum(1, keepdims=True), 1e-5, 1e-6, "softmax")
    checkGradients(sm, x, kind="smooth")
    assert np.allclose(sm(gpuarray.to_gpu(np.array([[1000, 0]], np.float32))).get(), [[1, 0]])


def test_add_concat_replicate(backend):
    xs = [np.random.randn(2, 3, 4).astype(np.float32) for _ in range(3)]
    add = Add()
    assertClose(add([gpuarray.to_gpu(v) for v in xs]).get(), sum(v.astype(np.float64) for v in xs), 1e-6, 1e-6, "add")
    checkGradients(add, xs, kind="linear")
    cat = Concat(axis=1)
    ys = [np.random.randn(2, k, 4).astype(np.float32) for k in (1, 3, 2)]
    assert np.array_equal(cat([gpuarray.to_gpu(v) for v in ys]).get(), np.concatenate(ys, axis=1))
    checkGradients(cat, ys, kind="linear")
    rep = Replicate(3)
    out = rep(gpuarray.to_gpu(xs[0]))
    assert len(out) == 3 and all(np.array_equal(o.get(), xs[0]) for o in out)
    checkGradients(rep, xs[0], kind="linear")
    with pytest.raises(ModuleError, match=r"Add: expected arrays of one shape, got \(2, 3, 4\), \(2, 3\)"):
        add([gpuarray.to_gpu(xs[0]), gpuarray.to_gpu(xs[1][:, :, 0].copy())])


def test_residual_block_from_replicate_parallel_add(backend):
    from minidl.modules import Conv2D
    body = Sequential("body").append(Conv2D(3, 3, 3, pad=1, name="c"))
    block = Sequential("res").append(Replicate(2)).append(Parallel().append(body).append(Identity())).append(Add())
    x = np.random.randn(2, 3, 4, 4).astype(np.float32)
    y = block(gpuarray.to_gpu(x)).get()
    assertClose(y, body(gpuarray.to_gpu(x)).get() + x, 1e-6, 1e-6, "residual = body(x) + x")
    checkGradients(block, x, kind="linear")
