"""minidl.inference.foldBatchNorm against float64 loops over the unfolded model's own weights.

The reference applies each layer of the original model by its definition (tests/reference.py's
convolution loops, batch norm's eval formula, the activation), so it shares no code with either the
folded or the unfolded model. Both must meet the same float32 tolerance.
"""

import numpy as np
import pytest

import minidl
from minidl.backend import gpuarray
from minidl.containers import Parallel, Sequential
from minidl.inference import foldBatchNorm
from minidl.models import loadMobileNetV1, loadMobileNetV2, loadMobileNetV3
from minidl.module import Module
from minidl.modules import (
    Activation, Add, BatchNorm, BatchNorm2D, Conv2D, Deconv2D, DepthwiseConv2D, Linear, PointwiseConv2D, Replicate,
    relu, relu6,
)

from gradcheck import assertClose
from reference import naiveConv2d


def _randomStatistics(model):
    """Running statistics and affine parameters far from the identity, so that folding shows."""
    for _, mod in _leaves(model):
        if isinstance(mod, BatchNorm2D):
            shape = (1, mod.maps, 1, 1)
            mod.attrs["mean"].set(np.random.randn(*shape).astype(np.float32))
            mod.attrs["var"].set(np.random.uniform(0.2, 3.0, shape).astype(np.float32))
            if mod.affine:
                mod.vars["scale"].data.set(np.random.uniform(0.5, 1.5, shape).astype(np.float32))
                mod.vars["bias"].data.set(np.random.randn(*shape).astype(np.float32))
        elif isinstance(mod, Conv2D) and mod.useBias:
            mod.vars["b"].data.set(np.random.randn(*mod.vars["b"].data.shape).astype(np.float32))


def _leaves(module, prefix=""):
    children = getattr(module, "modules", None)
    if not children:
        yield prefix + str(module.name), module
        return
    for child in children.values():
        yield from _leaves(child, prefix + str(module.name) + ".")


def _reference(seq, x):
    """seq's eval-mode output by definition, in float64: a Sequential of convs, batch norms,
    activations and nested Sequentials only."""
    for mod in seq.modules.values():
        if isinstance(mod, Sequential):
            x = _reference(mod, x)
        elif isinstance(mod, Conv2D):
            b = mod.vars["b"].data.get() if mod.useBias else None
            x = naiveConv2d(x, mod.vars["W"].data.get(), b, mod.stride, mod.pad, mod.dilation, mod.groups)
        elif isinstance(mod, BatchNorm2D):
            scale, bias = (np.asarray(a.get(), np.float64) for a in mod._affine())
            mean, var = (np.asarray(mod.attrs[k].get(), np.float64) for k in ("mean", "var"))
            x = (x - mean) / np.sqrt(var + mod.epsilon) * scale + bias
        elif isinstance(mod, Activation):
            x = np.clip(x, 0, 6) if mod.activation == relu6 else np.maximum(x, 0)
        else:
            raise AssertionError("no reference for %s" % type(mod).__name__)
    return x


def _model():
    """Every convolution kind folding supports, with and without bias, nested one level."""
    block = Sequential("block")
    block.append(PointwiseConv2D(16, 8, useBias=True, name="pw")).append(BatchNorm2D(8, name="pwbn"))
    return (Sequential("net")
            .append(Conv2D(3, 8, 3, pad=1, useBias=False, name="c1")).append(BatchNorm2D(8, name="c1bn"))
            .append(Activation(relu6, name="a1", inplace=True))
            .append(DepthwiseConv2D(8, 3, stride=2, pad=1, multiplier=2, useBias=True, name="dw"))
            .append(BatchNorm2D(16, name="dwbn"))
            .append(block)
            .append(Conv2D(8, 8, 3, pad=2, dilation=2, groups=4, useBias=False, name="g"))
            .append(BatchNorm2D(8, affine=False, name="gbn"))
            .append(Activation(relu, name="a2")))


