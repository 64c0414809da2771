"""Blueprints: minidl.load(path) rebuilds a model from its weights file alone, and refuses hostile ones."""

import json
import time

import h5py
import numpy as np
import pytest

import minidl
from minidl import blueprint
from minidl.backend import gpuarray
from minidl.containers import Parallel, Sequential
from minidl.errors import LoadError
from minidl.models import loadMobileNetV1, loadMobileNetV2
from minidl.module import Module
from minidl.modules import (
    Activation, Add, AvgPool2D, BatchNorm, BatchNorm2D, Concat, Conv2D, DepthwiseConv2D, Dropout, Flatten,
    GlobalAvgPool2D, Identity, Linear, MaxPool2D, PointwiseConv2D, Replicate, Reshape, SeparableConv2D, SoftMax,
)
from minidl.modules import Deconv2D, Pad2D, Upsample2D
from minidl.modules import SyncBatchNorm, SyncBatchNorm2D
from minidl.containers import Graph, Node
from minidl.modules import Mul


def _everyClass():
    """A model holding every class blueprint.CLASSES knows, with non-default arguments."""
    np.random.seed(7)
    net = Sequential("every")
    net.append(Conv2D(3, 8, (3, 2), stride=(1, 2), pad=(1, 0), dilation=(2, 1), groups=1, name="conv"))
    net.append(BatchNorm2D(8, epsilon=1e-3, name="bn"))
    net.append(Activation("leakyRelu", args=(0.2,), name="leaky"))
    net.append(DepthwiseConv2D(8, 3, pad=1, multiplier=2, name="dw"))
    net.append(Conv2D(16, 8, 3, pad=1, groups=4, useBias=False, name="grouped"))
    net.append(SeparableConv2D(8, 8, 3, pad=1, useBias=False, name="sep"))
    net.append(BatchNorm2D(8, affine=False, name="bnfixed"))
    net.append(SyncBatchNorm2D(8, epsilon=1e-4, name="syncbn"))
    net.append(Replicate(2, name="split"))
    net.append(Parallel("branches").append(
        Sequential("body").append(PointwiseConv2D(8, 8, name="pw")).append(Activation("clip", args=(-1.0, 2.0))))
        .append(Identity(name="shortcut")))
    net.append(Add(name="add"))
    net.append(Replicate(2, name="split2"))
    net.append(Parallel("pools").append(MaxPool2D(2, 2, name="max")).append(AvgPool2D(3, 2, pad=1, includePad=False,
                                                                                      name="avg")))
    net.append(Concat(1, name="concat"))
    net.append(Pad2D((1, 0, 1, 1), "reflect", name="reflect"))                               # (N, 16, 4, 4)
    net.append(Deconv2D(16, 16, 3, stride=2, pad=(1, 0), postpad=(1, 0), groups=4, name="deconv"))  # 8 x 9
    net.append(Upsample2D((1, 2), "bilinear", name="up"))
    net.append(Pad2D((2, 1), value=0.5, name="fill"))
    net.append(Activation("elu", args=(0.5,), name="elu"))
    net.append(Graph(inputs="x", outputs="sum", name="graph", nodes=[     # squeeze-and-excitation, a skip
        Node(Activation("hardSwish", name="hs"), "x"), Node(GlobalAvgPool2D(name="pool"), "hs"),
        Node(Activation("hardSigmoid", name="gate"), "pool"), Node(Replicate(2, name="rep"), "x"),
        Node(Mul(name="scale"), ["hs", "gate"]), Node(Add(name="sum"), ["scale", ("rep", 1)])]))
    net.append(GlobalAvgPool2D(name="gap"))
    net.append(Reshape((0, -1), name="reshape"))
    net.append(Linear(16, 12, name="fc1"))
    net.append(BatchNorm(12, name="bn1d"))
    net.append(SyncBatchNorm(12, minFactor=0.2, name="syncbn1d"))
    net.append(Activation("softPlus"))
    net.append(Dropout(0.3, name="drop"))
    net.append(Flatten(name="flat"))
    net.append(Linear(12, 5, wscale=0.5, initscheme="gaussian", name="fc2"))
    net.append(SoftMax(name="softmax"))
    for name, attr in net.namedAttrs():       # trained-looking statistics, so a lost one shows
        attr.set(np.random.uniform(0.5, 1.5, attr.shape).astype(np.float32))
    return net


def _outputs(net, x):
    net.evalMode()
    return net(gpuarray.to_gpu(x)).get()


