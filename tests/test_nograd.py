"""minidl.noGrad(): forward passes that keep only each container's own output.

Its claim is that nothing but memory changes: the outputs are those of the same pass outside the
block, bit for bit (that pass is held to independent references by the model and layer tests), and
what the block lets go of is exactly what no later child reads. The tests check the outputs, which
arrays are still held afterwards, that backward refuses such a pass, that training afterwards is
unaffected, and that the switch is per thread and survives errors.
"""

import threading

import numpy as np
import pytest

import minidl
from minidl import nograd
from minidl.backend import gpuarray
from minidl.containers import Graph, Node, Parallel, Sequential
from minidl.errors import ModuleError
from minidl.handlers import Calculator, Validator
from minidl.cost import CrossEntropy
from minidl.models import loadMobileNetV1, loadMobileNetV2, loadMobileNetV3
from minidl.modules import (
    Activation, Add, BatchNorm, BatchNorm2D, Conv2D, Deconv2D, Flatten, Identity, Linear, Replicate, relu,
)


def _leaves(module):
    children = getattr(module, "modules", None)
    if not children:
        yield module
        return
    for child in children.values():
        yield from _leaves(child)


def _held(net):
    """The leaves that still hold an output after a pass, other than the model's own output."""
    out = net.data if isinstance(net.data, list) else [net.data]
    return [mod.name for mod in _leaves(net) if mod.data is not None and not any(mod.data is o for o in out)]


def _v3small(**kwargs):
    return loadMobileNetV3("small", **kwargs)


@pytest.mark.parametrize("loader", [loadMobileNetV1, loadMobileNetV2, _v3small], ids=["v1", "v2", "v3-small"])
def test_mobilenets_give_the_same_output_and_keep_only_it(backend, loader):
    """V1 is a chain; V2 nests Replicate / Parallel / Add residual blocks; V3 has Graph blocks whose input
    is read twice (squeeze-and-excitation, the skip connection)."""
    net = loader(width=0.35, numClasses=10, smallInput=True, dropout=0)
    net.evalMode()
    x = gpuarray.to_gpu(np.random.rand(2, 3, 16, 16).astype(np.float32))
    want = net(x).get()
    assert len(_held(net)) > 20             # a pass outside the block keeps every layer's output
    with minidl.noGrad():
        got = net(x)
    np.testing.assert_array_equal(got.get(), want)
    assert net.data is got
    assert _held(net) == []
    assert all(mod.inData is None for mod in _leaves(net))
    # and the next pass outside the block keeps everything again
    np.testing.assert_array_equal(net(x).get(), want)
    assert len(_held(net)) > 20


def _trainable():
    return (Sequential("net")
            .append(Conv2D(3, 4, 3, pad=1, name="conv")).append(BatchNorm2D(4, name="bn"))
            .append(Activation(relu, name="act", inplace=True))
            .append(Replicate(2, name="split"))
            .append(Parallel("branches").append(Conv2D(4, 4, 3, pad=1, name="body")).append(Identity(name="skip")))
            .append(Add(name="add")))


def test_backward_refuses_a_nograd_pass_and_training_after_it_is_unaffected(backend):
    net, twin = _trainable(), _trainable()
    for mod, other in zip(_leaves(net), _leaves(twin)):
        for key, var in mod.vars.items():
            other.vars[key].data.set(var.data.get())
    x = gpuarray.to_gpu(np.random.randn(2, 3, 6, 6).astype(np.float32))
    dy = gpuarray.to_gpu(np.random.randn(2, 4, 6, 6).astype(np.float32))

    with minidl.noGrad():
        y = net(x).get()
    np.testing.assert_array_equal(y, twin(x).get())    # train mode: the batch's statistics, in both
    # the batch norm's running statistics moved as in the pass outside the block
    for key in ("mean", "var"):
        np.testing.assert_array_equal(net["bn"].attrs[key].get(), twin["bn"].attrs[key].get())
    with pytest.raises(ModuleError, match=r"Sequential 'net': backward after a forward pass run inside "
                                          r"minidl.noGrad\(\)"):
        net.backward(dy)

    # a pass outside the block trains as if the refused one had never been tried
    net(x)
    twin(x)
    gx, gtwin = net.backward(dy).get(), twin.backward(dy).get()
    np.testing.assert_array_equal(gx, gtwin)
    for mod, other in zip(_leaves(net), _leaves(twin)):
        for key, var in mod.vars.items():
            np.testing.assert_array_equal(var.grad.get(), other.vars[key].grad.get())


