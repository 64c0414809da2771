"""minidl.interop: state dicts from and to PyTorch (.pt/.pth) and safetensors.

The PyTorch twins below are written by hand with plain torch.nn so that their state-dict
names are torchvision's mobilenet_v2 (and the common MobileNetV1 layout the interop docs
state). Forward parity: minidl's float32 output against the twin run in float64 on the same
float32 weights, as max|minidl - ref| / max|ref| (the error relative to the output's scale,
so one number reads the same for every model and class count), required below 1e-5: float32
rounding over ~50 layers gives about 1e-6 (torch's own float32 output measures the same, and
is printed beside it); a misplaced weight gives O(1). ``pytest -s`` prints every measured error.
"""

import copy
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from emulation import cudaEmulated
from minidl.backend import gpuarray
from minidl.containers import Sequential
from minidl.errors import LoadError
from minidl.interop import (
    Target, exportStateDict, loadMobileNetV1Weights, loadMobileNetV2Weights, loadStateDict, loadWeights,
    mobileNetV1Mapping, mobileNetV2Mapping, readStateDict, saveMobileNetV1Safetensors, saveMobileNetV2Safetensors,
    saveSafetensors,
)
from minidl.models import loadMobileNetV1, loadMobileNetV2
from minidl.modules import Activation, BatchNorm2D, Conv2D, Flatten, Linear

safetensorsNumpy = pytest.importorskip("safetensors.numpy")

TOLERANCE = 1e-5


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def _skipWhenEmulated(backend):
    if backend == "cuda" and cudaEmulated():
        pytest.skip("big convolutions are too slow on the CPU execution of CUDA; the NumPy run covers this")


# ---- the PyTorch twins (torchvision's names, built by hand) ---------------------------------------

def _roundTo8(v):
    """torchvision's channel rounding: nearest multiple of 8, at least 8, never more than 10% down."""
    rounded = max(8, (int(v + 4) // 8) * 8)
    return rounded + 8 if rounded < 0.9 * v else rounded


def _firstStrideTwoToOne(strides):
    strides = list(strides)
    strides[strides.index(2)] = 1
    return strides


def _twinV2(torch, width, numClasses, smallInput):
    nn = torch.nn

    def convBnAct(inp, out, size, stride=1, groups=1):
        return nn.Sequential(nn.Conv2d(inp, out, size, stride, size // 2, groups=groups, bias=False),
                             nn.BatchNorm2d(out), nn.ReLU6(inplace=True))

    class InvertedResidual(nn.Module):
        def __init__(self, inp, out, stride, expand):
            super().__init__()
            hidden = inp * expand
            layers = [] if expand == 1 else [convBnAct(inp, hidden, 1)]
            layers += [convBnAct(hidden, hidden, 3, stride, groups=hidden),
                       nn.Conv2d(hidden, out, 1, bias=False), nn.BatchNorm2d(out)]
            self.conv = nn.Sequential(*layers)
            self.shortcut = stride == 1 and inp == out

        def forward(self, x):
            return x + self.conv(x) if self.shortcut else self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self):
            super().__init__()
            settings = [(t, c, s if r == 0 else 1) for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2),
                        (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)] for r in range(n)]
            strides = [s for _, _, s in settings]
            if smallInput:
                strides = _firstStrideTwoToOne(strides)
            maps = _roundTo8(32 * width)
            layers = [convBnAct(3, maps, 3, 1 if smallInput else 2)]
            for (t, c, _), stride in zip(settings, strides):
                layers.append(InvertedResidual(maps, _roundTo8(c * width), stride, t))
                maps = _roundTo8(c * width)
            last = _roundTo8(1280 * max(1.0, width))
            layers.append(convBnAct(maps, last, 1))
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, numClasses))

        def forward(self, x):
            return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))

    return MobileNetV2()


