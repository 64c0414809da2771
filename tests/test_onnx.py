"""ONNX export: onnxruntime runs each exported model and must give minidl's eval-mode output.

Error measure: max|onnx - minidl| / max|minidl| over the whole output. Both sides compute in float32
(unit roundoff u = 6e-8) but sum the same products in different orders (im2col GEMM, Winograd and
direct kernels here; MLAS there, which also folds each BatchNormalization into the conv before it),
and exp/tanh come from different approximations (a few ulps). Reordering a K-term dot product
changes it by about sqrt(K) u relative to the size of its terms; K <= 121 in the one-layer tests
(an 11x11 depthwise filter), so ~1e-6: a layer, or a small graph of a few, is held to
LAYER_BOUND = 1e-5 (measured: at most 3e-7). A MobileNet chains up to 53 conv and linear layers
with K up to 1280 (V2's classifier): sqrt(1280) u = 2e-6 per layer, and uncorrelated errors add to
about sqrt(53) x 2e-6 = 1.6e-5, so MODEL_BOUND = 1e-4 (measured: 5e-7 to 4e-6). Each check prints
"onnx <what>: max rel err <value>" (shown with -s).

Batch norms get random statistics and affine parameters (BN is never the identity), and the
models are left in train mode for the export, which must still write eval mode (and not change
the model's mode).
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from emulation import cudaEmulated
from minidl.backend import gpuarray
from minidl.containers import Parallel, Sequential
from minidl.errors import ModuleError
from minidl.models import loadMobileNetV1, loadMobileNetV2
from minidl.module import Module
from minidl.modules import (
    Activation, Add, AvgPool2D, BatchNorm, BatchNorm2D, Concat, Conv2D, DepthwiseConv2D, Dropout, Flatten,
    GlobalAvgPool2D, Identity, Linear, MaxPool2D, PointwiseConv2D, Replicate, Reshape, SeparableConv2D, SoftMax,
)
from test_conv import CONFIGS, IDS
from minidl.containers import Graph, Node
from minidl.models import loadMobileNetV3
from minidl.modules import Mul
from minidl.modules import Deconv2D, Pad2D, Upsample2D
from test_deconv import CONFIGS as DECONV_CONFIGS, IDS as DECONV_IDS
from test_resample import PAD_IDS, PADS, UP_IDS, UPSAMPLES

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import minidl.onnx as mo  # noqa: E402
from minidl.onnx.graph import _CONVERTERS  # noqa: E402

LAYER_BOUND = 1e-5
MODEL_BOUND = 1e-4


# ---- helpers ------------------------------------------------------------------------------------

def _modules(mod):
    yield mod
    for child in getattr(mod, "modules", {}).values():
        yield from _modules(child)


def _randomizeBatchNorms(model, rng):
    """Statistics and affine parameters far from the identity: mean N(0, 0.2), var U(0.5, 2),
    scale U(0.5, 1.5), bias N(0, 0.2)."""
    for mod in _modules(model):
        if isinstance(mod, BatchNorm2D):
            shape = mod.attrs["mean"].shape
            mod.attrs["mean"].set(rng.normal(0, 0.2, shape).astype(np.float32))
            mod.attrs["var"].set(rng.uniform(0.5, 2.0, shape).astype(np.float32))
            if mod.affine:
                mod.vars["scale"].data.set(rng.uniform(0.5, 1.5, shape).astype(np.float32))
                mod.vars["bias"].data.set(rng.normal(0, 0.2, shape).astype(np.float32))


def _export(model, shape, opset=mo.DEFAULT_OPSET):
    """The file's bytes, after the checker's strictest pass; the model's mode is left as it was."""
    mode = model.train
    blob = mo.export(model, shape, opset=opset)
    assert model.train == mode, "export changed the model's mode"
    proto = onnx.load_from_string(blob)
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == opset
    return blob, proto


def _run(blob, xs):
    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: x for i, x in zip(sess.get_inputs(), xs)})


def _reference(model, xs):
    model.evalMode()
    data = [gpuarray.to_gpu(x) for x in xs]
    out = model(data[0] if len(data) == 1 else data)
    return [o.get() for o in out] if isinstance(out, list) else [out.get()]


