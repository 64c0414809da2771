"""Gradient-norm clipping against a hand computation, in both optimizer setups; the norm ops; the
Trainer's clipping and its non-finite policy."""

import math

import numpy as np
import pytest

from minidl.backend import gpuarray, ops
from minidl.containers import Sequential
from minidl.cost import CrossEntropy
from minidl.handlers import Trainer
from minidl.modules import Activation, Linear
from minidl.optimizers import SGD, MomentumSGD, NonFiniteGradError, clipGradNorm, gradNorm

SETUPS = [pytest.param(False, id="perVariable"), pytest.param(True, id="globalState")]


def _net():
    np.random.seed(5)
    return Sequential("mlp").append(Linear(5, 4, name="l1")).append(Activation("relu")).append(Linear(4, 3, name="l2"))


def _setGrads(opt, scale, seed=0):
    """Give every Variable the optimizer holds a known gradient; returns {name: host gradient}."""
    rng = np.random.default_rng(seed)
    grads = {}
    for name, var in sorted(opt.vars.items()):
        g = (scale * rng.standard_normal(var.grad.shape)).astype(np.float32)
        var.grad.set(g)
        grads[name] = g
    return grads


def _handNorm(grads):
    total = 0.0
    for g in grads.values():
        for value in g.astype(np.float64).ravel():
            total += value * value
    return math.sqrt(total)


def test_sum_of_squares_and_scale_ops(backend):
    rng = np.random.default_rng(1)
    host = [rng.standard_normal(s).astype(np.float32) for s in [(3, 4), (7,), (2, 3, 5, 5), (1,)]]
    arrays = [gpuarray.to_gpu(h) for h in host]
    got = ops.sumOfSquares(arrays)
    assert got.shape == () and got.dtype == np.float64
    assert float(got.get()) == pytest.approx(sum(float(np.sum(h.astype(np.float64) ** 2)) for h in host), rel=1e-12)
    assert float(ops.sumOfSquares([]).get()) == 0.0
    assert float(ops.sumOfSquares([gpuarray.empty((0, 3), np.float32)]).get()) == 0.0
    big = gpuarray.to_gpu(np.full((5,), 1e20, np.float32))            # squares overflow float32, not float64
    assert float(ops.sumOfSquares([big]).get()) == pytest.approx(5e40, rel=1e-6)
    ops.scale(arrays[1], 0.25)
    assert np.array_equal(arrays[1].get(), host[1] * np.float32(0.25))
    withNan = gpuarray.to_gpu(np.array([1.0, np.nan], np.float32))
    assert math.isnan(float(ops.sumOfSquares([arrays[0], withNan]).get()))


@pytest.mark.parametrize("useGlobalState", SETUPS)
def test_clipping_scales_every_gradient_by_one_global_factor(backend, useGlobalState):
    net = _net()
    opt = MomentumSGD().setupOn(net, useGlobalState=useGlobalState)
    grads = _setGrads(opt, scale=3.0)
    expected = _handNorm(grads)
    assert expected > 2.0
    assert gradNorm(opt) == pytest.approx(expected, rel=1e-9)
    norm = clipGradNorm(opt, 2.0)
    assert norm == pytest.approx(expected, rel=1e-9)
    factor = 2.0 / (expected + 1e-6)
    for name, g in grads.items():
        np.testing.assert_allclose(opt.vars[name].grad.get(), g * factor, rtol=1e-6, atol=0, err_msg=name)
    assert gradNorm(opt) == pytest.approx(2.0, rel=1e-6)
    if useGlobalState:       # the net's Variables are the views into the flat buffers that were clipped
        np.testing.assert_allclose(net["l2"].vars["W"].grad.get(), grads["l2.W"] * factor, rtol=1e-6)


@pytest.mark.parametrize("useGlobalState", SETUPS)
def test_a_norm_below_the_maximum_leaves_gradients_untouched(backend, useGlobalState):
    opt = SGD().setupOn(_net(), useGlobalState=useGlobalState)
    grads = _setGrads(opt, scale=0.01)
    norm = clipGradNorm(opt, 10.0)
    assert norm == pytest.approx(_handNorm(grads), rel=1e-9) and norm < 10
    for name, g in grads.items():
        assert np.array_equal(opt.vars[name].grad.get(), g), name


@pytest.mark.parametrize("useGlobalState", SETUPS)
@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_a_non_finite_norm_is_reported_and_changes_nothing(backend, useGlobalState, bad):
    opt = SGD().setupOn(_net(), useGlobalState=useGlobalState)
    grads = _setGrads(opt, scale=5.0)
    grads["l1.W"][2, 1] = bad
    opt.vars["l1.W"].grad.set(grads["l1.W"])
    norm = clipGradNorm(opt, 1.0)
    assert (math.isnan(norm) if np.isnan(bad) else norm == math.inf)
    for name, g in grads.items():
        assert np.array_equal(opt.vars[name].grad.get(), g, equal_nan=True), name
    message = r"clipGradNorm: the gradient norm is (nan|inf) .*left unchanged"
    with pytest.raises(NonFiniteGradError, match=message) as info:
        clipGradNorm(opt, 1.0, errorIfNonFinite=True)
    assert info.value.batch is None and not math.isfinite(info.value.norm)


