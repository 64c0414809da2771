"""Activation(activation, args=(), name=None): elementwise nonlinearities.

Names (PuzzleLib's): ``relu``, ``leakyRelu`` (args: slope, default 0.01),
``elu`` (args: alpha, default 1.0), ``sigmoid``, ``tanh``, ``softPlus``,
``clip`` (args: (low, high)) and ``relu6`` (= clip with (0, 6)). Any shape
in, the same shape out.
"""

from minidl.backend import ops
from minidl.module import Module

relu, relu6, clip, leakyRelu, elu, sigmoid, tanh, softPlus = (
    "relu", "relu6", "clip", "leakyRelu", "elu", "sigmoid", "tanh", "softPlus")

# name -> (backend kind, default args)
_KINDS = {
    relu: ("relu", ()), relu6: ("clip", (0.0, 6.0)), clip: ("clip", (0.0, 6.0)), leakyRelu: ("leakyRelu", (0.01,)),
    elu: ("elu", (1.0,)), sigmoid: ("sigmoid", ()), tanh: ("tanh", ()), softPlus: ("softPlus", ()),
}


class Activation(Module):
    def __init__(self, activation, args=(), name=None):
        super().__init__(name)
        self.registerBlueprint(locals())
        if activation not in _KINDS:
            raise ValueError("Activation: unknown activation %r, expected one of %s"
                             % (activation, ", ".join(_KINDS)))
        self.activation = activation
        kind, defaults = _KINDS[activation]
        args = tuple(args) if args else defaults
        if len(args) != len(defaults):
            raise ValueError("Activation %r takes %d args, got %r" % (activation, len(defaults), args))
        if kind == "clip" and not args[0] < args[1]:
            raise ValueError("Activation clip: expected low < high, got %r" % (args,))
        self.kind = kind
        self.alpha = float(args[0]) if args else 0.0
        self.beta = float(args[1]) if len(args) > 1 else 0.0

    def dataShapeFrom(self, shape):
        return tuple(shape)

    def updateData(self, data):
        self.data = ops.activation(data, self.kind, self.alpha, self.beta)

    def updateGrad(self, grad):
        self.grad = ops.activationBackward(self.inData, self.data, grad, self.kind, self.alpha, self.beta)

    def __str__(self):
        return "Activation(name=%r, %s)" % (self.name, self.activation)

    __repr__ = __str__
