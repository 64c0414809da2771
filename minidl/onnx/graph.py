"""The ONNX graph under construction, and the registry of converters.

A converter turns one module into ONNX nodes. Its signature is

    convert(graph, module, path, x, shape) -> the output tensor's name, or a list of names

``x`` names the input tensor (a list of names where minidl passes a list of arrays), ``shape`` is
the input's shape at the export's batch size (a tuple, or a list of tuples) and ``path`` the
module's place in the model as a list of names from the root (``["net", "block1", "dw"]``). A
converter adds nodes with ``graph.node``, constants with ``graph.param`` and ``graph.constant``,
and hands children to ``graph.convert``. It must describe the module's eval-mode function for any
batch size: the batch dimension of the exported input is symbolic.

Converters are keyed by the exact class: a subclass is not covered by its parent's converter (it
may compute something else) until it is registered itself, with its own converter or its parent's.

Nothing here imports onnx: nodes stay plain records until ``toModel`` builds the ModelProto.
"""

import re

import numpy as np

from minidl.errors import ModuleError
from minidl.module import Module

_CONVERTERS = {}

# the graph's own input and output names; module tensors never take them
_RESERVED = re.compile(r"(data|output)[0-9]*")


class ExportError(ModuleError):
    """Raised when a model holds a module that has no ONNX converter; names its class and dotted path."""


def register(*classes):
    """Decorator: ``@register(MyModule)`` makes the function the ONNX converter of exactly those classes."""
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, Module)):
            raise TypeError("minidl.onnx.register: expected Module subclasses, got %r" % (cls,))

    def decorate(convert):
        for cls in classes:
            _CONVERTERS[cls] = convert
        return convert
    return decorate


def converterFor(cls):
    """The converter registered for exactly cls, or None."""
    return _CONVERTERS.get(cls)


def dotted(path):
    return ".".join(name for name in path if name)


class Graph:
    """Nodes, initializers and the tensor names in use, for one export at one opset."""

    def __init__(self, opset):
        self.opset = opset
        self.nodes = []           # [opType, inputs, outputs, name, attrs]
        self.initializers = {}    # name -> numpy array
        self.taken = set()        # tensor names in use (inputs, initializers, node outputs)
        self.nodeNames = set()
        self.shared = {}          # (id(Variable), shape) -> (Variable, name): a shared weight is stored once
        self.scalars = {}         # value -> name of a float32 scalar initializer, shared by every node using it

    # ---- names ----------------------------------------------------------------------------------

    def unique(self, base, taken):
        name, i = base, 1
        while name in taken or _RESERVED.fullmatch(name):
            name, i = "%s_%d" % (base, i), i + 1
        taken.add(name)
        return name

    def reserve(self, name):
        """Claim one of the graph's own input names ("data", "data0", ...)."""
        self.taken.add(name)
        return name

    # ---- building -------------------------------------------------------------------------------

    def node(self, opType, inputs, path, suffix=None, attrs=None):
        """Append an opType node reading the tensors inputs; returns its output tensor's name.

        The node and its output are named after the module's dotted path (``block1.dw``), with
        ``/suffix`` for the second and later nodes of one module (module names never hold '/')."""
        base = dotted(path) or opType
        if suffix:
            base = "%s/%s" % (base, suffix)
        name = self.unique(base, self.nodeNames)
        out = self.unique(base, self.taken)
        self.nodes.append([opType, list(inputs), [out], name, dict(attrs or {})])
        return out

    def constant(self, path, key, value):
        """A float32 (or int64, for shapes) initializer named ``<path>.<key>``; returns its name."""
        value = np.array(value, order="C")   # a copy; 0-d stays 0-d (Clip's bounds are scalars)
        if value.dtype not in (np.float32, np.int64):
            raise TypeError("minidl.onnx: constant %r must be float32 or int64, got %s" % (key, value.dtype))
        name = self.unique(dotted(path + [key]), self.taken)
        self.initializers[name] = value
        return name

    def scalar(self, value):
        """A float32 scalar (0-d) initializer holding value, one per value in the graph; returns its name."""
        value = np.float32(value)
        if value.item() not in self.scalars:
            self.scalars[value.item()] = self.constant([], "scalar(%r)" % value.item(), value)
        return self.scalars[value.item()]

    def param(self, path, key, var, shape=None):
        """The initializer holding Variable var (read with .get(), so either backend works),
        reshaped to shape; named ``<path>.<key>`` as in saved weights; a shared Variable once."""
        cacheKey = (id(var), shape)
        if cacheKey in self.shared:
            return self.shared[cacheKey][1]
        value = var.data.get()
        name = self.constant(path, key, value if shape is None else value.reshape(shape))
        self.shared[cacheKey] = (var, name)   # the Variable stays referenced, so its id stays its own
        return name

    def convert(self, module, path, x, shape):
        """Convert module (at path) reading x of shape; returns (output name(s), output shape).

        A shape the module refuses raises its ModuleError, with the module's full dotted path."""
        convert = converterFor(type(module))
        if convert is None:
            raise ExportError(type(module).__name__, path,
                              "cannot export to ONNX: no converter for %s (minidl.onnx.register adds one)"
                              % type(module).__qualname__)
        parents = [name for name in path[:-1] if name]
        try:
            module.checkDataShape(shape)
        except ModuleError as e:
            e.path = parents + e.path
            raise
        y = convert(self, module, path, x, shape)
        try:
            outshape = module.dataShapeFrom(shape)   # after the children, which checked their own inputs
        except ModuleError as e:
            e.path = parents + e.path
            raise
        return y, outshape

    def finish(self, outputs, names):
        """Make the model's result tensors (outputs) the graph outputs called names: the node
        making one is renamed, or, for a tensor that is a graph input or shows up twice, an
        Identity node copies it."""
        producers = {out: node for node in self.nodes for out in node[2]}
        renamed = {}
        for tensor, name in zip(outputs, names):
            self.taken.add(name)
            if tensor in producers and tensor not in renamed:
                for node in self.nodes:
                    node[1] = [name if t == tensor else t for t in node[1]]
                producers[tensor][2] = [name if t == tensor else t for t in producers[tensor][2]]
                renamed[tensor] = name
            else:
                self.nodes.append(["Identity", [renamed.get(tensor, tensor)], [name],
                                   self.unique(name, self.nodeNames), {}])

    # ---- the ModelProto -------------------------------------------------------------------------

    def toModel(self, onnx, inputs, outputs, graphName, producerVersion):
        """The ModelProto: inputs and outputs are [(name, dims)], a dim an int, a symbol or None."""
        helper = onnx.helper
        nodes = [helper.make_node(op, ins, outs, name=name, **attrs) for op, ins, outs, name, attrs in self.nodes]
        inits = [onnx.numpy_helper.from_array(value, name) for name, value in self.initializers.items()]

        def info(name, dims):
            return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(dims))
        graph = helper.make_graph(nodes, graphName, [info(*i) for i in inputs], [info(*o) for o in outputs],
                                  initializer=inits)
        # the lowest IR version that carries this opset, so older runtimes load the file
        return helper.make_model_gen_version(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                                             producer_name="minidl", producer_version=producerVersion)
