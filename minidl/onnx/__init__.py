"""ONNX export: ``minidl.onnx.export(model, inputShape, path=None, opset=17)``.

The file describes the model's eval-mode function (batch norm with its running statistics, dropout
as the identity) whatever mode the model is in; export reads weights and statistics with ``.get()``
(either backend) and changes nothing in the model, its mode included.

- Input: one float32 tensor ``data`` of ``inputShape``, or, for a list of shapes (a model taking a
  list, as a Parallel does), ``data0``, ``data1``, ... The batch dimension is the symbol ``N``
  (any batch runs) unless the model accepts only the batch it was exported with (a Reshape that
  fixes it), where it stays that number.
- Output: ``output``, or ``output0``, ``output1``, ... for a model that returns a list.
- Nodes are named after the modules' dotted paths (``mobilenet.block1.dw``), initializers as in
  saved weights (``mobilenet.block1.dw.W``).
- Opsets 9 to 22 (default 17); every module of minidl is covered at each. The file passes
  ``onnx.checker.check_model(model, full_check=True)`` and carries the lowest IR version of its
  opset, so older runtimes load it.
- A module without a converter raises ExportError naming its class and dotted path. Converters
  are keyed by exact class; ``register`` adds one for a new module (minidl/onnx/graph.py says
  what a converter receives and returns).

onnx is an optional dependency (``pip install minidl[onnx]``): importing minidl, or this package,
never imports it; ``export`` does, and raises ImportError saying how to install it when absent.
"""

from minidl import __version__, filesave
from minidl.errors import ModuleError
from minidl.module import Module
from minidl.onnx.graph import ExportError, Graph, converterFor, register  # noqa: F401
from minidl.onnx import converters  # noqa: F401  (registers the converters of minidl's modules)
from minidl.shapes import isInt

DEFAULT_OPSET = 17
MIN_OPSET, MAX_OPSET = 9, 22


def export(model, inputShape, path=None, opset=DEFAULT_OPSET):
    """Write model as an ONNX file at path (replaced atomically, as weight saves are), or return the
    file's bytes when path is None.

    inputShape: the input's shape, a tuple of positive ints such as (1, 3, 224, 224) (its batch
    becomes symbolic), or a list of such tuples for a model taking a list of arrays. opset: an int
    from MIN_OPSET to MAX_OPSET. Raises ValueError for a bad opset or inputShape, ExportError for a
    module without a converter, the module's ModuleError for a shape it refuses, TypeError for a
    model that is not a Module, and ImportError when onnx is not installed.
    """
    if not isinstance(model, Module):
        raise TypeError("minidl.onnx.export: expected a Module, got %s" % type(model).__name__)
    if not isInt(opset) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError("minidl.onnx.export: opset must be an int from %d to %d, got %r"
                         % (MIN_OPSET, MAX_OPSET, opset))
    shapes, single = _checkShapes(inputShape)
    onnx = _importOnnx()
    known = onnx.defs.onnx_opset_version()
    if known < opset:
        raise ValueError("minidl.onnx.export: the installed onnx %s knows opsets up to %d, asked for %d: "
                         "upgrade onnx or export a lower opset" % (onnx.__version__, known, opset))
    graph = Graph(int(opset))
    inputs = [graph.reserve("data" if single else "data%d" % i) for i in range(len(shapes))]
    y, outshape = graph.convert(model, [model.name], inputs[0] if single else inputs, shapes[0] if single else shapes)
    outputs, outshapes = _flat(y), _flat(outshape)
    names = ["output"] if not isinstance(y, list) else ["output%d" % i for i in range(len(outputs))]
    graph.finish(outputs, names)

    indims, outdims = _batchDims(model, shapes, single, outshapes)
    proto = graph.toModel(onnx, list(zip(inputs, indims)), list(zip(names, outdims)),
                          model.name or type(model).__name__, __version__)
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    if path is None:
        return data

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)
    filesave.replace(path, write)
    return None


def _importOnnx():
    try:
        import onnx
        import onnx.checker
        import onnx.helper
        import onnx.numpy_helper  # noqa: F401
    except ImportError as e:
        raise ImportError("minidl.onnx.export needs the onnx package: pip install minidl[onnx] (%s)" % e) from e
    return onnx


def _flat(items):
    """A model's result (a name or shape, or a list of them, nested as minidl nests lists) as a flat list."""
    return [leaf for item in items for leaf in _flat(item)] if isinstance(items, list) else [items]


def _checkShapes(inputShape):
    """([shape tuples], one input?) for inputShape: a shape (tuple or list of positive ints) or a list of tuples."""
    def isShape(s):
        return isinstance(s, (tuple, list)) and len(s) > 0 and all(isInt(d) and d >= 1 for d in s)
    if isShape(inputShape):
        return [tuple(int(d) for d in inputShape)], True
    if isinstance(inputShape, list) and inputShape and all(isinstance(s, tuple) and isShape(s) for s in inputShape):
        return [tuple(int(d) for d in s) for s in inputShape], False
    raise ValueError("minidl.onnx.export: inputShape must be a shape of positive ints such as (1, 3, 224, 224), "
                     "or a list of such tuples for a model taking a list, got %r" % (inputShape,))


def _batchDims(model, shapes, single, outshapes):
    """(input dims, output dims) with the batch symbolic where the model takes any batch.

    The model's shapes at batch n+1 tell which output dimensions follow the batch: one that is n
    and becomes n+1 is the batch (the symbol), one that changes otherwise is left unknown (None).
    A model refusing batch n+1 (a Reshape that fixes it) keeps every dimension a number."""
    batches = [s[0] for s in shapes]
    bumped = [(s[0] + 1,) + s[1:] for s in shapes]
    try:
        other = model.dataShapeFrom(bumped[0] if single else bumped)
    except ModuleError:
        return shapes, outshapes
    other = _flat(other)
    same = len(set(batches)) == 1   # one symbol for all inputs only when their batches agree
    symbols = ["N" if same else "N%d" % i for i in range(len(shapes))]
    indims = [(sym,) + s[1:] for sym, s in zip(symbols, shapes)]
    outdims = []
    for a, b in zip(outshapes, other):
        outdims.append(tuple(d if d == e else "N" if same and (d, e) == (batches[0], batches[0] + 1) else None
                             for d, e in zip(a, b)))
    return indims, outdims
