"""Blueprints: a model's architecture as JSON, stored in its weights file.

``model.save(path)`` stores, next to the weights, the dataset ``blueprint``:
the JSON of ``model.getBlueprint()``, PuzzleLib's format. A module is
``{"classname": "Conv2D", "scheme": {constructor arguments}}``; a container
adds ``"modules": {name: blueprint}`` and ``"graph": [names in order]`` (a
Graph: ``[[node name, [what it reads, ...]], ...]``, its scheme holding its
inputs, outputs and name).
``minidl.load(path)`` (``load`` here) builds the model from it and loads the
weights, so a model comes back without the code that built it; PuzzleLib files
saved with ``withBlueprint=True`` load the same way.

What a file can make minidl do is bounded, since the file may be hostile:
- only minidl's own layers and containers are built (``CLASSES``: the public
  classes of minidl.modules and minidl.containers), never a class or function
  a name in the file points at, and only with arguments their constructors
  declare, each a JSON number, string, bool, null or list of them;
- a class that takes ``empty`` gets ``empty=True`` (no random initialisation:
  the weights come from the file), and building the model may allocate at most
  ``BUDGET_FACTOR`` times the file's size (plus 1 MiB): deflate packs at most
  about 1032 bytes into one, and a model holds each weight twice (its value and
  its gradient) beside its statistics; a larger model is refused before it is
  allocated;
- the JSON text may be at most MAX_JSON_BYTES and nest at most MAX_DEPTH deep;
  NaN and Infinity, duplicate keys and anything else malformed are refused.
Every refusal is a LoadError naming the file and the module's dotted path.
The weights then load as ``Module.load`` loads them, strictly: every shape
must equal the built model's.

Not supported: user-defined modules (save with ``withBlueprint=True`` names
the first one; build such models in code and call ``model.load(path)``), and
modules whose arguments are not plain values.
"""

import inspect
import json
import math
import os

import h5py
import numpy as np

from minidl import h5safe, serialization
from minidl.backend import gpuarray
from minidl.errors import LoadError, ModuleError

MAX_JSON_BYTES = h5safe.MAX_STRING_BYTES
MAX_DEPTH = 64
BUDGET_FACTOR = 3 * 1032


class BlueprintError(ModuleError):
    """A model that cannot be described as a blueprint (save with withBlueprint=True); kind, path
    and detail as ModuleError's, naming the first module at fault."""


def _classes():
    from minidl import containers, modules
    from minidl.containers.container import Container
    from minidl.module import Module
    found = {}
    for package in (modules, containers):
        for name, obj in vars(package).items():
            if isinstance(obj, type) and issubclass(obj, Module) and obj not in (Module, Container) \
                    and name == obj.__name__:
                found[name] = obj
    return found


CLASSES = None   # {class name: class}, filled on first use (the layers import minidl.module)


def classes():
    """{class name: class} of the modules a blueprint may build: the public classes of
    minidl.modules and minidl.containers."""
    global CLASSES
    if CLASSES is None:
        CLASSES = _classes()
    return CLASSES


# ---- describing a model -------------------------------------------------------------------------