def test_every_class_round_trips(backend, tmp_path):
    net = _everyClass()
    covered = {type(m).__name__ for m in net.getAllByType(Module)} | {"Sequential"}
    assert covered == set(blueprint.classes()), "a class without a round-trip test: add it to _everyClass"
    x = np.random.randn(2, 3, 8, 8).astype(np.float32)
    want = _outputs(net, x)
    net.save(str(tmp_path / "every.h5"))
    for source in (str(tmp_path / "every.h5"), net.save(), h5py.File(tmp_path / "every.h5", "r")):
        model = minidl.load(source)
        assert model.train, "comes back in train mode, as a freshly built model"
        assert str(model) == str(net)
        assert np.array_equal(_outputs(model, x), want)


@pytest.mark.parametrize("build", [lambda: loadMobileNetV2(width=0.5, numClasses=10, smallInput=True),
                                   lambda: loadMobileNetV1(width=0.25, numClasses=7)], ids=["v2", "v1"])
def test_mobilenets_round_trip(backend, build):
    net = build()
    x = np.random.randn(2, 3, 32, 32).astype(np.float32)
    model = minidl.load(net.save())
    assert model.name == net.name and model.numOfParams() == net.numOfParams()
    assert np.array_equal(_outputs(model, x), _outputs(net, x))


class Custom(Module):
    def __init__(self, name=None):
        super().__init__(name)
        self.registerBlueprint(locals())

    def dataShapeFrom(self, shape):
        return shape

    def updateData(self, data):
        self.data = data


def test_models_with_user_modules_save_without_a_blueprint(backend):
    net = Sequential("net").append(Linear(3, 2, name="fc")).append(Custom(name="mine"))
    blob = net.save()
    net.load(blob)
    with pytest.raises(LoadError, match="has no blueprint.*build the model in code and call model.load"):
        minidl.load(blob)
    with pytest.raises(blueprint.BlueprintError, match="Custom 'net.mine': not one of minidl's layers"):
        net.save(withBlueprint=True)
    with h5py.File(_image(Sequential().append(Linear(3, 2)).save(withBlueprint=False))) as f:
        assert "blueprint" not in f
    odd = Sequential("net").append(Linear(3, 2, name="fc"))
    odd["fc"].blueprint["wscale"] = object()
    with pytest.raises(blueprint.BlueprintError, match="argument 'wscale' is a object"):
        odd.save(withBlueprint=True)


def test_a_puzzlelib_style_blueprint_loads(backend):
    """PuzzleLib's own layout: json.dumps(indent=4, sort_keys=True), "graph" for the order, the names
    of appended children in their schemes."""
    np.random.seed(1)
    net = Sequential().append(Linear(20, 10, name="linear-1")).append(Activation("relu", name="relu-1"))
    text = json.dumps({"classname": "Sequential", "scheme": {"name": None}, "graph": ["linear-1", "relu-1"],
                       "modules": {"linear-1": {"classname": "Linear", "scheme": {
                           "insize": 20, "outsize": 10, "wscale": 1.0, "useBias": True, "initscheme": None,
                           "name": "linear-1", "empty": False}},
                           "relu-1": {"classname": "Activation", "scheme": {"activation": "relu", "args": [],
                                                                           "name": "relu-1", "inplace": False}}}},
                      indent=4, sort_keys=True)
    model = minidl.load(_withBlueprint(net.save(withBlueprint=False), text))
    x = np.random.randn(4, 20).astype(np.float32)
    assert np.array_equal(_outputs(model, x), _outputs(net, x))


# ---- hostile and broken files ---------------------------------------------------------------------

def _image(blob):
    import io
    return io.BytesIO(blob)


def _withBlueprint(blob, text, dtype=None):
    """The weights file blob with its blueprint dataset replaced by text (or any value with dtype)."""
    buf = _image(blob)
    with h5py.File(buf, "a") as f:
        if "blueprint" in f:
            del f["blueprint"]
        if dtype is None:
            f.create_dataset("blueprint", data=text, dtype=h5py.string_dtype("utf-8"))
        else:
            f.create_dataset("blueprint", data=np.asarray(text, dtype))
    return buf.getvalue()


def _tiny():
    return Sequential("net").append(Linear(3, 2, name="fc"))


def _bp(classname, scheme, **extra):
    return json.dumps(dict({"classname": classname, "scheme": scheme}, **extra))


