"""A batch norm and the in-place ReLU / clip after it, run as one op by Sequential.

The fused pair must give exactly what the two modules give one after the other (the separate path
is itself tested against references elsewhere), on every batch-norm route (image-major and
channel-major kernels, the NumPy formulas for non-finite parameters), and its gradients must pass
the finite-difference checker on their own.
"""

import numpy as np
import pytest

import minidl
import minidl.containers.sequential as sequential
from minidl.backend import gpuarray
from minidl.containers import Sequential
from minidl.models import loadMobileNetV1, loadMobileNetV2
from minidl.modules import Activation, BatchNorm, BatchNorm2D, Conv2D, Linear, SyncBatchNorm2D, leakyRelu, relu, relu6

from gradcheck import assertClose, checkGradients


def _model(act, maps=4, bn=BatchNorm2D, inplace=True):
    np.random.seed(7)
    model = (Sequential("net").append(Conv2D(3, maps, 3, pad=1, name="conv")).append(bn(maps, name="bn"))
             .append(Activation(act, name="act", inplace=inplace)).append(Conv2D(maps, 2, 1, name="head")))
    scale = model["bn"].vars["scale"].data
    scale.set(np.random.uniform(0.5, 3.0, scale.shape).astype(np.float32))   # values past relu6's upper kink
    return model


def _run(model, x, dy, train):
    model.trainMode() if train else model.evalMode()
    y = model(gpuarray.to_gpu(x)).get()
    model.zeroGradParams()
    dx = model.backward(gpuarray.to_gpu(dy)).get()
    grads = {name: var.grad.get() for name, var in model.namedVars()}
    stats = {name: a.get() for name, a in model.namedAttrs()}
    return y, dx, grads, stats


def _separate(monkeypatch):
    monkeypatch.setattr(sequential, "_fusible", lambda mod, nxt: False)


