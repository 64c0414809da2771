"""Gradient hooks for ``optimizer.addHook`` (PuzzleLib's ``Optimizers.Hooks``).

A hook is called as ``hook(var, state)`` on every Variable the optimizer is
about to update (with ``useGlobalState=True``, once per flat group), after the
backward pass and before the rule, and may change ``var.grad`` in place.
``from minidl.optimizers import Hooks`` gives this module under PuzzleLib's name.
"""

from minidl.backend import ops
from minidl.shapes import realInRange


class Hook:
    """The base of the hooks: a subclass implements ``__call__(var, state)``, changing var.grad in
    place (see minidl.optimizers.hooks); any other callable of that form works as well."""

    def __call__(self, var, state, stream=None):
        raise NotImplementedError("%s must implement __call__(var, state)" % type(self).__name__)


class WeightDecay(Hook):
    """L2 weight decay: grad += rate * param, on every parameter the optimizer updates.

    rate is finite and >= 0 (ValueError otherwise). It adds to each Variable's own ``wc``, which the
    rules apply as well. PuzzleLib's hook scaled rate by ``var.wc`` and skipped Variables whose wc is
    0, its default, so there it did nothing unless wc was set by hand (and nothing at all with global
    state); here ``WeightDecay(1e-4)`` decays every parameter by 1e-4, which is what scripts that add
    it intend. To exempt a parameter (batch norm's scale, a bias), give it ``learnRate=0`` or use its
    ``wc`` instead of the hook.

    Example::

        >>> from minidl.modules import Linear
        >>> from minidl.optimizers import SGD, Hooks
        >>> net = Linear(2, 1); opt = SGD(learnRate=0.5).setupOn(net).addHook(Hooks.WeightDecay(0.5))
        >>> net.W.set(np.ones((2, 1), np.float32)); opt.update(); net.W.get().ravel()   # gradients are 0
        array([0.75, 0.75], dtype=float32)
    """

    def __init__(self, rate):
        self.rate = realInRange("WeightDecay", "rate", rate, 0)

    def __call__(self, var, state, stream=None):
        if self.rate > 0:
            ops.axpy(var.grad, var.data, self.rate)