def _relErr(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, "shape %s, expected %s" % (got.shape, want.shape)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


def _check(model, xs, label, bound=LAYER_BOUND, opset=mo.DEFAULT_OPSET, exportShape=None):
    """Export model (in train mode unless told), run it on xs (a list of inputs), compare with
    minidl's eval-mode output; prints and returns the max relative error."""
    shape = exportShape or (tuple(xs[0].shape) if len(xs) == 1 else [tuple(x.shape) for x in xs])
    blob, proto = _export(model, shape, opset)
    got = _run(blob, xs)
    want = _reference(model, xs)
    assert len(got) == len(want)
    err = max(_relErr(g, w) for g, w in zip(got, want))
    print("onnx %s: max rel err %.2g" % (label, err))
    assert err <= bound, "%s: max relative error %.3g over the bound %g" % (label, err, bound)
    return err


def _x(*shape):
    return np.random.randn(*shape).astype(np.float32)


# ---- convolutions -------------------------------------------------------------------------------

@pytest.mark.parametrize("name,kwargs,shape,algo", CONFIGS, ids=IDS)
def test_conv_configs(backend, name, kwargs, shape, algo):
    conv = Conv2D(**kwargs, initscheme="gaussian", name="conv")
    if conv.useBias:
        conv.vars["b"].data.set(np.random.randn(1, conv.outmaps, 1, 1).astype(np.float32))
    assert conv.algo == algo
    _check(conv, [_x(*shape)], "conv %s (%s)" % (name, algo))


@pytest.mark.parametrize("opset", [9, mo.DEFAULT_OPSET])
def test_depthwise_pointwise_and_separable_classes(backend, opset):
    net = Sequential("net")
    net.append(DepthwiseConv2D(3, 3, stride=2, pad=1, multiplier=2, name="dw"))          # W (6, 1, 3, 3)
    net.append(PointwiseConv2D(6, 4, name="pw"))
    net.append(SeparableConv2D(4, 5, 3, pad=2, dilation=2, multiplier=3, name="sep"))
    net.append(SeparableConv2D(5, 2, (3, 1), stride=(1, 2), pad=(1, 0), useBias=False, name="sepnb"))
    for mod in _modules(net):
        if "b" in mod.vars:
            mod.vars["b"].data.set(np.random.randn(*mod.vars["b"].data.shape).astype(np.float32))
    _check(net, [_x(2, 3, 9, 8)], "depthwise/pointwise/separable opset %d" % opset, opset=opset)
    _, proto = _export(net, (2, 3, 9, 8))
    dw = next(n for n in proto.graph.node if n.name == "net.dw")
    assert {a.name: onnx.helper.get_attribute_value(a) for a in dw.attribute}["group"] == 3
    assert [n.name for n in proto.graph.node][2:4] == ["net.sep.depthwise", "net.sep.pointwise"]


# ---- transposed convolution, upsampling, padding ----------------------------------------------------

@pytest.mark.parametrize("opset", [9, mo.DEFAULT_OPSET])
@pytest.mark.parametrize("name,kwargs,shape", DECONV_CONFIGS, ids=DECONV_IDS)
def test_deconv_configs(backend, name, kwargs, shape, opset):
    deconv = Deconv2D(**kwargs, initscheme="gaussian", name="deconv")
    if deconv.useBias:
        deconv.vars["b"].data.set(np.random.randn(1, deconv.outmaps, 1, 1).astype(np.float32))
    _check(deconv, [_x(*shape)], "deconv %s opset %d" % (name, opset), opset=opset)
    _, proto = _export(deconv, shape)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in proto.graph.node[0].attribute}
    assert proto.graph.node[0].op_type == "ConvTranspose"
    if all(op < s for op, s in zip(deconv.postpad, deconv.stride)):   # else end pads and Pad stand in for it
        assert attrs["output_padding"] == list(deconv.postpad)


# Resize's coordinate modes came with opset 11 (before: Upsample at 9, Resize at 10, and bilinear as
# two MatMuls); 13 made its roi optional, 18 added attributes
RESAMPLE_OPSETS = [9, 10, 11, 13, mo.DEFAULT_OPSET, mo.MAX_OPSET]


