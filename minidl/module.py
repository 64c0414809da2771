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

``module.backwardHook``: None (the default, costing one attribute read per
backward), or a callable run as ``hook(module)`` at the end of the module's
``backward``, once its ``grad`` is set and its parameter gradients of this pass
are accumulated. Leaf modules run it; containers override ``backward`` and run
their children's, so hooks go on the leaves. A leaf's gradients are final when
its hook runs unless one of its Variables is shared with a module that has yet
to run. minidl.distributed.DataParallel uses it to start reducing a bucket of
gradients while the rest of the backward pass runs.
"""

import numpy as np

from minidl import anomaly, serialization, summary
from minidl.errors import ModuleError
from minidl.variable import Variable


# counts setVar calls anywhere, so an optimizer holding views of Variables (global state) can tell in
# one comparison per step whether any might have been replaced since it looked
_setVarCalls = 0


def setVarCount():
    """How many setVar calls have run in this process (any module)."""
    return _setVarCalls


def shapesOf(data):
    """The shape of data as a tuple, or a list of them (nested as data is) for a list of arrays."""
    return [shapesOf(d) for d in data] if isinstance(data, (list, tuple)) else tuple(data.shape)


def dtypesOf(data):
    """The dtype of data, or a list of them (nested as data is) for a list of arrays."""
    return [dtypesOf(d) for d in data] if isinstance(data, (list, tuple)) else data.dtype


class Module:
    """The base class of every layer and container; minidl.module's docstring states the protocol.

    name: None (a container names such a child after its position) or a non-empty str without '.'
    or '/' (ValueError otherwise). After ``module(data)``: ``inData`` (the input) and ``data`` (the
    output); after ``module.backward(grad)``: ``grad`` (d(loss)/d(input)). ``vars`` holds the
    trainable Variables, ``attrs`` the saved but untrained arrays; ``module.W`` reads
    ``module.vars["W"].data`` (``module.mean``: ``module.attrs["mean"]``).

    Example::

        >>> from minidl.modules import Linear
        >>> fc = Linear(4, 2, name="fc")
        >>> y = fc(gpuarray.to_gpu(np.ones((3, 4), np.float32)))           # y is fc.data, (3, 2)
        >>> fc.backward(gpuarray.to_gpu(np.ones((3, 2), np.float32))).shape  # fc.grad
        (3, 4)
    """

    # hook(module) run at the end of backward when set on an instance (see the module docstring)
    backwardHook = None

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
        # set by a container whose pass ran inside minidl.noGrad(): no backward may follow it
        self.passWithoutGrad = False

    def registerBlueprint(self, args):
        """Record the constructor's arguments (pass ``locals()`` as args; ``self`` is dropped), so a model
        can be rebuilt from its blueprint (getBlueprint, minidl.blueprint)."""
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
        """A ModuleError naming this module, with detail as its message; ``raise self.error(...)``."""
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
        """The Variable stored under name (KeyError when there is none)."""
        return self.vars[name]

    def setAttr(self, name, attr):
        """Store attr, a backend array saved and loaded with the weights but not trained (batch norm's
        running ``mean``), under name."""
        self.attrs[name] = attr

    def namedVars(self, prefix=""):
        """(dotted name, Variable) pairs of this module and its children, in order, each name after
        prefix."""
        for name, var in self.vars.items():
            yield prefix + name, var

    def namedAttrs(self, prefix=""):
        """(dotted name, array) pairs of the attrs of this module and its children, each name after prefix."""
        for name, attr in self.attrs.items():
            yield prefix + name, attr

    def namedContainers(self, prefix=""):
        """Dotted names (after prefix) of the containers in this module's tree (none for a leaf)."""
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
        """Set every parameter gradient to zero (they accumulate over backward passes until then)."""
        for var in self.vars.values():
            var.zeroGrad()

    # ---- modes ----------------------------------------------------------------------------------

    def trainMode(self):
        """Train mode (the default): batch norm uses batch statistics, dropout drops, backward
        accumulates parameter gradients. Also reset()."""
        self.train = True
        self.reset()

    def evalMode(self):
        """Eval mode: batch norm uses its running statistics, dropout is the identity, backward
        computes no parameter gradients. Also reset()."""
        self.train = False
        self.reset()

    def reset(self):
        """Forget the last passes' arrays (inData, data, grad and what backward would need)."""
        self.inData, self.data, self.grad = None, None, None

    # ---- forward / backward ---------------------------------------------------------------------

    def __call__(self, data):
        """Forward pass: check data (an array, or a list for modules that take one), run updateData,
        return self.data. A bad input raises ModuleError naming the module."""
        self.checkDataType(dtypesOf(data))
        self.checkDataShape(shapesOf(data))
        self.passWithoutGrad = False
        self.inData = data
        with anomaly.watch(self, data):         # checks for NaN in the debug mode (minidl/anomaly.py)
            self.updateData(data)
        return self.data

    def backward(self, grad, updParamGrads=True, updGrad=True):
        """Backward pass for the last forward: grad is d(loss)/d(output), of the output's shape.

        Returns self.grad, d(loss)/d(input), computed when updGrad (else None); when updParamGrads
        and in train mode, adds the parameter gradients to each ``vars[name].grad``."""
        self.checkBackward()
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
        if self.backwardHook is not None:
            self.backwardHook(self)
        return self.grad

    def checkBackward(self):
        """ModuleError unless the last forward pass left what a backward pass needs: it ran, and not
        inside minidl.noGrad() as part of a container, which let go of what backward reads."""
        if self.passWithoutGrad:
            raise self.error("backward after a forward pass run inside minidl.noGrad(), which does not keep what "
                             "backward reads; run the forward outside the block to train or take gradients")
        if self.data is None:
            raise self.error("backward called before a forward pass")

    def updateData(self, data):
        """Compute self.data from data, checked already (subclasses implement it with backend ops)."""
        raise NotImplementedError("%s must implement updateData" % type(self).__name__)

    def updateGrad(self, grad):
        """Compute self.grad, d(loss)/d(input), from grad, d(loss)/d(output) (subclasses implement it)."""
        raise NotImplementedError("%s must implement updateGrad" % type(self).__name__)

    def accGradParams(self, grad):
        """Add the parameter gradients for grad, d(loss)/d(output), to each ``vars[name].grad``;
        modules without parameters have nothing to do."""

    def updateGradAndParams(self, grad):
        """updateGrad then accGradParams, when a backward pass wants both; a module whose two
        passes can share work (one read of grad instead of two) overrides this."""
        self.updateGrad(grad)
        self.accGradParams(grad)

    def dataShapeFrom(self, shape):
        """The output shape for an input of the given shape (a list of shapes for list inputs), without
        computing anything."""
        raise NotImplementedError("%s must implement dataShapeFrom" % type(self).__name__)

    def macs(self, inshape, outshape):
        """Multiply-adds of one forward pass from inshape to outshape (0 for layers without products)."""
        return 0

    def summary(self, inshape, file=None):
        """Print, for an input of shape inshape, each layer's output shape, parameters and multiply-adds,
        and the totals, to file (default sys.stdout); returns the totals."""
        return summary.summary(self, inshape, file)

    def summaryRows(self, inshape, prefix=""):
        """([(name, kind, outshape, params, macs)], outshape): summary()'s rows for an input of shape
        inshape, each name after prefix. A layer gives its own row; containers override this to give
        their children's rows instead."""
        out = self.dataShapeFrom(inshape)
        params = sum(var.data.size for var in self.vars.values())
        return [(prefix + (self.name or ""), type(self).__name__, out, params, self.macs(inshape, out))], out

    # ---- validation -----------------------------------------------------------------------------

    def checkDataShape(self, shape):
        """Raise self.error(...) when the input shape is unusable; default accepts any."""

    def checkDataType(self, dtype, what="input"):
        """Raise self.error(...) unless dtype (a list for list inputs) is float32; what names the
        array ("input" or "grad") in the message."""
        for dt in (dtype if isinstance(dtype, list) else [dtype]):
            if isinstance(dt, list):
                self.checkDataType(dt, what)
            elif dt != np.float32:
                raise self.error("expected %s of dtype float32, got %s" % (what, np.dtype(dt)))

    def checkRank(self, shape, rank, layout):
        """Raise self.error(...) unless shape is one array's of the given rank; layout, e.g.
        "(N, C, H, W)", goes into the message."""
        if isinstance(shape, list) or len(shape) != rank:
            raise self.error("expected %dD input %s, got shape %s" % (rank, layout, _fmt(shape)))

    # ---- persistence ----------------------------------------------------------------------------

    def save(self, filename=None, compress="gzip", withBlueprint=None):
        """Write weights in PuzzleLib's h5 layout to filename (atomically), or return the file as bytes
        when filename is None. compress: h5py's compression ("gzip" by default, None for none).

        withBlueprint: also store the architecture (minidl.blueprint), so ``minidl.load(path)``
        rebuilds the model without its code. None (default): when every module is one of minidl's
        own with plain arguments; True: always (BlueprintError otherwise, nothing written); False: never.
        """
        return serialization.save(self, filename, compress, withBlueprint)

    def load(self, source, strict=True):
        """Load weights from source (a path, bytes or an open h5py.File); checks everything before
        writing anything and raises LoadError naming every problem, the model unchanged. strict=False
        tolerates missing and unexpected entries."""
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
