"""Optimizer update rules against hand-computed steps; state save/load and resume."""

import io

import h5py
import numpy as np
import pytest

from gradcheck import assertClose
from minidl.backend import gpuarray
from minidl.containers import Sequential
from minidl.cost import CrossEntropy
from minidl.errors import LoadError
from minidl.modules import Activation, BatchNorm2D, Conv2D, Flatten, Linear
from minidl.optimizers import SGD, AdaGrad, Adam, MomentumSGD, NesterovSGD, RMSProp


def _setup(opt, lrMul=1.0, wc=0.0, useGlobalState=False):
    lin = Linear(3, 2, name="lin")
    lin.vars["W"].learnRate = lrMul
    lin.vars["W"].wc = wc
    opt.setupOn(lin, useGlobalState=useGlobalState)
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
@pytest.mark.parametrize("useGlobalState", [False, True], ids=["local", "global"])
def test_update_rules_match_hand_computed_steps(backend, cls, kwargs, hyper, lrMul, wc, useGlobalState):
    """Both setups against the float64 rules; with global state W (its rates changed) and b (the
    defaults) land in two groups of one flat buffer each."""
    opt = cls(**kwargs)
    lin = _setup(opt, lrMul, wc, useGlobalState)
    w0 = lin.W.get()
    b0 = lin.b.get()
    grads = [np.random.randn(3, 2).astype(np.float32) for _ in range(3)]
    got = _steps(opt, lin, grads)
    lr = kwargs.get("learnRate", kwargs.get("alpha")) * lrMul
    assertClose(got, _reference(cls.__name__, w0, grads, lr, wc, **hyper), 1e-5, 1e-6, cls.__name__)
    assert np.array_equal(lin.b.get(), b0), "a zero gradient leaves the bias where SGD-type rules put it"
    if useGlobalState:
        assert len(opt.groups) == (2 if (lrMul, wc) != (1.0, 0.0) else 1)


@pytest.mark.parametrize("cls,kwargs,hyper", CASES, ids=[c[0].__name__ for c in CASES])
@pytest.mark.parametrize("useGlobalState", [False, True], ids=["local", "global"])
def test_weight_decay_hook_adds_rate_times_weight(backend, cls, kwargs, hyper, useGlobalState):
    """Hooks.WeightDecay(r) on a Variable with its own wc decays by wc + r, on every rule."""
    from minidl.optimizers import Hooks
    opt = cls(**kwargs).addHook(Hooks.WeightDecay(0.05))
    lin = _setup(opt, 1.0, 0.01, useGlobalState)
    w0 = lin.W.get()
    grads = [np.random.randn(3, 2).astype(np.float32) for _ in range(3)]
    got = _steps(opt, lin, grads)
    lr = kwargs.get("learnRate", kwargs.get("alpha"))
    assertClose(got, _reference(cls.__name__, w0, grads, lr, 0.06, **hyper), 1e-5, 1e-6, cls.__name__)


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