def test_folded_model_computes_the_unfolded_one(backend):
    net = _model()
    _randomStatistics(net)
    net.evalMode()
    x = np.random.randn(2, 3, 9, 9).astype(np.float32)
    want = _reference(net, x)
    before = net(gpuarray.to_gpu(x)).get()

    fast = foldBatchNorm(net)
    assert fast.foldedBatchNorms == 4
    assert list(fast.modules) == ["c1", "a1", "dw", "block", "g", "a2"]
    assert list(fast["block"].modules) == ["pw"]
    assert all(fast[name].useBias for name in ("c1", "dw", "block.pw", "g"))
    got = fast(gpuarray.to_gpu(x)).get()
    scale = np.abs(want).max()
    # float32 through four convolutions: both forms sit within the same bound of the float64 definition
    for what, y in (("unfolded", before), ("folded", got)):
        assertClose(y, want, 1e-5, 1e-5 * scale, what)
    # and the model given is left as it was
    assert list(net.modules) == ["c1", "c1bn", "a1", "dw", "dwbn", "block", "g", "gbn", "a2"]
    assert not net["c1"].useBias
    np.testing.assert_array_equal(net(gpuarray.to_gpu(x)).get(), before)


def _v3small(**kwargs):
    return loadMobileNetV3("small", **kwargs)


@pytest.mark.parametrize("loader", [loadMobileNetV1, loadMobileNetV2, _v3small], ids=["v1", "v2", "v3-small"])
def test_mobilenets_fold_every_batch_norm(backend, loader):
    """V2's and V3's residual blocks nest Sequentials inside Replicate / Parallel / Add, V3's
    squeeze-and-excitation gates inside Mul: every batch norm folds."""
    net = loader(width=0.35, numClasses=10, smallInput=True, dropout=0)
    _randomStatistics(net)
    net.evalMode()
    x = gpuarray.to_gpu(np.random.rand(2, 3, 16, 16).astype(np.float32))
    want = net(x).get()
    fast = foldBatchNorm(net)
    assert fast.foldedBatchNorms == sum(isinstance(m, BatchNorm2D) for _, m in _leaves(net))
    assert not any(isinstance(m, BatchNorm2D) for _, m in _leaves(fast))
    # eval-mode activations grow through the layers with these statistics: relative to the output's scale
    assertClose(fast(x).get(), want, 1e-4, 1e-4 * np.abs(want).max(), "folded " + net.name)


def test_folded_model_saves_and_loads_with_its_blueprint(backend, tmp_path):
    net = _model()
    _randomStatistics(net)
    fast = foldBatchNorm(net)
    x = gpuarray.to_gpu(np.random.randn(2, 3, 9, 9).astype(np.float32))
    want = fast(x).get()
    fast.save(str(tmp_path / "fast.h5"))
    again = minidl.load(str(tmp_path / "fast.h5"))
    again.evalMode()
    np.testing.assert_array_equal(again(x).get(), want)


class _Scale(Module):
    """A module of the user's own: no blueprint can rebuild it."""

    def updateData(self, data):
        self.data = data

    def updateGrad(self, grad):
        self.grad = grad


def test_models_with_modules_of_ones_own_fold_in_place(backend):
    net = Sequential("net").append(Conv2D(3, 4, 3, name="c")).append(BatchNorm2D(4, name="bn"))
    net.append(_Scale(name="mine"))
    _randomStatistics(net)
    net.evalMode()
    x = gpuarray.to_gpu(np.random.randn(1, 3, 5, 5).astype(np.float32))
    want = _reference(net[:2], x.get())
    with pytest.raises(ValueError, match="inplace=True"):
        foldBatchNorm(net)
    assert list(net.modules) == ["c", "bn", "mine"]       # refused: nothing changed
    assert foldBatchNorm(net, inplace=True) is net
    assert list(net.modules) == ["c", "mine"] and net.foldedBatchNorms == 1
    assertClose(net(x).get(), want, 1e-5, 1e-5 * np.abs(want).max(), "folded in place")


def test_tied_weights_are_not_written_through(backend):
    a, b = Conv2D(2, 2, 1, useBias=False, name="a"), Conv2D(2, 2, 1, useBias=False, name="b")
    b.setVar("W", a.getVar("W"))
    net = Sequential("net").append(a).append(BatchNorm2D(2, name="bn")).append(b)
    _randomStatistics(net)
    W = a.vars["W"].data.get()
    foldBatchNorm(net, inplace=True)
    np.testing.assert_array_equal(b.vars["W"].data.get(), W)
    assert a.getVar("W") is not b.getVar("W")


