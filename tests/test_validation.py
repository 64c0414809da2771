"""Values that cannot be right are refused where they enter: setVar, Variable, layer and model
hyperparameters; numpy integers are accepted wherever ints are, and bools nowhere."""

import numpy as np
import pytest

from minidl.backend import gpuarray
from minidl.containers import Sequential
from minidl.models import loadMobileNetV1, loadMobileNetV2
from minidl.modules import (
    Activation, AvgPool2D, BatchNorm, BatchNorm2D, Conv2D, DepthwiseConv2D, Dropout, Linear, MaxPool2D, PointwiseConv2D,
    Replicate, Reshape, SeparableConv2D,
)
from minidl.shapes import isInt, pair, positiveInt, realInRange
from minidl.variable import Variable

NAN, INF = float("nan"), float("inf")


# ---- the shared helpers -------------------------------------------------------------------------

@pytest.mark.parametrize("value,ok", [
    (3, True), (np.int64(3), True), (np.uint8(3), True), (np.int32(-2), True), (True, False), (np.bool_(True), False),
    (3.0, False), (np.float32(3), False), ("3", False), (None, False),
], ids=["int", "int64", "uint8", "int32_negative", "bool", "numpy_bool", "float", "float32", "string", "none"])
def test_isInt(value, ok):
    assert isInt(value) is ok


def test_positiveInt_and_pair_accept_numpy_integers_and_refuse_bools():
    got = positiveInt("Conv2D", "inmaps", np.int64(4))
    assert got == 4 and type(got) is int
    assert pair(np.int32(3)) == (3, 3) and all(type(v) is int for v in pair((np.int64(2), np.uint16(5))))
    for bad in (0, -1, True, np.bool_(True), 2.0, "2", None):
        with pytest.raises(ValueError, match=r"^Conv2D: inmaps must be a positive int, got "):
            positiveInt("Conv2D", "inmaps", bad)
    for bad in (True, (1, True), (np.float32(1), 2), "ab", (1, 2, 3)):
        with pytest.raises(ValueError, match=r"size must be an int or an \(h, w\) pair"):
            pair(bad, "size")


@pytest.mark.parametrize("value,bounds,message", [
    (-1, dict(low=0), r"^X: v must be >= 0, got -1$"),
    (0, dict(low=0, lowOpen=True), r"^X: v must be > 0, got 0$"),
    (1.0, dict(low=0, high=1, highOpen=True), r"^X: v must be in \[0, 1\), got 1.0$"),
    (0, dict(low=0, high=1, lowOpen=True), r"^X: v must be in \(0, 1\], got 0$"),
    (2, dict(high=1), r"^X: v must be <= 1, got 2$"),
    (NAN, dict(low=0), r"^X: v must be a finite number >= 0, got nan$"),
    (-INF, dict(), r"^X: v must be a finite number, got -inf$"),
    (True, dict(low=0), r"^X: v must be a finite number >= 0, got True$"),
    (1j, dict(low=0), r"^X: v must be a finite number >= 0, got 1j$"),
    ("1", dict(low=0), r"^X: v must be a finite number >= 0, got '1'$"),
], ids=["below", "open_low", "open_high", "open_low_closed_high", "above", "nan", "inf", "bool", "complex", "string"])
def test_realInRange_refuses(value, bounds, message):
    with pytest.raises(ValueError, match=message):
        realInRange("X", "v", value, **bounds)


def test_realInRange_accepts_range_ends_and_numpy_scalars():
    assert realInRange("X", "v", 0, low=0) == 0.0 and realInRange("X", "v", np.float32(0.5), 0, 1) == 0.5
    got = realInRange("X", "v", np.int64(1), 0, 1)
    assert got == 1.0 and type(got) is float


# ---- setVar and Variable ------------------------------------------------------------------------

