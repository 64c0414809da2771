"""Activation(activation, args=(), name=None): elementwise nonlinearities.

Names (PuzzleLib's): ``relu``, ``leakyRelu`` (args: slope, default 0.01),
``elu`` (args: alpha, default 1.0), ``sigmoid``, ``tanh``, ``softPlus``,
``clip`` (args: (low, high)) and ``relu6`` (= clip with (0, 6)); and
PyTorch's ``hardSigmoid`` (relu6(x + 3) / 6) and ``hardSwish``
(x * relu6(x + 3) / 6), MobileNetV3's, without args. Where a derivative
jumps (relu at 0, clip at its bounds, the hard kinds at -3 and 3) the value
taken is the outer piece's, as PyTorch's: 0 for relu at 0, for clip at either
bound and for hardSigmoid at both kinks; hardSwish's is 0 at -3 and 1 at 3.
Any shape in, the same shape out. Args are finite real numbers (ValueError
otherwise).

``inplace=True`` (as PuzzleLib's and PyTorch's) writes the output over the
input array and the input gradient over the incoming gradient, saving a
buffer and a pass over memory each way (a MobileNetV1 training step measured
~5% faster on a 2-core CPU). So the previous module's ``data`` and the next
module's ``grad`` are overwritten: use it only where nothing else reads them
(after a convolution or batch norm, as in the MobileNets; not on a branch
whose input or gradient is shared). The backward then sees only the output,
so ``softPlus``, ``hardSigmoid`` and ``hardSwish`` (whose derivatives need the
input) and ``leakyRelu`` with a negative slope (whose sign flips) cannot be in
place.
"""

from minidl.backend import ops
from minidl.module import Module
from minidl.shapes import realInRange

relu, relu6, clip, leakyRelu, elu, sigmoid, tanh, softPlus = (
    "relu", "relu6", "clip", "leakyRelu", "elu", "sigmoid", "tanh", "softPlus")
hardSigmoid, hardSwish = "hardSigmoid", "hardSwish"

# name -> (backend kind, default args)
_KINDS = {
    relu: ("relu", ()), relu6: ("clip", (0.0, 6.0)), clip: ("clip", (0.0, 6.0)), leakyRelu: ("leakyRelu", (0.01,)),
    elu: ("elu", (1.0,)), sigmoid: ("sigmoid", ()), tanh: ("tanh", ()), softPlus: ("softPlus", ()),
    hardSigmoid: ("hardSigmoid", ()), hardSwish: ("hardSwish", ()),
}


class Activation(Module):
    """An elementwise nonlinearity: any shape in, the same shape out.

    activation: "relu", "relu6", "clip", "leakyRelu", "elu", "sigmoid", "tanh", "softPlus",
    "hardSigmoid" or "hardSwish" (also exported as constants of those names); args: the
    activation's parameters, () for its defaults (leakyRelu: (slope,), 0.01; elu: (alpha,), 1.0;
    clip: (low, high), (0, 6)); name: as for any Module; inplace (False): overwrite the input and
    the incoming gradient (minidl.modules.activation says when that is safe).

    Example::

        >>> act = Activation("relu6")
        >>> act(gpuarray.to_gpu(np.array([[-1, 3, 8]], np.float32))).get()
        array([[0., 3., 6.]], dtype=float32)
    """

    def __init__(self, activation, args=(), name=None, inplace=False):
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
        args = tuple(realInRange("Activation %r" % activation, "args[%d]" % i, a) for i, a in enumerate(args))
        if kind == "clip" and not args[0] < args[1]:
            raise ValueError("Activation clip: expected low < high, got %r" % (args,))
        self.kind = kind
        self.alpha = float(args[0]) if args else 0.0
        self.beta = float(args[1]) if len(args) > 1 else 0.0
        # in place the backward gets the output where it expects the input: only kinds whose
        # derivative reads the same from either may do it
        if inplace and (kind in ("softPlus", "hardSigmoid", "hardSwish") or (kind == "leakyRelu" and self.alpha < 0)):
            raise ValueError("Activation %r: inplace=True needs a derivative computable from the output; "
                             "got %s with args %r" % (self.name, activation, args))
        self.inplace = bool(inplace)

    def dataShapeFrom(self, shape):
        return tuple(shape)

    def updateData(self, data):
        self.data = ops.activation(data, self.kind, self.alpha, self.beta, out=data if self.inplace else None)

    def updateGrad(self, grad):
        # in place, inData holds the output by now: the allowed kinds read their mask from it alike
        self.grad = ops.activationBackward(self.inData, self.data, grad, self.kind, self.alpha, self.beta,
                                           out=grad if self.inplace else None)

    def __str__(self):
        return "Activation(name=%r, %s%s)" % (self.name, self.activation, ", inplace" if self.inplace else "")

    __repr__ = __str__
