"""The optimizers, with PuzzleLib's names and defaults. Each update rule is one
backend op (see minidl.backend.interface for the formulas)."""

from minidl.backend import ops
from minidl.optimizers.optimizer import Optimizer


class SGD(Optimizer):
    """w -= lr * (g + wc * w)."""

    def __init__(self, learnRate=1e-3):
        super().__init__()
        self.learnRate = learnRate

    def updateVar(self, var, state):
        ops.sgdUpdate(var.data, var.grad, self.learnRate * var.learnRate, var.wc)


class MomentumSGD(Optimizer):
    """m = momRate * m - lr * g; w += m."""

    hyperparameters = ("learnRate", "momRate")

    def __init__(self, learnRate=1e-3, momRate=0.9):
        super().__init__()
        self.learnRate, self.momRate = learnRate, momRate

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
        self.alpha, self.beta1, self.beta2, self.epsilon = alpha, beta1, beta2, epsilon

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
        self.learnRate, self.factor, self.epsilon = learnRate, factor, epsilon

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
        self.learnRate, self.epsilon = learnRate, epsilon

    def setupState(self, var):
        return {"h": self.zeroState(var)}

    def updateVar(self, var, state):
        ops.adagradUpdate(var.data, var.grad, state["h"], self.learnRate * var.learnRate, self.epsilon, var.wc)