@pytest.mark.parametrize("act", [relu, relu6])
@pytest.mark.parametrize("size", [6, 40], ids=["image-major", "channel-major"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_fused_pair_equals_the_two_modules(backend, monkeypatch, act, size, train):
    x = (np.random.randn(3, 3, size, size) * 2).astype(np.float32)
    dy = np.random.randn(3, 2, size, size).astype(np.float32)
    fused = _model(act)
    got = _run(fused, x, dy, train)
    assert fused._fused == {id(fused["act"])}
    bn, a = fused["bn"], fused["act"]
    assert bn.data is a.data and a.inData is a.data and a.grad is None
    _separate(monkeypatch)
    separate = _model(act)
    want = _run(separate, x, dy, train)
    assert separate._fused == set()
    relu6Inputs = separate["bn"].data.get()
    assert (relu6Inputs == 0).any() and (act == relu or (relu6Inputs == 6).any()), "a kink is not reached"
    # the forward (and the statistics) are the same arithmetic; the backward rounds the masked
    # gradient's products in other places (the kernels may fuse a multiply into an add), a few
    # float32 ulps at batch norm's input gradient
    np.testing.assert_array_equal(got[0], want[0], err_msg="output")
    for name in want[3]:
        np.testing.assert_array_equal(got[3][name], want[3][name], err_msg=name)
    assertClose(got[1], want[1], 1e-5, 1e-6 * np.abs(want[1]).max(), "input gradient")
    # conv.b's true gradient is 0 under a train-mode batch norm: each side holds the float32 noise of
    # a sum of ~5000 terms, so parameter gradients are held to the largest one's scale
    top = max(np.abs(g).max() for g in want[2].values())
    for name in want[2]:
        assertClose(got[2][name], want[2][name], 1e-5, 1e-5 * top, name)


def test_non_finite_values_take_the_same_path_fused(backend, monkeypatch):
    """An infinite scale sends batch norm to its NumPy formulas; a NaN input spreads the same way."""
    x = np.random.randn(2, 3, 5, 5).astype(np.float32)
    x[0, 1, 2, 2] = np.nan
    dy = np.random.randn(2, 2, 5, 5).astype(np.float32)
    results = []
    for fuse in (True, False):
        if not fuse:
            _separate(monkeypatch)
        model = _model(relu6)
        scale = model["bn"].vars["scale"].data.get()
        scale[0, 2] = np.inf
        model["bn"].vars["scale"].data.set(scale)
        results.append(_run(model, x, dy, True))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    got, want = results[0][1], results[1][1]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assertClose(got[np.isfinite(want)], want[np.isfinite(want)], 1e-5, 1e-6 * np.abs(want).max(), "input gradient")
    assert np.isnan(results[0][0]).any()


@pytest.mark.parametrize("act", [relu, relu6])
@pytest.mark.parametrize("size", [6, 40], ids=["image-major", "channel-major"])
def test_kinks_and_non_finite_values_through_the_fused_kernels(backend, monkeypatch, act, size):
    """Eval mode, finite statistics: the kernels themselves meet NaN, +-inf and outputs exactly at
    the kinks (a = 2 exactly, so x = 0 and 3 give 0 and 6). Output and input gradient as the two
    modules give them, NaN for NaN (the gradient's kernels fall back where their sums are not finite)."""
    x = np.random.randn(2, 3, size, size).astype(np.float32)
    x[:, :, 0, :6] = np.array([0, 3, np.nan, np.inf, -np.inf, 3], np.float32)
    dy = np.random.randn(2, 3, size, size).astype(np.float32)
    dy[0, 0, 1, :3] = [np.nan, np.inf, -np.inf]
    results = []
    for fuse in (True, False):
        if not fuse:
            _separate(monkeypatch)
        model = Sequential("pair").append(BatchNorm2D(3, name="bn")).append(Activation(act, name="act", inplace=True))
        bn = model["bn"]
        root = np.sqrt(np.float32(1) + np.float32(bn.epsilon), dtype=np.float32)
        bn.vars["scale"].data.set(np.full((1, 3, 1, 1), 2 * root, np.float32))
        model.evalMode()
        y = model(gpuarray.to_gpu(x)).get()
        dx = model.backward(gpuarray.to_gpu(dy)).get()
        results.append((y, dx))
        assert model._fused == ({id(model["act"])} if fuse else set())
    (y, dx), (wy, wdx) = results
    assert (wy[:, :, 0, 0] == 0).all() and (act == relu or (wy[:, :, 0, 1] == 6).all())
    np.testing.assert_array_equal(y, wy)
    np.testing.assert_array_equal(dx, wdx)


def test_fused_gradients_pass_the_finite_difference_check(backend):
    model = Sequential("pair").append(BatchNorm2D(3, name="bn")).append(Activation(relu6, name="act", inplace=True))
    model["bn"].vars["scale"].data.set(np.array([0.7, 2.0, 4.0], np.float32).reshape(1, 3, 1, 1))
    x = np.random.randn(4, 3, 3, 3).astype(np.float32) * 2
    checkGradients(model, x, kind="smooth")
    assert model._fused == {id(model["act"])}


def test_batch_norm_1d_fuses_too(backend, monkeypatch):
    results = []
    x = np.random.randn(6, 5).astype(np.float32)
    dy = np.random.randn(6, 5).astype(np.float32)
    for fuse in (True, False):
        if not fuse:
            _separate(monkeypatch)
        np.random.seed(3)
        model = Sequential("fc").append(Linear(5, 5, name="fc")).append(BatchNorm(5, name="bn"))
        model.append(Activation(relu, name="act", inplace=True))
        results.append(_run(model, x, dy, True))
        assert model._fused == ({id(model["act"])} if fuse else set())
    np.testing.assert_array_equal(results[0][0], results[1][0])
    assertClose(results[0][1], results[1][1], 1e-5, 1e-6 * np.abs(results[1][1]).max(), "input gradient")


def _hooked(model):
    model["act"].backwardHook = lambda mod: None
    return model


def test_fused_pairs_release_gradients_and_fuse_under_the_batch_norms_hook(backend):
    """The batch norm's backwardHook (DataParallel hooks every module with parameters) sees what it
    sees unfused, so the pair still fuses; every child's grad is released after backward."""
    model = _model(relu6)
    seen = []
    model["bn"].backwardHook = lambda mod: seen.append(mod.grad.shape)
    model(gpuarray.to_gpu(np.random.randn(2, 3, 4, 4).astype(np.float32)))
    assert model._fused == {id(model["act"])}
    model.backward(gpuarray.to_gpu(np.random.randn(2, 2, 4, 4).astype(np.float32)))
    assert seen == [(2, 4, 4, 4)]
    assert all(child.grad is None for child in model.modules.values()) and model.grad is not None


def test_a_refused_input_leaves_no_fusion_behind(backend):
    model = Sequential("pair").append(BatchNorm2D(4, name="bn")).append(Activation(relu, name="act", inplace=True))
    with pytest.raises(minidl.ModuleError, match="4 maps"):
        model(gpuarray.to_gpu(np.random.randn(2, 5, 4, 4).astype(np.float32)))     # refused by the batch norm
    bn = model["bn"]
    x = np.random.randn(2, 4, 3, 3).astype(np.float32)
    assert (bn(gpuarray.to_gpu(x)).get() < 0).any() and bn.fusedActivation is None      # on its own: no ReLU


def _instrumented(model):
    bn = model["bn"]
    bn.updateData = lambda data, run=bn.updateData: run(data)      # as a per-layer recording does
    return model


@pytest.mark.parametrize("loader", [loadMobileNetV1, loadMobileNetV2], ids=["v1", "v2"])
def test_mobilenets_train_the_same_fused(backend, monkeypatch, loader):
    """Every batch norm + ReLU / ReLU6 pair of the MobileNets fuses; a training step's output and
    gradients match the separate modules' (which tests/test_models.py holds to PyTorch)."""
    x = np.random.rand(4, 3, 16, 16).astype(np.float32)
    dy = np.random.randn(4, 10).astype(np.float32)
    results = []
    for fuse in (True, False):
        if not fuse:
            _separate(monkeypatch)
        np.random.seed(5)
        net = loader(width=0.35, numClasses=10, smallInput=True, dropout=0)
        results.append(_run(net, x, dy, True))
        pairs = sum(len(getattr(m, "_fused", ())) for m in _containers(net))
        assert pairs == (27 if loader is loadMobileNetV1 else 35) * fuse
    (y, dx, grads, _), (wy, wdx, wgrads, _) = results
    np.testing.assert_array_equal(y, wy)
    assertClose(dx, wdx, 1e-4, 1e-5 * np.abs(wdx).max(), "input gradient")
    top = max(np.abs(g).max() for g in wgrads.values())
    for name in wgrads:
        assertClose(grads[name], wgrads[name], 1e-4, 1e-5 * top, name)


def _containers(module):
    children = getattr(module, "modules", None) or {}
    return [module] + [c for child in children.values() for c in _containers(child)] if children else []


@pytest.mark.parametrize("build", [
    lambda: _model(relu6, inplace=False),                  # the activation's input must stay readable
    lambda: _model(leakyRelu),                             # not a clip
    lambda: _model(relu6, bn=SyncBatchNorm2D),             # its own train path
    lambda: _hooked(_model(relu6)),                        # the hook looks at act.grad
    lambda: _instrumented(_model(relu6)),                  # the replacement looks at bn's own output
], ids=["not-in-place", "leaky", "sync", "hook", "instrumented"])
def test_what_is_not_fused(backend, build):
    model = build()
    model(gpuarray.to_gpu(np.random.randn(2, 3, 4, 4).astype(np.float32)))
    assert model._fused == set()


def test_debug_mode_runs_the_modules_one_by_one(backend):
    model = _model(relu)
    with minidl.detectAnomaly():
        model(gpuarray.to_gpu(np.random.randn(2, 3, 4, 4).astype(np.float32)))
    assert model._fused == set()


def test_batch_norm_ops_refuse_a_fused_activation_they_cannot_run(backend):
    from minidl.backend import ops
    x = gpuarray.to_gpu(np.random.randn(2, 3, 4, 4).astype(np.float32))
    ones, zeros = (gpuarray.to_gpu(np.full((1, 3, 1, 1), v, np.float32)) for v in (1, 0))
    with pytest.raises(ValueError, match="batchNormEval: a fused activation is relu or clip, got 'tanh'"):
        ops.batchNormEval(x, ones, zeros, zeros, ones, 1e-5, ("tanh", 0.0, 0.0))
    with pytest.raises(ValueError, match="batchNormTrain: a fused activation is relu or clip, got 'elu'"):
        ops.batchNormTrain(x, ones, zeros, zeros, ones, 1e-5, 0.1, ("elu", 1.0, 0.0))
    with pytest.raises(ValueError, match=r"batchNormBackward: a fused activation needs the forward's output y of "
                                         r"shape \(2, 3, 4, 4\), got None"):
        ops.batchNormBackward(x, x, ones, zeros, ones, 1e-5, True, ("relu", 0.0, 0.0))
    with pytest.raises(ValueError, match=r"of shape \(2, 3, 4, 4\), got \(2, 3, 4, 5\)"):
        ops.batchNormBackward(x, x, ones, zeros, ones, 1e-5, True, ("clip", 0.0, 6.0),
                              gpuarray.to_gpu(np.zeros((2, 3, 4, 5), np.float32)))
    np.testing.assert_array_equal(zeros.get(), 0)      # batchNormTrain refused before touching the statistics