def _twinV1(torch, width, numClasses, smallInput):
    """The common PyTorch MobileNetV1: self.model = Sequential(conv_bn, 13 x conv_dw, pool), self.fc."""
    nn = torch.nn

    def convBn(inp, out, stride):
        return nn.Sequential(nn.Conv2d(inp, out, 3, stride, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True))

    def convDw(inp, out, stride):
        return nn.Sequential(nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False), nn.BatchNorm2d(inp),
                             nn.ReLU(inplace=True),
                             nn.Conv2d(inp, out, 1, 1, 0, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True))

    class MobileNetV1(nn.Module):
        def __init__(self):
            super().__init__()
            blocks = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2),
                                                                                                    (1024, 1)]
            strides = [s for _, s in blocks]
            if smallInput:
                strides = _firstStrideTwoToOne(strides)
            maps = int(32 * width)
            layers = [convBn(3, maps, 1 if smallInput else 2)]
            for (c, _), stride in zip(blocks, strides):
                layers.append(convDw(maps, int(c * width), stride))
                maps = int(c * width)
            layers.append(nn.AdaptiveAvgPool2d(1))
            self.model = nn.Sequential(*layers)
            self.fc = nn.Linear(maps, numClasses)

        def forward(self, x):
            return self.fc(torch.flatten(self.model(x), 1))

    return MobileNetV1()


def _prepared(torch, twin, inshape, seed):
    """twin with random batch-norm affine values and running statistics gathered on random batches
    (so no batch norm is the identity, yet activations keep their scale), in eval mode.

    Each running variance then gets 0.3 of its layer's mean added: a channel that ReLU almost
    never activates has a tiny variance and would multiply float32 rounding a thousandfold (with
    the bare statistics torch's own float32 output is off by up to 1e-5, with the floor ~5e-7)."""
    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in twin.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in norms:
            bn.weight.uniform_(0.5, 1.5, generator=gen)
            bn.bias.normal_(0.0, 0.2, generator=gen)
            bn.reset_running_stats()
            bn.momentum = None                  # cumulative average over the calibration batches
        twin.train()
        for _ in range(2):
            twin(torch.randn(inshape, generator=gen))
        for bn in norms:
            bn.running_var.add_(0.3 * bn.running_var.mean())
    return twin.eval()


def _reference(torch, twin, x):
    """(float64 output, float32 output) of twin on x (numpy float32)."""
    with torch.no_grad():
        ref = copy.deepcopy(twin).double()(torch.from_numpy(x).double()).numpy()
        single = twin(torch.from_numpy(x)).numpy()
    return ref, single


def _relError(out, ref):
    return float(np.max(np.abs(out - ref)) / np.max(np.abs(ref)))


def _saveBoth(torch, stateDict, folder, wrapper=None):
    """The state dict as .pt (inside {wrapper: ...} when given) and .safetensors; their paths."""
    import safetensors.torch
    pt, st = os.path.join(folder, "weights.pth"), os.path.join(folder, "weights.safetensors")
    torch.save(stateDict if wrapper is None else {"epoch": 3, wrapper: stateDict}, pt)
    safetensors.torch.save_file(stateDict, st)
    return [pt, st]


# ---- MobileNetV2 (torchvision's names) -------------------------------------------------------------

def test_v2_twin_names_are_torchvisions(torch):
    twin = _twinV2(torch, 1.0, 1000, False)
    names = list(twin.state_dict())
    assert len(names) == 314 and sum(p.numel() for p in twin.parameters()) == 3504872
    for name in ["features.0.0.weight", "features.0.1.num_batches_tracked", "features.1.conv.0.0.weight",
                 "features.1.conv.0.1.running_var", "features.1.conv.1.weight", "features.1.conv.2.bias",
                 "features.2.conv.0.0.weight", "features.2.conv.1.0.weight", "features.2.conv.2.weight",
                 "features.2.conv.3.running_mean", "features.17.conv.3.weight", "features.18.0.weight",
                 "features.18.1.bias", "classifier.1.weight", "classifier.1.bias"]:
        assert name in names, name
    assert "features.1.conv.3.weight" not in names and "classifier.0.weight" not in names
    for width, smallInput in [(1.0, False), (0.5, True), (1.4, False)]:
        mapping = mobileNetV2Mapping(loadMobileNetV2(width, numClasses=10, smallInput=smallInput))
        assert list(mapping) == list(_twinV2(torch, width, 10, smallInput).state_dict())