@pytest.mark.parametrize("make,message", [
    (lambda: SGD(learnRate=-1), r"^SGD: learnRate must be >= 0, got -1$"),
    (lambda: SGD(learnRate=float("nan")), r"^SGD: learnRate must be a finite number >= 0, got nan$"),
    (lambda: SGD(learnRate=float("inf")), r"SGD: learnRate must be a finite number >= 0, got inf"),
    (lambda: SGD(learnRate=True), r"SGD: learnRate must be a finite number >= 0, got True"),
    (lambda: SGD(learnRate="0.1"), r"SGD: learnRate must be a finite number >= 0, got '0.1'"),
    (lambda: MomentumSGD(momRate=2), r"^MomentumSGD: momRate must be in \[0, 1\), got 2$"),
    (lambda: MomentumSGD(momRate=1.0), r"MomentumSGD: momRate must be in \[0, 1\), got 1.0"),
    (lambda: MomentumSGD(momRate=-0.1), r"MomentumSGD: momRate must be in \[0, 1\), got -0.1"),
    (lambda: NesterovSGD(momRate=float("nan")), r"NesterovSGD: momRate must be a finite number in \[0, 1\), got nan"),
    (lambda: NesterovSGD(learnRate=-0.5), r"NesterovSGD: learnRate must be >= 0, got -0.5"),
    (lambda: Adam(alpha=-1e-3), r"Adam: alpha must be >= 0, got -0.001"),
    (lambda: Adam(beta1=1), r"Adam: beta1 must be in \[0, 1\), got 1"),
    (lambda: Adam(beta2=complex(0.9, 0)), r"Adam: beta2 must be a finite number in \[0, 1\), got \(0.9\+0j\)"),
    (lambda: Adam(epsilon=0), r"Adam: epsilon must be > 0, got 0"),
    (lambda: Adam(epsilon=np.float64("nan")), r"Adam: epsilon must be a finite number > 0, got (np.float64\()?nan"),
    (lambda: RMSProp(factor=1), r"RMSProp: factor must be in \[0, 1\), got 1"),
    (lambda: RMSProp(epsilon=-1e-5), r"RMSProp: epsilon must be > 0, got -1e-05"),
    (lambda: AdaGrad(learnRate=np.float32("inf")), r"AdaGrad: learnRate must be a finite number >= 0"),
    (lambda: AdaGrad(epsilon=0.0), r"AdaGrad: epsilon must be > 0, got 0.0"),
    (lambda: Adam(epsilon=1e-50), r"Adam: epsilon must be at least float32's smallest positive value "
                                  r"\(1\.4\d*e-45\), got 1e-50"),
], ids=["sgd_lr_negative", "sgd_lr_nan", "sgd_lr_inf", "sgd_lr_bool", "sgd_lr_string", "mom_2", "mom_1", "mom_negative",
        "nesterov_mom_nan", "nesterov_lr_negative", "adam_alpha_negative", "adam_beta1_1", "adam_beta2_complex",
        "adam_eps_0", "adam_eps_nan", "rmsprop_factor_1", "rmsprop_eps_negative", "adagrad_lr_inf", "adagrad_eps_0",
        "adam_eps_0_in_float32"])
