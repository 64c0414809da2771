"""Loading another framework's state dict into a minidl model, and exporting one back.

``loadStateDict(model, stateDict, mapping, strict=True)`` takes ``{name: value}``
(values numpy arrays or torch tensors) and a mapping (minidl/interop/mapping.py).
Every value is checked, converted and transformed before anything is written, so a
failed load raises one LoadError listing every problem (source name, target, what
was expected and what was found) and leaves the model exactly as it was.

Checks, each a problem when it fails:
- every mapped target exists in the model, its transform fits, no two sources share it;
- strict (default): every mapped var/attr source name is in the state dict, every
  model var and attr is mapped, and every state-dict name is in the mapping (skip
  entries such as ``num_batches_tracked`` may be there or not). ``strict=False``
  lists those three kinds in the report instead and leaves unmapped targets as they are;
- each value is a numpy array or torch tensor of the shape the transform expects.

Dtypes: float16, float32 and float64 (and torch's bfloat16) are converted to float32,
the model's dtype: this is an explicit conversion from another framework, unlike the
h5 load, which refuses anything but float32. Integers, bools, complex and object
arrays are refused. A finite float64 that float32 cannot hold (beyond +-3.4e38) is
refused rather than turned into Inf; precision below float32's is rounded away.

Non-finite values (NaN, +-Inf) already in the source are loaded as they are, never
replaced and never refused: the report counts them per source name (``nonFinite``)
and its text says so, and the model then computes NaN where the source would.

After the writes ``model.afterLoad()`` runs, as after ``Module.load`` (batch norms
treat the loaded statistics as a trained average).
"""

import sys
from collections import OrderedDict, namedtuple
from collections.abc import Mapping

import numpy as np

from minidl.errors import LoadError
from minidl.interop.mapping import TRANSFORMS, normalize, resolve

_FLOATS = {"float16", "float32", "float64"}
_TORCH_FLOATS = {"torch.float16": "float16", "torch.bfloat16": "bfloat16", "torch.float32": "float32",
                 "torch.float64": "float64"}
_ACCEPTED = "float16, float32, float64 or torch's bfloat16, loaded as float32"

Loaded = namedtuple("Loaded", "source target shape")   # shape: the model's


class LoadReport:
    """What a load did, into model from origin (how messages name the source, e.g. a file's path).
    Lists of source names unless said otherwise:

    loaded      [Loaded(source, Target, model shape)], in mapping order
    ignored     skip entries that were in the state dict (``num_batches_tracked``)
    missing     mapped sources absent from the state dict (strict=False only; targets kept)
    unexpected  state-dict names the mapping does not know (strict=False only; not loaded)
    uncovered   model entries no source maps to, e.g. "var 'fc.b'" (strict=False only; kept)
    nonFinite   {source: number of NaN/Inf values loaded as they are}
    """

    def __init__(self, model, origin):
        self.model, self.origin = "%s %r" % (type(model).__name__, model.name), origin
        self.loaded, self.ignored, self.missing, self.unexpected, self.uncovered = [], [], [], [], []
        self.nonFinite = {}

    def __str__(self):
        lines = ["%s <- %s: %d values loaded, %d ignored" % (self.model, self.origin, len(self.loaded),
                                                                len(self.ignored))]
        lines += ["  %s -> %s: %s" % (e.source, e.target.describe(), e.shape) for e in self.loaded]
        for title, names in (("ignored", self.ignored), ("missing from the source, kept", self.missing),
                             ("unexpected in the source, not loaded", self.unexpected),
                             ("not mapped, kept", self.uncovered)):
            if names:
                lines.append("  %s (%d): %s" % (title, len(names), ", ".join(names)))
        if self.nonFinite:
            lines.append("  NaN/Inf loaded as they are: %s"
                         % ", ".join("%s (%d)" % item for item in self.nonFinite.items()))
        return "\n".join(lines)

    __repr__ = __str__


def loadStateDict(model, stateDict, mapping, strict=True):
    """Load stateDict ({name: numpy array or torch tensor}) into model through mapping; see the
    module doc. strict (default): every name on both sides must be mapped; strict=False reports
    the rest instead. Returns a LoadReport; raises LoadError (model unchanged) listing every problem.

    Example::

        >>> from minidl.modules import Linear
        >>> from minidl.interop import loadStateDict
        >>> fc = Linear(3, 2, name="fc")
        >>> report = loadStateDict(fc, {"weight": np.ones((2, 3), np.float32), "bias": np.zeros(2, np.float32)},
        ...                        {"weight": ("W", "var", "transpose"), "bias": ("b", "var")})
        >>> fc.W.shape, float(fc.W.get().sum())
        ((3, 2), 6.0)
    """
    return loadFrom(model, stateDict, mapping, strict, "a state dict")