def test_graph_lets_go_of_a_value_after_its_last_reader_and_keeps_its_outputs(backend):
    """x is read by conv and by the skip add; "act" is an output and also read by "scaled": kept."""
    graph = Graph(inputs="x", outputs=["act", "add"], name="g", nodes=[
        Node(Conv2D(4, 4, 3, pad=1, name="conv"), inputs="x"),
        Node(BatchNorm2D(4, name="bn"), inputs="conv"),
        Node(Activation(relu, name="act"), inputs="bn"),
        Node(Add(name="add"), inputs=["act", "x"]),
    ])
    graph.evalMode()
    x = gpuarray.to_gpu(np.random.randn(2, 4, 5, 5).astype(np.float32))
    want = [a.get() for a in graph(x)]
    with minidl.noGrad():
        got = graph(x)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.get(), w)
    assert graph["conv"].data is None and graph["bn"].data is None
    assert graph["act"].data is got[0] and graph["add"].data is got[1]
    assert graph.values["conv"] is None and graph.values["bn"] is None and graph.values["x"] is None
    with pytest.raises(ModuleError, match="noGrad"):
        graph.backward([gpuarray.to_gpu(np.ones((2, 4, 5, 5), np.float32))] * 2)


def test_a_value_read_by_several_nodes_lives_until_the_last_has_run(backend):
    """"x" feeds three nodes in turn; releasing it after the first read would fail the later ones."""
    graph = Graph(inputs="x", outputs="sum", name="fan", nodes=[
        Node(Linear(3, 3, name="a"), inputs="x"),
        Node(Linear(3, 3, name="b"), inputs="a"),
        Node(Linear(3, 3, name="c"), inputs="a"),
        Node(Add(name="sum"), inputs=["b", "c", "a"]),
    ])
    graph.evalMode()
    x = gpuarray.to_gpu(np.random.randn(4, 3).astype(np.float32))
    want = graph(x).get()
    with minidl.noGrad():
        np.testing.assert_array_equal(graph(x).get(), want)
    assert [graph[n].data is None for n in ("a", "b", "c")] == [True, True, True]


def test_a_graph_never_writes_over_its_input_through_a_value_that_views_it(backend):
    """An in-place module after an Identity or a Flatten reads the graph's input itself: it gets a copy,
    inside noGrad too, so the caller's array and a later reader of x keep their values."""
    for kind in (Identity, Flatten):
        inner = Graph(inputs="x", outputs="act", name="inner", nodes=[
            Node(kind(name="pass"), inputs="x"), Node(Activation(relu, name="act", inplace=True), inputs="pass")])
        outer = Graph(inputs="x", outputs="add", name="outer", nodes=[
            Node(inner, inputs="x"), Node(kind(name="keep"), inputs="x"), Node(Add(name="add"), inputs=["inner", "keep"])])
        outer.evalMode()
        host = np.random.randn(2, 3, 2, 2).astype(np.float32)
        x = gpuarray.to_gpu(host)
        want = outer(x).get()
        shape = host.shape if kind is Identity else (2, 12)
        np.testing.assert_array_equal(want, (np.maximum(host, 0) + host).reshape(shape))
        with minidl.noGrad():
            got = outer(x).get()
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(x.get(), host)


def test_graph_element_reads_count_each_entry(backend):
    """A node reading (rep, 0) and another reading (rep, 1): rep lives until both have run."""
    graph = Graph(inputs="x", outputs="sum", name="g", nodes=[
        Node(Replicate(2, name="rep"), inputs="x"),
        Node(Linear(3, 3, name="a"), inputs=("rep", 0)),
        Node(Linear(3, 3, name="b"), inputs=("rep", 1)),
        Node(Add(name="sum"), inputs=["a", "b"]),
    ])
    graph.evalMode()
    x = gpuarray.to_gpu(np.random.randn(4, 3).astype(np.float32))
    want = graph(x).get()
    with minidl.noGrad():
        np.testing.assert_array_equal(graph(x).get(), want)
    assert graph["rep"].data is None


def test_the_switch_is_per_thread_nests_and_survives_errors(backend):
    net = Sequential("net").append(Linear(3, 3, name="fc")).append(Activation(relu, name="act"))
    net.evalMode()
    x = gpuarray.to_gpu(np.random.randn(2, 3).astype(np.float32))
    seen = {}

    def other():
        seen["enabled"] = nograd.isEnabled()
        net2 = Sequential("net2").append(Linear(3, 3, name="fc")).append(Activation(relu, name="act"))
        net2(x)
        seen["kept"] = net2["fc"].data is not None

    with minidl.noGrad():
        with minidl.noGrad():
            assert nograd.isEnabled()
        assert nograd.isEnabled()       # the outer block still holds
        worker = threading.Thread(target=other)
        worker.start()
        worker.join()
    assert seen == {"enabled": False, "kept": True}
    assert not nograd.isEnabled()

    with pytest.raises(ModuleError):
        with minidl.noGrad():
            net(gpuarray.to_gpu(np.zeros((2, 5), np.float32)))       # refused: 5 features, not 3
    assert not nograd.isEnabled()
    net(x)
    assert net["fc"].data is not None