def _plain(value, where):
    """value as JSON data (tuples as lists, numpy scalars as Python ones), or BlueprintError."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            raise BlueprintError(where[0], where[1], "argument %r is %r; a blueprint holds finite numbers only"
                                 % (where[2], value))
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    raise BlueprintError(where[0], where[1], "argument %r is a %s; a blueprint holds numbers, strings, bools, "
                         "None and lists of them" % (where[2], type(value).__name__))


def describe(module, path=()):
    """module.getBlueprint() checked and made JSON-ready; BlueprintError naming the first module
    that is not one of minidl's own or whose arguments are not plain values (path: the names above
    module, for the message)."""
    from minidl.containers.container import Container
    kind = type(module).__name__
    where = list(path) + [module.name or ""]
    if classes().get(kind) is not type(module):
        raise BlueprintError(kind, where, "not one of minidl's layers or containers, so no blueprint can rebuild "
                             "it; save(withBlueprint=False) and build the model in code")
    bp = module.getBlueprint()
    bp["scheme"] = {k: _plain(v, (kind, where, k)) for k, v in bp["scheme"].items()}
    if isinstance(module, Container):
        bp["modules"] = {name: describe(child, where) for name, child in module.modules.items()}
    return bp


def dumps(module, required=None):
    """The blueprint of module, a model, as JSON text. required=None gives None instead of raising
    where the model cannot be described; True raises BlueprintError."""
    try:
        return json.dumps(describe(module), indent=1, sort_keys=True, allow_nan=False)
    except BlueprintError:
        if required:
            raise
        return None


# ---- building a model -----------------------------------------------------------------------------

def _refuseConstant(name):
    raise ValueError("%s is not a JSON number" % name)


def _noDuplicates(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError("key %r appears twice in one object" % key)
        out[key] = value
    return out


def parse(text):
    """The blueprint dict from JSON text; ValueError saying what is wrong."""
    if len(text) > MAX_JSON_BYTES:
        raise ValueError("the blueprint is %d bytes, more than the %d allowed" % (len(text), MAX_JSON_BYTES))
    depth = 0
    for ch in text:                       # json recurses per level: bound it before parsing
        depth += ch in "[{"
        depth -= ch in "]}"
        if depth > MAX_DEPTH:
            raise ValueError("the blueprint nests deeper than %d levels" % MAX_DEPTH)
    return json.loads(text, parse_constant=_refuseConstant, object_pairs_hook=_noDuplicates)


def build(bp, path=()):
    """A model from bp, a parsed blueprint (only CLASSES, only their declared arguments; see the
    module doc); ValueError naming the dotted path (below path) of the first module that cannot be
    built."""
    if not isinstance(bp, dict) or not isinstance(bp.get("classname"), str) or not isinstance(bp.get("scheme"), dict):
        where = ".".join(p for p in path if p) or "the root"
        raise ValueError("%s: expected {\"classname\": str, \"scheme\": {...}}, got %s" % (where, _short(bp)))
    kind, scheme = bp["classname"], dict(bp["scheme"])
    name = scheme.get("name")
    here = path + (name if isinstance(name, str) else "",)
    where = ".".join(p for p in here if p) or "the root"
    cls = classes().get(kind)
    if cls is None:
        raise ValueError("%s: %r is not one of minidl's layers or containers" % (where, kind))
    from minidl.containers.graph import Graph
    if cls is Graph:
        return _buildGraph(bp, scheme, here, where)
    _checkScheme(cls, scheme, where)
    from minidl.containers.container import Container
    builtByCaller = issubclass(cls, Container) and "modules" in bp and not _buildsOwnChildren(cls)
    try:
        module = cls(**scheme)
    except gpuarray.BudgetExceeded:
        raise
    except Exception as e:   # the constructor's own checks (ValueError, TypeError) or worse
        raise ValueError("%s: %s(%s) fails: %s: %s" % (where, kind, _args(scheme), type(e).__name__, e)) from None
    if builtByCaller:
        graph, children = bp.get("graph"), bp["modules"]
        if not isinstance(children, dict) or not isinstance(graph, list) or sorted(graph, key=str) != \
                sorted(children, key=str) or len(set(map(str, graph))) != len(graph):
            raise ValueError("%s: \"graph\" must list each key of \"modules\" once, got graph %s and modules %s"
                             % (where, _short(graph), _short(list(children) if isinstance(children, dict)
                                                                else children)))
        for key in graph:
            child = build(children[key], here)
            if child.name != key:
                raise ValueError("%s: child %r is named %r in its scheme" % (where, key, child.name))
            module.append(child)
    return module


def _buildGraph(bp, scheme, here, where):
    """A Graph from its blueprint: scheme {"inputs", "outputs", "name"}, the children from "modules",
    wired as "graph" says: [[node name, [input, ...]], ...], an input a name or [name, index]. The
    Graph's own checks (names, cycles, unused inputs) refuse any wiring it would refuse in code."""
    from minidl.containers.graph import Graph, Node
    unknown = sorted(set(scheme) - {"inputs", "outputs", "name"})
    if unknown or "inputs" not in scheme or "outputs" not in scheme:
        raise ValueError("%s: Graph's scheme takes inputs, outputs and name (the first two required), got %s"
                         % (where, _short(sorted(scheme))))
    for key, value in scheme.items():
        _checkPlain(value, where, key)
    graph, children = bp.get("graph"), bp.get("modules")
    wellFormed = isinstance(children, dict) and isinstance(graph, list) and all(
        isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str) and isinstance(entry[1], list)
        for entry in graph)
    if not wellFormed or sorted(entry[0] for entry in graph) != sorted(children) or \
            len({entry[0] for entry in graph}) != len(graph):
        raise ValueError("%s: \"graph\" must pair each key of \"modules\" once with what it reads "
                         "([[name, [input, ...]], ...]), got graph %s and modules %s"
                         % (where, _short(graph), _short(list(children) if isinstance(children, dict) else children)))
    nodes = []
    for key, reads in graph:
        _checkPlain(reads, where, "graph")
        child = build(children[key], here)
        if child.name != key:
            raise ValueError("%s: child %r is named %r in its scheme" % (where, key, child.name))
        nodes.append((child, reads))
    try:
        return Graph(inputs=scheme["inputs"], outputs=scheme["outputs"], name=scheme.get("name"),
                     nodes=[Node(child, reads) for child, reads in nodes])
    except (ValueError, TypeError) as e:
        raise ValueError("%s: Graph fails: %s" % (where, e)) from None