@pytest.mark.parametrize("useGlobalState", SETUPS)
def test_variables_the_optimizer_does_not_update_are_left_out(backend, useGlobalState):
    net = _net()
    net["l2"].vars["b"].learnRate = 0.0
    opt = SGD().setupOn(net, useGlobalState=useGlobalState)
    grads = _setGrads(opt, scale=2.0)
    frozen = grads.pop("l2.b")
    assert clipGradNorm(opt, 0.5) == pytest.approx(_handNorm(grads), rel=1e-9)
    assert np.array_equal(opt.vars["l2.b"].grad.get(), frozen)


def test_clip_arguments_are_checked(backend):
    opt = SGD().setupOn(_net())
    with pytest.raises(ValueError, match=r"clipGradNorm: maxNorm must be > 0, got 0"):
        clipGradNorm(opt, 0)
    with pytest.raises(ValueError, match=r"clipGradNorm: maxNorm must be a finite number > 0, got inf"):
        clipGradNorm(opt, float("inf"))
    with pytest.raises(RuntimeError, match=r"SGD: call setupOn\(net\) before using the optimizer"):
        clipGradNorm(SGD(), 1.0)
    with pytest.raises(ValueError, match=r"Trainer: clipGradNorm must be > 0, got -1"):
        Trainer(_net(), CrossEntropy(), opt, clipGradNorm=-1)


def _batch():
    rng = np.random.default_rng(3)
    return (gpuarray.to_gpu(rng.standard_normal((8, 5)).astype(np.float32)),
            gpuarray.to_gpu(rng.integers(0, 3, 8).astype(np.int32)))


@pytest.mark.parametrize("useGlobalState", SETUPS)
def test_trainer_step_equals_a_hand_clipped_sgd_step(backend, useGlobalState):
    x, y = _batch()
    # the same step by hand: gradients from a twin net, clipped in float64 on the host
    twin = _net()
    twin(x)
    cost = CrossEntropy()
    cost(twin.data, y)
    twin.backward(cost.grad, updGrad=False)
    names = sorted(name for name, _ in twin.namedVars())
    grads = {name: twin.getVar(name).grad.get().astype(np.float64) for name in names}
    norm = math.sqrt(sum(float(np.sum(g ** 2)) for g in grads.values()))
    maxNorm = norm / 4
    before = {name: twin.getVar(name).data.get().astype(np.float64) for name in names}

    net = _net()
    trainer = Trainer(net, CrossEntropy(), SGD(learnRate=0.5).setupOn(net, useGlobalState=useGlobalState),
                      batchsize=8, clipGradNorm=maxNorm)
    trainer.train(x, y)
    assert trainer.gradNorm == pytest.approx(norm, rel=1e-5)
    for name in names:
        expected = before[name] - 0.5 * grads[name] * maxNorm / (norm + 1e-6)
        np.testing.assert_allclose(net.getVar(name).data.get(), expected, rtol=1e-5, atol=1e-6, err_msg=name)


def _poisonGradients(net, name):
    """Make net.backward leave a NaN in Variable name's gradient (the loss stays finite)."""
    backward = net.backward

    def poisoned(grad, updGrad=True):
        result = backward(grad, updGrad=updGrad)
        g = net.getVar(name).grad
        host = g.get()
        host.flat[0] = np.nan
        g.set(host)
        return result
    net.backward = poisoned


@pytest.mark.parametrize("useGlobalState", SETUPS)
def test_trainer_stops_before_the_update_when_the_norm_is_not_finite(backend, useGlobalState):
    x, y = _batch()
    net = _net()
    opt = SGD(learnRate=0.5).setupOn(net, useGlobalState=useGlobalState)
    weights = {name: var.data.get() for name, var in net.namedVars()}
    _poisonGradients(net, "l2.W")
    trainer = Trainer(net, CrossEntropy(), opt, batchsize=4, clipGradNorm=1.0)
    message = (r"Trainer: the gradient norm of batch 0 of this pass \(samples 0 to 3\) is nan although its loss "
               r"is finite; stopped before its update")
    with pytest.raises(NonFiniteGradError, match=message) as info:
        trainer.train(x, y)
    assert info.value.batch == 0 and list(info.value.samples) == [0, 1, 2, 3] and math.isnan(info.value.norm)
    for name, var in net.namedVars():
        assert np.array_equal(var.data.get(), weights[name]), name


def test_trainer_without_terminate_on_nan_lets_the_nan_reach_the_weights(backend):
    x, y = _batch()
    net = _net()
    _poisonGradients(net, "l2.W")
    trainer = Trainer(net, CrossEntropy(), SGD(learnRate=0.5).setupOn(net), batchsize=8, clipGradNorm=1.0,
                      terminateOnNaN=False)
    trainer.train(x, y)
    assert math.isnan(trainer.gradNorm)
    assert np.isnan(net.getVar("l2.W").data.get()).any(), "clipping must not hide the NaN"