@pytest.mark.parametrize("opset", RESAMPLE_OPSETS)
@pytest.mark.parametrize("name,kwargs,shape", UPSAMPLES, ids=UP_IDS)
def test_upsample(backend, name, kwargs, shape, opset):
    up = Upsample2D(**kwargs, name="up")
    _check(up, [_x(*shape)], "upsample %s opset %d" % (name, opset), opset=opset)
    if opset >= 11:
        _, proto = _export(up, shape, opset)
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in proto.graph.node[0].attribute}
        assert attrs["coordinate_transformation_mode"] == (b"half_pixel" if up.mode == "bilinear" else b"asymmetric")


@pytest.mark.parametrize("opset", RESAMPLE_OPSETS)
@pytest.mark.parametrize("name,kwargs,shape", PADS, ids=PAD_IDS)
def test_pad(backend, name, kwargs, shape, opset):
    _check(Pad2D(**kwargs, name="pad"), [_x(*shape)], "pad %s opset %d" % (name, opset), opset=opset)


def test_decoder_of_deconv_upsample_and_pad(backend):
    net = Sequential("net").append(Pad2D((1, 0, 2, 1), "reflect", name="pad"))
    net.append(Conv2D(3, 8, 3, stride=2, name="down")).append(BatchNorm2D(8, name="bn"))
    net.append(Deconv2D(8, 4, 3, stride=2, pad=1, postpad=1, groups=4, name="up"))
    net.append(Upsample2D((2, 1), "bilinear", name="resize")).append(Pad2D(1, "replicate", name="edge"))
    _randomizeBatchNorms(net, np.random.default_rng(6))
    for opset in (9, mo.DEFAULT_OPSET):
        _check(net, [_x(2, 3, 9, 8)], "pad/conv/deconv/upsample opset %d" % opset, opset=opset)


# ---- batch norm and activations -------------------------------------------------------------------

def test_batchnorm2d_with_statistics_and_without_affine(backend):
    net = Sequential("net").append(BatchNorm2D(4, epsilon=1e-3, name="bn"))
    net.append(BatchNorm2D(4, affine=False, name="fixed"))
    _randomizeBatchNorms(net, np.random.default_rng(0))
    _check(net, [_x(2, 4, 5, 3)], "batchnorm2d")


def test_batchnorm_on_linear_output(backend):
    net = Sequential("net").append(Linear(6, 5, name="fc")).append(BatchNorm(5, epsilon=1e-4, name="bn"))
    _randomizeBatchNorms(net, np.random.default_rng(1))
    _check(net, [_x(3, 6)], "batchnorm (N, C)")


ACTIVATIONS = [("relu", ()), ("relu6", ()), ("clip", (-1.0, 2.0)), ("leakyRelu", ()), ("leakyRelu", (0.2,)),
               ("elu", ()), ("elu", (0.5,)), ("sigmoid", ()), ("tanh", ()), ("softPlus", ()),
               ("hardSigmoid", ()), ("hardSwish", ())]   # hardSwish: HardSigmoid and Mul before opset 14


@pytest.mark.parametrize("opset", [9, mo.DEFAULT_OPSET])   # Clip's bounds: attributes before 11, inputs after
@pytest.mark.parametrize("name,args", ACTIVATIONS, ids=["%s%s" % a for a in ACTIVATIONS])
def test_activations(backend, name, args, opset):
    x = 4 * _x(2, 3, 4, 5)   # reaches past relu6's and clip's bounds
    _check(Activation(name, args=args, name="act"), [x], "activation %s%s opset %d" % (name, args, opset),
           opset=opset)


def test_inplace_activation_exports_like_any(backend):
    net = Sequential("net").append(Conv2D(3, 4, 3, pad=1, name="conv"))
    net.append(Activation("relu6", name="act", inplace=True))
    _check(net, [4 * _x(2, 3, 5, 5)], "inplace relu6")


# ---- pooling, dense, shapes -----------------------------------------------------------------------

POOLS = [
    ("max3_s2_p1", lambda: MaxPool2D(3, 2, 1, name="pool")),
    ("max2", lambda: MaxPool2D(name="pool")),
    ("max_hw", lambda: MaxPool2D((3, 2), (1, 2), (1, 0), name="pool")),
    ("avg3_s2_p1_includepad", lambda: AvgPool2D(3, 2, 1, includePad=True, name="pool")),
    ("avg3_s2_p1_excludepad", lambda: AvgPool2D(3, 2, 1, includePad=False, name="pool")),
    ("avg_hw_excludepad", lambda: AvgPool2D((2, 3), (2, 1), (1, 1), includePad=False, name="pool")),
    ("global_avg", lambda: GlobalAvgPool2D(name="pool")),
]


