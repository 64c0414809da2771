"""Parallel: child i takes element i of a list input; the output is the list of results."""

from minidl.containers.container import Container, releaseGrad


class Parallel(Container):
    """Branches side by side: child i runs on element i of a list input; the output is the list of
    their outputs, and backward takes a list of gradients, one per child.

    name: as for any Module. Input: a list of exactly len(self) arrays (ModuleError otherwise). Join
    the branches with minidl.modules.Add or Concat; feed them with Replicate.

    Example::

        >>> from minidl.modules import Identity, Linear
        >>> par = Parallel("branches").append(Linear(4, 3)).append(Identity())
        >>> x = gpuarray.to_gpu(np.ones((2, 4), np.float32))
        >>> [y.shape for y in par([x, x])]
        [(2, 3), (2, 4)]
    """

    def __init__(self, name=None):
        super().__init__(name)
        self.registerBlueprint(locals())

    def checkDataShape(self, shape):
        if not isinstance(shape, list) or len(shape) != len(self.modules):
            raise self.error("expected a list of %d inputs, got %s"
                             % (len(self.modules), "a list of %d" % len(shape) if isinstance(shape, list) else
                                "a single array of shape %s" % (tuple(shape),)))

    def updateData(self, data):
        lean = self.releaseLastPass()
        out = []
        for mod, x in zip(self.modules.values(), data):
            with self.childScope(mod):
                out.append(mod(x))
            if lean:
                self.releaseInput(mod)  # its output is part of ours, so it stays
        self.data = out

    def backward(self, grad, updParamGrads=True, updGrad=True):
        self.checkBackward()
        if not isinstance(grad, (list, tuple)) or len(grad) != len(self.modules):
            raise self.error("expected a list of %d grads, got %s" % (len(self.modules), type(grad).__name__))
        out = []
        for mod, g in zip(self.modules.values(), grad):
            with self.childScope(mod):
                out.append(mod.backward(g, updParamGrads=updParamGrads and self.train, updGrad=updGrad))
            releaseGrad(mod)        # out holds it now (Container's docstring says why)
        self.grad = out if updGrad else None
        return self.grad

    def summaryRows(self, inshape, prefix=""):
        rows, outs, childPrefix = [], [], self._childPrefix(prefix)
        for mod, shape in zip(self.modules.values(), inshape):
            modRows, out = mod.summaryRows(shape, childPrefix)
            rows += modRows
            outs.append(out)
        return rows, outs

    def dataShapeFrom(self, shape):
        self.checkDataShape(list(shape))
        out = []
        for mod, s in zip(self.modules.values(), shape):
            with self.childScope(mod):
                out.append(mod.dataShapeFrom(s))
        return out
