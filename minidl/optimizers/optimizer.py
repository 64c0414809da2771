"""Optimizer base class.

``setupOn(net)`` creates per-Variable state (a shared Variable gets one state);
``setupOn(net, useGlobalState=True)`` packs the parameters, gradients and state
into one flat buffer per group of equal rates instead, so a step is one fused
op per rule (minidl/optimizers/globalstate.py; PuzzleLib's option).
``zeroGradParams()`` clears the gradients; ``update()`` runs the hooks added
with ``addHook`` (e.g. ``Hooks.WeightDecay``) on each gradient, then applies
one step to every Variable with a positive ``learnRate`` multiplier. Gradients are true
gradients of the loss, so every rule subtracts. ``learnRate`` (``alpha`` for
Adam) is a plain attribute: change it between steps for a schedule. Each
Variable's ``wc`` adds L2 weight decay (g + wc * w); its ``learnRate`` and
``momRate`` multiply the optimizer's rates.

Hyperparameters are checked where they are set, in the constructor and in
``load``: each has one range in ``HYPERPARAMETER_RANGES`` (learning rates finite
and >= 0, momentum and decay factors in [0, 1), epsilon finite, > 0 and not 0 in
float32);
anything else (NaN, inf, a bool, a string) raises ValueError naming the
optimizer and the hyperparameter. Assigning the attribute later (a schedule)
is not checked.

``save(path | None)`` writes the step count, the hyperparameters and every
state array (h5, atomically; bytes when path is None); ``load`` checks them all
against the current setup before changing anything, so a resumed run continues
with exactly the numbers of an uninterrupted one, and a refused file leaves the
optimizer exactly as it was.
"""

import h5py
import numpy as np

from minidl import h5safe
from minidl import module as _module
from minidl.backend import gpuarray
from minidl.errors import LoadError
from minidl.optimizers import globalstate
from minidl.serialization import openH5, writeH5
from minidl.shapes import isInt, realInRange

# name -> (low, high, lowOpen, highOpen) for every optimizer's hyperparameters (None: unbounded)
HYPERPARAMETER_RANGES = {
    "learnRate": (0, None, False, False),
    "alpha": (0, None, False, False),
    "momRate": (0, 1, False, True),
    "beta1": (0, 1, False, True),
    "beta2": (0, 1, False, True),
    "factor": (0, 1, False, True),
    "epsilon": (0, None, True, False),      # and not 0 in float32 (_checkRange)
}