@pytest.mark.parametrize("name,build", POOLS, ids=[p[0] for p in POOLS])
def test_pools(backend, name, build):
    x = -np.abs(_x(2, 3, 7, 6)) - 1   # all negative: a max that let zero padding win, or a wrong divisor, shows
    _check(build(), [x], "pool %s" % name)


@pytest.mark.parametrize("useBias", [True, False], ids=["bias", "nobias"])
def test_linear(backend, useBias):
    fc = Linear(7, 4, useBias=useBias, name="fc")
    if useBias:
        fc.vars["b"].data.set(np.random.randn(4).astype(np.float32))
    _check(fc, [_x(3, 7)], "linear %s" % ("bias" if useBias else "nobias"))


@pytest.mark.parametrize("build,outshape", [
    (lambda: Flatten(name="flat"), (2, 60)),
    (lambda: Reshape((0, 0, 20), name="reshape"), (2, 3, 20)),
    (lambda: Reshape((0, -1, 5), name="reshape"), (2, 12, 5)),
    (lambda: Reshape((-1, 6), name="reshape"), (20, 6)),
], ids=["flatten", "reshape_0_0", "reshape_0_inferred", "reshape_inferred_batch"])
def test_flatten_and_reshape(backend, build, outshape):
    mod = build()
    assert mod.dataShapeFrom((2, 3, 4, 5)) == outshape
    _check(mod, [_x(2, 3, 4, 5)], "%s %s" % (type(mod).__name__, outshape))


@pytest.mark.parametrize("opset", [11, mo.DEFAULT_OPSET])   # before 13 a 4-D softmax goes through transposes
@pytest.mark.parametrize("shape", [(3, 7), (2, 5, 3, 4)], ids=["2d", "4d"])
def test_softmax(backend, shape, opset):
    x = 3 * _x(*shape)
    _check(SoftMax(name="softmax"), [x], "softmax %dd opset %d" % (len(shape), opset), opset=opset)
    if len(shape) == 4:   # the reference normalises over axis 1 alone: every pixel's maps sum to one
        np.testing.assert_allclose(_reference(SoftMax(), [x])[0].sum(axis=1), 1, rtol=1e-5)


def test_dropout_is_identity(backend):
    net = Sequential("net").append(Linear(6, 6, name="fc")).append(Dropout(0.5, name="drop"))
    assert net.train
    _check(net, [_x(4, 6)], "dropout")
    _, proto = _export(net, (4, 6))
    assert [n.op_type for n in proto.graph.node] == ["Gemm", "Identity"]


# ---- branches -----------------------------------------------------------------------------------

def _branchy():
    net = Sequential("net")
    net.append(Replicate(3, name="split"))
    branches = Parallel("branches")
    branches.append(Conv2D(3, 4, 3, pad=1, name="conv"))
    branches.append(Identity(name="shortcut"))
    branches.append(Activation("tanh", name="act"))
    net.append(branches)
    net.append(Concat(1, name="cat"))                       # (N, 4+3+3, H, W)
    net.append(Replicate(2, name="split2"))
    net.append(Parallel("twice").append(Conv2D(10, 5, 1, name="a")).append(Conv2D(10, 5, 3, pad=1, name="b")))
    net.append(Add(name="add"))
    net.append(Replicate(3, name="split3"))
    net.append(Add(name="sum3"))                            # three inputs: Sum
    return net


def test_replicate_parallel_concat_add(backend):
    net = _branchy()
    _check(net, [_x(2, 3, 6, 5)], "replicate/parallel/concat/add")
    _, proto = _export(net, (2, 3, 6, 5))
    ops = {n.name: n.op_type for n in proto.graph.node}
    assert ops["net.cat"] == "Concat" and ops["net.add"] == "Add" and ops["net.sum3"] == "Sum"
    assert ops["net.branches.shortcut"] == "Identity"


def test_list_input_and_list_output(backend):
    net = Parallel("pair").append(Linear(4, 3, name="fc")).append(Identity(name="same"))
    blob, proto = _export(net, [(2, 4), (2, 5)])
    assert [i.name for i in proto.graph.input] == ["data0", "data1"]
    assert [o.name for o in proto.graph.output] == ["output0", "output1"]
    _check(net, [_x(2, 4), _x(2, 5)], "list input and output")
    # a model whose result is one tensor twice: two outputs, each its own name
    twice = Sequential("twice").append(Identity(name="id")).append(Replicate(2, name="split"))
    _check(twice, [_x(2, 3)], "replicated output")


