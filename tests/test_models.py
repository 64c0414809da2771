"""MobileNet builders: parameter counts, shapes, summary, save/load, PyTorch parity."""

import io

import numpy as np
import pytest

from gradcheck import assertClose
from minidl.backend import gpuarray
from minidl.cost import CrossEntropy
from minidl.models import loadMobileNetV1, loadMobileNetV2
from minidl.modules import BatchNorm2D, Conv2D
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


@pytest.mark.parametrize("loader", [loadMobileNetV2, loadMobileNetV1], ids=["v2", "v1"])
def test_matches_torch_forward_and_backward(backend, loader):
    torch = pytest.importorskip("torch")
    from torchmirror import mirror, torchGrad
    np.random.seed(11)
    net = loader(width=0.35, numClasses=10, smallInput=True, dropout=0)
    for _, mod in _leaves(net):
        if isinstance(mod, BatchNorm2D):
            mod.numOfUpdates = 10     # past warm-up: running averages use factor 0.1, as torch's momentum
            mod.vars["bias"].data.set(np.random.randn(1, mod.maps, 1, 1).astype(np.float32) * 0.1)
    # float32 on both sides: through deep ReLU nets a float64 reference can put a pre-activation on the
    # other side of a kink (seen here: torch float32 vs float64 differ by 2e-2 in one input gradient)
    tnet, tparams = mirror(net, torch.float32)
    x = np.random.rand(4, 3, 16, 16).astype(np.float32)
    labels = np.random.randint(0, 10, 4).astype(np.int32)

    y = net(gpuarray.to_gpu(x)).get()
    _, grad = CrossEntropy()(net.data, gpuarray.to_gpu(labels))
    net.zeroGradParams()
    net.backward(grad)
    tx = torch.tensor(x, requires_grad=True)
    ty = tnet(tx)
    torch.nn.functional.cross_entropy(ty, torch.tensor(labels, dtype=torch.long)).backward()

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
    bn = net["stem.convbn"]
    assertClose(bn.mean.get().ravel(), tnet.stem.convbn.running_mean.numpy(), 1e-5, 1e-6, "running mean")
    assertClose(bn.var.get().ravel(), tnet.stem.convbn.running_var.numpy(), 1e-5, 1e-6, "running var")

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
