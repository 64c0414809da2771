"""The Module protocol and the containers."""

import numpy as np
import pytest

from gradcheck import assertClose, checkGradients
from minidl.backend import gpuarray
from minidl.containers import Parallel, Sequential
from minidl.errors import ModuleError
from minidl.modules import Conv2D, DepthwiseConv2D, PointwiseConv2D, SeparableConv2D
from minidl.variable import Variable


def _block(name=None):
    seq = Sequential(name)
    seq.append(DepthwiseConv2D(4, 3, pad=1, name="dw"))
    seq.append(PointwiseConv2D(4, 6, name="pw"))
    return seq


def test_module_attributes_and_vars(backend):
    conv = Conv2D(3, 4, 3, name="c")
    assert conv.W is conv.vars["W"].data and conv.W.shape == (4, 3, 3, 3)
    assert conv.b.shape == (1, 4, 1, 1) and not conv.b.get().any()
    assert conv.getVar("W") is conv.vars["W"]
    assert conv.train, "modules start in train mode"
    assert conv.numOfParams() == 4 * 27 + 4
    new = Variable(gpuarray.to_gpu(np.ones((4, 3, 3, 3), np.float32)))
    conv.setVar("W", new)
    assert conv.W is new.data and conv.vars["W"].grad.shape == (4, 3, 3, 3)
    with pytest.raises(ValueError, match=r"setVar\('W'\): expected shape \(4, 3, 3, 3\), got \(2, 2\)"):
        conv.setVar("W", Variable(gpuarray.to_gpu(np.ones((2, 2), np.float32))))
    assert conv.dataShapeFrom((2, 3, 8, 8)) == (2, 4, 6, 6)
    assert conv.blueprint["inmaps"] == 3 and conv.blueprint["size"] == 3
    with pytest.raises(AttributeError):
        conv.nothing


def test_modes_and_reset(backend):
    seq = _block("net")
    x = gpuarray.to_gpu(np.random.randn(2, 4, 5, 5).astype(np.float32))
    seq(x)
    assert seq.data is not None and seq["dw"].data is not None
    seq.evalMode()
    assert not seq.train and not seq["pw"].train and seq.data is None and seq["dw"].inData is None
    seq.trainMode()
    assert seq.train and seq["dw"].train


def test_sequential_indexing_and_editing(backend):
    seq = Sequential("net")
    a, b, c = Conv2D(2, 2, 1, name="a"), Conv2D(2, 2, 1), Conv2D(2, 2, 1, name="c")
    seq.append(a).append(b)
    seq.extend([c])
    assert b.name == "1", "unnamed children are named by position"
    assert seq["a"] is a and seq[0] is a and seq[-1] is c and seq["1"] is b
    sub = seq[1:]
    assert isinstance(sub, Sequential) and list(sub.modules) == ["1", "c"] and sub["c"] is c
    d = Conv2D(2, 2, 1, name="d")
    seq.insert(1, d)
    assert list(seq.modules) == ["a", "d", "1", "c"]
    assert seq.pop() is c and seq.pop(0) is a and list(seq.modules) == ["d", "1"]
    with pytest.raises(ValueError, match="a child named 'd' already exists"):
        seq.append(Conv2D(2, 2, 1, name="d"))
    with pytest.raises(KeyError, match="has no child 'zz'"):
        seq["zz"]


def test_sequential_forward_backward_and_dotted_names(backend):
    net = Sequential("net")
    net.append(_block("block1"))
    net.append(SeparableConv2D(6, 3, 3, pad=1, name="sep"))
    assert net["block1.dw"] is net["block1"]["dw"]
    assert net["sep"]["depthwise"].W.shape == (6, 1, 3, 3)
    names = [n for n, _ in net.namedVars()]
    assert names == ["block1.dw.W", "block1.dw.b", "block1.pw.W", "block1.pw.b",
                     "sep.depthwise.W", "sep.depthwise.b", "sep.pointwise.W", "sep.pointwise.b"]
    assert net.getVar("block1.pw.W") is net["block1.pw"].vars["W"]
    table = net.getVarTable()
    assert table[net["sep.pointwise"].vars["W"]] == ["sep.pointwise.W"]
    checkGradients(net, np.random.randn(2, 4, 5, 5).astype(np.float32), kind="linear")


