"""Graph: a container of named nodes wired by name, for models that are not a chain.

Each node is a module and the names of what it reads: graph inputs or other nodes. The graph runs its
nodes in a topological order, feeds each the values it names, and hands back the outputs it names;
backward runs them in reverse and sums the gradients of a value read by several nodes (a skip
connection's input, a squeeze-and-excitation block's features)::

    block = Graph(inputs="x", outputs="add", nodes=[
        Node(Conv2D(16, 16, 3, pad=1, name="conv"), inputs="x"),
        Node(BatchNorm2D(16, name="bn"), inputs="conv"),
        Node(Add(name="add"), inputs=["bn", "x"]),        # the skip connection
    ], name="block")

This is PuzzleLib's Graph(inputs, outputs) with its Node(module, parents) wired by names instead of
objects, so a graph reads as a table and its blueprint is plain JSON. A module that returns a list
(Replicate, Parallel, a Graph with several outputs) is read whole by its name, or one element at a
time as ``(name, index)``.

Everything is checked when the graph is built, with the nodes named: names unique (no node named
like an input), every name a node reads defined, no cycle (the error lists one), every input read
and every node on the way to an output. Errors while running carry the node's dotted path
(``net.block.conv``), as in Sequential.

In place: a node whose module writes over its input and incoming gradient (``inplace=True``, as
MobileNets' activations after batch norm) gets a copy instead wherever another node, an input or an
output may still read that array (a value read twice, an array sharing memory with another value or
gradient), so in-place modules change speed, never results. (An in-place module inside a nested
container is the container's business, as in Sequential.)
"""

from minidl.backend import ops
from minidl.containers.container import Container, releaseGrad
from minidl.module import Module
from minidl.shapes import isInt


def _checkName(owner, what, name):
    if not isinstance(name, str) or not name or "." in name or "/" in name:
        raise ValueError("%s: %s must be a non-empty string without '.' or '/', got %r" % (owner, what, name))
    return name


class Node:
    """One node of a Graph: a named module and what it reads.

    module: a Module with a name (the node's name, by which other nodes and the graph's outputs
    refer to it). inputs: a name (a graph input's or another node's), a pair (name, index) for
    element index of a value that is a list, or a list of those; the module gets the one value for a
    single entry, else the list of values in that order.

    Example::

        >>> from minidl.modules import Add
        >>> Node(Add(name="add"), inputs=["bn", "x"])
        Node(Add(name='add'), inputs=['bn', 'x'])
    """

    def __init__(self, module, inputs):
        if not isinstance(module, Module):
            raise TypeError("Node: expected a Module, got %s" % type(module).__name__)
        if module.name is None:
            raise ValueError("Node: the %s needs a name (graphs refer to their nodes by name)" % type(module).__name__)
        self.module = module
        self.name = module.name
        entries = inputs if isinstance(inputs, list) else [inputs]
        if not entries:
            raise ValueError("Node %r: inputs is empty; a node reads at least one value" % self.name)
        self.inputs = [self._ref(entry) for entry in entries]

    def _ref(self, entry):
        """(source name, element index or None) of one entry of inputs."""
        if isinstance(entry, str):
            return _checkName("Node %r" % self.name, "an input name", entry), None
        if isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str) \
                and isInt(entry[1]) and entry[1] >= 0:
            return _checkName("Node %r" % self.name, "an input name", entry[0]), int(entry[1])
        raise TypeError("Node %r: each input is a name or a pair (name, index >= 0), got %r" % (self.name, entry))

    def __repr__(self):
        refs = [src if idx is None else (src, idx) for src, idx in self.inputs]
        return "Node(%r, inputs=%r)" % (self.module, refs if len(refs) > 1 else refs[0])


