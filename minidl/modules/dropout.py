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
    """Inverted dropout: in train mode each element is zeroed with probability p and the others are
    scaled by 1 / (1 - p); eval mode is the identity. Any shape in, the same shape out.

    p (0.5): the probability of zeroing an element, in [0, 1); seed (None): the masks' generator
    seed (None: drawn from numpy's global generator); name: as for any Module.

    Example::

        >>> drop = Dropout(p=0.5, seed=1)
        >>> x = gpuarray.to_gpu(np.ones((2, 1000), np.float32))
        >>> sorted(set(drop(x).get().ravel().tolist()))     # survivors scaled by 1 / (1 - p)
        [0.0, 2.0]
        >>> drop.evalMode(); drop(x) is x
        True
    """

    def __init__(self, p=0.5, seed=None, name=None):
        super().__init__(name)
        self.registerBlueprint(locals())
        self.p = realInRange("Dropout", "p", p, 0, 1, highOpen=True)
        # a host generator of per-call seeds (no array math happens here)
        self.seeds = np.random.default_rng(np.random.randint(2 ** 31) if seed is None else seed)
        self.mask = None

    def dataShapeFrom(self, shape):
        return tuple(shape)

    def reset(self):
        super().reset()
        self.mask = None

    def updateData(self, data):
        if self.train and self.p > 0:
            self.data, self.mask = ops.dropout(data, self.p, int(self.seeds.integers(2 ** 31)))
        else:
            self.data, self.mask = data, None

    def updateGrad(self, grad):
        self.grad = grad if self.mask is None else ops.dropoutBackward(grad, self.mask)
