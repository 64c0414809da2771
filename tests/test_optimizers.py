"""Optimizer update rules against hand-computed steps; state save/load and resume."""

import numpy as np
import pytest

from gradcheck import assertClose
from minidl.backend import gpuarray
from minidl.containers import Sequential
from minidl.cost import CrossEntropy
from minidl.errors import LoadError
from minidl.modules import Activation, BatchNorm2D, Conv2D, Flatten, Linear
from minidl.optimizers import SGD, AdaGrad, Adam, MomentumSGD, NesterovSGD, RMSProp


def _setup(opt, lrMul=1.0, wc=0.0):
    lin = Linear(3, 2, name="lin")
    lin.vars["W"].learnRate = lrMul
    lin.vars["W"].wc = wc
    opt.setupOn(lin)
    return lin


def _steps(opt, lin, grads):
    for g in grads:
        lin.vars["W"].grad.set(g)
        opt.update()
    return lin.W.get()


def _reference(name, w, grads, lr, wc, **h):
    """Hand-written rules in float64."""
    w = w.astype(np.float64)
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in enumerate(grads, 1):
        g = g + wc * w
        if name == "SGD":
            w = w - lr * g
        elif name == "MomentumSGD":
            m = h["momRate"] * m - lr * g
            w = w + m
        elif name == "NesterovSGD":
            old = m
            m = h["momRate"] * m - lr * g
            w = w - h["momRate"] * old + (1 + h["momRate"]) * m
        elif name == "Adam":
            m = h["beta1"] * m + (1 - h["beta1"]) * g
            v = h["beta2"] * v + (1 - h["beta2"]) * g * g
            mhat, vhat = m / (1 - h["beta1"] ** t), v / (1 - h["beta2"] ** t)
            w = w - lr * mhat / (np.sqrt(vhat) + h["epsilon"] * np.sqrt(1 - h["beta2"] ** t))
        elif name == "RMSProp":
            v = h["factor"] * v + (1 - h["factor"]) * g * g
            w = w - lr * g / (np.sqrt(v) + h["epsilon"])
        elif name == "AdaGrad":
            v = v + g * g
            w = w - lr * g / (np.sqrt(v) + h["epsilon"])
    return w


CASES = [
    (SGD, dict(learnRate=0.1), {}),
    (MomentumSGD, dict(learnRate=0.1, momRate=0.8), dict(momRate=0.8)),
    (NesterovSGD, dict(learnRate=0.1, momRate=0.8), dict(momRate=0.8)),
    (Adam, dict(alpha=0.01), dict(beta1=0.9, beta2=0.999, epsilon=1e-8)),
    (RMSProp, dict(learnRate=0.01), dict(factor=0.9, epsilon=1e-5)),
    (AdaGrad, dict(learnRate=0.1), dict(epsilon=1e-8)),
]


@pytest.mark.parametrize("cls,kwargs,hyper", CASES, ids=[c[0].__name__ for c in CASES])
@pytest.mark.parametrize("lrMul,wc", [(1.0, 0.0), (0.5, 0.01)], ids=["plain", "lrmul_wc"])
def test_update_rules_match_hand_computed_steps(backend, cls, kwargs, hyper, lrMul, wc):
    opt = cls(**kwargs)
    lin = _setup(opt, lrMul, wc)
    w0 = lin.W.get()
    b0 = lin.b.get()
    grads = [np.random.randn(3, 2).astype(np.float32) for _ in range(3)]
    got = _steps(opt, lin, grads)
    lr = kwargs.get("learnRate", kwargs.get("alpha")) * lrMul
    assertClose(got, _reference(cls.__name__, w0, grads, lr, wc, **hyper), 1e-5, 1e-6, cls.__name__)
    assert np.array_equal(lin.b.get(), b0), "a zero gradient leaves the bias where SGD-type rules put it"


def test_defaults_follow_puzzlelib():
    assert (MomentumSGD().learnRate, MomentumSGD().momRate) == (1e-3, 0.9)
    a = Adam()
    assert (a.alpha, a.beta1, a.beta2, a.epsilon) == (1e-3, 0.9, 0.999, 1e-8)
    assert (RMSProp().learnRate, RMSProp().factor, RMSProp().epsilon) == (1e-3, 0.9, 1e-5)
    assert (AdaGrad().learnRate, AdaGrad().epsilon) == (1e-3, 1e-8)
    assert SGD().learnRate == 1e-3


