"""Graph: named nodes wired by name. Values against plain numpy, gradients by finite differences,
construction and run-time errors, names in save/load and blueprints, summary, modes, in place."""

import io
import json

import h5py
import numpy as np
import pytest

import minidl
from gradcheck import assertClose, checkGradients
from minidl.backend import gpuarray
from minidl.containers import Graph, Node, Parallel, Sequential
from minidl.errors import LoadError, ModuleError
from minidl.modules import (
    Activation, Add, BatchNorm2D, Concat, Conv2D, Identity, Linear, Mul, Reshape, Replicate,
)


def _dev(a):
    return gpuarray.to_gpu(np.asarray(a, np.float32))


def _skip(inplace=False):
    """x -> fc -> tanh -> + x: the smallest skip connection (tanh: smooth, for finite differences)."""
    return Graph(inputs="x", outputs="add", name="res", nodes=[
        Node(Linear(5, 5, name="fc"), inputs="x"),
        Node(Activation("tanh", name="act", inplace=inplace), inputs="fc"),
        Node(Add(name="add"), inputs=["act", "x"]),
    ])


def test_skip_connection_values_and_gradients(backend):
    g = _skip()
    x = np.random.randn(4, 5).astype(np.float32)
    W, b = g["fc"].W.get().astype(np.float64), g["fc"].b.get().astype(np.float64)
    y = g(_dev(x)).get()
    h = x @ W + b
    assertClose(y, np.tanh(h) + x, 1e-5, 1e-6, "forward")
    dy = np.random.randn(4, 5)
    g.zeroGradParams()
    dx = g.backward(_dev(dy)).get()
    dh = dy * (1 - np.tanh(h) ** 2)
    assertClose(dx, dy + dh @ W.T, 1e-5, 1e-6, "input gradient: the skip's and the branch's, summed")
    assertClose(g["fc"].vars["W"].grad.get(), x.T @ dh, 1e-5, 1e-6, "W gradient")
    checkGradients(_skip(), np.random.randn(3, 5).astype(np.float32), kind="smooth")


def _multi():
    """Two inputs, two outputs, a value read three times (once twice by one node), list values read
    whole and by element."""
    return Graph(inputs=["a", "b"], outputs=["prod", "cat"], name="multi", nodes=[
        Node(Linear(4, 4, name="fa"), inputs="a"),
        Node(Replicate(2, name="rep"), inputs="fa"),
        Node(Parallel("par").append(Linear(4, 4, name="p0")).append(Identity(name="p1")), inputs="rep"),
        Node(Add(name="twice"), inputs=["b", "b", ("par", 0)]),
        Node(Mul(name="prod"), inputs=[("rep", 1), "twice"]),
        Node(Concat(1, name="cat"), inputs=["fa", "twice"]),
    ])


def test_several_inputs_outputs_and_fan_out(backend):
    g = _multi()
    a, b = np.random.randn(3, 4).astype(np.float32), np.random.randn(3, 4).astype(np.float32)
    prod, cat = (o.get() for o in g([_dev(a), _dev(b)]))
    fa = a.astype(np.float64) @ g["fa"].W.get() + g["fa"].b.get()
    twice = 2 * b + fa @ g["par.p0"].W.get() + g["par.p0"].b.get()
    assertClose(prod, fa * twice, 1e-5, 1e-5, "prod")
    assertClose(cat, np.concatenate([fa, twice], 1), 1e-5, 1e-5, "cat")
    assert g.dataShapeFrom([(3, 4), (3, 4)]) == [(3, 4), (3, 8)]
    # the 'p1' branch of par is never read: its gradient comes back as zeros, not a missing entry
    checkGradients(_multi(), [a, b], kind="smooth")


def test_update_grad_false_still_accumulates_parameter_gradients(backend):
    x, dy = np.random.randn(3, 5).astype(np.float32), np.random.randn(3, 5).astype(np.float32)
    grads = []
    for updGrad in (True, False):
        g = _skip()
        g["fc"].vars["W"].data.set(np.eye(5, dtype=np.float32))
        g(_dev(x))
        assert (g.backward(_dev(dy), updGrad=updGrad) is None) == (not updGrad)
        grads.append(g["fc"].vars["W"].grad.get())
    assert np.array_equal(*grads)


