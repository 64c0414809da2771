"""Name mappings between another framework's state dict and a minidl model.

A mapping is a dict ``{source name: target}``, one entry per name in the other
framework's state dict. A target is:

- ``Target(name, "var", transform)``: the trainable parameter at the dotted path
  ``model.namedVars()`` gives, e.g. ``"block1.dw.W"`` (the root's name left out);
- ``Target(name, "attr", transform)``: non-trainable state at the dotted path
  ``model.namedAttrs()`` gives, e.g. ``"block1.dwbn.mean"`` (batch-norm ``mean``/``var``);
- ``Target(None, "skip", export=value)``: a name that is known and never loaded
  (batch norm's ``num_batches_tracked``). It may be present or absent in a state
  dict; an export writes ``value`` under that name (nothing when value is None).

The tuples ``(name, kind)`` and ``(name, kind, transform)`` stand for Targets and
``None`` for ``Target(None, "skip")``, so a hand-written mapping stays short:
``{"fc.weight": ("fc.W", "var", "transpose"), "bn.num_batches_tracked": None}``.

Transforms take the source's layout to minidl's; an export applies the inverse:

=========  ===============================  ============================================
name       source shape -> model shape      used for
=========  ===============================  ============================================
identity   S -> S                           conv weights (both (out, in/groups, kh, kw)),
                                            Linear bias (out,)
transpose  (a, b) -> (b, a)                 Linear weight: torch (out, in), minidl W (in, out)
maps       (C,) -> (1, C, 1, 1)             batch-norm vectors, conv biases
=========  ===============================  ============================================

Not supported: one source split over several targets or several sources merged
into one (fused qkv weights and the like); transforms other than these three.
"""

from collections import namedtuple

KINDS = ("var", "attr", "skip")


class Target(namedtuple("Target", "name kind transform export")):
    """Where one source entry goes (see the module doc): name, the model's dotted var or attr path;
    kind, "var", "attr" or "skip"; transform, "identity", "transpose" or "maps"; export, the value
    a skip target writes on export (skip targets only)."""

    __slots__ = ()

    def __new__(cls, name, kind, transform="identity", export=None):
        return super().__new__(cls, name, kind, transform, export)

    def describe(self):
        """'var 'fc.W' (transpose)' for messages and reports."""
        if self.kind == "skip":
            return "skip"
        return "%s %r%s" % (self.kind, self.name, "" if self.transform == "identity" else " (%s)" % self.transform)


class _Identity:
    name = "identity"

    @staticmethod
    def sourceShape(shape):
        return tuple(shape)

    @staticmethod
    def toModel(value, shape):
        return value

    @staticmethod
    def toSource(value):
        return value


class _Transpose:
    name = "transpose"

    @staticmethod
    def sourceShape(shape):
        return tuple(shape)[::-1] if len(shape) == 2 else None

    @staticmethod
    def toModel(value, shape):
        return value.T                  # (out, in) -> (in, out)

    @staticmethod
    def toSource(value):
        return value.T


class _Maps:
    name = "maps"

    @staticmethod
    def sourceShape(shape):
        shape = tuple(shape)
        return (shape[1],) if len(shape) == 4 and shape[0] == shape[2] == shape[3] == 1 else None

    @staticmethod
    def toModel(value, shape):
        return value.reshape(shape)     # (C,) -> (1, C, 1, 1)

    @staticmethod
    def toSource(value):
        return value.reshape(-1)        # (1, C, 1, 1) -> (C,)


TRANSFORMS = {t.name: t for t in (_Identity, _Transpose, _Maps)}


def normalize(mapping):
    """{source name: Target} from a mapping as the module doc describes it.

    A malformed mapping is a mistake in code, not in data: an entry that is not a Target, a
    tuple or None, a source name that is not a str, an unknown kind or transform, or a var/attr
    without a str name raises ValueError (TypeError for a mapping that is not a dict) naming
    the source entry. Whether targets exist in a model is checked by the load or export.
    """
    if not isinstance(mapping, dict):
        raise TypeError("mapping: expected a dict {source name: target}, got %s" % type(mapping).__name__)
    out = {}
    for source, entry in mapping.items():
        if not isinstance(source, str):
            raise ValueError("mapping: source names must be str, got %r" % (source,))
        out[source] = _target(source, entry)
    return out


def _target(source, entry):
    if entry is None:
        return Target(None, "skip")
    if isinstance(entry, tuple) and not isinstance(entry, Target) and len(entry) in (2, 3):
        entry = Target(*entry)
    if not isinstance(entry, Target):
        raise ValueError("mapping[%r]: expected a Target, a (name, kind[, transform]) tuple or None, got %r"
                         % (source, entry))
    if entry.kind not in KINDS:
        raise ValueError("mapping[%r]: unknown kind %r, expected one of %s" % (source, entry.kind, ", ".join(KINDS)))
    if entry.kind == "skip":
        if entry.name is not None:
            raise ValueError("mapping[%r]: a skip target names nothing, got name %r" % (source, entry.name))
        return entry
    if not isinstance(entry.name, str) or not entry.name:
        raise ValueError("mapping[%r]: a %s target needs a dotted name, got %r" % (source, entry.kind, entry.name))
    if entry.transform not in TRANSFORMS:
        raise ValueError("mapping[%r]: unknown transform %r, expected one of %s"
                         % (source, entry.transform, ", ".join(TRANSFORMS)))
    if entry.export is not None:
        raise ValueError("mapping[%r]: only skip targets carry an export value" % source)
    return entry


def resolve(model, targets, strict):
    """Match targets with model's arrays; returns (found, problems, uncovered).

    found: {source: (array, owner)} for every var/attr target the model has; owner is the
    Variable (for vars) or the array (for attrs), what "the same target" means, so a shared
    Variable counts once. problems: a target the model lacks, a transform that does not fit the
    target's shape, two sources onto one target and, when strict, every model var and attr no
    source maps to. uncovered: those unmapped model entries ("var 'fc.b'"), strict or not.
    """
    modelVars, modelAttrs = dict(model.namedVars()), dict(model.namedAttrs())
    found, problems, claims = {}, [], {}
    for source, target in targets.items():
        if target.kind == "skip":
            continue
        table = modelVars if target.kind == "var" else modelAttrs
        if target.name not in table:
            problems.append("%r -> %s: the model has no such %s" % (source, target.describe(), target.kind))
            continue
        owner = table[target.name]
        array = owner.data if target.kind == "var" else owner
        if TRANSFORMS[target.transform].sourceShape(array.shape) is None:
            problems.append("%r -> %s: transform %r does not fit the model's shape %s"
                            % (source, target.describe(), target.transform, tuple(array.shape)))
            continue
        if id(owner) in claims:
            problems.append("%r -> %s: %r maps there too" % (source, target.describe(), claims[id(owner)]))
            continue
        claims[id(owner)] = source
        found[source] = (array, owner)
    uncovered = ["var %r" % name for name, var in modelVars.items() if id(var) not in claims] + \
                ["attr %r" % name for name, attr in modelAttrs.items() if id(attr) not in claims]
    if strict:
        problems.extend("model %s: no source name maps to it" % what for what in uncovered)
    return found, problems, uncovered