@pytest.mark.parametrize("width", [0.5, 1.0], ids=["w0.5", "w1.0"])
def test_v2_torch_weights_load_and_match(backend, torch, tmp_path, width):
    if width == 1.0:
        _skipWhenEmulated(backend)
    torch.manual_seed(1)
    twin = _prepared(torch, _twinV2(torch, width, 10, True), (4, 3, 32, 32), seed=2)
    x = np.random.rand(2, 3, 32, 32).astype(np.float32)
    ref, single = _reference(torch, twin, x)
    for path in _saveBoth(torch, twin.state_dict(), str(tmp_path)):
        net = loadMobileNetV2(width, numClasses=10, smallInput=True)
        report = loadMobileNetV2Weights(net, path)
        assert len(report.loaded) == 262 and len(report.ignored) == 52 and not report.nonFinite
        net.evalMode()
        err = _relError(net(gpuarray.to_gpu(x)).get(), ref)
        print("\ninterop V2 width %s 32x32 %s (%s): minidl rel err %.2e (torch float32: %.2e)"
              % (width, os.path.splitext(path)[1], backend, err, _relError(single, ref)))
        assert err < TOLERANCE


def test_v2_torch_weights_at_224(backend, torch, tmp_path):
    _skipWhenEmulated(backend)
    torch.manual_seed(3)
    twin = _prepared(torch, _twinV2(torch, 1.0, 1000, False), (2, 3, 224, 224), seed=4)
    x = np.random.rand(1, 3, 224, 224).astype(np.float32)
    ref, single = _reference(torch, twin, x)
    path = _saveBoth(torch, twin.state_dict(), str(tmp_path), wrapper="state_dict")[0]
    net = loadMobileNetV2(1.0, numClasses=1000)
    loadMobileNetV2Weights(net, path)
    net.evalMode()
    err = _relError(net(gpuarray.to_gpu(x)).get(), ref)
    print("\ninterop V2 width 1.0 224x224 1000 classes .pth (%s): minidl rel err %.2e (torch float32: %.2e)"
          % (backend, err, _relError(single, ref)))
    assert err < TOLERANCE


def _calibrated(net, inshape):
    """A minidl MobileNet whose batch norms have random biases and statistics from two random batches
    (variances raised by 0.3 of their layer's mean, as _prepared says why)."""
    norms = [mod for _, mod in _leaves(net) if isinstance(mod, BatchNorm2D)]
    for bn in norms:
        bn.vars["bias"].data.set(np.random.normal(0, 0.2, bn.bias.shape).astype(np.float32))
    for _ in range(2):
        net(gpuarray.to_gpu(np.random.rand(*inshape).astype(np.float32)))
    for bn in norms:
        var = bn.var.get()
        bn.var.set(var + np.float32(0.3) * var.mean())
    net.evalMode()
    return net


def _leaves(mod, prefix=""):
    children = getattr(mod, "modules", None)
    if not isinstance(children, dict):
        yield prefix.rstrip("."), mod
        return
    for name, child in children.items():
        yield from _leaves(child, prefix + name + ".")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_minidl_weights_export_to_torch_strict(backend, torch, tmp_path, version):
    import safetensors.torch
    builder, twinOf, save = {"v1": (loadMobileNetV1, _twinV1, saveMobileNetV1Safetensors),
                             "v2": (loadMobileNetV2, _twinV2, saveMobileNetV2Safetensors)}[version]
    net = _calibrated(builder(0.5, numClasses=10, smallInput=True), (4, 3, 32, 32))
    path = str(tmp_path / "out.safetensors")
    names = save(net, path)
    twin = twinOf(torch, 0.5, 10, True)
    assert names == list(twin.state_dict())
    stateDict = safetensors.torch.load_file(path)
    assert {str(t.dtype) for t in stateDict.values()} == {"torch.float32", "torch.int64"}
    assert twin.load_state_dict(stateDict, strict=True)
    twin.eval()
    x = np.random.rand(2, 3, 32, 32).astype(np.float32)
    ref, single = _reference(torch, twin, x)
    err = _relError(net(gpuarray.to_gpu(x)).get(), ref)
    print("\ninterop %s width 0.5 32x32 minidl -> safetensors -> torch (%s): minidl rel err %.2e (torch float32: %.2e)"
          % (version, backend, err, _relError(single, ref)))
    assert err < TOLERANCE
    again = builder(0.5, numClasses=10, smallInput=True)
    loadWeights(again, path, (mobileNetV1Mapping if version == "v1" else mobileNetV2Mapping)(again))
    assert _snapshot(again) == _snapshot(net), "export then load gives back every value bit for bit"