def test_modes_reach_every_node(backend):
    g = Graph(inputs="x", outputs="bn", nodes=[Node(Sequential("s").append(Conv2D(2, 2, 1, name="c")), "x"),
                                               Node(BatchNorm2D(2, name="bn"), "s")])
    g.evalMode()
    assert not g.train and not g["s"].train and not g["s.c"].train and not g["bn"].train
    g.trainMode()
    assert g["bn"].train and g["s.c"].train


# ---- construction errors ------------------------------------------------------------------------------

def _lin(name):
    return Linear(2, 2, name=name)


BAD = [
    ("cycle", lambda: Graph("x", "c", [Node(_lin("a"), ["x", "c"]), Node(_lin("b"), "a"), Node(_lin("c"), "b")],
                            name="g"),
     ValueError, r"Graph 'g': the nodes form a cycle: a -> b -> c -> a"),
    ("self_loop", lambda: Graph("x", "a", [Node(Add(name="a"), ["x", "a"])]), ValueError,
     r"Graph: the nodes form a cycle: a -> a"),
    ("missing", lambda: Graph("x", "b", [Node(_lin("a"), "x"), Node(_lin("b"), "aa")], name="g"), ValueError,
     r"Graph 'g': node 'b' reads 'aa', which is neither a graph input nor a node \(inputs: x; nodes: a, b\)"),
    ("duplicate", lambda: Graph("x", "a", [Node(_lin("a"), "x"), Node(_lin("a"), "x")]), ValueError,
     r"two nodes are named 'a'"),
    ("node_named_as_input", lambda: Graph("x", "x", [Node(_lin("x"), "x")]), ValueError,
     r"node 'x' has the name of a graph input"),
    ("unused_input", lambda: Graph(["x", "y"], "a", [Node(_lin("a"), "x")]), ValueError,
     r"input\(s\) 'y' feed no node"),
    ("dead_node", lambda: Graph("x", "a", [Node(_lin("a"), "x"), Node(_lin("b"), "a")]), ValueError,
     r"node\(s\) 'b' reach no output \(outputs: a\)"),
    ("output_is_input", lambda: Graph("x", "x", [Node(_lin("a"), "x")]), ValueError,
     r"output 'x' is a graph input; outputs name nodes"),
    ("output_unknown", lambda: Graph("x", ["a", "z"], [Node(_lin("a"), "x")]), ValueError,
     r"output 'z' is not a node"),
    ("repeated_output", lambda: Graph("x", ["a", "a"], [Node(_lin("a"), "x")]), ValueError,
     r"outputs lists 'a' more than once"),
    ("no_nodes", lambda: Graph("x", "a", []), ValueError, r"nodes must be a non-empty list of Node"),
    ("not_a_node", lambda: Graph("x", "a", [_lin("a")]), TypeError,
     r"nodes\[0\] is a Linear, expected a Node"),
    ("unnamed_module", lambda: Node(Linear(2, 2), "x"), ValueError, r"the Linear needs a name"),
    ("bad_entry", lambda: Node(_lin("a"), ["x", 0]), TypeError,
     r"Node 'a': each input is a name or a pair \(name, index >= 0\), got 0"),
    ("dotted_input", lambda: Node(_lin("a"), "b.c"), ValueError, r"an input name must be a non-empty string"),
    ("no_inputs", lambda: Node(_lin("a"), []), ValueError, r"Node 'a': inputs is empty"),
]