def test_setVar_refuses_a_float64_variable_and_the_model_stays_loadable(backend, tmp_path):
    net = Sequential("net").append(Conv2D(3, 4, 3, name="c1"))
    before = net["c1"].vars["W"]
    with pytest.raises(ValueError, match=r"^Conv2D 'c1': setVar\('W'\): expected dtype float32, got float64$"):
        net["c1"].setVar("W", Variable(np.ones((4, 3, 3, 3))))
    with pytest.raises(ValueError, match=r"^Conv2D 'c1': setVar\('W'\): expected dtype float32, got int32$"):
        net.setVar("c1.W", Variable(gpuarray.to_gpu(np.ones((4, 3, 3, 3), np.int32))))
    assert net["c1"].vars["W"] is before
    net.save(str(tmp_path / "w.h5"))
    fresh = Sequential("net").append(Conv2D(3, 4, 3, name="c1"))
    fresh.load(str(tmp_path / "w.h5"))
    assert np.array_equal(fresh["c1"].W.get(), before.data.get())


def test_setVar_checks_shape_and_gradient(backend):
    lin = Linear(3, 2, name="fc")
    with pytest.raises(ValueError, match=r"^Linear 'fc': setVar\('b'\): expected shape \(2,\), got \(3,\)$"):
        lin.setVar("b", Variable(np.zeros(3, np.float32)))
    w = np.ones((3, 2), np.float32)
    with pytest.raises(ValueError,
                       match=r"^Linear 'fc': setVar\('W'\): expected a gradient of shape \(3, 2\), got \(2, 3\)$"):
        lin.setVar("W", Variable(w, grad=gpuarray.zeros((2, 3))))
    with pytest.raises(ValueError, match=r"setVar\('W'\): expected a gradient of dtype float32, got float64"):
        lin.setVar("W", Variable(w, grad=gpuarray.to_gpu(np.zeros((3, 2)))))
    with pytest.raises(ValueError, match=r"^Linear: setVar\('extra'\): expected dtype float32, got uint8$"):
        Linear(3, 2).setVar("extra", Variable(np.zeros(4, np.uint8)))
    with pytest.raises(TypeError, match=r"^Linear 'fc': setVar\('W'\): expected a Variable, got ndarray$"):
        lin.setVar("W", w)
    lin.setVar("W", Variable(w, withgrad=False))            # a Variable without a gradient gets a zero one
    assert lin.vars["W"].grad.shape == (3, 2) and not lin.vars["W"].grad.get().any()
    lin.setVar("extra", Variable(np.zeros(4, np.float32)))  # a new variable sets its own shape
    assert lin.vars["extra"].shape == (4,)