class Graph(Container):
    """Named nodes wired by name (the module docstring has the whole story).

    inputs: the graph's input names, a str or a list of them; with one input the graph takes one
    value (an array), with k > 1 a list of k. outputs: the names of the nodes whose values the
    graph returns, a str or a list (one output: the value itself, else a list). nodes: a list of
    Node, in any order (they run in a topological order that keeps the given one where the wiring
    allows). name: as for any Module. Any inconsistency raises ValueError (TypeError for objects
    that are not Nodes) naming the nodes involved. ``graph["conv"]`` is a node's module (dotted
    paths reach into nested containers); append is refused: the wiring is fixed at construction.

    Example::

        >>> from minidl.modules import Activation, Add, Linear
        >>> g = Graph(inputs="x", outputs="add", nodes=[
        ...     Node(Linear(4, 4, name="fc"), inputs="x"),
        ...     Node(Activation("relu", name="act"), inputs="fc"),
        ...     Node(Add(name="add"), inputs=["act", "x"])], name="res")
        >>> g(gpuarray.to_gpu(np.ones((2, 4), np.float32))).shape, g["fc"].W.shape
        ((2, 4), (4, 4))
        >>> g.backward(gpuarray.to_gpu(np.ones((2, 4), np.float32))).shape
        (2, 4)
    """

    def __init__(self, inputs, outputs, nodes, name=None):
        super().__init__(name)
        owner = "Graph %r" % name if name is not None else "Graph"
        self.inputs = self._names(owner, "inputs", inputs)
        self.outputs = self._names(owner, "outputs", outputs)
        if not isinstance(nodes, (list, tuple)) or not nodes:
            raise ValueError("%s: nodes must be a non-empty list of Node, got %r" % (owner, nodes))
        for i, node in enumerate(nodes):
            if not isinstance(node, Node):
                raise TypeError("%s: nodes[%d] is a %s, expected a Node (Node(module, inputs=...))"
                                % (owner, i, type(node).__name__))
        byName = {}
        for node in nodes:
            if node.name in byName:
                raise ValueError("%s: two nodes are named %r" % (owner, node.name))
            if node.name in self.inputs:
                raise ValueError("%s: node %r has the name of a graph input" % (owner, node.name))
            byName[node.name] = node
        self._checkReferences(owner, byName)
        for name_ in self._order(owner, byName):
            self.modules[name_] = byName[name_].module
        self.wiring = {name_: list(byName[name_].inputs) for name_ in self.modules}
        self._checkUse(owner)
        # how many reads each value has (an output counts as one): a value read more than once is
        # never handed to an in-place module as it is
        self._readers = {key: 0 for key in self.inputs + list(self.modules)}
        for refs in self.wiring.values():
            for src, _ in refs:
                self._readers[src] += 1
        for out in self.outputs:
            self._readers[out] += 1
        self.values = {}
        self.registerBlueprint({"inputs": list(self.inputs), "outputs": list(self.outputs), "name": name})

    # ---- construction checks --------------------------------------------------------------------

    @staticmethod
    def _names(owner, what, value):
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, (list, tuple)) or not names:
            raise ValueError("%s: %s must be a name or a non-empty list of names, got %r" % (owner, what, value))
        names = [_checkName(owner, "each of %s" % what, n) for n in names]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError("%s: %s lists %s more than once" % (owner, what, ", ".join(map(repr, repeated))))
        return names

    def _checkReferences(self, owner, byName):
        for node in byName.values():
            for src, _ in node.inputs:
                if src not in byName and src not in self.inputs:
                    raise ValueError("%s: node %r reads %r, which is neither a graph input nor a node (inputs: %s; "
                                     "nodes: %s)" % (owner, node.name, src, ", ".join(self.inputs), ", ".join(byName)))
        for out in self.outputs:
            if out not in byName:
                raise ValueError("%s: output %r is %s; outputs name nodes (nodes: %s)"
                                 % (owner, out, "a graph input" if out in self.inputs else "not a node",
                                    ", ".join(byName)))

    def _order(self, owner, byName):
        """The nodes' names in a topological order, ready nodes taken in their given order; a
        ValueError naming a cycle when there is none."""
        waiting = {name: {src for src, _ in node.inputs if src in byName} for name, node in byName.items()}
        order = []
        while waiting:
            ready = [name for name, deps in waiting.items() if not deps]
            if not ready:
                raise ValueError("%s: the nodes form a cycle: %s" % (owner, " -> ".join(self._cycle(waiting))))
            name = ready[0]
            order.append(name)
            del waiting[name]
            for deps in waiting.values():
                deps.discard(name)
        return order

    @staticmethod
    def _cycle(waiting):
        """One cycle among nodes that all wait on each other, as names in data-flow order, first repeated."""
        path, seen = [], {}
        name = next(iter(waiting))
        while name not in seen:
            seen[name] = len(path)
            path.append(name)
            name = sorted(waiting[name])[0]      # a node this one reads, itself stuck in the cycle part
        cycle = path[seen[name]:] + [name]
        return cycle[::-1]                        # reads -> feeds: the order data flows

    def _checkUse(self, owner):
        read = {src for refs in self.wiring.values() for src, _ in refs}
        unused = [name for name in self.inputs if name not in read]
        if unused:
            raise ValueError("%s: input(s) %s feed no node" % (owner, ", ".join(map(repr, unused))))
        live, frontier = set(self.outputs), list(self.outputs)
        while frontier:
            for src, _ in self.wiring[frontier.pop()]:
                if src in self.modules and src not in live:
                    live.add(src)
                    frontier.append(src)
        dead = [name for name in self.modules if name not in live]
        if dead:
            raise ValueError("%s: node(s) %s reach no output (outputs: %s)"
                             % (owner, ", ".join(map(repr, dead)), ", ".join(self.outputs)))

    # ---- structure ------------------------------------------------------------------------------

    def append(self, mod):
        """Refused: a graph's nodes and wiring are fixed when it is built (mod is not added; only
        bypass removes a node); build a new Graph with the extra Node instead."""
        raise TypeError("Graph %r: nodes are given at construction (Graph(inputs, outputs, nodes)); cannot append %s"
                        % (self.name, type(mod).__name__))

    def gather(self, values, name):
        """What node name reads, taken from values ({input or node name: value}, values of any kind:
        arrays, shapes, ONNX tensor names): the one value for a single entry, else the list.
        ModuleError when an entry (name, index) meets a value that is not a list that long."""
        picked = []
        for src, idx in self.wiring[name]:
            value = values[src]
            if idx is not None:
                if not isinstance(value, list) or idx >= len(value):
                    raise self.error("node %r reads element %d of %r, which is %s" % (
                        name, idx, src, "a list of %d" % len(value) if isinstance(value, list) else "not a list"))
                value = value[idx]
            picked.append(value)
        return picked[0] if len(picked) == 1 else picked

    def _split(self, data, what):
        """The graph's inputs (or output gradients) as a list, one per name."""
        names = self.inputs if what == "input" else self.outputs
        if len(names) == 1:
            return [data]
        if not isinstance(data, (list, tuple)) or len(data) != len(names):
            got = "a list of %d" % len(data) if isinstance(data, (list, tuple)) else "a single array"
            raise self.error("expected a list of %d %ss (%s), got %s" % (len(names), what, ", ".join(names), got))
        return list(data)

    def _joined(self, values, names):
        got = [values[name] for name in names]
        return got[0] if len(got) == 1 else got

    # ---- shapes ---------------------------------------------------------------------------------

    def checkDataShape(self, shape):
        self._split(shape, "input")

    def traceShapes(self, shape, visit=None):
        """The graph's output shape(s) for input shape(s) shape, found node by node in order:
        ``visit(module, inshape)`` gives each node's output shape (default: the module's
        dataShapeFrom); summary() passes one that also lists the node's layers."""
        shapes = dict(zip(self.inputs, self._split(shape, "input")))
        for name, mod in self.modules.items():
            inshape = self.gather(shapes, name)
            with self.childScope(mod):
                shapes[name] = visit(mod, inshape) if visit is not None else mod.dataShapeFrom(inshape)
        return self._joined(shapes, self.outputs)

    def dataShapeFrom(self, shape):
        return self.traceShapes(shape)

    def summaryRows(self, inshape, prefix=""):
        rows, childPrefix = [], self._childPrefix(prefix)

        def visit(mod, shape):
            modRows, out = mod.summaryRows(shape, childPrefix)
            rows.extend(modRows)
            return out
        return rows, self.traceShapes(inshape, visit)

    # ---- forward / backward ---------------------------------------------------------------------

    def updateData(self, data):
        lean = self.releaseLastPass()      # and this graph's own values, just below
        self.values = values = dict(zip(self.inputs, self._split(data, "input")))
        unread = dict(self._readers) if lean else None      # reads still to come (an output's never comes)
        for name, mod in self.modules.items():
            x = self.gather(values, name)
            if getattr(mod, "inplace", False) and not isinstance(x, list) and self._shared(x, values, name):
                x = ops.copy(x)         # the module would write over an array something else still reads
            with self.childScope(mod):
                values[name] = mod(x)
            if lean:
                self.releaseInput(mod)
                self._releaseRead(name, values, unread)
        self.data = self._joined(values, self.outputs)
        if lean:
            for name in self.inputs:
                values[name] = None

    def _releaseRead(self, name, values, unread):
        """Under minidl.noGrad(), after node name has run: let go of each node value it read whose
        readers have all run (the value, and the module that computed it). The graph's inputs stay
        until the pass ends: _shared looks for them among the values, so that an in-place node never
        writes over the caller's array through a node that passes it on (Identity, Flatten)."""
        for src, _ in self.wiring[name]:
            unread[src] -= 1
            if unread[src] == 0 and src in self.modules:
                values[src] = None
                self.modules[src].reset()

    def _shared(self, x, values, name):
        """Whether array x, the one value node name reads, may be read by anything but that node."""
        src = self.wiring[name][0][0]
        if src in self.inputs or self._readers[src] > 1:
            return True
        return self._overlaps(x, values.values())

    @staticmethod
    def _overlaps(x, others):
        """Whether x appears twice among others (arrays and lists of them, nested) or shares memory with
        any other array there."""
        seen = 0
        stack = list(others)
        while stack:
            item = stack.pop()
            if isinstance(item, (list, tuple)):
                stack.extend(item)
            elif item is x:
                seen += 1
                if seen > 1:
                    return True
            elif item is not None and ops.mayShareMemory(item, x):
                return True
        return False

    def backward(self, grad, updParamGrads=True, updGrad=True):
        self.checkBackward()
        pending = {}        # value name -> [(element index or None, gradient)], filled by its readers
        for name, g in zip(self.outputs, self._split(grad, "gradient")):
            pending.setdefault(name, []).append((None, g))
        for name in reversed(list(self.modules)):
            mod, refs = self.modules[name], self.wiring[name]
            g = self._sum(self.values[name], pending.pop(name))
            if getattr(mod, "inplace", False) and not isinstance(g, list) and \
                    self._overlaps(g, [g] + [c for entries in pending.values() for _, c in entries]):
                g = ops.copy(g)     # the module would write over a gradient another value still receives
            # a node reading only graph inputs computes its input gradient only if the caller wants ours
            wantGrad = updGrad or any(src not in self.inputs for src, _ in refs)
            with self.childScope(mod):
                gin = mod.backward(g, updParamGrads=updParamGrads and self.train, updGrad=wantGrad)
            releaseGrad(mod)        # pending holds it now (Container's docstring says why)
            if not wantGrad:
                continue
            for (src, idx), gi in zip(refs, [gin] if len(refs) == 1 else gin):
                if updGrad or src not in self.inputs:
                    pending.setdefault(src, []).append((idx, gi))
        if updGrad:
            self.grad = self._joined({name: self._sum(self.values[name], pending[name]) for name in self.inputs},
                                     self.inputs)
        else:
            self.grad = None
        return self.grad

    def _sum(self, value, entries):
        """The gradient of value from its readers' contributions [(element index or None, gradient)]:
        summed where several arrive (a new array), zeros for a list element nobody read."""
        if not isinstance(value, list):
            grads = [g for _, g in entries]
            return grads[0] if len(grads) == 1 else ops.addArrays(grads)
        out = []
        for i, element in enumerate(value):
            parts = [(None, g[i]) for idx, g in entries if idx is None] + [(None, g) for idx, g in entries if idx == i]
            out.append(self._sum(element, parts) if parts else self._zeros(element))
        return out

    def _zeros(self, value):
        if isinstance(value, list):
            return [self._zeros(v) for v in value]
        return ops.zeros(value.shape, value.dtype)

    # ---- rewiring (minidl.inference) -------------------------------------------------------------

    def readers(self, name):
        """How many times the value of name (an input or a node) is read: by nodes, and once for
        each output naming it."""
        return self._readers[name]

    def bypass(self, name):
        """Remove node name, which reads exactly one whole value (no element index), from the graph:
        every node and output that read it reads that value instead. For a node that computes the
        identity or has been folded into the one before it (minidl.inference). ValueError otherwise."""
        refs = self.wiring.get(name)
        if refs is None or len(refs) != 1 or refs[0][1] is not None:
            raise ValueError("Graph %r: bypass needs a node reading one whole value, got %r reading %r"
                             % (self.name, name, refs))
        src = refs[0][0]
        if any(ref == name and idx is not None for entries in self.wiring.values() for ref, idx in entries):
            raise ValueError("Graph %r: a node reads an element of %r, an array" % (self.name, name))
        if name in self.outputs and (src in self.inputs or src in self.outputs):
            # outputs name nodes, each once: the graph would not build again from its blueprint
            raise ValueError("Graph %r: cannot bypass output %r, which reads %s %r"
                             % (self.name, name, "the input" if src in self.inputs else "the output", src))
        del self.modules[name], self.wiring[name]
        for entries in self.wiring.values():
            entries[:] = [(src, None) if ref == (name, None) else ref for ref in entries]
        self.outputs = [src if out == name else out for out in self.outputs]
        self.blueprint["outputs"] = list(self.outputs)
        self._readers[src] += self._readers.pop(name) - 1
        self.reset()        # the last pass's values were wired the old way

    # ---- the rest -------------------------------------------------------------------------------

    def reset(self):
        super().reset()
        self.values = {}

    def getBlueprint(self):
        """{"classname": "Graph", "scheme": {"inputs", "outputs", "name"}, "modules": {name: child's
        blueprint}, "graph": [[node name, [input, ...]], ...] in run order}; an input is a name or
        [name, index]. minidl.blueprint rebuilds the graph from it."""
        blueprint = Module.getBlueprint(self)
        blueprint["modules"] = {name: mod.getBlueprint() for name, mod in self.modules.items()}
        blueprint["graph"] = [[name, [src if idx is None else [src, idx] for src, idx in refs]]
                              for name, refs in self.wiring.items()]
        return blueprint

    def __str__(self):
        lines = ["Graph(name=%r, inputs=%r, outputs=%r)" % (self.name, self.inputs, self.outputs)]
        for name, mod in self.modules.items():
            reads = ", ".join(src if idx is None else "%s[%d]" % (src, idx) for src, idx in self.wiring[name])
            inner = str(mod).splitlines()
            lines.append("  %s <- %s" % (inner[0], reads))
            lines.extend("  " + line for line in inner[1:])
        return "\n".join(lines)

    __repr__ = __str__