def test_shared_weights_counted_once_and_grads_accumulate(backend):
    a, b = Conv2D(3, 3, 3, pad=1, name="a"), Conv2D(3, 3, 3, pad=1, name="b")
    b.setVar("W", a.vars["W"])
    seq = Sequential().append(a).append(b)
    assert seq.numOfParams() == 81 + 3 + 3
    assert seq.getVarTable()[a.vars["W"]] == ["a.W", "b.W"]
    checkGradients(seq, np.random.randn(1, 3, 4, 4).astype(np.float32), kind="smooth")


def test_parallel(backend):
    par = Parallel("par").append(Conv2D(2, 3, 1, name="x")).append(Conv2D(4, 3, 3, pad=1, name="y"))
    xs = [np.random.randn(2, 2, 4, 4).astype(np.float32), np.random.randn(2, 4, 4, 4).astype(np.float32)]
    out = par([gpuarray.to_gpu(v) for v in xs])
    assert [o.shape for o in out] == [(2, 3, 4, 4), (2, 3, 4, 4)]
    assert par.dataShapeFrom([(2, 2, 4, 4), (2, 4, 4, 4)]) == [(2, 3, 4, 4), (2, 3, 4, 4)]
    assertClose(out[0].get(), par["x"](gpuarray.to_gpu(xs[0])).get(), 0, 0, "branch 0")
    checkGradients(par, xs, kind="linear")
    with pytest.raises(ModuleError, match=r"Parallel 'par': expected a list of 2 inputs, got a list of 1"):
        par([gpuarray.to_gpu(xs[0])])


def test_error_inside_child_carries_dotted_path(backend):
    net = Sequential()
    block = Sequential("block3")
    block.append(Conv2D(16, 16, 3, groups=16, name="dw"))
    net.append(Conv2D(8, 16, 1, name="stem"))
    net.append(block)
    bad = gpuarray.to_gpu(np.zeros((8, 16, 56, 56), np.float32))
    with pytest.raises(ModuleError, match=r"^Conv2D 'stem': expected input with 8 maps, got shape \(8, 16, 56, 56\)$"):
        net(bad)
    net2 = Sequential("net").append(block)
    with pytest.raises(ModuleError) as info:
        net2(gpuarray.to_gpu(np.zeros((8, 32, 56, 56), np.float32)))
    assert str(info.value) == "Conv2D 'net.block3.dw': expected input with 16 maps, got shape (8, 32, 56, 56)"
    assert info.value.path == ["net", "block3", "dw"]


def test_call_time_errors_name_module_and_shapes(backend):
    conv = Conv2D(3, 4, 3, name="c1")
    with pytest.raises(ModuleError, match=r"Conv2D 'c1': expected 4D input \(N, C, H, W\), got shape \(3, 5\)"):
        conv(gpuarray.to_gpu(np.zeros((3, 5), np.float32)))
    with pytest.raises(ModuleError, match=r"Conv2D 'c1': expected input of dtype float32, got float64"):
        conv(gpuarray.to_gpu(np.zeros((1, 3, 5, 5))))
    with pytest.raises(ModuleError, match=r"Conv2D 'c1': input of shape \(1, 3, 2, 2\) is too small"):
        conv(gpuarray.to_gpu(np.zeros((1, 3, 2, 2), np.float32)))
    with pytest.raises(ModuleError, match=r"Conv2D 'c1': backward called before a forward pass"):
        Conv2D(3, 4, 3, name="c1").backward(gpuarray.to_gpu(np.zeros((1, 4, 3, 3), np.float32)))
    conv(gpuarray.to_gpu(np.zeros((1, 3, 5, 5), np.float32)))
    with pytest.raises(ModuleError, match=r"Conv2D 'c1': expected grad of shape \(1, 4, 3, 3\), got \(1, 4, 2, 2\)"):
        conv.backward(gpuarray.to_gpu(np.zeros((1, 4, 2, 2), np.float32)))


