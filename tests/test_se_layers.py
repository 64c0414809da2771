"""MobileNetV3's layers: the hardSigmoid and hardSwish activations and Mul (squeeze-and-excitation's
gate), on every backend, against naive loops, finite differences and PyTorch.

Tolerances: against the float64 loops, rtol 1e-6 / atol 1e-7 (float32 rounding of one or two
operations); against PyTorch's float32 functions, hardSigmoid and both backward passes exactly
(same operations in the same order), hardSwish's forward to one ulp (PyTorch computes x * 6 / 6
above 3, minidl x itself); Mul's sum over a map to rtol 1e-5 (float32 summation order).
"""

import math

import numpy as np
import pytest

from gradcheck import assertClose, checkGradients
from minidl.backend import gpuarray, ops
from minidl.errors import ModuleError
from minidl.modules import Activation, Mul, hardSigmoid, hardSwish

KINKS = (-3.0, 3.0)


# ---- naive references: one element at a time, float64 ----------------------------------------------

def naiveHard(kind, x, dy):
    """(y, dx) by the textbook pieces, element by element. At a kink the derivative of the outer piece
    (PyTorch's choice): hardSigmoid 0 at -3 and 3, hardSwish 0 at -3 and 1 at 3."""
    x, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    y, dx = np.zeros_like(x), np.zeros_like(x)
    for i in np.ndindex(x.shape):
        v = x[i]
        if kind == hardSigmoid:
            if v <= -3:
                y[i], d = 0.0, 0.0
            elif v >= 3:
                y[i], d = 1.0, 0.0
            else:
                y[i], d = v / 6 + 0.5, 1 / 6
        else:
            if v <= -3:
                y[i], d = 0.0, 0.0
            elif v >= 3:
                y[i], d = v, 1.0
            else:
                y[i], d = v * (v + 3) / 6, v / 3 + 0.5
        dx[i] = dy[i] * d
    return y, dx


def naiveMul(a, b, dy):
    """(y, da, db) with b either a's shape or one value per (n, c) map, by loops over every position."""
    a, b, dy = (np.asarray(t, np.float64) for t in (a, b, dy))
    y, da, db = np.zeros_like(a), np.zeros_like(a), np.zeros_like(b)
    perMap = b.shape != a.shape
    for i in np.ndindex(a.shape):
        j = i[:2] + (0,) * (a.ndim - 2) if perMap else i
        y[i] = a[i] * b[j]
        da[i] = dy[i] * b[j]
        db[j] += dy[i] * a[i]
    return y, da, db


def _withKinks(shape, seed=0):
    """Values over [-5, 5] with the kinks themselves and their float32 neighbours at the front."""
    x = np.random.default_rng(seed).uniform(-5, 5, shape).astype(np.float32).reshape(-1)
    special = [k for kink in KINKS for k in (np.nextafter(np.float32(kink), np.float32(-9)), np.float32(kink),
                                               np.nextafter(np.float32(kink), np.float32(9)))]
    x[:len(special)] = special
    return x.reshape(shape)


def _awayFromKinks(shape, seed=0):
    """Values over [-5, 5] at least 0.05 from each kink, so central differences never straddle one."""
    x = np.random.default_rng(seed).uniform(-5, 5, shape)
    for k in KINKS:
        near = np.abs(x - k) < 0.05
        x[near] = k + 0.1 * np.sign(x[near] - k + 1e-9)
    return x.astype(np.float32)


# ---- hardSigmoid and hardSwish -----------------------------------------------------------------------

@pytest.mark.parametrize("kind", [hardSigmoid, hardSwish])
def test_hard_activations_against_loops_at_and_between_the_kinks(backend, kind):
    x = _withKinks((2, 3, 5, 7))
    dy = np.random.randn(*x.shape).astype(np.float32)
    act = Activation(kind, name="act")
    y = act(gpuarray.to_gpu(x)).get()
    dx = act.backward(gpuarray.to_gpu(dy)).get()
    wantY, wantDx = naiveHard(kind, x, dy)
    assertClose(y, wantY, 1e-6, 1e-7, "%s forward" % kind)
    assertClose(dx, wantDx, 1e-6, 1e-7, "%s backward" % kind)
    # the kinks exactly: the documented one-sided values
    flatX, flatDx, flatDy = x.reshape(-1), dx.reshape(-1), dy.reshape(-1)
    for kink, slope in zip(KINKS, (0.0, 0.0) if kind == hardSigmoid else (0.0, 1.0)):
        at = np.flatnonzero(flatX == np.float32(kink))
        assert at.size and np.array_equal(flatDx[at], flatDy[at] * np.float32(slope)), (kind, kink)


@pytest.mark.parametrize("kind", [hardSigmoid, hardSwish])
def test_hard_activations_finite_differences(backend, kind):
    checkGradients(Activation(kind), _awayFromKinks((3, 4, 5)), kind="smooth")


