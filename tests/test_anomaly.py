"""Stopping at NaN: the Trainer's check on every batch's loss (terminateOnNaN) and the debug mode that
names the first module to produce a NaN or an infinity (minidl.detectAnomaly, MINIDL_DETECT_ANOMALY)."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

import minidl
from minidl import anomaly
from minidl.anomaly import AnomalyError, NonFiniteLossError
from minidl.backend import gpuarray
from minidl.containers import Sequential
from minidl.cost import CrossEntropy
from minidl.handlers import Trainer
from minidl.modules import Activation, BatchNorm2D, Conv2D, DepthwiseConv2D, Flatten, Linear
from minidl.optimizers import MomentumSGD

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# NaN arithmetic on the NumPy paths warns ("invalid value encountered"); NaN is the point here
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning",
                                        "ignore:overflow encountered:RuntimeWarning")


@pytest.fixture(autouse=True)
def _anomalyOff(monkeypatch):
    """Each test starts with the debug mode off and leaves it as it found it."""
    monkeypatch.setattr(anomaly, "_enabled", [False])


def _convNet():
    """A small conv net with nested containers: stem (conv, bn, relu), then block1 (depthwise, bn,
    relu6), then the head."""
    np.random.seed(3)
    stem = Sequential("stem").extend([Conv2D(3, 8, 3, pad=1, name="conv"), BatchNorm2D(8, name="bn"),
                                      Activation("relu", name="relu")])
    block = Sequential("block1").extend([DepthwiseConv2D(8, 3, pad=1, name="dw"), BatchNorm2D(8, name="bn"),
                                         Activation("clip", args=(0.0, 6.0), name="relu6")])
    return Sequential("net").extend([stem, block, Flatten(name="flat"), Linear(8 * 6 * 6, 4, name="fc")])


def _data(n=40):
    rng = np.random.default_rng(1)
    return rng.standard_normal((n, 3, 6, 6)).astype(np.float32), rng.integers(0, 4, n).astype(np.int32)


def _weights(net):
    return {name: var.data.get().copy() for name, var in net.namedVars()}


def test_trainer_stops_before_the_update_of_the_first_batch_with_a_non_finite_loss(backend):
    """One sample holds a NaN: trainFromHost stops at the (shuffled) batch that holds it, names the
    batch and the sample, and the weights are those after the batch before."""
    x, y = _data()
    x[17, 1, 2, 3] = np.nan
    net = _convNet()
    seen = []
    trainer = Trainer(net, CrossEntropy(), MomentumSGD(learnRate=0.05).setupOn(net), batchsize=8,
                      onBatchFinish=lambda t: seen.append(_weights(net)))
    before = _weights(net)
    with pytest.raises(NonFiniteLossError, match=r"loss of batch \d+ of this pass \(samples .*17.*\) is nan") as info:
        trainer.trainFromHost(x, y, macroBatchSize=16)
    err = info.value
    assert 17 in err.samples and len(err.samples) == 8 and math.isnan(err.loss)
    assert err.batch == len(seen), "the batch named is the one after the last that finished"
    last = seen[-1] if seen else before
    for name, value in _weights(net).items():
        assert np.array_equal(value, last[name]), "%s changed by the batch whose loss was NaN" % name
        assert np.isfinite(value).all()


def test_trainer_train_names_the_batch_by_position(backend):
    x, y = _data(24)
    x[13, 0, 0, 0] = np.inf
    net = _convNet()
    trainer = Trainer(net, CrossEntropy(), MomentumSGD(learnRate=0.05).setupOn(net), batchsize=8)
    with pytest.raises(NonFiniteLossError, match=r"loss of batch 1 of this pass \(samples 8 to 15\)"):
        trainer.train(gpuarray.to_gpu(x), gpuarray.to_gpu(y))


def test_trainer_without_the_check_reports_the_nan_loss(backend):
    """terminateOnNaN=False trains on: the NaN batch makes the weights NaN, and the mean error the
    pass reports is NaN too (never a healthy-looking number), on a clean pass afterwards as well."""
    x, y = _data()
    x[17, 1, 2, 3] = np.nan
    net = _convNet()
    trainer = Trainer(net, CrossEntropy(), MomentumSGD(learnRate=0.05).setupOn(net), batchsize=8,
                      terminateOnNaN=False)
    assert math.isnan(trainer.trainFromHost(x, y, macroBatchSize=16))
    assert np.isnan(net["stem.conv"].W.get()).all() and np.isnan(net["stem.bn"].scale.get()).all()
    x[17, 1, 2, 3] = 0.0
    assert math.isnan(trainer.trainFromHost(x, y, macroBatchSize=16))
    with pytest.raises(ValueError, match="terminateOnNaN must be True or False"):
        Trainer(net, CrossEntropy(), MomentumSGD(), terminateOnNaN="yes")


def test_anomaly_mode_names_the_first_module_with_a_non_finite_output(backend):
    x, _ = _data(4)
    net = _convNet()
    w = net["block1.dw"].W.get()
    w[2, 0, 1, 1] = np.nan
    net["block1.dw"].W.set(w)
    xd = gpuarray.to_gpu(x)
    net(xd)     # off: no check, the NaN just flows to the output
    assert np.isnan(net.data.get()).any()
    with minidl.detectAnomaly():
        assert anomaly.isEnabled()
        with pytest.raises(AnomalyError, match=r"DepthwiseConv2D 'net\.block1\.dw': forward output holds 144 NaN "
                                               r"of 1152 values, the first at \(0, 2, 0, 0\); its input was finite") \
                as info:
            net(xd)
        assert info.value.module is net["block1.dw"]
    assert not anomaly.isEnabled(), "the block's end puts the previous setting back"
    # a NaN in the data: the first module is named, and the message says its input held it
    x[0, 0, 0, 0] = np.nan
    minidl.detectAnomaly(True)
    with pytest.raises(AnomalyError, match=r"Conv2D 'net\.stem\.conv': .*its input already held 1 NaN"):
        _convNet()(gpuarray.to_gpu(x))
    minidl.detectAnomaly(False)
    assert not anomaly.isEnabled()


def test_anomaly_mode_checks_gradients(backend):
    """Finite forward, infinite input gradient: x = 0 hides the huge weights from the forward."""
    lin = Linear(4, 3, name="huge")
    lin.W.set(np.full((4, 3), 3e38, np.float32))
    xd = gpuarray.to_gpu(np.zeros((2, 4), np.float32))
    dy = gpuarray.to_gpu(np.ones((2, 3), np.float32))
    with minidl.detectAnomaly():
        lin(xd)
        with pytest.raises(AnomalyError, match=r"Linear 'huge': backward: the input gradient holds 8 \+inf of 8 "
                                               r"values, the first at \(0, 0\); its incoming gradient was finite"):
            lin.backward(dy)
        # parameter gradients are checked too (and the input gradient only when asked for); zero
        # weights keep the forward finite
        lin.W.set(np.zeros((4, 3), np.float32))
        lin(gpuarray.to_gpu(np.full((2, 4), 3e38, np.float32)))
        with pytest.raises(AnomalyError, match=r"the gradient of W holds 12 \+inf"):
            lin.backward(dy, updGrad=False)


def test_anomaly_setting_from_the_environment():
    env = dict(os.environ, MINIDL_DETECT_ANOMALY="1")
    code = "import minidl.anomaly as a; print(a.isEnabled())"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr
    env["MINIDL_DETECT_ANOMALY"] = "yes"
    out = subprocess.run([sys.executable, "-c", "import minidl"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode != 0 and "MINIDL_DETECT_ANOMALY must be 1" in out.stderr and "'yes'" in out.stderr