@pytest.mark.parametrize("kwargs,message", [
    (dict(inmaps=3, outmaps=4, size=3, groups=2), r"inmaps \(3\) and outmaps \(4\) must both be divisible by groups \(2\)"),
    (dict(inmaps=4, outmaps=6, size=3, groups=4), r"must both be divisible by groups \(4\)"),
    (dict(inmaps=3, outmaps=4, size=0), r"size must be >= 1, got \(0, 0\)"),
    (dict(inmaps=3, outmaps=4, size=3, stride=(1, 0)), r"stride must be >= 1, got \(1, 0\)"),
    (dict(inmaps=3, outmaps=4, size=3, dilation=0), r"dilation must be >= 1"),
    (dict(inmaps=3, outmaps=4, size=3, pad=-1), r"pad must be >= 0, got \(-1, -1\)"),
    (dict(inmaps=3, outmaps=4, size=3, pad=(1, 2, 3)), r"pad must be an int or an \(h, w\) pair"),
    (dict(inmaps=3, outmaps=4, size=3, initscheme="magic"), r"unknown init scheme 'magic'"),
    (dict(inmaps=3, outmaps=4, size=3, initscheme=("he", "sideways")), r"unknown init factor 'sideways'"),
    (dict(inmaps=0, outmaps=4, size=3), r"inmaps must be a positive int, got 0"),
])
def test_invalid_hyperparameters_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Conv2D(**kwargs)


def test_invalid_depthwise_and_names():
    with pytest.raises(ValueError, match="multiplier must be a positive int, got 0"):
        DepthwiseConv2D(3, 3, multiplier=0)
    with pytest.raises(ValueError, match="name must be a non-empty string without"):
        Conv2D(3, 3, 3, name="a.b")


@pytest.mark.parametrize("scheme,check", [
    ("none", lambda w, fi, fo: not w.any()),
    (None, lambda w, fi, fo: np.abs(w).max() <= np.sqrt(3 / fi) and abs(w.std() - np.sqrt(1 / fi)) < 0.1 * np.sqrt(1 / fi)),
    ("xavier_uniform", lambda w, fi, fo: np.abs(w).max() <= np.sqrt(3 / fi)),
    ("xavier", lambda w, fi, fo: abs(w.std() - np.sqrt(1 / fi)) < 0.05 * np.sqrt(1 / fi)),
    ("xavier_normal", lambda w, fi, fo: abs(w.std() - np.sqrt(1 / fi)) < 0.05 * np.sqrt(1 / fi)),
    ("he", lambda w, fi, fo: abs(w.std() - np.sqrt(2 / fi)) < 0.05 * np.sqrt(2 / fi)),
    ("gaussian", lambda w, fi, fo: abs(w.std() - 0.5) < 0.03),
    ("uniform", lambda w, fi, fo: np.abs(w).max() <= 0.5 and np.abs(w).max() > 0.49),
    (("he", "out"), lambda w, fi, fo: abs(w.std() - np.sqrt(2 / fo)) < 0.05 * np.sqrt(2 / fo)),
    (("xavier_uniform", "avg"), lambda w, fi, fo: np.abs(w).max() <= np.sqrt(3 / ((fi + fo) / 2))
     and np.abs(w).max() > 0.95 * np.sqrt(3 / ((fi + fo) / 2))),
])
def test_init_schemes(backend, scheme, check):
    conv = Conv2D(32, 64, 3, wscale=0.5, initscheme=scheme)
    w = conv.W.get()
    assert w.dtype == np.float32
    assert check(w, 32 * 9, 64 * 9)


def _leafModules(module):
    children = getattr(module, "modules", None)
    if not children:
        return [module]
    return [leaf for child in children.values() for leaf in _leafModules(child)]


def _everyContainer():
    """A net with every container kind nested (Sequential, Graph, Parallel) and list-valued children
    (Replicate, Add): (net, its graph). Input (N, 2, 5, 5), output (N, 3, 5, 5)."""
    from minidl.containers import Graph, Node
    from minidl.modules import Activation, Add, Identity, Replicate
    graph = Graph(inputs="x", outputs="add", nodes=[
        Node(Conv2D(3, 3, 1, name="gc"), inputs="x"), Node(Activation("relu", name="gr", inplace=True), inputs="gc"),
        Node(Add(name="add"), inputs=["gr", "x"])], name="graph")
    net = (Sequential("net").append(Conv2D(2, 4, 3, pad=1, name="first")).append(_block("inner"))
           .append(Conv2D(6, 3, 1, name="squeeze")).append(graph).append(Replicate(2, name="rep"))
           .append(Parallel("par").append(Conv2D(3, 3, 1, name="l")).append(Identity(name="i")))
           .append(Add(name="join")))
    return net, graph