# ---- MobileNetV1 (the common PyTorch layout) -------------------------------------------------------

def test_v1_torch_weights_load_and_match(backend, torch, tmp_path):
    torch.manual_seed(5)
    twin = _prepared(torch, _twinV1(torch, 0.5, 10, True), (4, 3, 32, 32), seed=6)
    names = list(twin.state_dict())
    assert names[:7] == ["model.0.0.weight", "model.0.1.weight", "model.0.1.bias", "model.0.1.running_mean",
                         "model.0.1.running_var", "model.0.1.num_batches_tracked", "model.1.0.weight"]
    assert "model.1.3.weight" in names and "model.13.4.running_var" in names and names[-2:] == ["fc.weight", "fc.bias"]
    assert list(mobileNetV1Mapping(loadMobileNetV1(0.5, numClasses=10, smallInput=True))) == names
    x = np.random.rand(2, 3, 32, 32).astype(np.float32)
    ref, single = _reference(torch, twin, x)
    for path in _saveBoth(torch, twin.state_dict(), str(tmp_path), wrapper="model"):
        net = loadMobileNetV1(0.5, numClasses=10, smallInput=True)
        report = loadMobileNetV1Weights(net, path)
        assert len(report.loaded) == 27 + 27 * 4 + 2 and len(report.ignored) == 27
        net.evalMode()
        err = _relError(net(gpuarray.to_gpu(x)).get(), ref)
        print("\ninterop V1 width 0.5 32x32 %s (%s): minidl rel err %.2e (torch float32: %.2e)"
              % (os.path.splitext(path)[1], backend, err, _relError(single, ref)))
        assert err < TOLERANCE


# ---- loadStateDict on a small model ----------------------------------------------------------------

def _small():
    net = Sequential("small")
    net.append(Conv2D(3, 4, 3, pad=1, name="conv"))
    net.append(BatchNorm2D(4, name="bn"))
    net.append(Activation("relu", name="act"))
    net.append(Flatten(name="flat"))
    net.append(Linear(4 * 5 * 5, 3, name="fc"))
    return net


SMALL_MAPPING = {
    "0.weight": ("conv.W", "var"), "0.bias": ("conv.b", "var", "maps"),
    "1.weight": ("bn.scale", "var", "maps"), "1.bias": ("bn.bias", "var", "maps"),
    "1.running_mean": ("bn.mean", "attr", "maps"), "1.running_var": ("bn.var", "attr", "maps"),
    "1.num_batches_tracked": None,
    "4.weight": ("fc.W", "var", "transpose"), "4.bias": ("fc.b", "var"),
}


def _smallState(dtype=np.float32):
    rng = np.random.default_rng(7)
    shapes = {"0.weight": (4, 3, 3, 3), "0.bias": (4,), "1.weight": (4,), "1.bias": (4,), "1.running_mean": (4,),
              "4.weight": (3, 100), "4.bias": (3,)}
    state = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    state["1.running_var"] = rng.uniform(0.5, 2.0, 4).astype(dtype)
    state["1.num_batches_tracked"] = np.array(12, np.int64)
    return state


def _snapshot(net):
    """Every var and attr as (dtype, shape, bytes): equal snapshots mean byte-identical models."""
    return {("var", n): (v.data.dtype, v.data.shape, v.data.get().tobytes()) for n, v in net.namedVars()} | \
           {("attr", n): (a.dtype, a.shape, a.get().tobytes()) for n, a in net.namedAttrs()}