def test_only_batch_norm_right_after_a_convolution_folds(backend):
    inner = Sequential("inner").append(Conv2D(2, 2, 1, name="c"))
    net = (Sequential("net")
           .append(Deconv2D(2, 2, 3, name="de")).append(BatchNorm2D(2, name="afterDeconv"))
           .append(inner).append(BatchNorm2D(2, name="afterContainer"))
           .append(Replicate(2, name="rep"))
           .append(Parallel("par").append(Conv2D(2, 2, 1, name="l")).append(Conv2D(2, 2, 1, name="r")))
           .append(Add(name="add")).append(BatchNorm2D(2, name="afterAdd")))
    fc = Sequential("fc").append(Linear(4, 3, name="fc")).append(BatchNorm(3, name="afterLinear"))
    for model in (net, fc):
        _randomStatistics(model)
    assert foldBatchNorm(net, inplace=True).foldedBatchNorms == 0
    assert foldBatchNorm(fc, inplace=True).foldedBatchNorms == 0
    assert "afterDeconv" in net.modules and "afterContainer" in net.modules and "afterAdd" in net.modules


def test_a_nan_from_the_statistics_is_not_hidden(backend):
    """A negative running variance makes the unfolded model's channel NaN; the folded one's too."""
    net = Sequential("net").append(Conv2D(2, 3, 1, name="c")).append(BatchNorm2D(3, name="bn"))
    net["bn"].attrs["var"].set(np.array([1.0, -2.0, 1.0], np.float32).reshape(1, 3, 1, 1))
    net.evalMode()
    x = gpuarray.to_gpu(np.random.randn(1, 2, 3, 3).astype(np.float32))
    before = net(x).get()
    after = foldBatchNorm(net)(x).get()
    assert np.isnan(before[:, 1]).all() and np.isnan(after[:, 1]).all()
    assert np.isfinite(after[:, [0, 2]]).all()


def test_graph_nodes_fold_where_only_the_batch_norm_reads_the_convolution(backend, tmp_path):
    from minidl.containers import Graph, Node
    g = Graph(inputs="x", outputs=["bn2", "add"], nodes=[
        Node(Conv2D(2, 2, 3, pad=1, name="c1"), inputs="x"),
        Node(BatchNorm2D(2, name="bn1"), inputs="c1"),
        Node(Activation(relu, name="act", inplace=True), inputs="bn1"),
        Node(Conv2D(2, 2, 1, useBias=False, name="c2"), inputs="act"),
        Node(BatchNorm2D(2, name="bn2"), inputs="c2"),            # an output: the conv becomes it
        Node(DepthwiseConv2D(2, 3, pad=1, name="dw"), inputs="act"),
        Node(BatchNorm2D(2, name="bn3"), inputs="dw"),            # dw is read twice: not folded
        Node(Add(name="add"), inputs=["bn3", "dw"]),
    ], name="g")
    _randomStatistics(g)
    g.evalMode()
    x = gpuarray.to_gpu(np.random.randn(2, 2, 5, 5).astype(np.float32))
    want = [y.get() for y in g(x)]
    fast = foldBatchNorm(g)
    assert fast.foldedBatchNorms == 2
    assert list(fast.modules) == ["c1", "act", "c2", "dw", "bn3", "add"] and fast.outputs == ["c2", "add"]
    assert fast.wiring["act"] == [("c1", None)]
    got = [y.get() for y in fast(x)]
    for a, b in zip(got, want):
        assertClose(a, b, 1e-5, 1e-5 * np.abs(b).max(), "folded graph")
    fast.save(str(tmp_path / "g.h5"))
    again = minidl.load(str(tmp_path / "g.h5"))
    again.evalMode()
    for a, b in zip(again(x), got):
        np.testing.assert_array_equal(a.get(), b)


def test_graph_bypass_refuses_what_would_not_build_again():
    from minidl.containers import Graph, Node
    g = Graph(inputs="x", outputs=["add", "c", "bn"], nodes=[
        Node(Conv2D(2, 2, 1, name="c"), inputs="x"), Node(Add(name="add"), inputs=["c", "x"]),
        Node(BatchNorm2D(2, name="bn"), inputs="c")], name="g")
    with pytest.raises(ValueError, match="'add'"):
        g.bypass("add")                 # reads two values
    with pytest.raises(ValueError, match="cannot bypass output 'bn', which reads the output 'c'"):
        g.bypass("bn")                  # the outputs would name c twice
    single = Graph(inputs="x", outputs="bn", nodes=[Node(BatchNorm2D(2, name="bn"), inputs="x")], name="single")
    with pytest.raises(ValueError, match="cannot bypass output 'bn', which reads the input 'x'"):
        single.bypass("bn")             # an output would name an input
    assert list(g.modules) == ["c", "add", "bn"] and list(single.modules) == ["bn"]
