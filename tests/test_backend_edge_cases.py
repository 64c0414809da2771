"""What every backend must do at the edges, as NumPy does: 0-d and empty arrays, strided views,
NaN, other threads, and a clean exit with arrays still alive.

The expected values come from NumPy formulas written here, never from a backend."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import minidl.backend as B
from minidl.backend import gpuarray, ops
from minidl.modules import Activation, BatchNorm2D, Conv2D, DepthwiseConv2D, MaxPool2D, PointwiseConv2D

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _randn(*shape, seed=0):
    return np.random.RandomState(seed).randn(*shape).astype(np.float32)


def test_zero_d_array_keeps_its_shape(backend):
    a = gpuarray.to_gpu(np.array(3.0, np.float32))
    assert a.shape == () and a.get() == 3.0


def test_split_and_concat_with_empty_pieces(backend):
    x = _randn(2, 3, 4)
    empty, full = ops.split(gpuarray.to_gpu(x), [0, 3], 1)
    assert empty.shape == (2, 0, 4) and empty.get().shape == (2, 0, 4)
    np.testing.assert_array_equal(full.get(), x)
    joined = ops.concat([empty, full, empty], 1)
    np.testing.assert_array_equal(joined.get(), x)


@pytest.mark.parametrize("build,inshape,outshape", [
    (lambda: Conv2D(3, 4, 3, pad=1), (0, 3, 5, 5), (0, 4, 5, 5)),
    (lambda: DepthwiseConv2D(3, 3, pad=1), (0, 3, 5, 5), (0, 3, 5, 5)),
    (lambda: PointwiseConv2D(3, 4), (0, 3, 5, 5), (0, 4, 5, 5)),
    (lambda: Activation("relu6"), (0, 3, 5, 5), (0, 3, 5, 5)),
    (lambda: MaxPool2D(2), (0, 3, 6, 6), (0, 3, 3, 3)),
], ids=["conv", "depthwise", "pointwise", "relu6", "maxpool"])
def test_empty_batch_forward_and_backward(backend, build, inshape, outshape):
    module = build()
    y = module(gpuarray.to_gpu(np.zeros(inshape, np.float32)))
    assert y.shape == outshape and y.get().shape == outshape
    dx = module.backward(gpuarray.to_gpu(np.zeros(outshape, np.float32)))
    assert dx.shape == inshape
    for var in module.vars.values():
        # an empty batch contributes nothing to the parameter gradients
        assert var.grad is None or not np.any(var.grad.get())


def test_empty_batch_through_batch_norm_in_eval_mode(backend):
    bn = BatchNorm2D(3)
    bn.evalMode()
    assert bn(gpuarray.to_gpu(np.zeros((0, 3, 4, 4), np.float32))).shape == (0, 3, 4, 4)


# (name, op on a 2-D view, NumPy's answer for the same values)
VIEW_OPS = [
    ("softmax", lambda v: ops.softmax(v), lambda a: np.exp(a) / np.exp(a).sum(axis=1, keepdims=True)),
    ("activation", lambda v: ops.activation(v, "relu", 0.0, 0.0), lambda a: np.maximum(a, 0)),
    ("copy", lambda v: ops.copy(v), lambda a: a),
    ("addArrays", lambda v: ops.addArrays([v, v]), lambda a: 2 * a),
    ("concat", lambda v: ops.concat([v, v], 0), lambda a: np.concatenate([a, a], 0)),
]


@pytest.mark.parametrize("name,op,expected", VIEW_OPS, ids=[v[0] for v in VIEW_OPS])
def test_strided_view_is_handled_or_refused(backend, name, op, expected):
    x = _randn(4, 5)
    view = gpuarray.to_gpu(x)[:, :2]
    try:
        got = op(view)
    except ValueError as e:
        assert "non-contiguous" in str(e) and name in str(e), str(e)
        return
    np.testing.assert_allclose(got.get(), expected(x[:, :2]), rtol=1e-5, atol=1e-6)


def _withNan(shape, where):
    x = _randn(*shape)
    x[where] = np.nan
    return x


@pytest.mark.parametrize("size", [7, 4096], ids=["small", "large"])
@pytest.mark.parametrize("kind,alpha,beta", [("relu", 0, 0), ("clip", 0, 6), ("leakyRelu", 0.1, 0), ("elu", 1, 0),
                                             ("sigmoid", 0, 0), ("tanh", 0, 0), ("softPlus", 0, 0)])
def test_activations_propagate_nan(backend, kind, alpha, beta, size):
    x = _withNan((size,), slice(0, 3))
    y = ops.activation(gpuarray.to_gpu(x), kind, alpha, beta).get()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(x))
    dy = _withNan((size,), slice(3, 6))
    dx = ops.activationBackward(gpuarray.to_gpu(x), gpuarray.to_gpu(y), gpuarray.to_gpu(dy), kind, alpha, beta).get()
    # a NaN input or a NaN incoming gradient gives a NaN gradient (x's kink masks never hide one)
    assert np.isnan(dx[3:6]).all()


def test_max_pool_selects_nan_and_routes_its_gradient(backend):
    x = _randn(1, 1, 4, 4)
    x[0, 0, 1, 0] = np.nan      # window (0, 0) holds a NaN
    y, idx = ops.maxPool2d(gpuarray.to_gpu(x), (2, 2), (2, 2), (0, 0))
    y = y.get()
    assert np.isnan(y[0, 0, 0, 0]) and not np.isnan(y[0, 0, 1:]).any() and not np.isnan(y[0, 0, 0, 1])
    dx = ops.maxPool2dBackward(gpuarray.to_gpu(np.ones((1, 1, 2, 2), np.float32)), idx, (1, 1, 4, 4), (2, 2), (2, 2),
                               (0, 0)).get()
    assert dx[0, 0, 1, 0] == 1 and dx[0, 0, :2, :2].sum() == 1


def test_classification_errors_count_a_nan_score_row_as_wrong(backend):
    scores = np.array([[0.1, 0.9, 0.0], [np.nan, 0.2, 0.1], [0.0, 1.0, np.nan]], np.float32)
    labels = np.array([1, 1, 1], np.int32)
    # NumPy's argmax is the first NaN: rows 1 and 2 pick classes 0 and 2, both wrong
    assert float(ops.classificationErrors(gpuarray.to_gpu(scores), gpuarray.to_gpu(labels)).get()) == 2


def test_smooth_l1_gradient_keeps_nan(backend):
    pred, target = np.array([[np.nan, 3.0]], np.float32), np.zeros((1, 2), np.float32)
    _, grad = ops.smoothL1(gpuarray.to_gpu(pred), gpuarray.to_gpu(target))
    grad = grad.get()
    assert np.isnan(grad[0, 0]) and grad[0, 1] == 1


def test_usable_from_other_threads(backend):
    x = _randn(2, 3, 8, 8)
    conv = Conv2D(3, 4, 3, pad=1)
    expected = conv(gpuarray.to_gpu(x)).get()
    results, errors = {}, []

    def work(key):
        try:
            # a model made elsewhere, and one made on this thread
            results[key] = conv(gpuarray.to_gpu(x)).get()
            mine = Conv2D(3, 4, 3, pad=1)
            mine.setVar("W", conv.getVar("W"))
            mine.setVar("b", conv.getVar("b"))
            results[key + "own"] = mine(gpuarray.to_gpu(x)).get()
        except Exception as e:  # reported below: an exception in a thread would vanish
            errors.append(e)
    threads = [threading.Thread(target=work, args=("t%d" % i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 4
    for got in results.values():
        np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_clean_exit_with_arrays_alive(backend, tmp_path):
    script = tmp_path / "alive.py"
    script.write_text(
        "import threading\n"
        "import numpy as np\n"
        "import minidl.backend as B\n"
        "B.setBackend(%r)\n"
        "from minidl.backend import gpuarray\n"
        "from minidl.modules import Conv2D\n"
        "conv = Conv2D(3, 4, 3)\n"
        "y = conv(gpuarray.to_gpu(np.ones((2, 3, 8, 8), np.float32)))\n"
        "kept = []\n"
        "t = threading.Thread(target=lambda: kept.append(conv(gpuarray.to_gpu(np.ones((1, 3, 5, 5), np.float32)))))\n"
        "t.start(); t.join()\n"
        "print('done', y.shape, kept[0].shape)\n" % backend)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "done (2, 4, 6, 6) (1, 4, 3, 3)" in proc.stdout
    assert "terminate" not in proc.stderr and "PyCUDA ERROR" not in proc.stderr, proc.stderr[-2000:]


def test_zeros_and_empty_of_an_empty_shape(backend):
    """pycuda's own zeros fills with a kernel launch, which fails over no elements."""
    for make in (gpuarray.zeros, gpuarray.empty):
        ary = make((1, 2, 0, 3))
        assert ary.shape == (1, 2, 0, 3) and ary.get().shape == (1, 2, 0, 3)
    assert not gpuarray.zeros((3, 2)).get().any()
