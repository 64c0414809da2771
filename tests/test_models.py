"""MobileNet builders: parameter counts, shapes, summary, save/load, PyTorch parity."""

import io
from contextlib import contextmanager

import numpy as np
import pytest

from gradcheck import asList, assertClose
from minidl.backend import gpuarray
from minidl.cost import CrossEntropy
from minidl.models import loadMobileNetV1, loadMobileNetV2
from minidl.modules import Activation, BatchNorm2D, Conv2D, relu6
from minidl.optimizers import MomentumSGD


def test_parameter_counts_match_reference_implementations():
    assert loadMobileNetV1(width=1.0, numClasses=1000).numOfParams() == 4231976   # Keras MobileNet, trainable
    assert loadMobileNetV2(width=1.0, numClasses=1000).numOfParams() == 3504872   # torchvision mobilenet_v2


@pytest.mark.parametrize("loader", [loadMobileNetV1, loadMobileNetV2], ids=["v1", "v2"])
def test_small_input_variants(backend, loader):
    net = loader(width=0.25, numClasses=10, smallInput=True)
    x = gpuarray.to_gpu(np.random.rand(2, 3, 32, 32).astype(np.float32))
    assert net(x).shape == (2, 10) == net.dataShapeFrom((2, 3, 32, 32))
    assert net["stem.conv"].stride == (1, 1)
    strided = [name for name, mod in _leaves(net) if isinstance(mod, Conv2D) and mod.stride == (2, 2)]
    assert len(strided) == 3, "small input keeps 3 of the 5 downsamplings: %s" % strided
    big = loader(width=0.25, numClasses=10)
    assert big.dataShapeFrom((1, 3, 224, 224)) == (1, 10)
    assert sum(isinstance(m, Conv2D) and m.stride == (2, 2) for _, m in _leaves(big)) == 5


def _leaves(mod, prefix=""):
    children = getattr(mod, "modules", None)
    if children is None:
        yield prefix.rstrip("."), mod
        return
    for name, child in children.items():
        yield from _leaves(child, prefix + name + ".")


def test_summary_prints_layers_and_totals():
    net = loadMobileNetV2(width=0.5, numClasses=10, smallInput=True)
    out = io.StringIO()
    totals = net.summary((1, 3, 32, 32), file=out)
    text = out.getvalue()
    assert totals["params"] == net.numOfParams() and totals["outshape"] == (1, 10)
    assert "mobilenetv2.stem.conv" in text and "(1, 16, 32, 32)" in text
    # stem conv: 16 maps x 32 x 32 positions x 3 inputs x 3 x 3 taps
    assert "{:,}".format(16 * 32 * 32 * 3 * 9) in text
    assert text.strip().splitlines()[-1].startswith("total: {:,} trainable parameters".format(net.numOfParams()))
    conv = Conv2D(8, 16, 3, groups=2, stride=2)
    assert conv.summary((4, 8, 9, 9), file=io.StringIO())["macs"] == 4 * 16 * 4 * 4 * 4 * 9


def test_mobilenetv2_save_load_identical_outputs_with_bn_statistics(backend, tmp_path):
    np.random.seed(5)
    net = loadMobileNetV2(width=0.25, numClasses=10, smallInput=True)
    opt = MomentumSGD(learnRate=0.01).setupOn(net)
    ce = CrossEntropy()
    for _ in range(2):
        x = gpuarray.to_gpu(np.random.rand(4, 3, 16, 16).astype(np.float32))
        _, grad = ce(net(x), gpuarray.to_gpu(np.random.randint(0, 10, 4).astype(np.int32)))
        opt.zeroGradParams()
        net.backward(grad)
        opt.update()
    bn = net["stem.convbn"]
    assert bn.mean.get().any(), "training moved the running statistics"
    net.save(str(tmp_path / "v2.h5"))
    fresh = loadMobileNetV2(width=0.25, numClasses=10, smallInput=True)
    fresh.load(str(tmp_path / "v2.h5"))
    assert np.array_equal(fresh["stem.convbn"].var.get(), bn.var.get())
    net.evalMode()
    fresh.evalMode()
    x = gpuarray.to_gpu(np.random.rand(3, 3, 16, 16).astype(np.float32))
    assert np.array_equal(net(x).get(), fresh(x).get())


# Per-layer tolerance, as a fraction of the largest |value| among one layer's compared tensors of a kind.
# Each layer's twin starts from the same float32 numbers and computes in float64, so the gap is this
# backend's own float32 rounding in one op: <= 1.5e-6 seen on NumPy and on the CUDA backend (run on the
# CPU emulator); 1e-5, as the single-op tests, leaves room for other summation orders, while a wrong tap,
# sign, clip bound or dropped term is off by far more.
LAYER_TOL = 1e-5