def loadFrom(model, stateDict, mapping, strict, origin):
    """loadStateDict with origin (how messages name the source, e.g. a file's path in quotes)."""
    targets = normalize(mapping)
    if not isinstance(stateDict, Mapping):
        raise LoadError("%s %r: cannot load %s: expected a dict {name: array}, got %s"
                        % (type(model).__name__, model.name, origin, type(stateDict).__name__))
    report = LoadReport(model, origin)
    found, problems, report.uncovered = resolve(model, targets, strict)
    if strict:
        report.uncovered = []
    writes = []
    for source, target in targets.items():
        if target.kind == "skip":
            if source in stateDict:
                report.ignored.append(source)
            continue
        if source not in found:
            continue                                    # its problem is already listed
        if source not in stateDict:
            if strict:
                problems.append("%r -> %s: missing from %s" % (source, target.describe(), origin))
            else:
                report.missing.append(source)
            continue
        array = found[source][0]
        try:
            value, nonFinite = _converted(stateDict[source], target, tuple(array.shape))
        except _Refused as e:
            problems.append("%r -> %s: %s" % (source, target.describe(), e))
            continue
        writes.append((array, value))
        report.loaded.append(Loaded(source, target, tuple(array.shape)))
        if nonFinite:
            report.nonFinite[source] = nonFinite
    for name in stateDict:
        if name not in targets:
            if strict:
                problems.append("%r: unexpected in %s (not in the mapping)" % (name, origin))
            else:
                report.unexpected.append(name if isinstance(name, str) else repr(name))
    if problems:
        raise LoadError("%s %r: cannot load %s, model left unchanged (%d problem%s):\n  %s"
                        % (type(model).__name__, model.name, origin, len(problems),
                           "" if len(problems) == 1 else "s", "\n  ".join(problems)))
    for array, value in writes:
        array.set(value)
    model.afterLoad()
    return report


class _Refused(Exception):
    """Why one value cannot load (becomes one problem line)."""


def _converted(value, target, shape):
    """(C-contiguous float32 array in the model's layout, count of NaN/Inf) for value; raises
    _Refused with every reason it cannot load (dtype and shape both reported)."""
    transform = TRANSFORMS[target.transform]
    host, dtype = _host(value)
    expected = transform.sourceShape(shape)
    reasons = []
    if dtype is None:
        reasons.append("dtype %s refused (expected %s)" % (host, _ACCEPTED))
    if tuple(value.shape) != expected:
        via = "" if target.transform == "identity" else " (the model's %s by %s)" % (shape, target.transform)
        reasons.append("expected shape %s%s, got %s" % (expected, via, tuple(value.shape)))
    if reasons:
        raise _Refused("; ".join(reasons))
    source = host()
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(transform.toModel(source.astype(np.float32), shape))
    finite = np.isfinite(out)
    if dtype == "float64":
        overflow = np.count_nonzero(np.isfinite(source)) - np.count_nonzero(finite)
        if overflow:
            raise _Refused("%d finite float64 values are beyond float32's range (largest magnitude %g)"
                           % (overflow, np.max(np.abs(source[np.isfinite(source)]))))
    return out, out.size - int(np.count_nonzero(finite))


def _host(value):
    """(a function giving value as a numpy array in its float dtype, that dtype's name), or
    (the refused dtype's name, None); raises _Refused for values that are not arrays at all."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        if value.layout != torch.strided or value.is_quantized:
            raise _Refused("a %s tensor is not supported (dense tensors only)" % value.layout)
        dtype = _TORCH_FLOATS.get(str(value.dtype))
        if dtype is None:
            return str(value.dtype).replace("torch.", ""), None
        return (lambda: _tensorToNumpy(value, torch)), dtype
    if isinstance(value, np.ndarray):
        if value.dtype.name not in _FLOATS:
            return value.dtype.name, None
        return (lambda: value), value.dtype.name
    raise _Refused("expected a numpy array or a torch tensor, got %s" % type(value).__name__)


def _tensorToNumpy(tensor, torch):
    try:
        tensor = tensor.detach().cpu()
        if tensor.dtype == torch.bfloat16:      # numpy has no bfloat16; widening to float32 is exact
            tensor = tensor.float()
        return tensor.numpy()
    except Exception as e:  # a meta tensor, or one torch cannot hand over
        raise _Refused("cannot read the tensor: %s: %s" % (type(e).__name__, e)) from None


def exportStateDict(model, mapping, strict=True):
    """{source name: numpy array} from model, in mapping order: each var/attr through its
    transform's inverse as float32 (NaN/Inf written as they are), each skip target with an
    export value as a copy of that value (np.array), other skip targets left out.

    Raises ValueError listing every problem: a target the model lacks, a transform that does
    not fit, two sources onto one target and, when strict, model vars/attrs no source maps to
    (an export meant for a strict load elsewhere must cover the whole model)."""
    targets = normalize(mapping)
    found, problems, _ = resolve(model, targets, strict)
    if problems:
        raise ValueError("%s %r: cannot export (%d problem%s):\n  %s"
                         % (type(model).__name__, model.name, len(problems), "" if len(problems) == 1 else "s",
                            "\n  ".join(problems)))
    out = OrderedDict()
    for source, target in targets.items():
        if target.kind == "skip":
            if target.export is not None:
                out[source] = np.array(target.export)
            continue
        host = found[source][0].get().astype(np.float32, copy=False)
        out[source] = np.ascontiguousarray(TRANSFORMS[target.transform].toSource(host))
    return out
