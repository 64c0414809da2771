"""The optimizers, with PuzzleLib's names and defaults. Each update rule is one
backend op (see minidl.backend.interface for the formulas). Constructors check
every hyperparameter against its range (minidl.optimizers.optimizer's
HYPERPARAMETER_RANGES): learnRate/alpha finite and >= 0; momRate, beta1, beta2
and factor in [0, 1); epsilon finite, > 0 and not 0 in float32. Anything else raises ValueError,
e.g. "MomentumSGD: momRate must be in [0, 1), got 2"."""

from minidl.backend import ops
from minidl.optimizers.optimizer import Optimizer


class SGD(Optimizer):
    """Plain gradient descent: w -= lr * (g + wc * w), with lr = learnRate (1e-3) times the
    Variable's learnRate multiplier. No state.

    Example::

        >>> from minidl.modules import Linear
        >>> net = Linear(4, 2); opt = SGD(learnRate=0.5).setupOn(net)
        >>> y = net(gpuarray.zeros((2, 4))); g = net.backward(gpuarray.to_gpu(np.ones((2, 2), np.float32)))
        >>> opt.update(); net.b.get()            # b's gradient sums the batch: 2
        array([-1., -1.], dtype=float32)
    """

    def __init__(self, learnRate=1e-3):
        super().__init__()
        self.learnRate = self.checkHyperparameter("learnRate", learnRate)

    def updateVar(self, var, state):
        ops.sgdUpdate(var.data, var.grad, self.learnRate * var.learnRate, var.wc)


class MomentumSGD(Optimizer):
    """Momentum: m = momRate * m - lr * g; w += m. learnRate (1e-3) and momRate (0.9) are multiplied
    by each Variable's multipliers of the same names. State: ``mom``.

    Example::

        >>> from minidl.modules import Linear
        >>> opt = MomentumSGD(learnRate=0.01, momRate=0.9).setupOn(Linear(4, 2))
        >>> sorted(opt.states["W"]), opt.states["W"]["mom"].shape
        (['mom'], (4, 2))
    """

    hyperparameters = ("learnRate", "momRate")

    def __init__(self, learnRate=1e-3, momRate=0.9):
        super().__init__()
        self.learnRate = self.checkHyperparameter("learnRate", learnRate)
        self.momRate = self.checkHyperparameter("momRate", momRate)

    def setupState(self, var):
        return {"mom": self.zeroState(var)}

    def updateVar(self, var, state):
        ops.momentumUpdate(var.data, var.grad, state["mom"], self.learnRate * var.learnRate,
                           self.momRate * var.momRate, var.wc)


class NesterovSGD(MomentumSGD):
    """Nesterov momentum: m' = momRate * m - lr * g; w += (1 + momRate) * m' - momRate * m.
    learnRate (1e-3), momRate (0.9) and the state ``mom`` as MomentumSGD's.

    Example::

        >>> from minidl.modules import Linear
        >>> opt = NesterovSGD(learnRate=0.01).setupOn(Linear(4, 2))
        >>> opt.momRate, sorted(opt.states["b"])
        (0.9, ['mom'])
    """

    def updateVar(self, var, state):
        ops.nesterovUpdate(var.data, var.grad, state["mom"], self.learnRate * var.learnRate,
                           self.momRate * var.momRate, var.wc)


class Adam(Optimizer):
    """Adam with bias correction; ``alpha`` is the learning rate (also reachable as learnRate).

    alpha (1e-3), times each Variable's learnRate multiplier; beta1 (0.9) and beta2 (0.999): the
    decay of the gradient's mean and of its square's; epsilon (1e-8). State: ``mg``, ``ms``.

    Example::

        >>> from minidl.modules import Linear
        >>> opt = Adam(alpha=1e-3).setupOn(Linear(4, 2))
        >>> opt.learnRate, sorted(opt.states["W"])
        (0.001, ['mg', 'ms'])
    """

    hyperparameters = ("alpha", "beta1", "beta2", "epsilon")

    def __init__(self, alpha=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8):
        super().__init__()
        self.alpha = self.checkHyperparameter("alpha", alpha)
        self.beta1 = self.checkHyperparameter("beta1", beta1)
        self.beta2 = self.checkHyperparameter("beta2", beta2)
        self.epsilon = self.checkHyperparameter("epsilon", epsilon)

    @property
    def learnRate(self):
        """alpha under the other rules' name, for schedules; setting it sets alpha."""
        return self.alpha

    @learnRate.setter
    def learnRate(self, value):
        self.alpha = value

    def setupState(self, var):
        return {"mg": self.zeroState(var), "ms": self.zeroState(var)}

    def updateVar(self, var, state):
        ops.adamUpdate(var.data, var.grad, state["mg"], state["ms"], self.alpha * var.learnRate, self.beta1,
                       self.beta2, self.epsilon, self.t, var.wc)


class RMSProp(Optimizer):
    """ms = factor * ms + (1 - factor) * g^2; w -= lr * g / (sqrt(ms) + epsilon).

    learnRate (1e-3), times each Variable's learnRate multiplier; factor (0.9); epsilon (1e-5).
    State: ``ms``.

    Example::

        >>> from minidl.modules import Linear
        >>> opt = RMSProp(learnRate=1e-3, factor=0.9).setupOn(Linear(4, 2))
        >>> sorted(opt.states["W"])
        ['ms']
    """

    hyperparameters = ("learnRate", "factor", "epsilon")

    def __init__(self, learnRate=1e-3, factor=0.9, epsilon=1e-5):
        super().__init__()
        self.learnRate = self.checkHyperparameter("learnRate", learnRate)
        self.factor = self.checkHyperparameter("factor", factor)
        self.epsilon = self.checkHyperparameter("epsilon", epsilon)

    def setupState(self, var):
        return {"ms": self.zeroState(var)}

    def updateVar(self, var, state):
        ops.rmspropUpdate(var.data, var.grad, state["ms"], self.learnRate * var.learnRate, self.factor,
                          self.epsilon, var.wc)


class AdaGrad(Optimizer):
    """h += g^2; w -= lr * g / (sqrt(h) + epsilon).

    learnRate (1e-3), times each Variable's learnRate multiplier; epsilon (1e-8). State: ``h``.

    Example::

        >>> from minidl.modules import Linear
        >>> opt = AdaGrad(learnRate=0.01).setupOn(Linear(4, 2))
        >>> sorted(opt.states["W"])
        ['h']
    """

    hyperparameters = ("learnRate", "epsilon")

    def __init__(self, learnRate=1e-3, epsilon=1e-8):
        super().__init__()
        self.learnRate = self.checkHyperparameter("learnRate", learnRate)
        self.epsilon = self.checkHyperparameter("epsilon", epsilon)

    def setupState(self, var):
        return {"h": self.zeroState(var)}

    def updateVar(self, var, state):
        ops.adagradUpdate(var.data, var.grad, state["h"], self.learnRate * var.learnRate, self.epsilon, var.wc)
