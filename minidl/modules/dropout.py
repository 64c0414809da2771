"""Dropout(p=0.5, seed=None): inverted dropout.

Train mode zeroes each element with probability p and scales survivors by
1/(1-p); eval mode is the identity. Masks come from a generator seeded by
``seed`` (or, when None, from numpy's global generator at construction, so
``np.random.seed`` makes runs reproducible).
"""

import numpy as np

from minidl.backend import ops
from minidl.module import Module
from minidl.shapes import realInRange


class Dropout(Module):
    def __init__(self, p=0.5, seed=None, name=None):
        super().__init__(name)
        self.registerBlueprint(locals())
        self.p = realInRange("Dropout", "p", p, 0, 1, highOpen=True)
        # a host generator of per-call seeds (no array math happens here)
        self.seeds = np.random.default_rng(np.random.randint(2 ** 31) if seed is None else seed)
        self.mask = None

    def dataShapeFrom(self, shape):
        return tuple(shape)

    def updateData(self, data):
        if self.train and self.p > 0:
            self.data, self.mask = ops.dropout(data, self.p, int(self.seeds.integers(2 ** 31)))
        else:
            self.data, self.mask = data, None

    def updateGrad(self, grad):
        self.grad = grad if self.mask is None else ops.dropoutBackward(grad, self.mask)