def test_load_state_dict_small_model(backend):
    net = _small()
    state = _smallState(np.float64)
    state["0.weight"] = state["0.weight"].astype(np.float16)
    report = loadStateDict(net, state, SMALL_MAPPING)
    assert np.array_equal(net["conv"].W.get(), state["0.weight"].astype(np.float32))
    assert np.array_equal(net["conv"].b.get(), state["0.bias"].astype(np.float32).reshape(1, 4, 1, 1))
    assert np.array_equal(net["fc"].W.get(), state["4.weight"].astype(np.float32).T)
    assert np.array_equal(net["bn"].var.get(), state["1.running_var"].astype(np.float32).reshape(1, 4, 1, 1))
    assert net["fc"].W.dtype == np.float32
    assert [e.source for e in report.loaded] == [k for k in SMALL_MAPPING if k != "1.num_batches_tracked"]
    assert report.ignored == ["1.num_batches_tracked"] and not (report.missing or report.unexpected)
    text = str(report)
    assert text.splitlines()[0] == "Sequential 'small' <- a state dict: 8 values loaded, 1 ignored"
    assert "4.weight -> var 'fc.W' (transpose): (100, 3)" in text and "ignored (1): 1.num_batches_tracked" in text
    # the exported dict is the source again, in float32
    out = exportStateDict(net, SMALL_MAPPING)
    assert list(out) == [k for k in SMALL_MAPPING if k != "1.num_batches_tracked"]
    for k, v in out.items():
        assert v.dtype == np.float32 and np.array_equal(v, state[k].astype(np.float32)), k


def test_small_model_matches_torch(backend, torch):
    nn = torch.nn
    torch.manual_seed(8)
    twin = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(100, 3))
    twin = _prepared(torch, twin, (4, 3, 5, 5), seed=9)
    net = _small()
    loadStateDict(net, twin.state_dict(), SMALL_MAPPING)            # torch tensors directly
    net.evalMode()
    x = np.random.rand(2, 3, 5, 5).astype(np.float32)
    ref, _ = _reference(torch, twin, x)
    assert _relError(net(gpuarray.to_gpu(x)).get(), ref) < TOLERANCE
    bf16 = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in twin.state_dict().items()}
    loadStateDict(net, bf16, SMALL_MAPPING)
    assert np.array_equal(net["fc"].W.get(), bf16["4.weight"].float().numpy().T)


def test_not_strict_lists_missing_unexpected_and_unmapped(backend):
    net = _small()
    before = _snapshot(net)
    state = _smallState()
    del state["4.bias"]
    state["extra.weight"] = np.zeros(3, np.float32)
    mapping = {k: v for k, v in SMALL_MAPPING.items() if k != "1.running_var"}
    del state["1.running_var"]
    report = loadStateDict(net, state, mapping, strict=False)
    assert report.missing == ["4.bias"] and report.unexpected == ["extra.weight"]
    assert report.uncovered == ["attr 'bn.var'"]
    after = _snapshot(net)
    assert after[("var", "fc.b")] == before[("var", "fc.b")] and after[("attr", "bn.var")] == before[("attr", "bn.var")]
    assert after[("var", "fc.W")] != before[("var", "fc.W")]
    assert "missing from the source, kept (1): 4.bias" in str(report)


def test_non_finite_values_load_as_they_are_and_are_reported(backend):
    net = _small()
    state = _smallState()
    state["0.weight"][0, 0, 0, :] = [np.nan, np.inf, -np.inf]
    report = loadStateDict(net, state, SMALL_MAPPING)
    W = net["conv"].W.get()
    assert np.isnan(W[0, 0, 0, 0]) and W[0, 0, 0, 1] == np.inf and W[0, 0, 0, 2] == -np.inf
    assert report.nonFinite == {"0.weight": 3} and "NaN/Inf loaded as they are: 0.weight (3)" in str(report)


# ---- failures: one LoadError listing every problem, the model byte-identical -----------------------

def _assertRefused(net, load, *patterns):
    before = _snapshot(net)
    with pytest.raises(LoadError, match="model left unchanged|cannot load weights from") as info:
        load()
    for pattern in patterns:
        assert pattern in str(info.value), (pattern, str(info.value))
    assert _snapshot(net) == before
    return str(info.value)


def test_state_dict_problems_are_listed_together(backend):
    net = _small()
    state = _smallState()
    del state["0.bias"]
    state["2.weight"] = np.zeros(3, np.float32)
    state["4.weight"] = state["4.weight"][:, :50]
    state["1.running_var"] = np.arange(4)
    state["1.running_mean"] = np.full(4, 1e300)
    text = _assertRefused(net, lambda: loadStateDict(net, state, SMALL_MAPPING),
                          "Sequential 'small': cannot load a state dict, model left unchanged (5 problems)",
                          "'0.bias' -> var 'conv.b' (maps): missing from a state dict",
                          "'2.weight': unexpected in a state dict (not in the mapping)",
                          "'4.weight' -> var 'fc.W' (transpose): expected shape (3, 100) (the model's (100, 3) by "
                          "transpose), got (3, 50)",
                          "'1.running_var' -> attr 'bn.var' (maps): dtype int64 refused",
                          "4 finite float64 values are beyond float32's range")
    assert "1.weight" not in text


