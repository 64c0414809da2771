"""PuzzleLib's training API: global optimizer state, hooks, handler counters and modes, getByName."""

import numpy as np
import pytest

from minidl.backend import gpuarray
from minidl.containers import Parallel, Sequential
from minidl.cost import CrossEntropy
from minidl.models import loadMobileNetV2
from minidl.modules import (
    Activation, Add, BatchNorm2D, Conv2D, DepthwiseConv2D, Dropout, Flatten, Identity, Linear, Replicate,
)
from minidl.optimizers import SGD, Adam, Hooks, MomentumSGD, NesterovSGD
from minidl.optimizers.globalstate import ALIGN
from minidl.handlers import Calculator, Trainer, Validator
from minidl.variable import Variable


def _convNet(seed=5):
    np.random.seed(seed)
    net = Sequential("net")
    net.append(Conv2D(3, 8, 3, pad=1, name="conv"))
    net.append(BatchNorm2D(8, name="bn"))
    net.append(Activation("relu", name="act"))
    body = Sequential("body").append(DepthwiseConv2D(8, 3, pad=1, name="dw")).append(BatchNorm2D(8, name="dwbn"))
    net.append(Replicate(2, name="split"))
    net.append(Parallel("branches").append(body).append(Identity(name="shortcut")))
    net.append(Add(name="add"))
    net.append(Flatten(name="flat"))
    net.append(Dropout(0.0, name="drop"))
    net.append(Linear(8 * 4 * 4, 5, name="fc"))
    return net


def _batch(n=6):
    x = np.random.randn(n, 3, 4, 4).astype(np.float32)
    y = np.random.randint(0, 5, n).astype(np.int32)
    return gpuarray.to_gpu(x), gpuarray.to_gpu(y)


def _step(net, opt, x, y):
    cost = CrossEntropy()
    net(x)
    cost(net.data, y)
    opt.zeroGradParams()
    net.backward(cost.grad, updGrad=False)
    opt.update()


def _weights(net):
    return {name: var.data.get() for name, var in net.namedVars()}


@pytest.mark.parametrize("cls,kwargs", [(MomentumSGD, dict(learnRate=0.1)), (NesterovSGD, dict(learnRate=0.1)),
                                        (Adam, dict(alpha=0.01))], ids=["momentum", "nesterov", "adam"])
def test_global_state_trains_exactly_as_per_variable_state(backend, cls, kwargs):
    """The same elementwise rule over one flat buffer: bit-identical weights after several steps,
    with a shared weight, a frozen bias, a Variable with its own wc and a decay hook."""
    nets = [_convNet(), _convNet()]
    opts = []
    for net, useGlobal in zip(nets, (False, True)):
        net["fc"].vars["b"].learnRate = 0.0
        net["bn"].vars["scale"].wc = 0.01
        shared = net["conv"].vars["b"]
        net["branches.body.dw"].setVar("b", shared)      # one Variable under two names
        opts.append(cls(**kwargs).addHook(Hooks.WeightDecay(1e-3)).setupOn(net, useGlobalState=useGlobal))
    assert len(opts[1].groups) == 3, "default rates, the frozen bias, the decayed scale"
    b0 = nets[1]["fc"].b.get()
    for _ in range(4):
        x, y = _batch()
        for net, opt in zip(nets, opts):
            _step(net, opt, x, y)
    local, flat = _weights(nets[0]), _weights(nets[1])
    assert local.keys() == flat.keys()
    for name in local:
        assert np.array_equal(local[name], flat[name]), name
    assert np.array_equal(nets[1]["fc"].b.get(), b0), "learnRate 0 freezes"
    assert nets[1]["conv"].vars["b"] is nets[1]["branches.body.dw"].vars["b"], "still shared"
    assert not np.array_equal(local["conv.W"], _weights(_convNet())["conv.W"]), "it trained"