class Optimizer:
    """The base of the optimizers (minidl.optimizers.optimizer explains setup and state); a subclass
    names its ``hyperparameters`` and implements updateVar, and setupState when it keeps state.

    A training step: ``optimizer.zeroGradParams()``, a forward and ``net.backward(grad)``, then
    ``optimizer.update()``. ``t`` counts the updates; ``states`` holds {Variable name: {entry: array}}.
    """

    hyperparameters = ("learnRate",)

    def __init__(self):
        self.t = 0
        self.module = None
        self.vars = {}
        self.states = {}
        self.hooks = []
        self.groups = None          # the global state's groups (None: one state per Variable)
        self.setVarsSeen = 0

    def checkHyperparameter(self, name, value):
        """float(value) when it is a finite real number in the range of hyperparameter ``name``;
        ValueError "<class>: <name> must be ..., got ..." otherwise."""
        return _checkRange(type(self).__name__, name, name, value)

    def setupOn(self, module, useGlobalState=False):
        """Create the state for module's Variables (a shared one once) and forget any earlier setup.

        useGlobalState=True replaces every Variable of module by a view into one flat buffer per
        group of equal (learnRate, momRate, wc) (values and gradients kept), so update() and
        zeroGradParams() are one op per group; see minidl/optimizers/globalstate.py."""
        if not isinstance(useGlobalState, bool):
            raise ValueError("%s.setupOn: useGlobalState must be True or False, got %r"
                             % (type(self).__name__, useGlobalState))
        self.module = module
        self.vars, self.states, self.groups = {}, {}, None
        if useGlobalState:
            self.groups, self.vars, self.states = globalstate.pack(self, module)
            self.setVarsSeen = _module.setVarCount()
        else:
            for var, names in module.getVarTable().items():
                self.vars[names[0]] = var
                self.states[names[0]] = self.setupState(var)
        return self

    def addHook(self, hook):
        """Run hook(var, state) on every Variable (every flat group, with global state) before each
        update, in the order added; Hooks.WeightDecay is one. Hooks persist across setupOn."""
        if not callable(hook):
            raise TypeError("%s.addHook: expected a callable hook(var, state), got %s"
                            % (type(self).__name__, type(hook).__name__))
        self.hooks.append(hook)
        return self

    def setupState(self, var):
        """The optimizer state of one Variable var, {entry: array} ({} here: SGD keeps none)."""
        return {}

    def zeroState(self, var):
        """A zero array of var's shape and dtype, for setupState."""
        return gpuarray.zeros(var.data.shape, var.data.dtype)

    def _requireSetup(self):
        if self.module is None:
            raise RuntimeError("%s: call setupOn(net) before using the optimizer" % type(self).__name__)

    def zeroGradParams(self):
        """Zero the gradients of every Variable set up (one fill per group with global state)."""
        self._requireSetup()
        for var in (self.vars.values() if self.groups is None else (g.var for g in self.groups)):
            var.zeroGrad()

    def update(self):
        """One step: counts t, then on every Variable with a learnRate multiplier > 0 runs the hooks
        and the rule (updateVar). RuntimeError before setupOn."""
        self._requireSetup()
        if self.groups is not None:
            self._checkGlobalState()
        self.t += 1
        if self.groups is None:
            pairs = ((var, self.states[name]) for name, var in self.vars.items())
        else:
            pairs = ((g.var, g.state) for g in self.groups)
        for var, state in pairs:
            if var.learnRate > 0:
                for hook in self.hooks:
                    hook(var, state)
                self.updateVar(var, state)

    def _checkGlobalState(self):
        """The global state's invariants (globalstate.py): rates as packed, Variables still installed."""
        owner = type(self).__name__
        for group in self.groups:
            group.checkRates(owner)
        count = _module.setVarCount()
        if count != self.setVarsSeen:     # some setVar ran somewhere: look once whether it was ours
            globalstate.checkInstalled(owner, self.module, self.groups)
            self.setVarsSeen = count

    def updateVar(self, var, state):
        """Apply the rule to var.data from var.grad and var's state (subclasses implement it)."""
        raise NotImplementedError("%s must implement updateVar" % type(self).__name__)

    # ---- persistence ----------------------------------------------------------------------------

    def save(self, filename=None):
        """Write t, the hyperparameters and every state array to filename (h5, atomically), or return
        the file's bytes when filename is None; load restores them."""
        self._requireSetup()

        def writer(hdf):
            attrs = hdf.create_group("attrs")
            attrs["t"] = self.t
            attrs["class"] = type(self).__name__
            for h in self.hyperparameters:
                attrs[h] = getattr(self, h)
            states = hdf.create_group("states")
            for name, state in self.states.items():
                for entity, ary in state.items():
                    states.create_dataset("%s.%s" % (name, entity), data=ary.get())
        return writeH5(filename, writer)

    def load(self, source):
        """Restore what ``save`` wrote, from source (a path, bytes or an open h5py.File); all or nothing.

        The file must hold this class's state for exactly the current setup: 'attrs/class' naming
        this class; 'attrs/t' an integer scalar >= 0; every hyperparameter a finite real scalar in
        its range (HYPERPARAMETER_RANGES); 'states/<var>.<entry>' for each state array of this
        setup and no other, float32 (either byte order) of that array's shape. Everything is read
        and checked before anything is written: on any problem LoadError lists each entry with
        what was expected and what the file holds, and the optimizer (t, hyperparameters, state
        arrays) is left byte-identical.
        """
        self._requireSetup()
        hdf, close = openH5(source)
        try:
            t, hyper, values = self._readFile(hdf)
        finally:
            if close:
                hdf.close()
        # everything checked: only now is anything written
        expected = self._stateArrays()
        for key, value in values.items():
            expected[key].set(value)
        for h, v in hyper.items():
            setattr(self, h, v)
        self.t = t

    def _stateArrays(self):
        """{'<var>.<entry>': state array} of the current setup, the keys ``save`` writes."""
        return {"%s.%s" % (n, e): a for n, s in self.states.items() for e, a in s.items()}

    def _readFile(self, hdf):
        """(t, {hyperparameter: float}, {state key: float32 host array}) from the file; LoadError
        listing every problem when anything is missing, unexpected or out of range. Read as the
        weights loader reads (minidl/h5safe.py): hard links only, each dataset's own bytes, no shape
        or string longer than declared and checked, so a file cannot make it read another file."""
        kind = type(self).__name__
        try:
            return self._readChecked(kind, hdf)
        except h5safe.Malformed as e:
            raise LoadError("%s: cannot load state, optimizer left unchanged:\n  %s" % (kind, e)) from None

    def _readChecked(self, kind, hdf):
        GROUP, DATASET = h5py.h5g.GroupID, h5py.h5d.DatasetID
        with h5safe.reading("/"):
            root = hdf["/"].id
        attrs = h5safe.child(root, "attrs", "/attrs", GROUP)
        states = h5safe.child(root, "states", "/states", GROUP)
        if attrs is None or states is None:
            raise LoadError("%s: not an optimizer state file (groups 'attrs' and 'states' expected, found %s)"
                            % (kind, sorted(h5safe.names(root, "/"), key=str)))
        stored, problem = _scalar(attrs, "class")
        if problem is None and not isinstance(stored, str):
            problem = "value must be the optimizer's class name, got %r" % (stored,)
        if problem is not None:
            raise LoadError("%s: attr 'class': %s" % (kind, problem))
        if stored != kind:
            raise LoadError("%s: the file holds %s state" % (kind, stored))

        problems = []
        t, problem = _scalar(attrs, "t")
        if problem is None and (not isInt(t) or t < 0):
            problem = "value must be an integer >= 0, got %r" % (t,)
        if problem is not None:
            problems.append("attr 't': %s" % problem)

        hyper = {}
        for h in self.hyperparameters:
            value, problem = _scalar(attrs, h)
            if problem is not None:
                problems.append("attr %r: %s" % (h, problem))
                continue
            try:
                hyper[h] = _checkRange("attr %r" % h, "value", h, value)
            except ValueError as e:
                problems.append(str(e))

        expected = self._stateArrays()
        present = h5safe.names(states, "/states")
        problems += ["state %r: missing from the file" % k for k in expected if k not in present]
        problems += ["state %r: unexpected key in the file" % (k,) for k in present if k not in expected]
        values = {}
        for key, ary in expected.items():
            if key not in present:
                continue
            path = "/states/" + key
            try:
                node = h5safe.child(states, key, path, DATASET)
                if node is None:
                    raise h5safe.Malformed("%s is listed but cannot be found, the file is damaged" % path)
                h5safe.vetDataset(node, path)
                shape = h5safe.shapeOf(node, path)
                ok = True
                if not h5safe.hasType(node, np.float32, path):
                    problems.append("state %r: expected dtype float32, file has %s"
                                    % (key, h5safe.typeName(node, path)))
                    ok = False
                if shape != tuple(ary.shape):
                    problems.append("state %r: shape mismatch, optimizer has %s, file has %s"
                                    % (key, tuple(ary.shape), "no dataspace" if shape is None else shape))
                    ok = False
                if ok:
                    values[key] = h5safe.readArray(node, shape, np.float32, path)
            except h5safe.Malformed as e:
                problems.append("state %r: %s" % (key, e))
        if problems:
            raise LoadError("%s: cannot load state, optimizer left unchanged:\n  %s" % (kind, "\n  ".join(problems)))
        return int(t), hyper, values


