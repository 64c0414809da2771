"""Gradient-norm clipping over all of an optimizer's parameters (PyTorch's clip_grad_norm_).

``clipGradNorm(optimizer, maxNorm)`` computes the global L2 norm of the
gradients of every Variable the optimizer updates (those with a positive
``learnRate`` multiplier; sqrt of the sum of every element squared, over all
of them together) and, when it exceeds maxNorm, scales every one of those
gradients by ``maxNorm / (norm + 1e-6)`` (PyTorch's coefficient); it returns
the norm before clipping. Call it between the backward pass and
``optimizer.update()``, or give ``Trainer(..., clipGradNorm=maxNorm)``, which
does so at every step. It clips the loss's gradients only: weight decay
(``Hooks.WeightDecay``, a Variable's ``wc``) is added inside ``update()``,
after it, as PyTorch's coupled weight decay is.

With ``setupOn(net, useGlobalState=True)`` the gradients live in one flat
buffer per group (minidl/optimizers/globalstate.py): the norm is one reduction
over each buffer (their zero padding adds nothing) and the scaling one op per
buffer. Otherwise it visits each Variable once (a Variable shared by several
modules counts once). All arithmetic runs through the backend's ops
(``sumOfSquares``, ``scale``); the one value read back to the host is the
norm (one synchronisation per call on the GPU).

A norm that is not finite (a NaN or an infinity in some gradient) is never
hidden: the gradients are left exactly as they are and the norm is returned,
so the next update spreads the NaN into the weights as unclipped training
would; ``errorIfNonFinite=True`` raises NonFiniteGradError instead. The
Trainer passes its ``terminateOnNaN`` there, so by default it stops before
that batch's update, the weights untouched.

    norm = clipGradNorm(optimizer, 5.0)    # after net.backward(...), before optimizer.update()
"""

import math

from minidl.anomaly import NonFiniteError
from minidl.backend import ops
from minidl.shapes import realInRange

EPSILON = 1e-6      # added to the norm in the scaling coefficient, as PyTorch does


class NonFiniteGradError(NonFiniteError):
    """The global gradient norm is NaN or infinite. ``message``: the error's text; ``norm``: the value;
    ``batch`` and ``samples``: the Trainer's batch number in the pass and its sample indices (None
    outside a Trainer)."""

    def __init__(self, message, norm, batch=None, samples=None):
        super().__init__(message)
        self.norm, self.batch, self.samples = norm, batch, samples


def _gradients(optimizer):
    """The gradient arrays of what the optimizer updates: flat group buffers or per-Variable grads."""
    optimizer._requireSetup()
    if optimizer.groups is not None:
        variables = [group.var for group in optimizer.groups]
    else:
        variables = list(optimizer.vars.values())
    return [var.grad for var in variables if var.learnRate > 0]


def gradNorm(optimizer):
    """The global L2 norm (a float) of the gradients of every Variable the optimizer updates (those
    with learnRate > 0), without changing them.

    Example::

        >>> from minidl.modules import Linear
        >>> net = Linear(2, 1); opt = SGD().setupOn(net)
        >>> net.vars["W"].grad.set(np.array([[3], [4]], np.float32))
        >>> gradNorm(opt)
        5.0
    """
    return math.sqrt(float(ops.sumOfSquares(_gradients(optimizer)).get()))


def clipGradNorm(optimizer, maxNorm, errorIfNonFinite=False):
    """Scale the optimizer's gradients so that their global L2 norm is at most maxNorm; returns the
    norm before clipping (a float). maxNorm: finite and > 0 (ValueError otherwise). A norm at or
    below maxNorm leaves the gradients untouched; a non-finite one leaves them untouched too and is
    returned, or raises NonFiniteGradError when errorIfNonFinite (see the module's doc).

    Example::

        >>> from minidl.modules import Linear
        >>> net = Linear(2, 1); opt = SGD().setupOn(net)
        >>> net.vars["W"].grad.set(np.array([[3], [4]], np.float32))
        >>> clipGradNorm(opt, 1.0), net.vars["W"].grad.get().ravel().round(4)
        (5.0, array([0.6, 0.8], dtype=float32))
    """
    maxNorm = realInRange("clipGradNorm", "maxNorm", maxNorm, 0, lowOpen=True)
    if not isinstance(errorIfNonFinite, bool):
        raise ValueError("clipGradNorm: errorIfNonFinite must be True or False, got %r" % (errorIfNonFinite,))
    grads = _gradients(optimizer)
    norm = math.sqrt(float(ops.sumOfSquares(grads).get()))
    if not math.isfinite(norm):
        if errorIfNonFinite:
            raise NonFiniteGradError("clipGradNorm: the gradient norm is %s (a NaN or an infinity in some "
                                     "gradient); gradients left unchanged" % norm, norm)
        return norm
    if norm > maxNorm:
        coefficient = maxNorm / (norm + EPSILON)
        for grad in grads:
            ops.scale(grad, coefficient)
    return norm