def test_validator_and_calculator_run_inside_nograd(backend):
    net = Sequential("net").append(Linear(6, 4, name="fc")).append(Activation(relu, name="act"))
    x = np.random.randn(10, 6).astype(np.float32)
    labels = np.random.randint(0, 4, 10).astype(np.int32)
    net.evalMode()
    want = net(gpuarray.to_gpu(x)).get()
    wrong = np.mean(want.argmax(axis=1) != labels)
    out = Calculator(net, batchsize=4).calc(gpuarray.to_gpu(x))
    np.testing.assert_array_equal(out, want)
    assert net["fc"].data is None
    error = Validator(net, CrossEntropy(), batchsize=4).validate(gpuarray.to_gpu(x), gpuarray.to_gpu(labels))
    assert error == pytest.approx(wrong)
    assert net["fc"].data is None


def test_the_workspace_holds_a_few_outputs_instead_of_all(backend, monkeypatch):
    """NumPy backend: eight 512 KB outputs in a chain; the pool's peak in use is what was held at once."""
    if backend != "numpy":
        pytest.skip("the NumPy backend's workspace")
    from minidl.backend.numpy import array
    net = Sequential("chain")
    for i in range(8):
        net.append(Linear(256, 256, name="fc%d" % i))
    net.evalMode()
    x = gpuarray.to_gpu(np.random.randn(512, 256).astype(np.float32))
    size = 512 * 256 * 4
    peaks = []
    for lean in (False, True):
        monkeypatch.setattr(array, "workspace", array.Workspace(1 << 30))
        if lean:
            with minidl.noGrad():
                net(x)
        else:
            net(x)
        peaks.append(array.workspace.peakInUse // size)
        net.reset()
    # all eight outputs outside the block; inside, the one being written and the one it reads (each let
    # go of once its reader has run)
    assert peaks == [8, 2]


def _recordBatchNormEval(monkeypatch):
    """[whether each batchNormEval call wrote over its input], filled as the model runs."""
    import minidl.backend as B
    backend = B.current()
    real, calls = backend.batchNormEval, []

    def recorded(x, *args, out=None, **kwargs):
        calls.append(out is x)
        return real(x, *args, out=out, **kwargs)
    monkeypatch.setattr(backend, "batchNormEval", recorded)
    return calls


def test_an_eval_batch_norm_writes_over_a_new_layer_output_inside_nograd_only(backend, monkeypatch):
    """Over a conv's output: yes. Over the Sequential's input, or what an Identity passes on (which may
    be anyone's array): no. Outside the block, or in train mode: never."""
    net = (Sequential("net")
           .append(BatchNorm2D(4, name="bn0"))                            # reads the caller's array
           .append(Conv2D(4, 4, 3, pad=1, name="conv"))
           .append(BatchNorm2D(4, name="bn1"))                            # reads the conv's new output
           .append(Activation(relu, name="act", inplace=True))
           .append(Identity(name="same"))
           .append(BatchNorm2D(4, name="bn2"))                            # reads what Identity passed on
           .append(Conv2D(4, 4, 1, name="last")))                         # (the child before bn0, cyclically)
    for mod in _leaves(net):
        if isinstance(mod, BatchNorm2D):
            mod.attrs["mean"].set(np.random.randn(1, 4, 1, 1).astype(np.float32))
            mod.attrs["var"].set(np.random.uniform(0.5, 2.0, (1, 4, 1, 1)).astype(np.float32))
    net.evalMode()
    host = np.random.randn(2, 4, 5, 5).astype(np.float32)
    x = gpuarray.to_gpu(host)
    calls = _recordBatchNormEval(monkeypatch)
    want = net(x).get()
    assert calls == [False, False, False]
    del calls[:]
    with minidl.noGrad():
        got = net(x).get()
    assert calls == [False, True, False]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(x.get(), host)          # the caller's input is untouched

    net.trainMode()
    del calls[:]
    with minidl.noGrad():
        net(x)
    assert calls == []                                      # train mode: batchNormTrain, never in place
    np.testing.assert_array_equal(x.get(), host)


@pytest.mark.parametrize("producer", ["linear", "deconv"])
def test_batch_norms_after_linear_and_deconv_layers_write_over_them(backend, monkeypatch, producer):
    """The 1-D BatchNorm works on a reshaped view of the Linear's output; Deconv2D crops its output."""
    if producer == "linear":
        net = Sequential("net").append(Linear(6, 5, name="fc")).append(BatchNorm(5, name="bn"))
        host = np.random.randn(3, 6).astype(np.float32)
    else:
        net = (Sequential("net").append(Deconv2D(3, 4, 3, stride=2, pad=1, name="up"))
               .append(BatchNorm2D(4, name="bn")).append(Activation(relu, name="act", inplace=True)))
        host = np.random.randn(2, 3, 4, 4).astype(np.float32)
    net["bn"].attrs["mean"].set(np.random.randn(*net["bn"].attrs["mean"].shape).astype(np.float32))
    net.evalMode()
    x = gpuarray.to_gpu(host)
    want = net(x).get()
    calls = _recordBatchNormEval(monkeypatch)
    with minidl.noGrad():
        got = net(x).get()
    assert calls == [True]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(x.get(), host)


def test_a_refused_input_leaves_no_request_to_write_over_for_later_passes(backend, monkeypatch):
    """The batch norm refuses its input after the Sequential asked it to write over it: the request
    must not outlive that pass, or an ordinary pass later would overwrite the conv's kept output."""
    net = Sequential("net").append(Conv2D(3, 4, 3, pad=1, name="conv")).append(BatchNorm2D(4, name="bn"))
    net["bn"].attrs["mean"].set(np.random.randn(1, 4, 1, 1).astype(np.float32))
    net.evalMode()
    x = gpuarray.to_gpu(np.random.randn(2, 3, 5, 5).astype(np.float32))

    def refuse(shape):
        raise ValueError("refused once")
    monkeypatch.setattr(net["bn"], "checkDataShape", refuse)
    with pytest.raises(ModuleError, match="refused once"):
        with minidl.noGrad():
            net(x)
    monkeypatch.undo()
    y = net(x)
    assert not np.array_equal(net["conv"].data.get(), y.get())     # the conv's output is its own


def test_nothing_is_written_over_in_a_residual_block(backend, monkeypatch):
    """MobileNetV2's blocks: Replicate hands the same array to the body and to the shortcut; the body's
    first conv makes a new array, which its batch norm may take, and the shortcut keeps x."""
    net = loadMobileNetV2(width=0.35, numClasses=10, smallInput=True, dropout=0)
    net.evalMode()
    x = gpuarray.to_gpu(np.random.rand(2, 3, 16, 16).astype(np.float32))
    want = net(x).get()
    calls = _recordBatchNormEval(monkeypatch)
    with minidl.noGrad():
        got = net(x).get()
    np.testing.assert_array_equal(got, want)
    # every batch norm of V2 follows a conv: all in place
    assert calls and all(calls)
    assert len(calls) == sum(isinstance(m, BatchNorm2D) for m in _leaves(net))


@pytest.mark.parametrize("act", [None, ("relu", 0.0, 0.0), ("clip", 0.0, 6.0)], ids=["none", "relu", "relu6"])
@pytest.mark.parametrize("shape", [(1, 8, 5, 7), (3, 4, 40, 40)], ids=["small", "planes"])
@pytest.mark.parametrize("infinite", [False, True], ids=["finite", "infinite-coefficient"])
def test_batch_norm_eval_into_out_and_over_its_input(backend, act, shape, infinite):
    """The op's out: x itself or another array, the same values as a new output, bit for bit, and the
    float64 formula's within float32 rounding; the NumPy formula's path too (a variance of -epsilon
    in channel 0: an infinite coefficient, so the kernels step aside)."""
    from minidl.backend import ops
    c = shape[1]
    host = np.random.randn(*shape).astype(np.float32) * 3
    stats = [np.random.uniform(0.5, 1.5, (1, c, 1, 1)), np.random.randn(1, c, 1, 1), np.random.randn(1, c, 1, 1),
             np.random.uniform(0.2, 2.0, (1, c, 1, 1))]
    if infinite:
        stats[3][0, 0] = -1e-5
    scale, bias, mean, var = (gpuarray.to_gpu(s.astype(np.float32)) for s in stats)
    with np.errstate(all="ignore"):     # the formula divides by zero on purpose in channel 0
        want = (host - stats[2]) / np.sqrt(stats[3] + 1e-5) * stats[0] + stats[1]
        if act is not None:
            want = np.clip(want, 0, None if act[0] == "relu" else 6)
        fresh = ops.batchNormEval(gpuarray.to_gpu(host), scale, bias, mean, var, 1e-5, act).get()
        x = gpuarray.to_gpu(host)
        other = gpuarray.zeros(shape, np.float32)
        intoOther = ops.batchNormEval(x, scale, bias, mean, var, 1e-5, act, out=other)
        untouched = x.get()
        over = ops.batchNormEval(x, scale, bias, mean, var, 1e-5, act, out=x)
    finite = np.isfinite(want)
    np.testing.assert_allclose(fresh[finite], want[finite], rtol=1e-5, atol=1e-5)
    assert np.array_equal(np.isnan(fresh), np.isnan(want))
    # with the infinite coefficient some outputs are infinite or NaN, unless relu6 bounds them all
    assert finite.all() == (not infinite or (act is not None and act[0] == "clip"))
    assert intoOther is other and over is x
    np.testing.assert_array_equal(other.get(), fresh)
    np.testing.assert_array_equal(untouched, host)
    np.testing.assert_array_equal(x.get(), fresh)


def test_batch_norm_eval_refuses_an_out_it_cannot_write(backend):
    from minidl.backend import ops
    x = gpuarray.to_gpu(np.random.randn(2, 3, 4, 4).astype(np.float32))
    s = gpuarray.to_gpu(np.ones((1, 3, 1, 1), np.float32))
    z = gpuarray.zeros((1, 3, 1, 1), np.float32)
    big = gpuarray.zeros((2 * 3 * 4 * 4 + 1,), np.float32)
    for out, message in [(gpuarray.zeros((2, 3, 4, 5), np.float32), r"of shape \(2, 3, 4, 4\), got float32 \(2, 3, 4, 5\)"),
                         (gpuarray.zeros((2, 3, 4, 4), np.int32), "got int32"),
                         (gpuarray.zeros((2, 3, 4, 8), np.float32)[:, :, :, ::2], "not contiguous"),
                         (big[1:].reshape(2, 3, 4, 4), None)]:
        if message is None:         # overlapping x partly: x is big[:-1], out is big[1:]
            x = big[:-1].reshape(2, 3, 4, 4)
            message = "the input itself or not overlap it"
        with pytest.raises(ValueError, match="batchNormEval: out must be .*" + message):
            ops.batchNormEval(x, s, z, z, s, 1e-5, None, out=out)


def test_a_child_refuses_backward_after_a_nograd_pass_whether_or_not_it_kept_its_output(backend):
    """The Graph's output node keeps its output but not its input; the others keep neither: each
    says the pass ran inside noGrad, and a pass outside the block lets them run backward again."""
    graph = Graph(inputs="x", outputs="add", name="g", nodes=[
        Node(Conv2D(4, 4, 3, pad=1, name="conv"), inputs="x"),
        Node(BatchNorm2D(4, name="bn"), inputs="conv"),
        Node(Add(name="add"), inputs=["bn", "x"]),
    ])
    seq = Sequential("s").append(Conv2D(4, 4, 3, pad=1, name="conv")).append(BatchNorm2D(4, name="bn")) \
        .append(Activation(relu, name="act", inplace=True))
    x = gpuarray.to_gpu(np.random.randn(2, 4, 5, 5).astype(np.float32))
    g = gpuarray.to_gpu(np.ones((2, 4, 5, 5), np.float32))
    for net, children in ((graph, ("conv", "bn", "add")), (seq, ("conv", "bn", "act"))):
        with minidl.noGrad():
            net(x)
        for name in children:
            with pytest.raises(ModuleError, match="'%s': backward after a forward pass run inside minidl.noGrad" % name):
                net[name].backward(g)
        net(x)
        net[children[-1]].backward(g)


def test_a_stray_exit_is_refused_and_leaves_the_count_alone(backend):
    block = minidl.noGrad()
    with block:
        pass
    with pytest.raises(RuntimeError, match="__exit__ without a matching __enter__"):
        block.__exit__(None, None, None)
    with minidl.noGrad():
        assert nograd.isEnabled()
    assert not nograd.isEnabled()


def test_batch_norm_eval_names_a_malformed_act_or_out(backend):
    from minidl.backend import ops
    x = gpuarray.to_gpu(np.random.randn(1, 2, 3, 3).astype(np.float32))
    s = gpuarray.to_gpu(np.ones((1, 2, 1, 1), np.float32))
    with pytest.raises(ValueError, match=r"batchNormEval: act must be None or \(kind, alpha, beta\).*got 'relu'"):
        ops.batchNormEval(x, s, s, s, s, 1e-5, "relu")
    with pytest.raises(ValueError, match="batchNormEval: out must be an array of this backend, got list"):
        ops.batchNormEval(x, s, s, s, s, 1e-5, None, out=[0.0] * 18)
