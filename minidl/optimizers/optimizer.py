"""Optimizer base class.

``setupOn(net)`` creates per-Variable state (a shared Variable gets one state);
``zeroGradParams()`` clears the gradients; ``update()`` applies one step to
every Variable with a positive ``learnRate`` multiplier. Gradients are true
gradients of the loss, so every rule subtracts. ``learnRate`` (``alpha`` for
Adam) is a plain attribute: change it between steps for a schedule. Each
Variable's ``wc`` adds L2 weight decay (g + wc * w); its ``learnRate`` and
``momRate`` multiply the optimizer's rates.

``save(path | None)`` writes the step count, the hyperparameters and every
state array (h5, atomically; bytes when path is None); ``load`` checks them all
against the current setup before changing anything, so a resumed run continues
with exactly the numbers of an uninterrupted one.
"""

import numpy as np

from minidl.backend import gpuarray
from minidl.errors import LoadError
from minidl.serialization import openH5, writeH5


class Optimizer:
    hyperparameters = ("learnRate",)

    def __init__(self):
        self.t = 0
        self.module = None
        self.vars = {}
        self.states = {}

    def setupOn(self, module):
        self.module = module
        self.vars, self.states = {}, {}
        for var, names in module.getVarTable().items():
            self.vars[names[0]] = var
            self.states[names[0]] = self.setupState(var)
        return self

    def setupState(self, var):
        return {}

    def zeroState(self, var):
        return gpuarray.zeros(var.data.shape, var.data.dtype)

    def _requireSetup(self):
        if self.module is None:
            raise RuntimeError("%s: call setupOn(net) before using the optimizer" % type(self).__name__)

    def zeroGradParams(self):
        self._requireSetup()
        for var in self.vars.values():
            var.zeroGrad()

    def update(self):
        self._requireSetup()
        self.t += 1
        for name, var in self.vars.items():
            if var.learnRate > 0:
                self.updateVar(var, self.states[name])

    def updateVar(self, var, state):
        raise NotImplementedError("%s must implement updateVar" % type(self).__name__)

    # ---- persistence ----------------------------------------------------------------------------

    def save(self, filename=None):
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
        self._requireSetup()
        hdf, close = openH5(source)
        try:
            if "attrs" not in hdf or "states" not in hdf:
                raise LoadError("%s: not an optimizer state file (groups 'attrs' and 'states' expected, found %s)"
                                % (type(self).__name__, sorted(hdf.keys())))
            attrs, states = hdf["attrs"], hdf["states"]
            kind = attrs["class"][()].decode() if "class" in attrs else "?"
            if kind != type(self).__name__:
                raise LoadError("%s: the file holds %s state" % (type(self).__name__, kind))
            expected = {"%s.%s" % (n, e): a for n, s in self.states.items() for e, a in s.items()}
            problems = ["state %r: missing from the file" % k for k in expected if k not in states]
            problems += ["state %r: unexpected key in the file" % k for k in states if k not in expected]
            values = {}
            for key, ary in expected.items():
                if key in states:
                    value = np.asarray(states[key][()])
                    if value.shape != tuple(ary.shape):
                        problems.append("state %r: shape mismatch, optimizer has %s, file has %s"
                                        % (key, tuple(ary.shape), value.shape))
                    values[key] = value
            if problems:
                raise LoadError("%s: cannot load state, optimizer left unchanged:\n  %s"
                                % (type(self).__name__, "\n  ".join(problems)))
            hyper = {h: float(attrs[h][()]) for h in self.hyperparameters if h in attrs}
            t = int(attrs["t"][()])
        finally:
            if close:
                hdf.close()
        for key, value in values.items():
            expected[key].set(value.astype(np.float32))
        for h, v in hyper.items():
            setattr(self, h, v)
        self.t = t