@pytest.mark.parametrize("case", ["missing", "unexpected", "shape", "int", "bool"])
def test_each_problem_alone_leaves_the_model_unchanged(backend, case):
    net = _small()
    state = _smallState()
    if case == "missing":
        del state["1.bias"]
    elif case == "unexpected":
        state["5.weight"] = np.zeros(3, np.float32)
    elif case == "shape":
        state["0.weight"] = np.zeros((4, 3, 5, 5), np.float32)
    else:
        state["0.weight"] = state["0.weight"].astype(np.int32 if case == "int" else bool)
    _assertRefused(net, lambda: loadStateDict(net, state, SMALL_MAPPING), "(1 problem)")


def test_mapping_problems(backend):
    net = _small()
    state = _smallState()
    bad = dict(SMALL_MAPPING, **{"0.weight": ("conv.V", "var"), "4.bias": ("fc.W", "var"),
                                 "1.weight": ("bn.scale", "var", "transpose")})
    _assertRefused(net, lambda: loadStateDict(net, state, bad), "'0.weight' -> var 'conv.V': the model has no such var",
                   "'4.bias' -> var 'fc.W': '4.weight' maps there too",
                   "transform 'transpose' does not fit the model's shape (1, 4, 1, 1)",
                   "model var 'conv.W': no source name maps to it", "model var 'fc.b': no source name maps to it")
    with pytest.raises(ValueError, match=r"mapping\['0.weight'\]: unknown transform 'flip'"):
        loadStateDict(net, state, dict(SMALL_MAPPING, **{"0.weight": ("conv.W", "var", "flip")}))
    with pytest.raises(ValueError, match=r"mapping\['0.weight'\]: unknown kind 'param'"):
        loadStateDict(net, state, dict(SMALL_MAPPING, **{"0.weight": ("conv.W", "param")}))
    with pytest.raises(ValueError, match="cannot export"):
        exportStateDict(net, {"0.weight": Target("conv.W", "var")})
    with pytest.raises(ValueError, match="'conv': expected conv, batch norm\\[, activation\\] stages"):
        mobileNetV2Mapping(net)
    with pytest.raises(ValueError, match="expected the Sequential a MobileNet builder returns, got Linear"):
        mobileNetV1Mapping(Linear(2, 2))
    with pytest.raises(LoadError, match="expected a dict {name: array}, got list"):
        loadStateDict(net, [1, 2], SMALL_MAPPING)
    _assertRefused(net, lambda: loadStateDict(net, dict(state, **{"0.bias": [0.0] * 4}), SMALL_MAPPING),
                   "expected a numpy array or a torch tensor, got list")


def test_a_bad_mobilenet_file_leaves_the_model_unchanged(backend, torch, tmp_path):
    torch.manual_seed(10)
    stateDict = _twinV2(torch, 0.5, 10, True).state_dict()
    net = loadMobileNetV2(0.5, numClasses=10, smallInput=True)
    cases = {
        "missing": ({k: v for k, v in stateDict.items() if k != "features.3.conv.1.0.weight"},
                    "'features.3.conv.1.0.weight' -> var 'block3.branches.body.dw.W': missing from"),
        "unexpected": (dict(stateDict, **{"features.19.0.weight": torch.zeros(1)}),
                       "'features.19.0.weight': unexpected in"),
        "shape": (dict(stateDict, **{"classifier.1.weight": torch.zeros(100, 1280)}),
                  "'classifier.1.weight' -> var 'fc.W' (transpose): expected shape (10, 1280)"),
        "int": (dict(stateDict, **{"features.0.1.running_var": torch.ones(16, dtype=torch.int64)}),
                "'features.0.1.running_var' -> attr 'stem.convbn.var' (maps): dtype int64 refused"),
    }
    for case, (state, pattern) in cases.items():
        for path in _saveBoth(torch, state, str(tmp_path)):
            _assertRefused(net, lambda: loadMobileNetV2Weights(net, path), "cannot load %r" % path, pattern)
    v1 = loadMobileNetV1(0.5, numClasses=10, smallInput=True)
    path = _saveBoth(torch, stateDict, str(tmp_path))[1]
    text = _assertRefused(v1, lambda: loadMobileNetV1Weights(v1, path), "'features.0.0.weight': unexpected",
                          "'model.0.0.weight' -> var 'stem.conv.W': missing")
    assert text.count("\n") > 300, "every problem is listed"