@pytest.mark.parametrize("updGrad", [True, False])
def test_containers_let_go_of_gradients_once_passed_on(backend, updGrad):
    """Every child's input gradient is released once used (Container's docstring): none is alive after
    backward but the model's own grad; the gradients themselves are checked elsewhere (checkGradients)."""
    import gc
    import weakref
    net, graph = _everyContainer()
    refs = {}

    def hook(mod):
        grads = mod.grad if isinstance(mod.grad, list) else [mod.grad]     # Add, Replicate: lists
        for i, g in enumerate(grads):
            if g is not None:
                refs["%s%s" % (mod.name, i or "")] = weakref.ref(g)
    leaves = _leafModules(net)
    for leaf in leaves:
        leaf.backwardHook = hook
    net(gpuarray.to_gpu(np.random.randn(2, 2, 5, 5).astype(np.float32)))
    got = net.backward(gpuarray.to_gpu(np.random.randn(2, 3, 5, 5).astype(np.float32)), updGrad=updGrad)
    gc.collect()
    assert sorted(refs) == sorted(["add1", "join1"] + [leaf.name for leaf in leaves if updGrad or leaf.name != "first"])
    alive = sorted(name for name, ref in refs.items() if ref() is not None)
    assert alive == (["first"] if updGrad else [])
    assert (got is net.grad) and (got is not None) == updGrad
    assert all(leaf.grad is None for leaf in leaves)
    assert all(c.grad is None for c in (net["inner"], graph, net["par"]))
    assert all(leaf.data is not None for leaf in leaves)      # the forward outputs stay


def test_containers_let_go_of_the_last_pass_before_the_next(backend):
    """A forward pass starts by releasing what every child below kept from the last one (Container's
    docstring), so the workspace can hand those buffers out again in this pass: when the first child
    runs again, no output of the last pass is alive but the model's own (net.data)."""
    import gc
    import weakref
    net, _ = _everyContainer()
    x = gpuarray.to_gpu(np.random.randn(2, 2, 5, 5).astype(np.float32))
    net(x)
    refs = {}
    for leaf in _leafModules(net):
        outs = leaf.data if isinstance(leaf.data, list) else [leaf.data]       # Replicate: a list
        for k, out in enumerate(outs):
            if out is not x:
                refs["%s%s" % (leaf.name, k or "")] = weakref.ref(out)
    alive = []
    first = net["first"]
    run = first.updateData

    def probe(data):
        gc.collect()
        alive.extend(sorted(name for name, ref in refs.items() if ref() is not None))
        run(data)
    first.updateData = probe
    net(x)
    assert len(refs) > 10
    assert alive == ["join"]
    assert all(leaf.data is not None for leaf in _leafModules(net))          # and this pass's stay


@pytest.mark.parametrize("kind", ["Sequential", "Parallel", "Graph"])
def test_a_container_run_on_its_own_lets_go_of_its_last_pass(backend, kind):
    """Each container kind, run as the model: its children's outputs and its own from the last pass
    are gone when its first child runs again."""
    import gc
    import weakref
    from minidl.containers import Graph, Node
    x = gpuarray.to_gpu(np.random.randn(2, 2, 5, 5).astype(np.float32))
    if kind == "Sequential":
        net, given = Sequential("s").append(Conv2D(2, 3, 1, name="a")).append(Conv2D(3, 3, 1, name="b")), x
    elif kind == "Parallel":
        net, given = Parallel("p").append(Conv2D(2, 3, 1, name="a")).append(Conv2D(2, 3, 1, name="b")), [x, x]
    else:
        net, given = Graph(inputs="x", outputs="b", nodes=[Node(Conv2D(2, 3, 1, name="a"), inputs="x"),
                                                           Node(Conv2D(3, 3, 1, name="b"), inputs="a")]), x
    net(given)
    refs = [weakref.ref(mod.data) for mod in net.modules.values()]
    first = net.modules["a"]
    run, alive = first.updateData, []

    def probe(data):
        gc.collect()
        alive.extend(ref() is not None for ref in refs)
        run(data)
    first.updateData = probe
    net(given)
    assert alive == [False, False]


def test_a_forward_that_fails_part_way_leaves_no_output_to_backward_through(backend):
    net = Sequential("net").append(Conv2D(2, 3, 1, name="a")).append(Conv2D(3, 3, 3, name="b"))
    net(gpuarray.to_gpu(np.random.randn(2, 2, 5, 5).astype(np.float32)))
    with pytest.raises(ModuleError, match="too small"):
        net(gpuarray.to_gpu(np.random.randn(2, 2, 2, 2).astype(np.float32)))    # "b" refuses a 2x2 map
    with pytest.raises(ModuleError, match="'net'.*backward called before a forward pass"):
        net.backward(gpuarray.to_gpu(np.random.randn(2, 3, 3, 3).astype(np.float32)))
