"""The optimizers, with PuzzleLib's names and defaults. Each update rule is one
backend op (see minidl.backend.interface for the formulas). Constructors check
every hyperparameter against its range (minidl.optimizers.optimizer's
HYPERPARAMETER_RANGES): learnRate/alpha finite and >= 0; momRate, beta1, beta2
and factor in [0, 1); epsilon finite and > 0. Anything else raises ValueError,
e.g. "MomentumSGD: momRate must be in [0, 1), got 2"."""

from minidl.backend import ops
from minidl.optimizers.optimizer import Optimizer


class SGD(Optimizer):
    """w -= lr * (g + wc * w)."""

    def __init__(self, learnRate=1e-3):
        super().__init__()
        self.learnRate = self.checkHyperparameter("learnRate", learnRate)

    def updateVar(self, var, state):
        ops.sgdUpdate(var.data, var.grad, self.learnRate * var.learnRate, var.wc)


class MomentumSGD(Optimizer):
    """m = momRate * m - lr * g; w += m."""

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
    """Nesterov momentum: m' = momRate * m - lr * g; w += (1 + momRate) * m' - momRate * m."""

    def updateVar(self, var, state):
        ops.nesterovUpdate(var.data, var.grad, state["mom"], self.learnRate * var.learnRate,
                           self.momRate * var.momRate, var.wc)


class Adam(Optimizer):
    """Adam with bias correction; ``alpha`` is the learning rate (also reachable as learnRate)."""

    hyperparameters = ("alpha", "beta1", "beta2", "epsilon")

    def __init__(self, alpha=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8):
        super().__init__()
        self.alpha = self.checkHyperparameter("alpha", alpha)
        self.beta1 = self.checkHyperparameter("beta1", beta1)
        self.beta2 = self.checkHyperparameter("beta2", beta2)
        self.epsilon = self.checkHyperparameter("epsilon", epsilon)

    @property
    def learnRate(self):
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
    """ms = factor * ms + (1 - factor) * g^2; w -= lr * g / (sqrt(ms) + epsilon)."""

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
    """h += g^2; w -= lr * g / (sqrt(h) + epsilon)."""

    hyperparameters = ("learnRate", "epsilon")

    def __init__(self, learnRate=1e-3, epsilon=1e-8):
        super().__init__()
        self.learnRate = self.checkHyperparameter("learnRate", learnRate)
        self.epsilon = self.checkHyperparameter("epsilon", epsilon)

    def setupState(self, var):
        return {"h": self.zeroState(var)}

    def updateVar(self, var, state):
        ops.adagradUpdate(var.data, var.grad, state["h"], self.learnRate * var.learnRate, self.epsilon, var.wc)