@pytest.mark.parametrize("kwargs,message", [
    (dict(learnRate=-1), r"^Variable 'w': learnRate must be >= 0, got -1$"),
    (dict(momRate=NAN), r"^Variable 'w': momRate must be a finite number >= 0, got nan$"),
    (dict(wc=-1e-4), r"^Variable 'w': wc must be >= 0, got -0.0001$"),
    (dict(wc=INF), r"^Variable 'w': wc must be a finite number >= 0, got inf$"),
], ids=["learnRate_negative", "momRate_nan", "wc_negative", "wc_inf"])
def test_variable_refuses_bad_multipliers(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Variable(np.zeros(2, np.float32), name="w", **kwargs)


# ---- layer and model hyperparameters ------------------------------------------------------------

@pytest.mark.parametrize("make,message", [
    (lambda: Conv2D(3, 4, 3, wscale=-1), r"^Conv2D: wscale must be > 0, got -1$"),
    (lambda: Conv2D(3, 4, 3, wscale=NAN), r"^Conv2D: wscale must be a finite number > 0, got nan$"),
    (lambda: Conv2D(3, 4, 3, wscale=0), r"^Conv2D: wscale must be > 0, got 0$"),
    (lambda: DepthwiseConv2D(4, 3, wscale=INF), r"^DepthwiseConv2D: wscale must be a finite number > 0, got inf$"),
    (lambda: PointwiseConv2D(4, 3, wscale=-2.0), r"^PointwiseConv2D: wscale must be > 0, got -2.0$"),
    (lambda: Linear(3, 2, wscale=-1), r"^Linear: wscale must be > 0, got -1$"),
    (lambda: Linear(3, 2, wscale=NAN), r"^Linear: wscale must be a finite number > 0, got nan$"),
    (lambda: Conv2D(True, 4, 3), r"^Conv2D: inmaps must be a positive int, got True$"),
    (lambda: Conv2D(4, 4, True), r"^Conv2D: size must be an int or an \(h, w\) pair, got True$"),
    (lambda: Conv2D(4, 4, 3, groups=np.int64(0)), r"^Conv2D: groups must be a positive int, got (np.int64\()?0"),
    (lambda: Linear(3.0, 2), r"^Linear: insize must be a positive int, got 3.0$"),
    (lambda: Replicate(True), r"^Replicate: times must be a positive int, got True$"),
    (lambda: BatchNorm2D(4, epsilon=NAN), r"^BatchNorm2D: epsilon must be a finite number > 0, got nan$"),
    (lambda: BatchNorm2D(4, epsilon=0), r"^BatchNorm2D: epsilon must be > 0, got 0$"),
    (lambda: BatchNorm(4, sscale=-0.1), r"^BatchNorm: sscale must be >= 0, got -0.1$"),
    (lambda: BatchNorm2D(4, sscale=NAN), r"^BatchNorm2D: sscale must be a finite number >= 0, got nan$"),
    (lambda: BatchNorm2D(4, minFactor=0), r"^BatchNorm2D: minFactor must be in \(0, 1\], got 0$"),
    (lambda: BatchNorm2D(4, initFactor=1.5), r"^BatchNorm2D: initFactor must be in \(0, 1\], got 1.5$"),
    (lambda: BatchNorm2D(np.float64(4)), r"^BatchNorm2D: maps must be a positive int"),
    (lambda: Dropout(NAN), r"^Dropout: p must be a finite number in \[0, 1\), got nan$"),
    (lambda: Dropout(-0.1), r"^Dropout: p must be in \[0, 1\), got -0.1$"),
    (lambda: Activation("leakyRelu", args=(NAN,)),
     r"^Activation 'leakyRelu': args\[0\] must be a finite number, got nan$"),
    (lambda: Activation("clip", args=(0, "6")), r"^Activation 'clip': args\[1\] must be a finite number, got '6'$"),
    (lambda: Reshape((2, True)), r"^Reshape: shape may hold ints >= 0 and at most one -1"),
    (lambda: loadMobileNetV1(width=NAN), r"^loadMobileNetV1: width must be a finite number > 0, got nan$"),
    (lambda: loadMobileNetV2(width=INF), r"^loadMobileNetV2: width must be a finite number > 0, got inf$"),
    (lambda: loadMobileNetV1(numClasses=True), r"^loadMobileNetV1: numClasses must be a positive int, got True$"),
    (lambda: loadMobileNetV2(inmaps=0), r"^loadMobileNetV2: inmaps must be a positive int, got 0$"),
    (lambda: loadMobileNetV1(dropout=-0.5), r"^loadMobileNetV1: dropout must be in \[0, 1\), got -0.5$"),
    (lambda: loadMobileNetV2(dropout=NAN), r"^loadMobileNetV2: dropout must be a finite number in \[0, 1\), got nan$"),
], ids=["conv_wscale_negative", "conv_wscale_nan", "conv_wscale_0", "dw_wscale_inf", "pw_wscale_negative",
        "linear_wscale_negative", "linear_wscale_nan", "conv_inmaps_bool", "conv_size_bool", "conv_groups_int64_0",
        "linear_insize_float", "replicate_bool", "bn_eps_nan", "bn_eps_0", "bn_sscale_negative", "bn_sscale_nan",
        "bn_minFactor_0", "bn_initFactor_1.5", "bn_maps_float", "dropout_nan", "dropout_negative", "leakyrelu_nan",
        "clip_string", "reshape_bool", "v1_width_nan", "v2_width_inf", "v1_classes_bool", "v2_inmaps_0",
        "v1_dropout_negative", "v2_dropout_nan"])
def test_layers_and_models_refuse_bad_hyperparameters(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def _sameModule(make, numpyArgs, pythonArgs, x):
    """Build one module from numpy integers and one from the same Python ints under one seed: they
    must agree in every attribute that holds the ints, in every weight and on a forward pass."""
    np.random.seed(7)
    a = make(*numpyArgs)
    np.random.seed(7)
    b = make(*pythonArgs)
    for (name, va), (_, vb) in zip(a.namedVars(), b.namedVars()):
        assert np.array_equal(va.data.get(), vb.data.get()), name
    ya, yb = a(gpuarray.to_gpu(x)), b(gpuarray.to_gpu(x))
    for got, want in zip(ya if isinstance(ya, list) else [ya], yb if isinstance(yb, list) else [yb]):
        assert got.shape == want.shape and np.array_equal(got.get(), want.get())
    return a


def test_numpy_integers_are_accepted_wherever_ints_are(backend):
    i64, i32 = np.int64, np.int32
    x4 = np.random.default_rng(0).standard_normal((2, 4, 6, 6)).astype(np.float32)
    conv = _sameModule(lambda c, o, s, st, p, g: Conv2D(c, o, s, stride=st, pad=p, groups=g),
                       (i64(4), i64(8), i64(3), i32(2), (i64(1), np.uint8(0)), i64(2)), (4, 8, 3, 2, (1, 0), 2), x4)
    assert (conv.inmaps, conv.outmaps, conv.groups, conv.size, conv.pad) == (4, 8, 2, (3, 3), (1, 0))
    assert all(type(v) is int for v in (conv.inmaps, conv.outmaps, conv.groups) + conv.size + conv.stride + conv.pad)
    dw = _sameModule(lambda c, m: DepthwiseConv2D(c, 3, pad=1, multiplier=m), (i64(4), i64(2)), (4, 2), x4)
    assert dw.algo == "depthwise" and dw.outmaps == 8 and type(dw.multiplier) is int
    _sameModule(lambda c, o: PointwiseConv2D(c, o), (i64(4), i32(3)), (4, 3), x4)
    _sameModule(lambda c, o: SeparableConv2D(c, o, 3), (i64(4), i64(5)), (4, 5), x4)
    lin = _sameModule(lambda i, o: Linear(i, o), (i64(4), i32(3)), (4, 3), x4[:, :, 0, 0])
    assert type(lin.insize) is int and lin.W.shape == (4, 3)
    bn = _sameModule(lambda m: BatchNorm2D(m), (i64(4),), (4,), x4)
    assert type(bn.maps) is int
    rep = _sameModule(lambda t: Replicate(t), (i64(3),), (3,), x4)
    assert rep.times == 3 and type(rep.times) is int
    _sameModule(lambda s, st: MaxPool2D(s, st), (i64(2), i32(2)), (2, 2), x4)
    _sameModule(lambda s: AvgPool2D(s, 1, pad=i64(1)), ((i64(3), i64(3)),), ((3, 3),), x4)
    _sameModule(lambda d: Reshape((0, d, 6)), (i64(-1),), (-1,), x4)
    np.random.seed(7)
    net = loadMobileNetV1(width=0.25, numClasses=i64(10), inmaps=i32(3), smallInput=True)
    assert net["fc"].outsize == 10 and type(net["fc"].outsize) is int


def test_range_ends_are_accepted():
    assert Dropout(0).p == 0.0 and BatchNorm2D(2, sscale=0, minFactor=1).minFactor == 1
    assert Activation("clip", args=(np.float32(-1), np.int64(2))).beta == 2.0
    assert Conv2D(2, 2, 1, wscale=np.float32(1e-3), initscheme="gaussian").W.get().std() < 0.01