def test_constructors_refuse_hyperparameters_out_of_range(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_constructors_accept_range_ends_and_numpy_scalars():
    assert SGD(learnRate=0).learnRate == 0.0 and MomentumSGD(momRate=0).momRate == 0.0
    opt = MomentumSGD(learnRate=np.float32(0.5), momRate=np.float64(0.25))
    assert (opt.learnRate, opt.momRate) == (0.5, 0.25) and type(opt.learnRate) is float
    adam = Adam(alpha=np.int64(1), beta1=0, beta2=np.float32(0.5), epsilon=np.float64(1e-12))
    assert (adam.alpha, adam.beta1, adam.beta2, adam.epsilon) == (1.0, 0.0, 0.5, 1e-12)


def _trainedAdam(steps, alpha=0.01):
    """A net and an Adam that has taken ``steps`` steps on it, so every state array is nonzero."""
    rng = np.random.default_rng(steps)
    net = _smallNet()
    opt = Adam(alpha=alpha).setupOn(net)
    _train(net, opt, [(rng.standard_normal((4, 1, 5, 5)).astype(np.float32), rng.integers(0, 3, 4).astype(np.int32))
                      for _ in range(steps)])
    return net, opt


def _edited(blob, edit):
    """The optimizer file blob after edit(h5py.File) changed it."""
    buffer = io.BytesIO(blob)
    with h5py.File(buffer, "r+") as hdf:
        edit(hdf)
    return buffer.getvalue()


def _replace(group, key, value):
    del group[key]
    group[key] = value


def _snapshot(opt):
    """Everything a load may write, as bytes and exact values."""
    return (opt.t, [repr(getattr(opt, h)) for h in opt.hyperparameters],
            {(n, e): (a.dtype.str, a.shape, a.get().tobytes()) for n, s in opt.states.items() for e, a in s.items()})


LAST = "fc.b.ms"    # the state key load visits last: a bad value there comes after every other was read

CORRUPTIONS = [
    ("state_bytes", lambda f: _replace(f["states"], LAST, np.full((3,), b"x", "S1")),
     r"state 'fc\.b\.ms': expected dtype float32, file has a string"),
    ("state_float64", lambda f: _replace(f["states"], "conv.W.mg", np.zeros((4, 1, 3, 3), np.float64)),
     r"state 'conv\.W\.mg': expected dtype float32, file has float64"),
    ("state_complex", lambda f: _replace(f["states"], LAST, np.zeros(3, np.complex64)),
     r"state 'fc\.b\.ms': expected dtype float32, file has complex64"),
    ("state_int32", lambda f: _replace(f["states"], LAST, np.zeros(3, np.int32)),
     r"state 'fc\.b\.ms': expected dtype float32, file has int32"),
    ("state_group", lambda f: (f["states"].__delitem__(LAST), f["states"].create_group(LAST)),
     r"state 'fc\.b\.ms': /states/fc\.b\.ms is a group, expected a dataset"),
    ("state_missing", lambda f: f["states"].__delitem__(LAST), r"state 'fc\.b\.ms': missing from the file"),
    ("state_shape", lambda f: _replace(f["states"], LAST, np.zeros((3, 1), np.float32)),
     r"state 'fc\.b\.ms': shape mismatch, optimizer has \(3,\), file has \(3, 1\)"),
    ("t_negative", lambda f: _replace(f["attrs"], "t", -1), r"attr 't': value must be an integer >= 0, got -1"),
    ("t_fraction", lambda f: _replace(f["attrs"], "t", 2.5), r"attr 't': value must be an integer >= 0, got 2.5"),
    ("t_missing", lambda f: f["attrs"].__delitem__("t"), r"attr 't': missing from the file"),
    ("t_array", lambda f: _replace(f["attrs"], "t", np.array([3, 4])),
     r"attr 't': expected a scalar, file has shape \(2,\)"),
    ("alpha_negative", lambda f: _replace(f["attrs"], "alpha", -1.0), r"attr 'alpha': value must be >= 0, got -1.0"),
    ("beta1_nan", lambda f: _replace(f["attrs"], "beta1", np.nan),
     r"attr 'beta1': value must be a finite number in \[0, 1\), got nan"),
    ("beta2_one", lambda f: _replace(f["attrs"], "beta2", 1.0), r"attr 'beta2': value must be in \[0, 1\), got 1.0"),
    ("epsilon_missing", lambda f: f["attrs"].__delitem__("epsilon"), r"attr 'epsilon': missing from the file"),
    ("alpha_bytes", lambda f: _replace(f["attrs"], "alpha", b"0.1"),
     r"attr 'alpha': value must be a finite number >= 0, got '0.1'"),
    ("alpha_complex", lambda f: _replace(f["attrs"], "alpha", 0.1 + 0j),
     r"attr 'alpha': expected a number or a name, file has complex128"),
]


@pytest.mark.parametrize("edit,message", [c[1:] for c in CORRUPTIONS], ids=[c[0] for c in CORRUPTIONS])
def test_optimizer_load_is_all_or_nothing(backend, edit, message):
    _, source = _trainedAdam(5)
    blob = _edited(source.save(), edit)
    net, opt = _trainedAdam(2, alpha=0.02)
    before, weights = _snapshot(opt), [v.data.get().tobytes() for _, v in net.namedVars()]
    with pytest.raises(LoadError, match=r"^Adam: cannot load state, optimizer left unchanged:\n(  .*\n)*  " + message):
        opt.load(blob)
    assert _snapshot(opt) == before, "a refused load changed the optimizer"
    assert [v.data.get().tobytes() for _, v in net.namedVars()] == weights
    opt.load(source.save())     # the same optimizer still takes a good file
    assert opt.t == 5 and _snapshot(opt) == _snapshot(source)


def test_optimizer_load_lists_every_problem_and_names_the_class(backend):
    _, source = _trainedAdam(1)
    blob = _edited(source.save(), lambda f: (f["attrs"].__delitem__("t"), _replace(f["attrs"], "beta1", 7.0),
                                             _replace(f["states"], "fc.W.mg", np.zeros((100, 3), np.float64))))
    _, opt = _trainedAdam(1)
    with pytest.raises(LoadError) as info:
        opt.load(blob)
    lines = str(info.value).split("\n")
    assert lines[0] == "Adam: cannot load state, optimizer left unchanged:"
    assert lines[1:] == ["  attr 't': missing from the file", "  attr 'beta1': value must be in [0, 1), got 7.0",
                         "  state 'fc.W.mg': expected dtype float32, file has float64"]
    with pytest.raises(LoadError, match=r"^Adam: attr 'class': missing from the file$"):
        opt.load(_edited(source.save(), lambda f: f["attrs"].__delitem__("class")))
    with pytest.raises(LoadError, match=r"^Adam: not an optimizer state file \(groups 'attrs' and 'states' expected"):
        opt.load(_edited(source.save(), lambda f: f.__delitem__("states")))


def test_optimizer_load_accepts_step_zero_and_restores_exact_values(backend):
    net, source = _trainedAdam(3)
    source.t = 0                    # a valid, if unusual, file: state from elsewhere, bias correction restarts
    source.beta1 = 0.0
    blob = source.save()
    opt = Adam().setupOn(net)
    opt.load(blob)
    assert opt.t == 0 and opt.beta1 == 0.0 and opt.alpha == 0.01
    for name, state in source.states.items():
        for entry, ary in state.items():
            got = opt.states[name][entry]
            assert got.dtype == np.float32 and np.array_equal(got.get(), ary.get()), (name, entry)


RULE_OPS = [
    ("sgdUpdate", 0, dict(learnRate=0.1)),
    ("momentumUpdate", 1, dict(learnRate=0.1, momRate=0.9)),
    ("nesterovUpdate", 1, dict(learnRate=0.1, momRate=0.9)),
    ("adamUpdate", 2, dict(alpha=0.01, beta1=0.9, beta2=0.999, epsilon=1e-8, t=3)),
    ("rmspropUpdate", 1, dict(learnRate=0.01, factor=0.9, epsilon=1e-5)),
    ("adagradUpdate", 1, dict(learnRate=0.1, epsilon=1e-8)),
]


@pytest.mark.parametrize("op,states,hyper", RULE_OPS, ids=[r[0] for r in RULE_OPS])
@pytest.mark.parametrize("size", [1000, 70000], ids=["serial", "parallel"])
@pytest.mark.parametrize("wc", [0.0, 0.01])
def test_numba_rules_equal_the_numpy_formulas_bit_for_bit(monkeypatch, op, states, hyper, size, wc):
    """The NumPy backend's compiled rules (optimkernels.py) against its NumPy formulas, NaN and
    infinities included (an infinite weight with wc == 0 stays infinite)."""
    from minidl.backend.numpy import optim, optimkernels
    if not optimkernels.enabled:
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(5)
    arrays = [rng.standard_normal(size).astype(np.float32) for _ in range(2 + states)]
    for a in arrays[2:]:
        np.abs(a, out=a)                # second moments are >= 0
    arrays[0][:4] = [np.inf, -np.inf, np.nan, 0.0]
    arrays[1][4:7] = [np.nan, np.inf, -np.inf]
    results = []
    for kernels in (True, False):
        monkeypatch.setattr(optimkernels, "enabled", kernels)
        work = [a.copy() for a in arrays]
        with np.errstate(invalid="ignore", over="ignore"):     # the NaN and infinities are the point
            for _ in range(3):
                getattr(optim, op)(*work, **hyper, wc=wc)
        results.append(work)
    for got, want in zip(*results):
        assert np.array_equal(got, want, equal_nan=True)


def test_update_ops_refuse_arrays_of_different_sizes():
    from minidl.backend.numpy import optim
    with pytest.raises(ValueError, match=r"sgdUpdate: the parameter, its gradient and its state must have one size, "
                                         r"got \(100,\), \(1,\)"):
        optim.sgdUpdate(np.zeros(100, np.float32), np.ones(1, np.float32), 1.0, 0.0)


def test_optimizer_load_reads_only_the_file_itself(backend, tmp_path):
    """A state entry whose values live in another file (HDF5 external storage) or behind an
    external link is refused, as the weights loader refuses it: nothing outside the file is read."""
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(3, dtype=np.float32).tobytes())
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["ms"] = np.arange(3, dtype=np.float32)
    _, source = _trainedAdam(1)
    external = _edited(source.save(), lambda f: (f["states"].__delitem__(LAST), f["states"].create_dataset(
        LAST, shape=(3,), dtype="f4", external=[(str(secret), 0, 12)])))
    linked = _edited(source.save(), lambda f: (f["states"].__delitem__(LAST), f["states"].__setitem__(
        LAST, h5py.ExternalLink(str(other), "ms"))))
    _, opt = _trainedAdam(1)
    before = _snapshot(opt)
    with pytest.raises(LoadError, match=r"state 'fc\.b\.ms': /states/fc\.b\.ms keeps its values in external file"):
        opt.load(external)
    with pytest.raises(LoadError, match=r"state 'fc\.b\.ms': /states/fc\.b\.ms is an external link"):
        opt.load(linked)
    assert _snapshot(opt) == before
