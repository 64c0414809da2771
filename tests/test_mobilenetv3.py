"""MobileNetV3: torchvision's parameter counts, the small-input variant, save/load and blueprints, and
the whole model against a PyTorch twin written here with plain torch.nn (torchvision's layout, not
its code: nothing here imports torchvision) with the same weights, forward and backward.

Twin comparison: minidl in float32 against the twin in float64, both fed one input and one output
gradient. Where a pre-activation sits at a kink of ReLU, hard swish or hard sigmoid, float32 and
float64 can land on different sides, and one derivative element would then differ and spread; so
each of the twin's activations differentiates as at minidl's own pre-activation (the forward is
continuous and compared as it is). Tolerances (max |minidl - twin| over max |twin|, per tensor; for
a parameter gradient over the largest |twin| among its layer's gradients): FORWARD_TOL for outputs,
GRAD_TOL for the input gradient and every parameter gradient.
"""

import io

import numpy as np
import pytest

import minidl
from minidl.backend import gpuarray
from minidl.containers import Graph, Sequential
from minidl.models import loadMobileNetV3
from minidl.modules import Activation, BatchNorm2D, Conv2D, Linear

FORWARD_TOL = 1e-5
GRAD_TOL = 1e-4


def _leaves(mod, prefix=""):
    children = getattr(mod, "modules", None)
    if children is None:
        yield prefix.rstrip("."), mod
        return
    for name, child in children.items():
        yield from _leaves(child, prefix + name + ".")


def test_parameter_counts_match_torchvision():
    assert loadMobileNetV3("large").numOfParams() == 5483032     # torchvision mobilenet_v3_large
    assert loadMobileNetV3("small").numOfParams() == 2542856     # torchvision mobilenet_v3_small


def test_layout_strides_and_shapes(backend):
    big = loadMobileNetV3("small", width=0.5, numClasses=10)
    assert big.dataShapeFrom((1, 3, 224, 224)) == (1, 10)
    assert sum(isinstance(m, Conv2D) and m.stride == (2, 2) for _, m in _leaves(big)) == 5
    net = loadMobileNetV3("small", width=0.5, numClasses=10, smallInput=True)
    assert net["stem.conv"].stride == (1, 1) and net["block1.dw"].stride == (1, 1)
    assert sum(isinstance(m, Conv2D) and m.stride == (2, 2) for _, m in _leaves(net)) == 3
    x = gpuarray.to_gpu(np.random.rand(2, 3, 32, 32).astype(np.float32))
    assert net(x).shape == (2, 10) == net.dataShapeFrom((2, 3, 32, 32))
    assert net["last.conv"].data.shape == (2, 6 * 48, 4, 4)
    # residual blocks are Graphs, squeeze-and-excitation too; BN as torchvision's (eps 1e-3, momentum 0.01)
    assert isinstance(net["block5"], Graph) and isinstance(net["block4"], Sequential)
    assert isinstance(net["block4.se"], Graph) and net["block4.se.fc1"].W.shape == (16, 48, 1, 1)
    assert all(m.epsilon == 1e-3 and m.minFactor == 0.01 for _, m in _leaves(net) if isinstance(m, BatchNorm2D))
    with pytest.raises(ValueError, match="kind must be 'large' or 'small', got 'medium'"):
        loadMobileNetV3("medium")
    with pytest.raises(ValueError, match="loadMobileNetV3: width must be > 0"):
        loadMobileNetV3(width=0)


def test_save_load_blueprint_and_summary(backend):
    net = loadMobileNetV3("small", width=0.35, numClasses=7, smallInput=True)
    model = minidl.load(net.save())
    assert str(model) == str(net) and model.numOfParams() == net.numOfParams()
    x = gpuarray.to_gpu(np.random.rand(2, 3, 32, 32).astype(np.float32))
    net.evalMode()
    model.evalMode()
    assert np.array_equal(model(x).get(), net(x).get())
    out = io.StringIO()
    totals = net.summary((2, 3, 32, 32), file=out)
    assert totals["params"] == net.numOfParams() and "mobilenetv3.block4.se.fc1" in out.getvalue()


# ---- the twin ---------------------------------------------------------------------------------------

