"""Optimizers: SGD, MomentumSGD, NesterovSGD, Adam, RMSProp, AdaGrad; Hooks (weight decay);
learning-rate schedules (schedules.py) and gradient-norm clipping (clipping.py)."""

from minidl.optimizers import hooks as Hooks  # noqa: F401  (PuzzleLib's module name)
from minidl.optimizers.clipping import NonFiniteGradError, clipGradNorm, gradNorm  # noqa: F401
from minidl.optimizers.optimizer import Optimizer  # noqa: F401
from minidl.optimizers.rules import SGD, AdaGrad, Adam, MomentumSGD, NesterovSGD, RMSProp  # noqa: F401
from minidl.optimizers.schedules import (  # noqa: F401
    MultiStepLR, OneCycleLR, Schedule, StepLR, WarmupCosineLR,
)