def test_concat_negative_axis(backend):
    net = Sequential("net").append(Replicate(2, name="split"))
    net.append(Parallel("p").append(Identity(name="a")).append(Activation("relu", name="b")))
    net.append(Concat(-1, name="cat"))
    _check(net, [_x(2, 3, 4)], "concat axis -1", opset=9)


# ---- batch, naming, opsets, errors -------------------------------------------------------------

def test_dynamic_batch(backend):
    net = loadMobileNetV2(width=0.25, numClasses=10, smallInput=True, name="net")
    _randomizeBatchNorms(net, np.random.default_rng(2))
    blob, proto = _export(net, (2, 3, 32, 32))
    assert [_dims(proto.graph.input[0]), _dims(proto.graph.output[0])] == [["N", 3, 32, 32], ["N", 10]]
    for batch in (5, 1):
        x = _x(batch, 3, 32, 32)
        err = _relErr(_run(blob, [x])[0], _reference(net, [x])[0])
        print("onnx dynamic batch 2 -> %d: max rel err %.2g" % (batch, err))
        assert err <= MODEL_BOUND


def _dims(value):
    return [d.dim_param or (d.dim_value if d.HasField("dim_value") else None) for d in value.type.tensor_type.shape.dim]


@pytest.mark.parametrize("target,dims", [
    ((2, 12), [[2, 3, 4], [2, 12]]),           # batch 3 cannot reshape to (2, 12): the batch stays 2
    ((2, -1), [["N", 3, 4], [2, None]]),       # any batch can (2, 6N): the second dimension is unknown
], ids=["fixed", "inferred"])
def test_reshape_that_moves_the_batch(backend, target, dims):
    net = Sequential("net").append(Reshape(target, name="r"))
    _, proto = _export(net, (2, 3, 4))
    assert [_dims(proto.graph.input[0]), _dims(proto.graph.output[0])] == dims
    _check(net, [_x(2, 3, 4)], "reshape %s" % (target,))


def _everyOp():
    """A small model touching every converter (Clip and 4-D Softmax change form across opsets)."""
    net = Sequential("net")
    net.append(Conv2D(3, 4, 3, pad=1, name="conv")).append(BatchNorm2D(4, name="bn"))
    net.append(Activation("relu6", name="act")).append(MaxPool2D(3, 1, 1, name="max"))
    net.append(SeparableConv2D(4, 4, 3, pad=1, multiplier=2, name="sep"))
    net.append(Replicate(2, name="split"))
    net.append(Parallel("p").append(AvgPool2D(3, 1, 1, includePad=False, name="avg"))
               .append(SoftMax(name="softmax")))
    net.append(Concat(1, name="cat")).append(GlobalAvgPool2D(name="gap")).append(Flatten(name="flat"))
    net.append(Dropout(name="drop")).append(Linear(8, 6, name="fc")).append(BatchNorm(6, name="bn1d"))
    net.append(Activation("elu", name="elu")).append(Reshape((0, 3, 2, 1), name="r")).append(SoftMax(name="sm2"))
    return net


@pytest.mark.parametrize("opset", range(mo.MIN_OPSET, mo.MAX_OPSET + 1))
def test_every_supported_opset(opset):
    net = _everyOp()
    _randomizeBatchNorms(net, np.random.default_rng(3))
    _check(net, [_x(2, 3, 6, 6)], "every op, opset %d" % opset, opset=opset, bound=LAYER_BOUND)


@pytest.mark.parametrize("opset", [mo.MIN_OPSET - 1, mo.MAX_OPSET + 1, 17.0, "17", True, None])
def test_opset_out_of_range_is_refused(opset):
    with pytest.raises(ValueError, match=r"^minidl.onnx.export: opset must be an int from %d to %d, got "
                       % (mo.MIN_OPSET, mo.MAX_OPSET)):
        mo.export(Identity(), (1, 2), opset=opset)