def _host(data):
    return [a.get() for a in data] if isinstance(data, list) else data.get()


@contextmanager
def _recording(net):
    """Yields {leaf name: {"in", "out", "gradOut", "gradIn", "params"}}, filled by the forward and
    backward passes run inside the block: host copies taken during each call (an in-place activation
    later writes over its input and its incoming gradient). Wraps each leaf's updateData and backward on
    the instance, and removes the wrappers on exit."""
    trace = {}
    leaves = list(_leaves(net))
    for name, mod in leaves:
        rec = trace[name] = {}

        def updateData(data, mod=mod, rec=rec, run=mod.updateData):
            rec["in"] = _host(data)
            run(data)
            rec["out"] = _host(mod.data)

        def backward(grad, *args, mod=mod, rec=rec, run=mod.backward, **kwargs):
            rec["gradOut"] = _host(grad)
            result = run(grad, *args, **kwargs)
            rec["gradIn"] = _host(mod.grad)
            rec["params"] = {key: var.grad.get() for key, var in mod.vars.items()}
            return result
        mod.updateData, mod.backward = updateData, backward
    try:
        yield trace
    finally:
        for _, mod in leaves:
            del mod.updateData, mod.backward


def _assertLayer(checks):
    """checks: [(what, got, want)] of one kind from one layer, held to one scale, the largest |want| among
    them: a sum's float32 error follows the magnitudes summed, not the result (a V2 project BN's bias
    gradient cancels to ~1e-7, summed from the same incoming gradient as its scale gradient)."""
    scale = max(float(np.abs(want).max()) for _, _, want in checks)
    for what, got, want in checks:
        assertClose(got, want, 0, LAYER_TOL * scale, what)


def _each(what, gots, wants):
    """[(what, got, want)], each of a list's items named by its index."""
    if len(gots) == 1:
        return [(what, gots[0], wants[0])]
    return [("%s[%d]" % (what, i), got, want) for i, (got, want) in enumerate(zip(gots, wants))]


def _checkLayer(torch, name, mod, rec, twin, twinParams):
    """One leaf against its float64 twin, fed the leaf's own recorded input and incoming gradient (so a
    kink flip upstream cannot reach it)."""
    from torchmirror import torchGrad
    assert "gradIn" in rec, "%s: the backward pass never reached this layer" % name
    ins = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in asList(rec["in"])]
    fed = [t.clone() for t in ins]     # clones: the twin of an in-place activation writes over its input
    outs = asList(twin(fed if isinstance(rec["in"], list) else fed[0]))
    torch.autograd.backward(outs, [torch.tensor(g, dtype=torch.float64) for g in asList(rec["gradOut"])])
    _assertLayer(_each(name + " output", asList(rec["out"]), [t.detach().numpy() for t in outs]))
    _assertLayer(_each(name + " input gradient", asList(rec["gradIn"]), [t.grad.numpy() for t in ins]))
    if twinParams:
        _assertLayer([("gradient of %s.%s" % (name, key), rec["params"][key],
                       torchGrad(param, name + "." + key, rec["params"][key].shape))
                      for key, param in twinParams.items()])
    if isinstance(mod, BatchNorm2D):
        _assertLayer([(name + " running mean", mod.mean.get().ravel(), twin.running_mean.numpy())])
        _assertLayer([(name + " running var", mod.var.get().ravel(), twin.running_var.numpy())])


def _pinDerivative(torch, act, x):
    """Make the torch activation act differentiate as at x (this backend's pre-activation) instead of at
    its own input; its output stays its own. Returns the hook's handle."""
    t = torch.tensor(x, requires_grad=True)
    act.inplace = False     # the hook below reads the input after the forward
    act(t).sum().backward()
    mask = t.grad           # act's own derivative, at x

    def hook(module, inputs, out):
        # value: exactly out (z - z is 0); derivative with respect to the input: mask
        return out.detach() + (inputs[0] - inputs[0].detach()) * mask
    return act.register_forward_hook(hook)


