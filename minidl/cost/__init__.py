"""Costs: ``error, grad = cost(pred, target)``; see cost.py for the accumulator API."""

from minidl.cost.cost import Cost  # noqa: F401
from minidl.cost.losses import BCE, MSE, CrossEntropy, SmoothL1  # noqa: F401