def test_learn_rate_is_mutable_and_zero_multiplier_freezes(backend):
    opt = SGD(learnRate=1.0)
    lin = _setup(opt)
    lin.vars["b"].learnRate = 0.0
    w0, b0 = lin.W.get(), lin.b.get()
    lin.vars["W"].grad.set(np.ones((3, 2), np.float32))
    lin.vars["b"].grad.set(np.ones(2, np.float32))
    opt.learnRate = 0.25
    opt.update()
    assertClose(lin.W.get(), w0 - 0.25, 1e-6, 1e-6, "W after lr change")
    assert np.array_equal(lin.b.get(), b0)
    opt.zeroGradParams()
    assert not lin.vars["W"].grad.get().any()
    adam = Adam()
    adam.learnRate = 0.5
    assert adam.alpha == 0.5


def test_optimizer_needs_setup():
    with pytest.raises(RuntimeError, match="MomentumSGD: call setupOn"):
        MomentumSGD().update()


def _smallNet():
    np.random.seed(3)
    net = Sequential("net")
    net.append(Conv2D(1, 4, 3, pad=1, name="conv"))
    net.append(BatchNorm2D(4, name="bn"))
    net.append(Activation("relu", name="act"))
    net.append(Flatten(name="flat"))
    net.append(Linear(4 * 5 * 5, 3, name="fc"))
    return net


def _train(net, opt, batches):
    ce = CrossEntropy()
    for x, y in batches:
        net(gpuarray.to_gpu(x))
        _, grad = ce(net.data, gpuarray.to_gpu(y))
        opt.zeroGradParams()
        net.backward(grad)
        opt.update()


@pytest.mark.parametrize("cls", [MomentumSGD, Adam, RMSProp], ids=lambda c: c.__name__)
def test_resume_from_checkpoint_equals_uninterrupted_run(backend, cls, tmp_path):
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((4, 1, 5, 5)).astype(np.float32), rng.integers(0, 3, 4).astype(np.int32))
               for _ in range(16)]
    full = _smallNet()
    fullOpt = cls(**({"alpha": 0.01} if cls is Adam else {"learnRate": 0.05})).setupOn(full)
    _train(full, fullOpt, batches)

    first = _smallNet()
    firstOpt = cls(**({"alpha": 0.01} if cls is Adam else {"learnRate": 0.05})).setupOn(first)
    _train(first, firstOpt, batches[:12])   # past BatchNorm's 10-update warm-up
    first.save(str(tmp_path / "model.h5"))
    firstOpt.save(str(tmp_path / "opt.h5"))

    resumed = _smallNet()
    resumedOpt = cls().setupOn(resumed)
    resumed.load(str(tmp_path / "model.h5"))
    resumedOpt.load(str(tmp_path / "opt.h5"))
    assert resumedOpt.t == 12
    _train(resumed, resumedOpt, batches[12:])
    for (name, a), (_, b) in zip(full.namedVars(), resumed.namedVars()):
        assert np.array_equal(a.data.get(), b.data.get()), name
    for (name, a), (_, b) in zip(full.namedAttrs(), resumed.namedAttrs()):
        assert np.array_equal(a.get(), b.get()), name


def test_optimizer_load_checks_before_writing(backend):
    net = _smallNet()
    opt = MomentumSGD().setupOn(net)
    blob = opt.save()
    assert isinstance(blob, bytes)
    other = Sequential("net").append(Linear(2, 2, name="fc"))
    otherOpt = MomentumSGD().setupOn(other)
    with pytest.raises(LoadError, match=r"state 'fc.W.mom': shape mismatch, optimizer has \(2, 2\), file has \(100, 3\)"):
        otherOpt.load(blob)
    assert otherOpt.t == 0 and not otherOpt.states["fc.W"]["mom"].get().any()
    with pytest.raises(LoadError, match="Adam: the file holds MomentumSGD state"):
        Adam().setupOn(net).load(blob)