@pytest.mark.parametrize("kind", [hardSigmoid, hardSwish])
def test_hard_activations_match_pytorch(backend, kind):
    torch = pytest.importorskip("torch")
    fn = {hardSigmoid: torch.nn.functional.hardsigmoid, hardSwish: torch.nn.functional.hardswish}[kind]
    x = _withKinks((4, 8, 9, 9), seed=1) * np.float32(1.5)      # past +-6 too
    x.reshape(-1)[:6] = _withKinks((6,))[:6]                      # the kinks after the scaling
    dy = np.random.randn(*x.shape).astype(np.float32)
    act = Activation(kind)
    y = act(gpuarray.to_gpu(x)).get()
    dx = act.backward(gpuarray.to_gpu(dy)).get()
    tx = torch.tensor(x, requires_grad=True)
    ty = fn(tx)
    ty.backward(torch.tensor(dy))
    if kind == hardSigmoid:
        assert np.array_equal(y, ty.detach().numpy())
    else:
        ulp = np.spacing(np.abs(ty.detach().numpy()))
        assert (np.abs(y - ty.detach().numpy()) <= ulp).all()
    assert np.array_equal(dx, tx.grad.numpy()), "the same derivative everywhere, kinks included"


def test_hard_activations_non_finite(backend):
    """NaN stays NaN; infinities go to the limits (hardSwish(-inf) is 0, where PyTorch's product gives
    NaN); the derivative at a NaN input is NaN for hardSwish (its middle piece) and 0 for hardSigmoid
    (its mask, as clip's), and a NaN incoming gradient gives NaN."""
    x = np.array([np.nan, np.inf, -np.inf, 1.0], np.float32)
    dy = np.array([1.0, 1.0, 1.0, np.nan], np.float32)
    got = {}
    for kind in (hardSigmoid, hardSwish):
        y = ops.activation(gpuarray.to_gpu(x), kind, 0.0, 0.0)
        dx = ops.activationBackward(gpuarray.to_gpu(x), y, gpuarray.to_gpu(dy), kind, 0.0, 0.0)
        got[kind] = y.get(), dx.get()
    twoThirds = np.float32(4) / np.float32(6)      # hardSigmoid(1) = (1 + 3) / 6 and hardSwish(1) = 1 * 4 / 6
    np.testing.assert_array_equal(got[hardSigmoid][0], np.array([np.nan, 1, 0, twoThirds], np.float32))
    np.testing.assert_array_equal(got[hardSigmoid][1], [0, 0, 0, np.nan])
    np.testing.assert_array_equal(got[hardSwish][0], np.array([np.nan, np.inf, 0, twoThirds], np.float32))
    np.testing.assert_array_equal(got[hardSwish][1], [np.nan, 1, 0, np.nan])


def test_hard_activations_refuse_in_place():
    for kind in (hardSigmoid, hardSwish):
        with pytest.raises(ValueError, match="Activation 'act': inplace=True needs a derivative computable"):
            Activation(kind, name="act", inplace=True)
    with pytest.raises(ValueError, match="takes 0 args"):
        Activation(hardSwish, args=(1.0,))


# ---- Mul -----------------------------------------------------------------------------------------------

MUL_SHAPES = [((2, 3, 4, 5), (2, 3, 1, 1)), ((2, 3, 4, 5), (2, 3, 4, 5)), ((2, 5, 33), (2, 5, 1)),
              ((1, 2, 20, 20), (1, 2, 1, 1)), ((3, 4), (3, 4)), ((0, 3, 4, 4), (0, 3, 1, 1))]
MUL_IDS = ["per_map", "same_shape", "rank3", "span400", "2d", "empty_batch"]


@pytest.mark.parametrize("ashape,bshape", MUL_SHAPES, ids=MUL_IDS)
def test_mul_against_loops(backend, ashape, bshape):
    a = np.random.randn(*ashape).astype(np.float32)
    b = np.random.randn(*bshape).astype(np.float32)
    dy = np.random.randn(*ashape).astype(np.float32)
    mul = Mul(name="scale")
    y = mul([gpuarray.to_gpu(a), gpuarray.to_gpu(b)])
    assert mul.dataShapeFrom([ashape, bshape]) == ashape == y.shape
    da, db = mul.backward(gpuarray.to_gpu(dy))
    wantY, wantDa, wantDb = naiveMul(a, b, dy)
    assertClose(y.get(), wantY, 1e-6, 1e-7, "Mul forward")
    assertClose(da.get(), wantDa, 1e-6, 1e-7, "Mul gradient of a")
    span = 1 if bshape == ashape else math.prod(ashape[2:])
    # a sum over span float32 products: its rounding grows with the terms summed, not the result
    scale = np.abs(dy.astype(np.float64) * a).reshape(-1).max(initial=0) * span
    assertClose(db.get(), wantDb, 1e-5, 1e-6 * scale + 1e-7, "Mul gradient of b")


@pytest.mark.parametrize("ashape,bshape", MUL_SHAPES[:3], ids=MUL_IDS[:3])
def test_mul_finite_differences(backend, ashape, bshape):
    a = np.random.randn(*ashape).astype(np.float32)
    b = np.random.randn(*bshape).astype(np.float32)
    checkGradients(Mul(), [a, b], kind="linear")