@pytest.mark.parametrize("shape", [(), (2, 0), (2, -1), (2.0, 3), "2,3", [(2, 3), [2, 3]], None])
def test_bad_input_shape_is_refused(shape):
    with pytest.raises(ValueError, match=r"^minidl.onnx.export: inputShape must be"):
        mo.export(Identity(), shape)


def test_unsupported_module_names_class_and_path():
    class Custom(Module):
        def dataShapeFrom(self, shape):
            return shape

    net = Sequential("net").append(Sequential("block").append(Linear(3, 3, name="fc")).append(Custom(name="odd")))
    with pytest.raises(mo.ExportError, match=r"^Custom 'net\.block\.odd': cannot export to ONNX: no converter "
                                             r"for .*Custom \(minidl\.onnx\.register adds one\)$") as info:
        mo.export(net, (2, 3))
    assert isinstance(info.value, ModuleError) and info.value.path == ["net", "block", "odd"]


def test_subclass_needs_its_own_registration(backend, monkeypatch):
    class MyConv(Conv2D):
        pass

    net = Sequential("net").append(MyConv(3, 2, 3, name="mine"))
    with pytest.raises(mo.ExportError, match=r"^MyConv 'net\.mine': cannot export"):
        mo.export(net, (1, 3, 5, 5))
    monkeypatch.setitem(_CONVERTERS, MyConv, None)   # undone after the test
    mo.register(MyConv)(mo.converterFor(Conv2D))
    _check(net, [_x(1, 3, 5, 5)], "registered subclass")


def test_shape_the_model_refuses_names_the_module():
    net = Sequential("net").append(Sequential("block").append(Conv2D(3, 4, 3, name="conv")))
    with pytest.raises(ModuleError, match=r"^Conv2D 'net\.block\.conv': expected input with 3 maps, got shape "
                                          r"\(1, 4, 8, 8\)$"):
        mo.export(net, (1, 4, 8, 8))
    with pytest.raises(ModuleError, match=r"^Parallel 'net\.p': expected a list of 2 inputs"):
        mo.export(Sequential("net").append(Parallel("p").append(Identity()).append(Identity())), (1, 2))


def test_node_and_initializer_names_follow_dotted_paths(backend):
    net = loadMobileNetV2(width=0.25, numClasses=10, smallInput=True)
    _, proto = _export(net, (1, 3, 32, 32))
    names = [n.name for n in proto.graph.node]
    assert "mobilenetv2.block4.dw" in names and "mobilenetv2.block3.branches.body.dw" in names
    assert len(set(names)) == len(names)
    inits = {i.name for i in proto.graph.initializer}
    assert {"mobilenetv2.stem.conv.W", "mobilenetv2.stem.convbn.mean", "mobilenetv2.fc.b"} <= inits
    assert proto.graph.input[0].name == "data" and proto.graph.output[0].name == "output"
    assert proto.graph.node[-1].name == "mobilenetv2.fc" and proto.graph.node[-1].output[0] == "output"
    # an unnamed leaf model: nodes named after their op
    _, proto = _export(Linear(3, 2), (1, 3))
    assert [(n.name, n.op_type) for n in proto.graph.node] == [("Gemm", "Gemm")]


def test_shared_variable_is_stored_once(backend):
    a, b = Linear(4, 4, name="a"), Linear(4, 4, name="b")
    b.setVar("W", a.vars["W"])
    _, proto = _export(Sequential("net").append(a).append(b), (2, 4))
    assert sorted(i.name for i in proto.graph.initializer) == ["net.a.W", "net.a.b", "net.b.b"]


def test_writes_the_file_atomically_or_returns_bytes(tmp_path):
    net = Sequential("net").append(Linear(3, 2, name="fc"))
    target = tmp_path / "net.onnx"
    target.write_bytes(b"old")
    assert mo.export(net, (1, 3), str(target)) is None
    assert target.read_bytes() == mo.export(net, (1, 3))
    assert [p.name for p in tmp_path.iterdir()] == ["net.onnx"]   # no temporary file left
    onnx.checker.check_model(str(target), full_check=True)
    with pytest.raises(FileNotFoundError):
        mo.export(net, (1, 3), str(tmp_path / "missing" / "net.onnx"))


def test_missing_onnx_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)   # import onnx now raises ImportError
    with pytest.raises(ImportError, match=r"pip install minidl\[onnx\]"):
        mo.export(Identity(), (1, 2))