def _checkRange(owner, what, name, value):
    """realInRange over hyperparameter name's range, the message reading "<owner>: <what> must be ..."."""
    low, high, lowOpen, highOpen = HYPERPARAMETER_RANGES[name]
    value = realInRange(owner, what, value, low, high, lowOpen, highOpen)
    if name == "epsilon" and np.float32(value) == 0:
        # the updates run in float32, where it would be 0: sqrt(state) + 0 divides by zero (numba's
        # kernels raised ZeroDivisionError there, the NumPy formulas gave NaN weights)
        raise ValueError("%s: %s must be at least float32's smallest positive value (%r), got %r"
                         % (owner, what, float(np.finfo(np.float32).smallest_subnormal), value))
    return value


def _scalar(group, key):
    """(value, None) for the scalar dataset group[key] (an int, float or str by its stored type, read
    through h5safe); (None, reason) otherwise."""
    path = "/attrs/" + key
    try:
        node = h5safe.child(group, key, path, h5py.h5d.DatasetID)
        if node is None:
            return None, "missing from the file"
        h5safe.vetDataset(node, path)
        shape = h5safe.shapeOf(node, path)
        if shape != ():
            return None, "expected a scalar, file has shape %s" % ("no dataspace" if shape is None else (shape,))
        with h5safe.reading(path):
            typeClass = node.get_type().get_class()
        kinds = {h5py.h5t.INTEGER: "integer", h5py.h5t.FLOAT: "real", h5py.h5t.STRING: "string"}
        if typeClass not in kinds:
            return None, "expected a number or a name, file has %s" % h5safe.typeName(node, path)
        return h5safe.readScalar(node, path, kinds[typeClass]), None
    except h5safe.Malformed as e:
        return None, str(e)
