"""Sequential: children applied one after another.

A batch norm followed by an in-place ReLU or clip (relu6) Activation, as in the MobileNets, runs as
one op: the batch norm clips its output as it writes it and masks the incoming gradient by that
output as it reads it, so the activation's own passes over memory (one each way) are gone
(a MobileNetV1-0.5 training step on 2 cores: benchmarks/RESULTS.md). What the two modules hold
afterwards is what the in-place pair holds: both ``data`` are the activation's output; the
activation's ``grad`` is released after backward, as every child's is (Container). Not fused: other
activations, activations not in place (their input stays readable), SyncBatchNorm2D, and pairs
where something looks at a module's own pass: a backwardHook on the activation, methods of either
replaced on the instance, or the debug mode (minidl.anomaly).

Inside minidl.noGrad() an eval-mode batch norm (the same classes, methods not replaced) also writes its
output over its input when that input is the new output of the child just before it, a Conv2D,
DepthwiseConv2D, PointwiseConv2D, Deconv2D or Linear (methods not replaced): nothing reads that
output afterwards (each child's output goes once the next has run), and it is never the
Sequential's own input or an array the caller holds. Kept off in the debug mode, as the fusion is, so
that it checks each module's own pass. That saves a buffer and its writes (MobileNetV1 / V2 at
224x224, batch 1, inside noGrad: benchmarks/RESULTS.md, "minidl.noGrad()").
"""

from minidl import anomaly
from minidl.containers.container import Container, releaseGrad


class Sequential(Container):
    """Children run in order, each on the previous one's output; index by name, dotted path,
    position or slice (a slice gives a new Sequential sharing the same child modules).

    name: as for any Module. Input and output: whatever the first child takes and the last returns.

    Example::

        >>> from minidl.modules import Linear, Activation
        >>> net = Sequential("net").append(Linear(4, 8, name="fc1")).append(Activation("relu"))
        >>> net(gpuarray.to_gpu(np.ones((2, 4), np.float32))).shape, net[1].name, net["fc1"].W.shape
        ((2, 8), '1', (4, 8))
    """

    def __init__(self, name=None):
        super().__init__(name)
        self.registerBlueprint(locals())
        self._fused = set()     # ids of the activations the last forward ran inside a batch norm

    def __getitem__(self, item):
        if isinstance(item, bool):
            raise TypeError("Sequential indices must be names, ints or slices, got bool")
        if isinstance(item, int):
            return list(self.modules.values())[item]
        if isinstance(item, slice):
            seq = Sequential()
            for mod in list(self.modules.values())[item]:
                seq.modules[mod.name] = mod
            return seq
        return super().__getitem__(item)

    def insert(self, index, mod):
        """Put mod before position index (list.insert's rule); returns self."""
        mod = self._adopt(mod)
        items = list(self.modules.items())
        items.insert(index, (mod.name, mod))
        self.modules = dict(items)
        return self

    def pop(self, index=-1):
        """Remove and return the child at position index (the last by default)."""
        name = list(self.modules)[index]
        return self.modules.pop(name)

    def updateData(self, data):
        mods = list(self.modules.values())
        lean = self.releaseLastPass()
        self._fused = fused = set()
        debug = anomaly.isEnabled()
        done = 0        # under noGrad: the children before this one have been reset
        for i, mod in enumerate(mods):
            if id(mod) in fused:
                # what the in-place activation would leave: its input and output are its output
                mod.inData = mod.data = data
                mod.grad = None
                mod.passWithoutGrad = lean
                continue
            if not debug and i + 1 < len(mods) and _fusible(mod, mods[i + 1]):
                mod.fuseNext(mods[i + 1])
                fused.add(id(mods[i + 1]))
            if lean and not debug and i > 0 and not mod.train and _overwritable(mod, mods[i - 1]):
                mod.writeOverInput()
            try:
                with self.childScope(mod):
                    data = mod(data)
            finally:
                # taken by the batch norm's pass; left over only where its input was refused
                vars(mod).pop("_fuseNext", None)
                if lean:        # only a pass inside noGrad asks for it
                    vars(mod).pop("_writeOver", None)
            if lean:
                # mod has read the outputs before it (a fused activation's too: it is the batch norm's)
                for prev in mods[done:i]:
                    prev.reset()
                done = i
                self.releaseInput(mod)
        self.data = data

    def backward(self, grad, updParamGrads=True, updGrad=True):
        self.checkBackward()
        mods = list(self.modules.values())
        for i in range(len(mods) - 1, -1, -1):
            mod = mods[i]
            if id(mod) in self._fused:
                # the batch norm before it takes grad through it; mod passes grad on untouched
                if i + 1 < len(mods):
                    releaseGrad(mods[i + 1])
                continue
            with self.childScope(mod):
                # the first child's input gradient is needed only if the caller wants ours
                grad = mod.backward(grad, updParamGrads=updParamGrads and self.train, updGrad=updGrad or i > 0)
            if i + 1 < len(mods):
                releaseGrad(mods[i + 1])     # mod has used it (Container's docstring says why)
        self.grad = grad if updGrad else None
        if mods:
            releaseGrad(mods[0])
        return self.grad

    def summaryRows(self, inshape, prefix=""):
        rows, childPrefix = [], self._childPrefix(prefix)
        for mod in self.modules.values():
            modRows, inshape = mod.summaryRows(inshape, childPrefix)
            rows += modRows
        return rows, inshape

    def dataShapeFrom(self, shape):
        for mod in self.modules.values():
            with self.childScope(mod):
                shape = mod.dataShapeFrom(shape)
        return shape


_types = {}


def _loadTypes():
    """(batch norm classes, Activation, classes whose output is always a new array)."""
    if "all" not in _types:
        # imported here: minidl.modules imports this module (SeparableConv2D is a Sequential)
        from minidl.modules.activation import Activation
        from minidl.modules.batchnorm import BatchNorm, BatchNorm2D
        from minidl.modules.conv import Conv2D, DepthwiseConv2D, PointwiseConv2D
        from minidl.modules.deconv import Deconv2D
        from minidl.modules.linear import Linear
        # one assignment: two threads' first passes at once both write the same tuple
        _types["all"] = ((BatchNorm2D, BatchNorm), Activation, (Conv2D, DepthwiseConv2D, PointwiseConv2D, Deconv2D,
                                                                Linear))
    return _types["all"]


def _overwritable(mod, prev):
    """Whether mod is a batch norm that may write its output over its input, the output of prev, the
    child before it (the docstring says when): prev is a layer whose output is always a new array."""
    norms, _, fresh = _loadTypes()
    return type(mod) in norms and type(prev) in fresh and not _replaced(mod, ("updateData",)) \
        and not _replaced(prev, ("updateData",))


def _fusible(mod, nxt):
    """Whether mod and nxt, the child after it, run as one op (the module docstring says when)."""
    norms, activation, _ = _loadTypes()
    return (type(mod) in norms and type(nxt) is activation and nxt.inplace and nxt.kind in ("relu", "clip")
            and not _replaced(mod, ("updateData", "backward")) and nxt.backwardHook is None
            and not _replaced(nxt, ("updateData", "backward", "updateGrad", "updateGradAndParams")))


def _replaced(mod, methods):
    """Whether any of methods was replaced on the instance (instrumentation that looks at the
    module's own pass, as the tests' per-layer recordings). The batch norm's backwardHook sees the
    same either way (DataParallel hooks every module with parameters), the activation's would not."""
    own = vars(mod)
    return any(name in own for name in methods)