def test_global_state_packs_aligned_views_with_zero_padding(backend):
    net = _convNet()
    opt = Adam(alpha=0.01).setupOn(net, useGlobalState=True)
    (group,) = opt.groups
    total = sum(-(-var.data.size // ALIGN) * ALIGN for var in net.getVarTable())
    assert group.var.data.shape == (total,) and total % ALIGN == 0
    flat = group.var.data
    flat.set(np.arange(total, dtype=np.float32))     # writing the buffer writes every parameter
    offset = 0
    for name, var in opt.vars.items():
        assert np.array_equal(net.getVar(name).data.get().ravel(), np.arange(offset, offset + var.data.size)), name
        offset += -(-var.data.size // ALIGN) * ALIGN
    flat.set(np.zeros(total, np.float32))
    for var in opt.vars.values():
        var.data.set(np.random.randn(*var.data.shape).astype(np.float32))
    for _ in range(3):
        _step(net, opt, *_batch())
    padding = np.ones(total, bool)
    offset = 0
    for var in opt.vars.values():
        padding[offset:offset + var.data.size] = False
        offset += -(-var.data.size // ALIGN) * ALIGN
    for what, ary in [("data", group.var.data), ("grad", group.var.grad)] + list(group.state.items()):
        assert not ary.get()[padding].any(), "the padding of %s stays zero" % what


def test_global_state_zeroes_grads_and_keeps_values_and_grads_at_setup(backend):
    net = _convNet()
    _step(net, SGD(0.0).setupOn(net), *_batch())
    before = {name: (var.data.get(), var.grad.get()) for name, var in net.namedVars()}
    opt = SGD(0.1).setupOn(net, useGlobalState=True)
    for name, var in net.namedVars():
        assert np.array_equal(var.data.get(), before[name][0]) and np.array_equal(var.grad.get(), before[name][1])
    opt.zeroGradParams()
    assert not any(var.grad.get().any() for _, var in net.namedVars())


def test_optimizer_state_files_interchange_between_setups(backend):
    nets = [_convNet(), _convNet()]
    opts = [Adam(alpha=0.01).setupOn(nets[0], useGlobalState=True), Adam(alpha=0.01).setupOn(nets[1])]
    _step(nets[0], opts[0], *_batch())
    opts[1].load(opts[0].save())
    for key, ary in opts[0]._stateArrays().items():
        assert np.array_equal(opts[1]._stateArrays()[key].get(), ary.get()), key
    back = Adam(alpha=0.01).setupOn(_convNet(), useGlobalState=True)
    back.load(opts[1].save())
    for key, ary in back._stateArrays().items():
        assert np.array_equal(opts[0]._stateArrays()[key].get(), ary.get()), key
    assert back.t == 1


def test_global_state_refuses_changed_rates_and_replaced_variables(backend):
    net = _convNet()
    opt = MomentumSGD().setupOn(net, useGlobalState=True)
    net["fc"].vars["W"].learnRate = 0.5
    with pytest.raises(RuntimeError, match=r"MomentumSGD: Variable 'fc\.W' changed its learnRate/momRate/wc"):
        opt.update()
    opt.setupOn(net, useGlobalState=True)
    opt.update()
    net["fc"].setVar("W", Variable(net["fc"].W.get()))
    with pytest.raises(RuntimeError, match=r"parameter 'fc\.W' was replaced \(setVar\) after setupOn"):
        opt.update()
    with pytest.raises(ValueError, match="useGlobalState must be True or False, got 'yes'"):
        opt.setupOn(net, useGlobalState="yes")
    with pytest.raises(TypeError, match="addHook: expected a callable"):
        opt.addHook(0.5)
    with pytest.raises(ValueError, match="WeightDecay: rate must be"):
        Hooks.WeightDecay(-1.0)


def test_handlers_count_batches_and_call_back_as_puzzlelib(backend):
    np.random.seed(0)
    net = Sequential().append(Linear(4, 8)).append(Activation("relu")).append(Linear(8, 3))
    x = np.random.randn(70, 4).astype(np.float32)
    y = np.random.randint(0, 3, 70).astype(np.int32)
    seen, macro = [], []
    # PuzzleLib's positional order: net, cost, optimizer, onBatchFinish, batchsize
    trainer = Trainer(net, CrossEntropy(), SGD(0.1).setupOn(net),
                      lambda t: seen.append((t.currMacroBatch, t.currBatch, t.totalBatches)), 16)
    trainer.train(gpuarray.to_gpu(x), gpuarray.to_gpu(y))
    assert seen == [(0, i, 5) for i in range(1, 6)]
    seen.clear()
    trainer.trainFromHost(x, y, macroBatchSize=40, onMacroBatchFinish=lambda t: macro.append(
        (t.currMacroBatch, t.totalMacroBatches)))
    assert seen == [(1, i, 3) for i in range(1, 4)] + [(2, i, 2) for i in range(1, 3)]
    assert macro == [(1, 2), (2, 2)]
    counted = []
    validator = Validator(net, CrossEntropy(), lambda v: counted.append(v.currBatch), 32)
    error = validator.validateFromHost(x, y, macroBatchSize=64)
    assert counted == [1, 2, 1] and validator.error == error
    calc = Calculator(net, batchsize=32)
    assert calc.calc(gpuarray.to_gpu(x)).shape == (70, 3) and (calc.currBatch, calc.totalBatches) == (3, 3)


def test_trainer_sets_train_mode_and_validator_and_calculator_eval_mode(backend):
    net = Sequential().append(Linear(4, 3)).append(Dropout(0.5))
    x, y = gpuarray.to_gpu(np.random.randn(8, 4).astype(np.float32)), gpuarray.to_gpu(np.zeros(8, np.int32))
    net.evalMode()
    trainer = Trainer(net, CrossEntropy(), SGD(0.1).setupOn(net))
    trainer.train(x, y)
    assert net.train and net[1].train
    Validator(net, CrossEntropy()).validate(x, y)
    assert not net.train and not net[1].train
    trainer.trainStep(x, y)
    assert net.train and net[1].train, "a single step trains in train mode too"
    Validator(net, CrossEntropy()).validate(x, y)
    net.trainMode()
    out = Calculator(net).calc(x)
    assert not net[1].train and np.array_equal(out, net(x).get()), "eval mode: dropout is the identity"


def test_trainer_random_batch_order_is_seeded(backend):
    x, y = _batch(24)
    results = []
    for seed in (3, 3, 4):
        net = _convNet()
        Trainer(net, CrossEntropy(), SGD(0.1).setupOn(net), batchsize=4, seed=seed).train(x, y, random=True)
        results.append(net["fc"].W.get())
    net = _convNet()
    Trainer(net, CrossEntropy(), SGD(0.1).setupOn(net), batchsize=4).train(x, y)
    assert np.array_equal(results[0], results[1])
    assert not np.array_equal(results[0], results[2]) and not np.array_equal(results[0], net["fc"].W.get())


def test_get_by_name_and_get_all_by_type(backend):
    net = loadMobileNetV2(width=0.25, numClasses=10, smallInput=True)
    assert net.getByName("dw") is net["block1.branches.body.dw"], "depth first: the first block's"
    assert net.getByName("block4.dw") is net["block4.dw"]
    assert net.getByName("body") is net["block1.branches.body"]
    assert net.getByName("block1.dw") is None, "a dotted path is followed exactly"
    assert net.getByName("nothing") is None
    bns = net.getAllByType(BatchNorm2D)
    assert len(bns) == sum(1 for name, _ in net.namedAttrs() if name.endswith(".mean"))
    assert all(isinstance(m, Conv2D) for m in net.getAllByType(Conv2D))
    assert len(net.getAllByType(DepthwiseConv2D)) == 17