def _buildsOwnChildren(cls):
    """True for containers whose constructor makes their children (SeparableConv2D), False for those
    filled by append (Sequential, Parallel): the constructor takes more than a name."""
    return set(inspect.signature(cls).parameters) - {"name"} != set()


def _checkScheme(cls, scheme, where):
    params = inspect.signature(cls).parameters
    for key, value in scheme.items():
        if key not in params or params[key].kind not in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                        inspect.Parameter.KEYWORD_ONLY):
            raise ValueError("%s: %s takes no argument %r (it takes %s)"
                             % (where, cls.__name__, key, ", ".join(params)))
        _checkPlain(value, where, key)
    missing = [k for k, p in params.items() if p.default is inspect.Parameter.empty and k not in scheme]
    if missing:
        raise ValueError("%s: %s needs argument(s) %s, missing from the scheme" % (where, cls.__name__,
                                                                                   ", ".join(missing)))
    if "empty" in params:
        scheme["empty"] = True        # the weights come from the file: no random initialisation


def _checkPlain(value, where, key):
    if isinstance(value, list):
        for v in value:
            _checkPlain(v, where, key)
    elif not (value is None or isinstance(value, (bool, int, float, str))):
        raise ValueError("%s: argument %r is %s; a blueprint holds numbers, strings, bools, null and lists"
                         % (where, key, _short(value)))


def _short(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _args(scheme):
    return _short(", ".join("%s=%r" % kv for kv in sorted(scheme.items())))


# ---- loading --------------------------------------------------------------------------------------

def readText(hdf, source):
    """The ``blueprint`` dataset's text in hdf, an open h5py.File read from source (named in
    messages); LoadError when absent or not one string."""
    where = serialization.describe(source)
    try:
        with h5safe.reading("/"):
            root = hdf["/"].id
        ds = h5safe.child(root, "blueprint", "/blueprint", h5py.h5d.DatasetID)
        if ds is None:
            raise LoadError("cannot rebuild a model from %s: it has no blueprint (it was saved with "
                            "withBlueprint=False or from a model with user-defined modules); build the model in "
                            "code and call model.load(...)" % where)
        return h5safe.readScalar(ds, "/blueprint", "string")
    except h5safe.Malformed as e:
        raise LoadError("cannot rebuild a model from %s: %s" % (where, e)) from None


def _fileSize(hdf, source):
    if isinstance(source, (bytes, bytearray, memoryview)):
        return len(source)
    try:
        return int(hdf.id.get_filesize())
    except Exception:
        return os.path.getsize(os.fspath(source))


def load(source):
    """The model a weights file describes, with its weights loaded (see the module doc).

    source: a path, the bytes of a file, or an open h5py.File. The model comes back in train mode,
    as a freshly built one; call evalMode() before inference. LoadError on any problem.

    Example::

        >>> from minidl.containers import Sequential
        >>> from minidl.modules import Linear
        >>> blob = Sequential("net").append(Linear(4, 2, name="fc")).save()
        >>> minidl.blueprint.load(blob)["fc"].W.shape
        (4, 2)
    """
    hdf, close = serialization.openH5(source)
    try:
        where = serialization.describe(source)
        text = readText(hdf, source)
        budget = BUDGET_FACTOR * _fileSize(hdf, source) + (1 << 20)
        try:
            bp = parse(text)
            with gpuarray.allocationBudget(budget, "building the model %s describes" % where):
                model = build(bp)
        except gpuarray.BudgetExceeded as e:
            raise LoadError("cannot rebuild a model from %s: its blueprint asks for more memory than a file of its "
                            "size can hold weights for (%s)" % (where, e)) from None
        except (ValueError, RecursionError) as e:
            raise LoadError("cannot rebuild a model from %s: bad blueprint: %s" % (where, e)) from None
        model.load(hdf)
    finally:
        if close:
            hdf.close()
    return model