def test_mul_matches_pytorch(backend):
    torch = pytest.importorskip("torch")
    a = np.random.randn(2, 8, 7, 7).astype(np.float32)
    b = np.random.rand(2, 8, 1, 1).astype(np.float32)
    dy = np.random.randn(*a.shape).astype(np.float32)
    mul = Mul()
    y = mul([gpuarray.to_gpu(a), gpuarray.to_gpu(b)]).get()
    da, db = (g.get() for g in mul.backward(gpuarray.to_gpu(dy)))
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    ty = ta * tb
    ty.backward(torch.tensor(dy))
    assert np.array_equal(y, ty.detach().numpy()) and np.array_equal(da, ta.grad.numpy())
    assertClose(db, tb.grad.numpy(), 1e-5, 1e-6, "Mul gradient of b against PyTorch")


def test_mul_passes_nan_through(backend):
    a = np.ones((1, 2, 3, 3), np.float32)
    a[0, 0, 1, 1] = np.nan
    b = np.array([2, 3], np.float32).reshape(1, 2, 1, 1)
    mul = Mul()
    y = mul([gpuarray.to_gpu(a), gpuarray.to_gpu(b)]).get()
    assert np.isnan(y).sum() == 1 and np.isnan(y[0, 0, 1, 1])
    _, db = mul.backward(gpuarray.to_gpu(np.ones(a.shape, np.float32)))
    assert np.isnan(db.get()[0, 0, 0, 0]) and db.get()[0, 1, 0, 0] == 9


@pytest.mark.parametrize("shapes,message", [
    ([(2, 3, 4, 4)], r"expected a list of 2 arrays \[a, b\], got a list of 1"),
    ((2, 3, 4, 4), r"expected a list of 2 arrays \[a, b\], got a single array of shape \(2, 3, 4, 4\)"),
    ([(2, 3, 4, 4), (2, 3, 4, 1)], r"expected b of a's shape \(2, 3, 4, 4\) or one value per map \(2, 3, 1, 1\), "
                                   r"got a \(2, 3, 4, 4\) and b \(2, 3, 4, 1\)"),
    ([(2, 3), (2, 1)], r"expected b of a's shape \(2, 3\), got a \(2, 3\) and b \(2, 1\)"),
], ids=["one", "single", "bad_broadcast", "2d_broadcast"])
def test_mul_shape_errors(backend, shapes, message):
    data = [gpuarray.to_gpu(np.zeros(s, np.float32)) for s in shapes] if isinstance(shapes, list) else \
        gpuarray.to_gpu(np.zeros(shapes, np.float32))
    with pytest.raises(ModuleError, match=r"Mul 'gate': " + message):
        Mul(name="gate")(data)


# ---- mayShareMemory (the Graph's in-place guard) --------------------------------------------------------

def test_may_share_memory(backend):
    x = gpuarray.to_gpu(np.zeros((4, 6), np.float32))
    y = gpuarray.to_gpu(np.zeros((4, 6), np.float32))
    assert ops.mayShareMemory(x, x) and not ops.mayShareMemory(x, y)
    assert ops.mayShareMemory(x, x.reshape(24)) and ops.mayShareMemory(x[2:], x[3:])
    assert not ops.mayShareMemory(x[:2], x[2:])


@pytest.mark.parametrize("kind", [hardSigmoid, hardSwish])
def test_numba_kernels_equal_the_numpy_formulas(monkeypatch, kind):
    """The NumPy backend's compiled loops (minidl/backend/numpy/elementwise/kernels.py) against its NumPy formulas,
    kinks, infinities and NaN included, in place too."""
    import minidl.backend.numpy as nb
    from minidl.backend.numpy import jit, routing
    if not jit.enabled:
        pytest.skip("numba not installed (or MINIDL_NUMBA=0): the NumPy formulas are the only path")
    x = _withKinks((3, 700), seed=4) * np.float32(1.5)
    x.reshape(-1)[:6] = _withKinks((6,))[:6]
    x.reshape(-1)[6:10] = [np.nan, np.inf, -np.inf, -0.0]
    dy = np.random.randn(*x.shape).astype(np.float32)
    dy.reshape(-1)[10] = np.nan
    runs = []
    for enabled in (True, False):
        monkeypatch.setattr(jit, "enabled", enabled)
        assert routing.plan("activation", kind)["forward"] == ("kernel" if enabled else "numpy")
        y = np.array(nb.activation(x, kind, 0.0, 0.0))
        runs.append((y, np.array(nb.activationBackward(x, y, dy, kind, 0.0, 0.0))))
        inplace = x.copy()
        assert np.array_equal(np.array(nb.activation(inplace, kind, 0.0, 0.0, out=inplace)), y, equal_nan=True)
    monkeypatch.setattr(jit, "enabled", True)
    (yf, dxf), (ys, dxs) = runs
    assert np.array_equal(yf, ys, equal_nan=True) and np.array_equal(dxf, dxs, equal_nan=True)