_ran = []


def _mark():
    _ran.append(True)
    return {}


class _Payload:
    """Unpickling this would call _mark: weights_only must refuse it before anything runs."""

    def __reduce__(self):
        return (_mark, ())


def test_files_that_are_not_state_dicts(backend, torch, tmp_path, monkeypatch):
    net = _small()

    def refused(name, obj, pattern):
        path = str(tmp_path / name)
        if isinstance(obj, bytes):
            with open(path, "wb") as f:
                f.write(obj)
        elif obj is not None:
            torch.save(obj, path)
        _assertRefused(net, lambda: loadWeights(net, path, SMALL_MAPPING), "cannot load weights from %r" % path,
                       pattern)

    refused("list.pt", [torch.zeros(2)], "not a state dict: the file holds a list")
    refused("epoch.pt", {"epoch": 3, "optimizer": {}},
            "entries 'epoch', 'optimizer' are not tensors, and no 'state_dict' or 'model' entry")
    refused("module.pt", {"model": torch.nn.Linear(2, 2)},
            "torch.load(weights_only=True) refused it: Unsupported global: GLOBAL torch.nn.modules.linear.Linear")
    refused("code.pth", {"w": _Payload()}, "torch.load(weights_only=True) refused it")
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")    # overrides only a weights_only left unset
    refused("code.pth", None, "torch.load(weights_only=True) refused it")
    assert not _ran, "loading never runs code from the file"
    refused("garbage.pt", b"not a pickle at all", "not a readable PyTorch file")
    refused("garbage.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{bad json", "not a readable safetensors file")
    refused("absent.safetensors", None, "not a readable safetensors file")
    refused("absent.pt", None, "not a readable PyTorch file")
    refused("weights.h5", b"", "unknown extension '.h5', expected one of .pt, .pth, .safetensors")
    torch.save(pickle.dumps(1), str(tmp_path / "bytes.pt"))
    refused("bytes.pt", None, "the file holds a bytes")


def test_safetensors_without_torch(backend, tmp_path, monkeypatch):
    net = _small()
    path = str(tmp_path / "small.safetensors")
    safetensorsNumpy.save_file(_smallState(), path)
    monkeypatch.setitem(sys.modules, "torch", None)                 # "import torch" now fails
    assert sorted(readStateDict(path)) == sorted(_smallState())
    loadWeights(net, path, SMALL_MAPPING)
    assert np.array_equal(net["fc"].b.get(), _smallState()["4.bias"])
    with pytest.raises(ImportError, match=r"needs PyTorch \(pip install torch\)"):
        loadWeights(net, str(tmp_path / "small.pt"), SMALL_MAPPING)
    code = "import sys, minidl.interop; assert 'torch' not in sys.modules and 'safetensors' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_save_safetensors_replaces_atomically(backend, tmp_path):
    net = _small()
    loadStateDict(net, _smallState(), SMALL_MAPPING)
    path = tmp_path / "small.safetensors"
    path.write_bytes(b"old contents")
    os.chmod(path, 0o640)
    names = saveSafetensors(net, str(path), SMALL_MAPPING)
    assert names == [k for k in SMALL_MAPPING if k != "1.num_batches_tracked"]
    assert os.stat(path).st_mode & 0o777 == 0o640 and os.listdir(tmp_path) == ["small.safetensors"]
    saved = safetensorsNumpy.load_file(str(path))
    assert np.array_equal(saved["4.weight"], _smallState()["4.weight"])
    with pytest.raises(FileNotFoundError):
        saveSafetensors(net, str(tmp_path / "nofolder" / "x.safetensors"), SMALL_MAPPING)