@pytest.mark.parametrize("loader", [loadMobileNetV2, loadMobileNetV1], ids=["v2", "v1"])
def test_matches_torch_forward_and_backward(backend, loader):
    """The whole model against a PyTorch twin with copied weights, layer by layer and end to end.

    A ReLU's derivative jumps at 0: where float32 rounding in another order leaves one pre-activation at
    1.8e-6 on one side and 0 on the other (seen on the CUDA backend), one mask element differs and the
    gradient difference spreads through every layer below it. So every leaf is checked on this backend's
    own input and incoming gradient, where no flip can arise, to LAYER_TOL. End to end, the forward
    (continuous through the kinks) is compared as it is, and the backward against the twin with each
    activation differentiating as at this backend's pre-activation: with the kinks' sides fixed, what
    remains to compare is the chain of backward passes and the containers' wiring.
    """
    torch = pytest.importorskip("torch")
    from torchmirror import mirror, torchGrad
    np.random.seed(11)
    net = loader(width=0.35, numClasses=10, smallInput=True, dropout=0)
    leaves = list(_leaves(net))
    for _, mod in leaves:
        if isinstance(mod, BatchNorm2D):
            mod.numOfUpdates = 10     # past warm-up: running averages use factor 0.1, as torch's momentum
            # scales in (0.5, 1.5) send a few dozen of V2's pre-activations past ReLU6's upper kink, so both of
            # its kinks are tested; wider ones grow eval-mode activations layer by layer (running statistics one
            # update from their start do not normalise), until float32 alone moves V1's outputs by 5e-3
            mod.vars["scale"].data.set(np.random.uniform(0.5, 1.5, (1, mod.maps, 1, 1)).astype(np.float32))
            mod.vars["bias"].data.set(np.random.randn(1, mod.maps, 1, 1).astype(np.float32) * 0.1)
    # end to end in float32 on both sides, so the two differ only in summation order
    tnet, tparams = mirror(net, torch.float32)
    twins = {name: mirror(mod, torch.float64) for name, mod in leaves}    # BN statistics as before the run
    x = np.random.rand(4, 3, 16, 16).astype(np.float32)
    labels = np.random.randint(0, 10, 4).astype(np.int32)

    with _recording(net) as trace:
        y = net(gpuarray.to_gpu(x)).get()
        _, grad = CrossEntropy()(net.data, gpuarray.to_gpu(labels))
        net.zeroGradParams()
        net.backward(grad)
    for name, mod in leaves:
        _checkLayer(torch, name, mod, trace[name], *twins[name])
    relu6Inputs = [trace[name]["in"] for name, mod in leaves if isinstance(mod, Activation) and mod.activation == relu6]
    assert not relu6Inputs or any((a > 6).any() for a in relu6Inputs), "no pre-activation reaches ReLU6's upper kink"

    # the twin's leaves in definition order are this model's leaves in order
    tleaves = [m for m in tnet.modules() if next(m.children(), None) is None]
    assert [type(m) for m in tleaves] == [type(twins[name][0]) for name, _ in leaves]
    hooks = [_pinDerivative(torch, tmod, trace[name]["in"])
             for (name, mod), tmod in zip(leaves, tleaves) if isinstance(mod, Activation)]
    tx = torch.tensor(x, requires_grad=True)
    ty = tnet(tx)
    torch.nn.functional.cross_entropy(ty, torch.tensor(labels, dtype=torch.long)).backward()
    for hook in hooks:
        hook.remove()

    assertClose(y, ty.detach().numpy(), 1e-4, 1e-4, "train-mode forward")
    # float32 summation order differs between the two; through train-mode BatchNorm on tiny batches that
    # reaches ~5e-5 of the gradient's scale, so tolerances scale with max |grad|
    gscale = np.abs(tx.grad.numpy()).max()
    assertClose(net.grad.get(), tx.grad.numpy(), 1e-3, 2e-4 * gscale, "input gradient")
    assert set(tparams) == {name for name, _ in net.namedVars()}
    for name, var in net.namedVars():
        want = torchGrad(tparams[name], name, var.data.shape)
        # + 1e-5: some BN biases feed conv -> BN and have an exactly-zero true gradient (each float32 side ~1e-6)
        assertClose(var.grad.get(), want, 1e-3, 2e-4 * np.abs(want).max() + 1e-5, "gradient of " + name)

    net.evalMode()
    tnet.eval()
    with torch.no_grad():
        assertClose(net(gpuarray.to_gpu(x)).get(), tnet(torch.tensor(x)).numpy(),
                    1e-4, 1e-4, "eval-mode forward")


def test_builder_argument_errors():
    with pytest.raises(ValueError, match="width must be > 0, got 0"):
        loadMobileNetV2(width=0)
    with pytest.raises(ValueError, match="numClasses must be a positive int, got 0"):
        loadMobileNetV1(numClasses=0)