def _linear(**scheme):
    return _bp("Sequential", {"name": "net"}, graph=["fc"],
               modules={"fc": {"classname": "Linear", "scheme": dict({"insize": 3, "outsize": 2, "name": "fc"},
                                                                      **scheme)}})


HOSTILE = [
    ("a class minidl does not have", _bp("os.system", {"command": "echo hi"}),
     r"'os\.system' is not one of minidl's layers or containers"),
    ("the abstract base", _bp("Module", {}), r"'Module' is not one of minidl's layers"),
    ("an argument the class does not take", _linear(__class__="x"), r"net\.fc: Linear takes no argument '__class__'"),
    ("an object as an argument", _linear(wscale={"a": 1}), r"net\.fc: argument 'wscale' is \{'a': 1\}"),
    ("a required argument missing", _bp("Linear", {"insize": 3}), r"Linear needs argument\(s\) outsize"),
    ("a value the constructor refuses", _linear(insize=-3), r"net\.fc: Linear\(.*\) fails: ValueError: Linear: "
                                                            r"insize must be"),
    ("NaN", _linear(wscale=float("nan")), r"NaN is not a JSON number"),
    ("duplicate keys", '{"classname": "Linear", "classname": "Conv2D", "scheme": {}}', "appears twice"),
    ("not JSON", "{'classname': Linear}", r"bad blueprint: Expecting property name"),
    ("not an object", "[1, 2]", r"expected \{\"classname\": str, \"scheme\": \{\.\.\.\}\}, got \[1, 2\]"),
    ("deep nesting", "[" * 100000 + "]" * 100000, "nests deeper than 64 levels"),
    ("graph and modules disagree", _bp("Sequential", {"name": "net"}, graph=["fc", "fc"], modules={
        "fc": {"classname": "Identity", "scheme": {"name": "fc"}}}), r"must list each key of \"modules\" once"),
    ("a child named apart from its key", _bp("Sequential", {"name": "net"}, graph=["fc"], modules={
        "fc": {"classname": "Identity", "scheme": {"name": "other"}}}), r"child 'fc' is named 'other'"),
    ("weights for another shape", _linear(outsize=4), r"parameter 'fc\.W': shape mismatch, model has \(3, 4\)"),
    ("a model larger than the file could hold", _linear(insize=300000, outsize=100000),
     r"asks for more memory than a file of its size can hold weights for"),
]


@pytest.mark.parametrize("text,message", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_blueprints_raise_load_error(backend, text, message):
    start = time.perf_counter()
    with pytest.raises(LoadError, match=message):
        minidl.load(_withBlueprint(_tiny().save(withBlueprint=False), text))
    assert time.perf_counter() - start < 5, "refused before building anything large"


def test_blueprint_storage_is_checked(backend, tmp_path):
    blob = _tiny().save(withBlueprint=False)
    with pytest.raises(LoadError, match="/blueprint is stored as int64, expected a string"):
        minidl.load(_withBlueprint(blob, 5, np.int64))
    with pytest.raises(LoadError, match=r"/blueprint holds an array of shape \(2,\), expected one value"):
        minidl.load(_withBlueprint(blob, [b"{}", b"{}"], "S2"))
    # a fixed-length string never written: it takes no room in the file, yet reading it would
    # allocate its declared length (here 400 MB from a file of a few KB)
    for size, message in ((400_000_000, "declares a string of 400000000 bytes, more than the 16777216 allowed"),
                          (100, "has no stored value")):
        buf = _image(blob)
        with h5py.File(buf, "a") as f:
            stringType = h5py.h5t.C_S1.copy()
            stringType.set_size(size)
            h5py.h5d.create(f.id, b"blueprint", stringType, h5py.h5s.create(h5py.h5s.SCALAR))
        with pytest.raises(LoadError, match=message):
            minidl.load(buf.getvalue())
    with pytest.raises(LoadError, match="is not UTF-8"):
        minidl.load(_withBlueprint(blob, np.bytes_(b"\xff\xfe"), "S2"))
    with pytest.raises(LoadError, match="more than the 16777216 allowed"):
        minidl.load(_withBlueprint(blob, " " * (16 << 20) + "{}"))
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["text"] = "{}"
    buf = _image(blob)
    with h5py.File(buf, "a") as f:
        f["blueprint"] = h5py.ExternalLink(str(other), "text")
    with pytest.raises(LoadError, match="external link.*minidl does not read other files"):
        minidl.load(buf.getvalue())
    with pytest.raises(LoadError, match="not a readable HDF5 file"):
        minidl.load(b"not hdf5 at all")
