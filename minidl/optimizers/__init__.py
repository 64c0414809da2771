"""Optimizers: SGD, MomentumSGD, NesterovSGD, Adam, RMSProp, AdaGrad."""

from minidl.optimizers.optimizer import Optimizer  # noqa: F401
from minidl.optimizers.rules import SGD, AdaGrad, Adam, MomentumSGD, NesterovSGD, RMSProp  # noqa: F401
