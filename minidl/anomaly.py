"""Finding where a NaN or an infinity comes from.

Two checks, as Keras's TerminateOnNaN and PyTorch's anomaly mode:

- The Trainer stops at the first batch whose loss is not finite, before that batch's update, with a
  NonFiniteLossError naming the batch (on by default: ``Trainer(..., terminateOnNaN=False)`` turns
  it off).
- The debug mode checks every module's output after its forward pass and its gradients after its
  backward pass, and raises an AnomalyError naming the first module that produced a non-finite
  value, by its dotted path in the model, and whether its own input was finite::

      MINIDL_DETECT_ANOMALY=1 python train.py     # the whole run
      minidl.detectAnomaly(True)                  # from here on (False: off again)
      with minidl.detectAnomaly():                # inside the block only
          trainer.trainFromHost(data, labels)

  It reads every output and gradient back to the host (on the GPU, a synchronisation per module
  and pass), several times slower: a tool for finding a NaN's source, not for normal runs. The
  switch is one per process, shared by its threads.
"""

import os

import numpy as np

from minidl.errors import ModuleError


class NonFiniteError(FloatingPointError):
    """A NaN or an infinity where minidl was asked to stop at one."""


class NonFiniteLossError(NonFiniteError):
    """A training batch's loss is not finite. ``message``: the error's text; ``batch``: the batch's
    number in the pass (from 0); ``samples``: the indices of its samples in the data given to the
    Trainer; ``loss``: the value."""

    def __init__(self, message, batch, samples, loss):
        super().__init__(message)
        self.batch, self.samples, self.loss = batch, samples, loss


class AnomalyError(ModuleError, NonFiniteError):
    """In the debug mode: a module's output or gradient holds NaN or infinities. The message names
    the module by its dotted path (containers add theirs as it travels up, as for any
    ModuleError); ``module`` is the module itself, ``detail`` what was found."""

    def __init__(self, module, detail):
        super().__init__(type(module).__name__, [module.name], detail)
        self.module = module


def _setting():
    text = os.environ.get("MINIDL_DETECT_ANOMALY", "0")
    if text.strip() not in ("0", "1"):
        raise ValueError("MINIDL_DETECT_ANOMALY must be 1 (check every module's outputs and gradients for NaN "
                         "and infinities) or 0 (do not), got %r" % text)
    return text.strip() == "1"


_enabled = [_setting()]


def isEnabled():
    """Whether the debug mode (detectAnomaly, MINIDL_DETECT_ANOMALY) is on."""
    return _enabled[0]


class detectAnomaly:
    """Turn the debug mode on (or off, with enabled=False) now; used in a ``with`` statement, the
    previous setting comes back at the end of the block. See minidl.anomaly's docstring.

    Example::

        >>> from minidl.modules import Linear
        >>> fc = Linear(2, 1, name="fc"); fc.W.fill(np.inf)
        >>> with minidl.detectAnomaly():
        ...     fc(gpuarray.zeros((1, 2)))     # 0 * inf
        Traceback (most recent call last):
        minidl.anomaly.AnomalyError: Linear 'fc': forward output holds 1 NaN ...; its input was finite
    """

    def __init__(self, enabled=True):
        if not isinstance(enabled, bool):
            raise TypeError("detectAnomaly: expected True or False, got %r" % (enabled,))
        self.previous = _enabled[0]
        _enabled[0] = enabled

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _enabled[0] = self.previous
        return False


def _host(a):
    return np.asarray(a) if isinstance(a, np.ndarray) else a.get()


def _arrays(data):
    if isinstance(data, (list, tuple)):
        for d in data:
            yield from _arrays(d)
    elif data is not None:
        yield _host(data)


def describe(data):
    """'' when every value in data (an array or a list of them) is finite, else what is not, e.g.
    '3 NaN, 1 +inf of 4096 values, the first at (0, 2, 5, 1)'."""
    counts = [0, 0, 0]
    total, first = 0, None
    for k, a in enumerate(_arrays(data)):
        bad = ~np.isfinite(a)
        total += a.size
        if bad.any():
            counts[0] += int(np.isnan(a).sum())
            counts[1] += int(np.isposinf(a).sum())
            counts[2] += int(np.isneginf(a).sum())
            if first is None:
                where = tuple(int(i) for i in np.argwhere(bad)[0])
                first = where if not isinstance(data, (list, tuple)) else ("item %d" % k,) + where
    if first is None:
        return ""
    parts = ["%d %s" % (c, name) for c, name in zip(counts, ("NaN", "+inf", "-inf")) if c]
    return "%s of %d values, the first at %s" % (", ".join(parts), total, first)


class _Watch:
    """What a module's forward or backward pass is checked against: the non-finite values it was
    given (found before the pass, since in-place modules overwrite their input)."""

    def __init__(self, module, given, backward, inputGrad, paramGrads):
        self.module, self.backward = module, backward
        self.inputGrad, self.paramGrads = inputGrad, paramGrads
        self.given = describe(given)
        # parameter gradients accumulate: one already non-finite is not this pass's doing
        self.badGrads = {name for name, var in module.vars.items()
                         if backward and paramGrads and var.grad is not None and describe(var.grad)}

    def __enter__(self):
        return self

    def __exit__(self, excType, exc, tb):
        if excType is None:
            self.check()
        return False

    def check(self):
        module = self.module
        what = "incoming gradient" if self.backward else "input"
        origin = "its %s already held %s" % (what, self.given) if self.given else "its %s was finite" % what
        if not self.backward:
            found = describe(module.data)
            if found:
                raise AnomalyError(module, "forward output holds %s; %s" % (found, origin))
            return
        found = describe(module.grad) if self.inputGrad and module.grad is not None else ""
        if found:
            raise AnomalyError(module, "backward: the input gradient holds %s; %s" % (found, origin))
        for name, var in module.vars.items():
            if not self.paramGrads or var.grad is None or name in self.badGrads:
                continue
            found = describe(var.grad)
            if found:
                raise AnomalyError(module, "backward: the gradient of %s holds %s; %s" % (name, found, origin))


class _Idle:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_IDLE = _Idle()


def watch(module, given, backward=False, inputGrad=True, paramGrads=True):
    """A context for one forward (given: its input) or backward (given: the incoming gradient) pass
    of module: with the debug mode on, it checks the pass's results at the end (a backward pass:
    the input gradient when inputGrad, the parameter gradients when paramGrads); otherwise it does
    nothing. Module.__call__ and Module.backward run their passes inside it."""
    return _Watch(module, given, backward, inputGrad, paramGrads) if _enabled[0] else _IDLE