def test_importing_minidl_never_imports_onnx():
    code = ("import sys, minidl, minidl.models, minidl.onnx; "
            "assert 'onnx' not in sys.modules and 'onnxruntime' not in sys.modules, 'onnx imported'")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


# ---- Graph and Mul ------------------------------------------------------------------------------

def _skipGraph():
    """conv -> bn -> relu (in place) -> squeeze-and-excitation gate (Mul) -> + x: a skip connection."""
    block = Graph(inputs="x", outputs="add", name="block", nodes=[
        Node(Conv2D(4, 4, 3, pad=1, name="conv"), "x"), Node(BatchNorm2D(4, name="bn"), "conv"),
        Node(Activation("relu", name="act", inplace=True), "bn"), Node(GlobalAvgPool2D(name="pool"), "act"),
        Node(Activation("hardSigmoid", name="gate"), "pool"), Node(Mul(name="scale"), ["act", "gate"]),
        Node(Add(name="add"), ["scale", "x"])])
    return Sequential("net").append(block)


@pytest.mark.parametrize("opset", [9, 13, 14, mo.DEFAULT_OPSET, mo.MAX_OPSET])
def test_graph_with_a_skip_connection(backend, opset):
    net = _skipGraph()
    _randomizeBatchNorms(net, np.random.default_rng(6))
    _check(net, [_x(2, 4, 6, 5)], "graph with a skip, opset %d" % opset, opset=opset)
    _, proto = _export(net, (2, 4, 6, 5), opset)
    ops = {n.name: n.op_type for n in proto.graph.node}
    assert ops["net.block.scale"] == "Mul" and ops["net.block.gate"] == "HardSigmoid"
    assert [n.op_type for n in proto.graph.node][-1] == "Add"
    assert ops["net.block.conv"] == "Conv" and "net.block.conv.W" in {i.name for i in proto.graph.initializer}


def test_graph_with_several_inputs_outputs_and_elements(backend):
    g = Graph(inputs=["a", "b"], outputs=["prod", "cat"], name="g", nodes=[
        Node(Linear(4, 4, name="fa"), "a"), Node(Replicate(2, name="rep"), "fa"),
        Node(Add(name="twice"), ["b", "b", ("rep", 0)]), Node(Mul(name="prod"), [("rep", 1), "twice"]),
        Node(Concat(1, name="cat"), ["fa", "twice"])])
    _check(g, [_x(3, 4), _x(3, 4)], "graph with two inputs and outputs")
    _, proto = _export(g, [(3, 4), (3, 4)])
    assert [i.name for i in proto.graph.input] == ["data0", "data1"]
    assert [o.name for o in proto.graph.output] == ["output0", "output1"]


# ---- MobileNets ---------------------------------------------------------------------------------

LOADERS = [(loadMobileNetV1, "mobilenetv1"), (loadMobileNetV2, "mobilenetv2")]


@pytest.mark.slow
@pytest.mark.parametrize("loader,label", LOADERS, ids=["v1", "v2"])
def test_mobilenet_224(backend, loader, label):
    if backend == "cuda" and cudaEmulated():
        pytest.skip("full-width 224x224 MobileNets take minutes on the CPU execution of CUDA; the GPU and "
                    "NumPy runs cover them")
    net = loader()
    _randomizeBatchNorms(net, np.random.default_rng(4))
    _check(net, [np.random.rand(2, 3, 224, 224).astype(np.float32)], "%s 224" % label, bound=MODEL_BOUND)


@pytest.mark.parametrize("loader,label", LOADERS, ids=["v1", "v2"])
def test_mobilenet_small_input(backend, loader, label):
    net = loader(smallInput=True)   # full width: ~2 s on the CPU execution of CUDA too
    _randomizeBatchNorms(net, np.random.default_rng(5))
    _check(net, [np.random.rand(2, 3, 32, 32).astype(np.float32)], "%s 32 smallInput" % label, bound=MODEL_BOUND)


@pytest.mark.parametrize("kind", ["small", "large"])
def test_mobilenetv3_small_input(backend, kind):
    net = loadMobileNetV3(kind, smallInput=True)
    _randomizeBatchNorms(net, np.random.default_rng(7))
    _check(net, [np.random.rand(2, 3, 32, 32).astype(np.float32)], "mobilenetv3 %s 32 smallInput" % kind,
           bound=MODEL_BOUND)