def _twinModel(torch, kind, width, numClasses, smallInput, dropout):
    """torchvision's MobileNetV3 layout, written out with torch.nn (float64)."""
    nn = torch.nn

    def divisible(v):      # torchvision's _make_divisible with divisor 8
        out = max(8, int(v + 4) // 8 * 8)
        return out + 8 if out < 0.9 * v else out

    def convBN(cin, cout, k, stride=1, groups=1, act=None):
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(cout, eps=0.001, momentum=0.01)]
        return nn.Sequential(*layers, act()) if act is not None else nn.Sequential(*layers)

    class SqueezeExcite(nn.Module):
        def __init__(self, maps):
            super().__init__()
            squeeze = divisible(maps // 4)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc1, self.relu = nn.Conv2d(maps, squeeze, 1), nn.ReLU()
            self.fc2, self.gate = nn.Conv2d(squeeze, maps, 1), nn.Hardsigmoid()

        def forward(self, x):
            return x * self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))

    class Block(nn.Module):
        def __init__(self, cin, k, expanded, cout, se, act, stride):
            super().__init__()
            layers = [convBN(cin, expanded, 1, act=act)] if expanded != cin else []
            layers.append(convBN(expanded, expanded, k, stride, groups=expanded, act=act))
            if se:
                layers.append(SqueezeExcite(expanded))
            layers.append(convBN(expanded, cout, 1))
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.body(x) if self.residual else self.body(x)

    RE, HS = nn.ReLU, nn.Hardswish
    # (input, kernel, expanded, output, SE, activation, stride) as torchvision's bneck_conf lists them
    if kind == "large":
        table = [(16, 3, 16, 16, False, RE, 1), (16, 3, 64, 24, False, RE, 2), (24, 3, 72, 24, False, RE, 1),
                 (24, 5, 72, 40, True, RE, 2), (40, 5, 120, 40, True, RE, 1), (40, 5, 120, 40, True, RE, 1),
                 (40, 3, 240, 80, False, HS, 2), (80, 3, 200, 80, False, HS, 1), (80, 3, 184, 80, False, HS, 1),
                 (80, 3, 184, 80, False, HS, 1), (80, 3, 480, 112, True, HS, 1), (112, 3, 672, 112, True, HS, 1),
                 (112, 5, 672, 160, True, HS, 2), (160, 5, 960, 160, True, HS, 1), (160, 5, 960, 160, True, HS, 1)]
        hidden = 1280
    else:
        table = [(16, 3, 16, 16, True, RE, 2), (16, 3, 72, 24, False, RE, 2), (24, 3, 88, 24, False, RE, 1),
                 (24, 5, 96, 40, True, HS, 2), (40, 5, 240, 40, True, HS, 1), (40, 5, 240, 40, True, HS, 1),
                 (40, 5, 120, 48, True, HS, 1), (48, 5, 144, 48, True, HS, 1), (48, 5, 288, 96, True, HS, 2),
                 (96, 5, 576, 96, True, HS, 1), (96, 5, 576, 96, True, HS, 1)]
        hidden = 1024
    features = [convBN(3, divisible(16 * width), 3, 1 if smallInput else 2, act=HS)]
    firstStride2 = True
    for cin, k, expanded, cout, se, act, stride in table:
        if smallInput and stride == 2 and firstStride2:
            stride, firstStride2 = 1, False
        features.append(Block(divisible(cin * width), k, divisible(expanded * width), divisible(cout * width),
                              se, act, stride))
    last = divisible(table[-1][3] * width)
    features.append(convBN(last, 6 * last, 1, act=HS))
    hidden = divisible(hidden * width)
    return nn.Sequential(nn.Sequential(*features), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(6 * last, hidden), nn.Hardswish(), nn.Dropout(dropout),
                         nn.Linear(hidden, numClasses)).double()


def test_twin_has_torchvisions_parameter_counts():
    torch = pytest.importorskip("torch")
    for kind, count in (("large", 5483032), ("small", 2542856)):
        twin = _twinModel(torch, kind, 1.0, 1000, False, 0.2)
        assert sum(p.numel() for p in twin.parameters()) == count


