"""Learning-rate schedules: StepLR, MultiStepLR, WarmupCosineLR, OneCycleLR.

A schedule is a function of a step count ``t`` (0, 1, 2, ...): ``lr(t)`` is the
learning rate of the t-th optimizer step, computed from the schedule's own
arguments alone (it never reads the optimizer). A step is whatever you count:
every duration argument is in the steps you call ``step()`` for, so call it

- once per **batch** (what ``Trainer(..., schedule=s)`` does, after every update):
  durations in batches, e.g. ``totalSteps=epochs * batchesPerEpoch``; needed for
  warmup and one-cycle, which change within an epoch;
- or once per **epoch**, yourself, after each pass: durations in epochs, as
  PyTorch's StepLR/MultiStepLR are usually driven.

Driving an optimizer::

    schedule = WarmupCosineLR(0.05, totalSteps=epochs * batches, warmupSteps=batches)
    schedule.attach(optimizer)        # optimizer.learnRate = schedule.lr(schedule.t), now
    for batch in ...:
        ...; optimizer.update()
        schedule.step()               # t += 1; optimizer.learnRate = lr(t)

``attach`` sets ``optimizer.learnRate`` (Adam's ``alpha``, reachable under that
name), overriding the rate the optimizer was built with; ``t`` is a plain
attribute (set it before ``attach`` to resume a run at step t). One schedule
drives one optimizer. Momentum cycling (PyTorch's ``cycle_momentum``) is not
supported: the schedules change the learning rate only.

Arguments are checked in the constructors: rates finite and >= 0, durations
ints >= 1 (warmupSteps >= 0), gamma in (0, 1]; ValueError naming the class and
the argument otherwise.
"""

import math

from minidl.shapes import intAtLeast, realInRange


def _cosine(start, end, fraction):
    """From start (fraction 0) to end (fraction 1) along half a cosine period."""
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * fraction))


class Schedule:
    """What every schedule shares: baseLr (finite, >= 0: the rate the schedule scales), the step
    count ``t`` (0 at first), ``attach``, ``step`` and ``lr``. Subclasses implement ``rate(t)``;
    ``lr(t)`` checks t first. Not used directly: take StepLR, MultiStepLR, WarmupCosineLR or
    OneCycleLR."""

    def __init__(self, baseLr):
        self.baseLr = realInRange(type(self).__name__, "baseLr", baseLr, 0)
        self.t = 0
        self.optimizer = None

    def lr(self, t):
        """The learning rate at step t (an int >= 0)."""
        return float(self.rate(intAtLeast("%s.lr" % type(self).__name__, "step", t, 0)))

    def rate(self, t):
        """The learning rate at step t, an int >= 0 that lr() has checked (subclasses implement it)."""
        raise NotImplementedError("%s must implement rate(t)" % type(self).__name__)

    @property
    def current(self):
        """lr(t) at the current step."""
        return self.lr(self.t)

    def attach(self, optimizer):
        """Drive optimizer (anything with a ``learnRate`` attribute: every minidl optimizer; Adam's
        alpha) from now on: set its learnRate to lr(t) now and at every step(). Returns self."""
        if not hasattr(optimizer, "learnRate"):
            raise TypeError("%s.attach: expected an optimizer with a learnRate attribute, got %s"
                            % (type(self).__name__, type(optimizer).__name__))
        self.optimizer = optimizer
        optimizer.learnRate = self.current
        return self

    def step(self):
        """Advance one step (t += 1) and set the attached optimizer's learnRate to lr(t); returns lr(t)."""
        value = self.lr(self.t + 1)
        self.t += 1
        if self.optimizer is not None:
            self.optimizer.learnRate = value
        return value

    def arguments(self):
        """The constructor's arguments, [(name, value)], for repr."""
        return [("baseLr", self.baseLr)]

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, ", ".join("%s=%r" % item for item in self.arguments()))


