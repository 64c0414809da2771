"""Optimizers: SGD, MomentumSGD, NesterovSGD, Adam, RMSProp, AdaGrad; Hooks (weight decay)."""

from minidl.optimizers import hooks as Hooks  # noqa: F401  (PuzzleLib's module name)
from minidl.optimizers.optimizer import Optimizer  # noqa: F401
from minidl.optimizers.rules import SGD, AdaGrad, Adam, MomentumSGD, NesterovSGD, RMSProp  # noqa: F401
