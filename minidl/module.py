"""The Module protocol (PuzzleLib's, cleaned up).

``module(data)`` validates the input, runs ``updateData`` and returns
``module.data``; ``module.backward(grad)`` runs ``updateGrad`` (sets
``module.grad``, the gradient w.r.t. the input) and ``accGradParams``.
Parameter gradients are true gradients of the loss and *accumulate* into
``module.vars[name].grad`` until ``zeroGradParams()``; containers follow the
same rule. Trainable state lives in ``vars`` (Variables), non-trainable state
(batch-norm statistics) in ``attrs``. Modules start in train mode.

Subclasses implement ``updateData``, ``updateGrad``, ``dataShapeFrom`` and,
when they own parameters, ``accGradParams``; they validate input in
``checkDataShape`` and call backend ops for all numerical work. When a
backward pass wants both gradients, ``updateGradAndParams`` runs (by default
``updateGrad`` then ``accGradParams``); a module whose two passes can share
work overrides it (the depthwise conv reads its output gradient once).
"""

import numpy as np

from minidl import anomaly, serialization
from minidl.errors import ModuleError
from minidl.variable import Variable


# counts setVar calls anywhere, so an optimizer holding views of Variables (global state) can tell in
# one comparison per step whether any might have been replaced since it looked
_setVarCalls = 0


def setVarCount():
    """How many setVar calls have run in this process (any module)."""
    return _setVarCalls


def shapesOf(data):
    return [shapesOf(d) for d in data] if isinstance(data, (list, tuple)) else tuple(data.shape)


def dtypesOf(data):
    return [dtypesOf(d) for d in data] if isinstance(data, (list, tuple)) else data.dtype