class StepLR(Schedule):
    """lr(t) = baseLr * gamma ** (t // stepSize): the rate times gamma every stepSize steps.

    baseLr >= 0; stepSize an int >= 1; gamma in (0, 1] (default 0.1).

    Example::

        >>> s = StepLR(0.1, stepSize=30)       # stepped per epoch: 0.1, then 0.01 from epoch 30
        >>> s.lr(29), round(s.lr(30), 6)
        (0.1, 0.01)
    """

    def __init__(self, baseLr, stepSize, gamma=0.1):
        super().__init__(baseLr)
        self.stepSize = intAtLeast("StepLR", "stepSize", stepSize, 1)
        self.gamma = realInRange("StepLR", "gamma", gamma, 0, 1, lowOpen=True)

    def rate(self, t):
        return self.baseLr * self.gamma ** (t // self.stepSize)

    def arguments(self):
        return [("baseLr", self.baseLr), ("stepSize", self.stepSize), ("gamma", self.gamma)]


class MultiStepLR(Schedule):
    """lr(t) = baseLr * gamma ** (number of milestones <= t).

    baseLr >= 0; milestones: strictly increasing ints >= 1 (a list or tuple, at least one); gamma
    in (0, 1] (default 0.1).

    Example::

        >>> s = MultiStepLR(0.1, milestones=[30, 80], gamma=0.5)
        >>> s.lr(29), s.lr(30), s.lr(80)
        (0.1, 0.05, 0.025)
    """

    def __init__(self, baseLr, milestones, gamma=0.1):
        super().__init__(baseLr)
        if not isinstance(milestones, (list, tuple)) or not milestones:
            raise ValueError("MultiStepLR: milestones must be a non-empty list of ints, got %r" % (milestones,))
        for m in milestones:
            intAtLeast("MultiStepLR", "each milestone", m, 1)
        if any(b <= a for a, b in zip(milestones, milestones[1:])):
            raise ValueError("MultiStepLR: milestones must be strictly increasing, got %r" % (list(milestones),))
        self.milestones = [int(m) for m in milestones]
        self.gamma = realInRange("MultiStepLR", "gamma", gamma, 0, 1, lowOpen=True)

    def rate(self, t):
        return self.baseLr * self.gamma ** sum(1 for m in self.milestones if m <= t)

    def arguments(self):
        return [("baseLr", self.baseLr), ("milestones", self.milestones), ("gamma", self.gamma)]


class WarmupCosineLR(Schedule):
    """Linear warmup, then cosine annealing down to a floor, then the floor.

    - 0 <= t < warmupSteps: lr = startLr + (baseLr - startLr) * t / warmupSteps;
    - warmupSteps <= t <= totalSteps: lr = minLr + (baseLr - minLr) * (1 + cos(pi * f)) / 2,
      f = (t - warmupSteps) / (totalSteps - warmupSteps);
    - t > totalSteps: minLr (held, not raised).

    baseLr >= 0 (the peak); totalSteps: an int >= 1 (every step, warmup included); warmupSteps: an
    int in [0, totalSteps) (default 0: cosine from the first step); minLr (default 0) and startLr
    (default 0) in [0, baseLr]. With startLr 0 the first step has rate 0 (as Hugging Face's
    get_cosine_schedule_with_warmup); pass startLr=baseLr / warmupSteps to start above it.

    Example::

        >>> s = WarmupCosineLR(0.1, totalSteps=100, warmupSteps=10, minLr=0.001)
        >>> s.lr(0), s.lr(5), s.lr(10), s.lr(100)
        (0.0, 0.05, 0.1, 0.001)
    """

    def __init__(self, baseLr, totalSteps, warmupSteps=0, minLr=0.0, startLr=0.0):
        super().__init__(baseLr)
        self.totalSteps = intAtLeast("WarmupCosineLR", "totalSteps", totalSteps, 1)
        self.warmupSteps = intAtLeast("WarmupCosineLR", "warmupSteps", warmupSteps, 0)
        if self.warmupSteps >= self.totalSteps:
            raise ValueError("WarmupCosineLR: warmupSteps must be < totalSteps (%d), got %d"
                             % (self.totalSteps, self.warmupSteps))
        self.minLr = realInRange("WarmupCosineLR", "minLr", minLr, 0, self.baseLr)
        self.startLr = realInRange("WarmupCosineLR", "startLr", startLr, 0, self.baseLr)

    def rate(self, t):
        if t < self.warmupSteps:
            return self.startLr + (self.baseLr - self.startLr) * t / self.warmupSteps
        if t >= self.totalSteps:
            return self.minLr
        return _cosine(self.baseLr, self.minLr, (t - self.warmupSteps) / (self.totalSteps - self.warmupSteps))

    def arguments(self):
        return [("baseLr", self.baseLr), ("totalSteps", self.totalSteps), ("warmupSteps", self.warmupSteps),
                ("minLr", self.minLr), ("startLr", self.startLr)]


class OneCycleLR(Schedule):
    """The one-cycle policy, shaped as PyTorch's OneCycleLR (two phases, cosine annealing).

    Rates: initialLr = maxLr / divFactor, finalLr = initialLr / finalDivFactor. With
    peak = pctStart * totalSteps - 1 (a float, as PyTorch computes it):

    - 0 <= t <= peak: from initialLr to maxLr, cosine in f = t / peak;
    - peak < t <= totalSteps - 1: from maxLr to finalLr, cosine in
      f = (t - peak) / (totalSteps - 1 - peak);
    - t = totalSteps: finalLr (the step() after the last update); past that, ValueError, as
      PyTorch raises when stepped beyond total_steps (the schedule was sized for fewer steps).

    maxLr > 0 (``baseLr`` is maxLr); totalSteps an int >= 2; pctStart in (0, 1) with
    1 <= pctStart * totalSteps < totalSteps (each phase at least one step); divFactor (25) and
    finalDivFactor (1e4) >= 1. Not supported: the three-phase variant, momentum cycling,
    linear annealing.

    Example::

        >>> s = OneCycleLR(0.1, totalSteps=100, pctStart=0.3)
        >>> round(s.lr(0), 6), round(s.lr(29), 6), round(s.lr(99), 9)
        (0.004, 0.1, 4e-07)
    """

    def __init__(self, maxLr, totalSteps, pctStart=0.3, divFactor=25.0, finalDivFactor=1e4):
        super().__init__(realInRange("OneCycleLR", "maxLr", maxLr, 0, lowOpen=True))
        self.maxLr = self.baseLr
        self.totalSteps = intAtLeast("OneCycleLR", "totalSteps", totalSteps, 2)
        self.pctStart = realInRange("OneCycleLR", "pctStart", pctStart, 0, 1, True, True)
        if not 1 <= self.pctStart * self.totalSteps < self.totalSteps:
            raise ValueError("OneCycleLR: pctStart * totalSteps must be in [1, totalSteps) so that each phase "
                             "has a step, got %r * %d" % (pctStart, self.totalSteps))
        self.divFactor = realInRange("OneCycleLR", "divFactor", divFactor, 1)
        self.finalDivFactor = realInRange("OneCycleLR", "finalDivFactor", finalDivFactor, 1)
        self.initialLr = self.maxLr / self.divFactor
        self.finalLr = self.initialLr / self.finalDivFactor
        self.peak = self.pctStart * self.totalSteps - 1.0

    def rate(self, t):
        if t > self.totalSteps:
            raise ValueError("OneCycleLR: step %d is past totalSteps (%d); the schedule was built for fewer "
                             "steps than are being trained" % (t, self.totalSteps))
        if t >= self.totalSteps - 1:
            return self.finalLr
        if t <= self.peak:
            return _cosine(self.initialLr, self.maxLr, t / self.peak if self.peak > 0 else 1.0)
        return _cosine(self.maxLr, self.finalLr, (t - self.peak) / (self.totalSteps - 1 - self.peak))

    def arguments(self):
        return [("maxLr", self.maxLr), ("totalSteps", self.totalSteps), ("pctStart", self.pctStart),
                ("divFactor", self.divFactor), ("finalDivFactor", self.finalDivFactor)]