@pytest.mark.parametrize("build,error,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_construction_errors_name_the_nodes(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_append_is_refused():
    with pytest.raises(TypeError, match="Graph 'res': nodes are given at construction"):
        _skip().append(_lin("more"))


# ---- names: indexing, errors, variables, save/load -------------------------------------------------------

def _nested():
    """A Sequential holding a Graph holding a Sequential and a Graph: every nesting save/load meets."""
    inner = Graph(inputs="x", outputs="scale", name="se", nodes=[
        Node(Conv2D(4, 4, 1, name="fc"), "x"),
        Node(Activation("sigmoid", name="gate"), "fc"),
        Node(Mul(name="scale"), ["x", "gate"]),
    ])
    body = Graph(inputs="x", outputs="add", name="block", nodes=[
        Node(Sequential("body").append(Conv2D(4, 4, 3, pad=1, name="conv")).append(BatchNorm2D(4, name="bn")), "x"),
        Node(Activation("relu", name="act", inplace=True), "body"),
        Node(inner, "act"),
        Node(Add(name="add"), ["se", "x"]),
    ])
    return Sequential("net").append(Conv2D(3, 4, 1, name="stem")).append(body)


def test_names_are_dotted_in_indexing_variables_attrs_and_errors(backend):
    net = _nested()
    assert net["block.se.fc"] is net["block"]["se"]["fc"]
    assert [name for name, _ in net.namedVars()] == [
        "stem.W", "stem.b", "block.body.conv.W", "block.body.conv.b", "block.body.bn.scale", "block.body.bn.bias",
        "block.se.fc.W", "block.se.fc.b"]
    assert [name for name, _ in net.namedAttrs()] == ["block.body.bn.mean", "block.body.bn.var"]
    assert list(net.namedContainers()) == ["", "block", "block.body", "block.se"]
    assert sorted(n for names in net.getVarTable().values() for n in names) == sorted(n for n, _ in net.namedVars())
    with pytest.raises(KeyError, match="Graph 'block' has no child 'nope'"):
        net["block.nope"]
    with pytest.raises(ModuleError, match=r"Conv2D 'block.body.conv': expected input with 4 maps"):
        net["block"](_dev(np.zeros((1, 3, 5, 5))))
    with pytest.raises(ModuleError, match=r"Conv2D 'net.stem': expected input with 3 maps"):
        net(_dev(np.zeros((1, 4, 5, 5))))
    net(_dev(np.random.randn(1, 3, 5, 5)))
    with pytest.raises(ModuleError,
                       match=r"Add 'net.block.add': expected grad of shape \(1, 4, 5, 5\), got \(1, 4, 5, 6\)"):
        net.backward(_dev(np.zeros((1, 4, 5, 6))))


def test_input_count_and_element_errors(backend):
    g = _multi()
    with pytest.raises(ModuleError, match=r"Graph 'multi': expected a list of 2 inputs \(a, b\), got a single array"):
        g(_dev(np.zeros((3, 4))))
    g([_dev(np.zeros((3, 4))), _dev(np.zeros((3, 4)))])
    with pytest.raises(ModuleError,
                       match=r"Graph 'multi': expected a list of 2 gradients \(prod, cat\), got a list of 1"):
        g.backward([_dev(np.zeros((3, 4)))])
    picky = Graph("x", "b", [Node(Replicate(2, name="r"), "x"), Node(Identity(name="b"), ("r", 2))], name="g")
    with pytest.raises(ModuleError, match=r"Graph 'g': node 'b' reads element 2 of 'r', which is a list of 2"):
        picky(_dev(np.zeros(3)))
    with pytest.raises(ModuleError, match=r"node 'b' reads element 2 of 'r', which is a list of 2"):
        picky.dataShapeFrom((3,))


def test_save_load_in_puzzlelib_layout(backend, tmp_path):
    np.random.seed(3)
    net = _nested()
    for _, attr in net.namedAttrs():
        attr.set(np.random.uniform(0.5, 1.5, attr.shape).astype(np.float32))
    net.save(str(tmp_path / "g.h5"))
    with h5py.File(tmp_path / "g.h5", "r") as f:
        assert sorted(f["links"]) == sorted("net." + name for name, _ in net.namedVars())
        assert sorted(f["attrs"]) == ["net.block.body.bn.mean", "net.block.body.bn.var"]
        assert {"attrs.net", "attrs.net.block", "attrs.net.block.body", "attrs.net.block.se"} <= set(f)
    np.random.seed(4)
    fresh = _nested()
    fresh.load(str(tmp_path / "g.h5"))
    x = _dev(np.random.randn(2, 3, 6, 6))
    net.evalMode()
    fresh.evalMode()
    assert np.array_equal(net(x).get(), fresh(x).get())


def test_blueprint_rebuilds_nested_graphs_with_their_wiring(backend):
    net = Sequential("outer").append(_multi())
    model = minidl.load(net.save())
    assert str(model) == str(net)
    assert model["multi"].wiring == net["multi"].wiring and model["multi"].outputs == ["prod", "cat"]
    xs = [_dev(np.random.randn(3, 4)), _dev(np.random.randn(3, 4))]
    assert all(np.array_equal(a.get(), b.get()) for a, b in zip(model(xs), net(xs)))
    nested = _nested()
    rebuilt = minidl.load(nested.save())
    x = _dev(np.random.randn(2, 3, 6, 6))
    nested.evalMode()
    rebuilt.evalMode()
    assert np.array_equal(rebuilt(x).get(), nested(x).get())


def _graphBlueprint(graph, inputs=("x",), **scheme):
    modules = {entry[0]: {"classname": "Identity", "scheme": {"name": entry[0]}} for entry in graph}
    return json.dumps({"classname": "Graph", "scheme": dict({"name": "g", "inputs": list(inputs), "outputs": ["b"]},
                                                            **scheme),
                       "graph": graph, "modules": modules})


HOSTILE = [
    ("cycle", [["a", ["b"]], ["b", ["a"]]], {}, r"g: Graph fails: Graph 'g': the nodes form a cycle: a -> b -> a"),
    ("missing", [["a", ["x"]], ["b", ["q"]]], {}, r"node 'b' reads 'q', which is neither"),
    ("entry_not_a_pair", [["a", ["x"]], ["b"]], {}, r"\"graph\" must pair each key of \"modules\" once"),
    ("bad_reference", [["a", ["x"]], ["b", [["a", "0"]]]], {}, r"each input is a name or a pair"),
    ("object_reference", [["a", ["x"]], ["b", [{"a": 1}]]], {}, r"argument 'graph' is \{'a': 1\}"),
    ("extra_argument", [["a", ["x"]], ["b", ["a"]]], {"nodes": []}, r"Graph's scheme takes inputs, outputs and name"),
]


@pytest.mark.parametrize("graph,scheme,message", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_graph_blueprints_raise_load_error(backend, graph, scheme, message):
    blob = Sequential("net").append(Linear(3, 2, name="fc")).save(withBlueprint=False)
    buf = io.BytesIO(blob)
    with h5py.File(buf, "a") as f:
        f.create_dataset("blueprint", data=_graphBlueprint(graph, **scheme), dtype=h5py.string_dtype("utf-8"))
    with pytest.raises(LoadError, match=message):
        minidl.load(buf.getvalue())


def test_summary_lists_every_node_with_its_path():
    out = io.StringIO()
    totals = _nested().summary((2, 3, 6, 6), file=out)
    text = out.getvalue()
    for row in ("net.block.body.conv", "net.block.act", "net.block.se.scale", "net.block.add"):
        assert row in text, row
    assert totals["params"] == _nested().numOfParams() and totals["outshape"] == (2, 4, 6, 6)


# ---- in place ---------------------------------------------------------------------------------------------

def _shared(inplace):
    """In-place activations reading values other nodes read too: a conv's output also read by Add,
    behind a view (Reshape); a graph input; a value read twice by one Add; a gradient Add hands to two
    readers at once (behind an Identity). Smooth kinds, so finite differences check them too."""
    return Graph(inputs="x", outputs="out", name="g", nodes=[
        Node(Conv2D(2, 2, 3, pad=1, name="conv"), "x"),
        Node(Reshape((0, 2, 4, 4), name="view"), "conv"),
        Node(Activation("tanh", name="r1", inplace=inplace), "view"),
        Node(Activation("sigmoid", name="r2", inplace=inplace), "x"),
        Node(Add(name="sum"), ["r1", "conv", "r2", "r2"]),
        Node(Identity(name="id"), "sum"),
        Node(Activation("tanh", name="r3", inplace=inplace), "id"),
        Node(Add(name="out"), ["r3", "sum"]),
    ])


def test_in_place_nodes_never_change_results(backend):
    x = np.random.randn(2, 2, 4, 4).astype(np.float32)
    dy = np.random.randn(2, 2, 4, 4).astype(np.float32)
    results = []
    for inplace in (False, True):
        np.random.seed(9)
        g = _shared(inplace)
        xd = _dev(x)
        y = g(xd).get()
        assert np.array_equal(xd.get(), x), "the caller's input is never written over"
        g.zeroGradParams()
        results.append([y, g.backward(_dev(dy)).get()] + [v.grad.get() for _, v in g.namedVars()])
    for plain, inplace in zip(*results):
        assert np.array_equal(plain, inplace)
    checkGradients(_shared(True), x, kind="smooth")