class Module:
    def __init__(self, name=None):
        if name is not None and (not isinstance(name, str) or "." in name or "/" in name or not name):
            raise ValueError("%s: name must be a non-empty string without '.' or '/', got %r"
                             % (type(self).__name__, name))
        self.name = name
        self.blueprint = {}
        self.vars = {}
        self.attrs = {}
        self.train = True
        self.inData = None
        self.data = None
        self.grad = None

    def registerBlueprint(self, args):
        """Record constructor arguments (pass ``locals()``), so a model can be rebuilt."""
        self.blueprint = {k: v for k, v in args.items() if k not in ("self", "__class__")}

    def getBlueprint(self):
        """{"classname": class name, "scheme": constructor arguments} (PuzzleLib's format; containers
        add their children), the name being the module's current one. minidl.blueprint turns it into
        JSON and back into a model."""
        scheme = dict(self.blueprint)
        if "name" in scheme:
            scheme["name"] = self.name
        return {"classname": type(self).__name__, "scheme": scheme}

    def __getattr__(self, name):
        # module.W -> module.vars["W"].data; module.mean -> module.attrs["mean"]
        d = self.__dict__
        if "vars" in d and name in d["vars"]:
            return d["vars"][name].data
        if "attrs" in d and name in d["attrs"]:
            return d["attrs"][name]
        raise AttributeError("%s has no attribute %r" % (type(self).__name__, name))

    # ---- errors ---------------------------------------------------------------------------------

    def error(self, detail):
        """A ModuleError naming this module; ``raise self.error(...)``."""
        return ModuleError(type(self).__name__, [self.name], detail)

    # ---- variables and attributes ----------------------------------------------------------------

    def setVar(self, name, var):
        """Install var as the trainable parameter ``name``.

        Every parameter is float32 (as every input is), and replacing one keeps its shape, so a
        model always saves weights a freshly built one accepts. A Variable whose data (or gradient)
        is another dtype, or another shape than the one it replaces, raises ValueError naming this
        module and the variable; anything but a Variable raises TypeError. A Variable without a
        gradient gets a zero one.
        """
        where = "%s%s: setVar(%r)" % (type(self).__name__, " '%s'" % self.name if self.name else "", name)
        if not isinstance(var, Variable):
            raise TypeError("%s: expected a Variable, got %s" % (where, type(var).__name__))
        old = self.vars.get(name)
        shape = tuple(old.data.shape) if old is not None else tuple(var.data.shape)
        for what, ary in (("", var.data), ("a gradient of ", var.grad)):
            if ary is None:
                continue
            if ary.dtype != np.float32:
                raise ValueError("%s: expected %sdtype float32, got %s" % (where, what, np.dtype(ary.dtype)))
            if tuple(ary.shape) != shape:
                raise ValueError("%s: expected %sshape %s, got %s" % (where, what, shape, tuple(ary.shape)))
        if var.grad is None:
            var.grad = _zerosLike(var.data)
        self.vars[name] = var
        global _setVarCalls
        _setVarCalls += 1

    def getVar(self, name):
        return self.vars[name]

    def setAttr(self, name, attr):
        self.attrs[name] = attr

    def namedVars(self, prefix=""):
        """(dotted name, Variable) pairs of this module and its children, in order."""
        for name, var in self.vars.items():
            yield prefix + name, var

    def namedAttrs(self, prefix=""):
        for name, attr in self.attrs.items():
            yield prefix + name, attr

    def namedContainers(self, prefix=""):
        """Dotted names of the containers in this module's tree (none for a leaf)."""
        return iter(())

    def getVarTable(self):
        """{Variable: [dotted names]}: a shared Variable appears once with all its names."""
        table = {}
        for name, var in self.namedVars():
            table.setdefault(var, []).append(name)
        return table

    def numOfParams(self):
        """Number of trainable scalars, counting a shared Variable once (attrs excluded)."""
        return sum(var.data.size for var in self.getVarTable())

    def zeroGradParams(self):
        for var in self.vars.values():
            var.zeroGrad()

    # ---- modes ----------------------------------------------------------------------------------

    def trainMode(self):
        self.train = True
        self.reset()

    def evalMode(self):
        self.train = False
        self.reset()

    def reset(self):
        self.inData, self.data, self.grad = None, None, None

    # ---- forward / backward ---------------------------------------------------------------------

    def __call__(self, data):
        self.checkDataType(dtypesOf(data))
        self.checkDataShape(shapesOf(data))
        self.inData = data
        with anomaly.watch(self, data):         # checks for NaN in the debug mode (minidl/anomaly.py)
            self.updateData(data)
        return self.data

    def backward(self, grad, updParamGrads=True, updGrad=True):
        if self.data is None:
            raise self.error("backward called before a forward pass")
        expected, got = shapesOf(self.data), shapesOf(grad)
        if expected != got:
            raise self.error("expected grad of shape %s, got %s" % (expected, got))
        self.checkDataType(dtypesOf(grad), what="grad")
        with anomaly.watch(self, grad, backward=True, inputGrad=updGrad, paramGrads=updParamGrads and self.train):
            if updGrad and updParamGrads and self.train:
                self.updateGradAndParams(grad)
            elif updGrad:
                self.updateGrad(grad)
            elif updParamGrads and self.train:
                self.accGradParams(grad)
        return self.grad

    def updateData(self, data):
        raise NotImplementedError("%s must implement updateData" % type(self).__name__)

    def updateGrad(self, grad):
        raise NotImplementedError("%s must implement updateGrad" % type(self).__name__)

    def accGradParams(self, grad):
        """Accumulate parameter gradients; modules without parameters have nothing to do."""

    def updateGradAndParams(self, grad):
        """updateGrad then accGradParams, when a backward pass wants both; a module whose two
        passes can share work (one read of grad instead of two) overrides this."""
        self.updateGrad(grad)
        self.accGradParams(grad)

    def dataShapeFrom(self, shape):
        raise NotImplementedError("%s must implement dataShapeFrom" % type(self).__name__)

    def macs(self, inshape, outshape):
        """Multiply-adds of one forward pass on inshape (0 for layers without products)."""
        return 0

    def summary(self, inshape, file=None):
        """Print each layer's output shape, parameters and multiply-adds, and the totals; returns the totals."""
        from minidl.summary import summary
        return summary(self, inshape, file)

    # ---- validation -----------------------------------------------------------------------------

    def checkDataShape(self, shape):
        """Raise self.error(...) when the input shape is unusable; default accepts any."""

    def checkDataType(self, dtype, what="input"):
        for dt in (dtype if isinstance(dtype, list) else [dtype]):
            if isinstance(dt, list):
                self.checkDataType(dt, what)
            elif dt != np.float32:
                raise self.error("expected %s of dtype float32, got %s" % (what, np.dtype(dt)))

    def checkRank(self, shape, rank, layout):
        if isinstance(shape, list) or len(shape) != rank:
            raise self.error("expected %dD input %s, got shape %s" % (rank, layout, _fmt(shape)))

    # ---- persistence ----------------------------------------------------------------------------

    def save(self, filename=None, compress="gzip", withBlueprint=None):
        """Write weights in PuzzleLib's h5 layout to filename (atomically), or return the file as bytes.

        withBlueprint: also store the architecture (minidl.blueprint), so ``minidl.load(path)``
        rebuilds the model without its code. None (default): when every module is one of minidl's
        own with plain arguments; True: always (BlueprintError otherwise, nothing written); False: never.
        """
        return serialization.save(self, filename, compress, withBlueprint)

    def load(self, source, strict=True):
        """Load weights from a path, bytes or an open h5py.File; checks everything before writing."""
        serialization.load(self, source, strict)
        self.afterLoad()

    def afterLoad(self):
        """Called once loaded values are in place, for state derived from them (default: none)."""

    def __str__(self):
        return "%s(name=%r)" % (type(self).__name__, self.name)

    __repr__ = __str__


def _zerosLike(ary):
    from minidl.backend import gpuarray
    return gpuarray.zeros(ary.shape, ary.dtype)


def _fmt(shape):
    return str(tuple(shape)) if not isinstance(shape, list) else str(shape)