def _copyInto(torch, net, twin):
    """minidl's weights and batch-norm statistics into the twin, matched in definition order (each pair's
    shape checked); returns {minidl name: twin parameter}."""
    params = list(twin.parameters())
    names = list(net.namedVars())
    assert len(params) == len(names)
    pairs = {}
    for (name, var), param in zip(names, params):
        value = var.data.get().astype(np.float64)
        value = value.T if value.ndim == 2 else value.reshape(param.shape)
        assert value.shape == tuple(param.shape), name
        param.data = torch.tensor(value)
        pairs[name] = param
    bns = [m for m in twin.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    attrs = dict(net.namedAttrs())
    mine = [name[:-len(".mean")] for name in attrs if name.endswith(".mean")]
    assert len(bns) == len(mine)
    for prefix, bn in zip(mine, bns):
        bn.running_mean.data = torch.tensor(attrs[prefix + ".mean"].get().reshape(-1).astype(np.float64))
        bn.running_var.data = torch.tensor(attrs[prefix + ".var"].get().reshape(-1).astype(np.float64))
    return pairs


def _recordActivationInputs(net):
    """{leaf name: host copy of its input}, taken as each Activation runs (in place ones write over it)."""
    record = {}
    for name, mod in _leaves(net):
        if isinstance(mod, Activation):
            def updateData(data, name=name, run=mod.updateData):
                record[name] = data.get()
                run(data)
            mod.updateData = updateData
    return record


def _pin(torch, act, x):
    """Make the twin's activation act differentiate as at x (minidl's pre-activation); its output stays
    its own. Returns the hook handle."""
    t = torch.tensor(x.astype(np.float64), requires_grad=True)
    act(t).backward(torch.ones_like(t))
    mask = t.grad

    def hook(module, inputs, out):
        return out.detach() + (inputs[0] - inputs[0].detach()) * mask
    return act.register_forward_hook(hook)


def _relErr(got, want):
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-30))


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("kind,width", [("large", 0.5), ("small", 0.75)], ids=["large0.5", "small0.75"])
def test_matches_pytorch_twin(backend, kind, width, mode):
    torch = pytest.importorskip("torch")
    np.random.seed(21)
    dropout = 0.2 if mode == "eval" else 0.0     # train mode: no random mask to share
    net = loadMobileNetV3(kind, width=width, numClasses=10, smallInput=True, dropout=dropout)
    for _, mod in _leaves(net):
        if isinstance(mod, BatchNorm2D):          # far from the identity, statistics as if trained
            shape = (1, mod.maps, 1, 1)
            mod.vars["scale"].data.set(np.random.uniform(0.5, 1.5, shape).astype(np.float32))
            mod.vars["bias"].data.set((np.random.randn(*shape) * 0.2).astype(np.float32))
            mod.attrs["mean"].set((np.random.randn(*shape) * 0.2).astype(np.float32))
            mod.attrs["var"].set(np.random.uniform(0.5, 2.0, shape).astype(np.float32))
        if isinstance(mod, Linear):
            mod.vars["b"].data.set((np.random.randn(mod.outsize) * 0.1).astype(np.float32))
    twin = _twinModel(torch, kind, width, 10, True, dropout)
    params = _copyInto(torch, net, twin)
    if mode == "eval":
        net.evalMode()
        twin.eval()
    x = np.random.rand(2, 3, 32, 32).astype(np.float32)
    dy = np.random.randn(2, 10).astype(np.float32)

    preacts = _recordActivationInputs(net)
    y = net(gpuarray.to_gpu(x)).get()
    net.zeroGradParams()
    dx = net.backward(gpuarray.to_gpu(dy)).get()

    acts = [name for name, mod in _leaves(net) if isinstance(mod, Activation)]
    tacts = [m for m in twin.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.Hardswish, torch.nn.Hardsigmoid))]
    assert len(acts) == len(tacts)
    assert all(type(t).__name__.lower() == {"relu": "relu", "hardSwish": "hardswish", "hardSigmoid": "hardsigmoid"}[
        net[name].activation] for name, t in zip(acts, tacts))
    hooks = [_pin(torch, t, preacts[name]) for name, t in zip(acts, tacts)]
    tx = torch.tensor(x.astype(np.float64), requires_grad=True)
    ty = twin(tx)
    ty.backward(torch.tensor(dy.astype(np.float64)))
    for hook in hooks:
        hook.remove()

    errors = {"output": _relErr(y, ty.detach().numpy()), "input gradient": _relErr(dx, tx.grad.numpy())}
    if mode == "train":     # eval mode computes no parameter gradients (Module.evalMode)
        # each of a layer's gradients over the largest of them: a batch norm's bias that feeds only
        # conv -> batch norm has a true gradient of exactly 0 (the next batch norm removes any shift),
        # of which float32 leaves ~1e-7 of its scale gradient's size
        wants = {name: params[name].grad.numpy() for name, _ in net.namedVars()}
        for name, var in net.namedVars():
            layer = name.rsplit(".", 1)[0]
            scale = max(np.abs(w).max() for n, w in wants.items() if n.rsplit(".", 1)[0] == layer)
            got, want = var.grad.get(), wants[name]
            got = got.T if got.ndim == 2 else got.reshape(want.shape)
            errors[name] = float(np.abs(got - want).max() / scale)
    worst = max((e, n) for n, e in errors.items() if n != "output")
    print("twin %s %s %s: output %.2g, worst gradient %.2g (%s)" % (kind, width, mode, errors["output"], *worst))
    assert errors["output"] <= FORWARD_TOL, errors["output"]
    bad = {n: e for n, e in errors.items() if n != "output" and e > GRAD_TOL}
    assert not bad, bad
