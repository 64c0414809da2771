"""Learning-rate schedules against closed-form values, PyTorch's OneCycleLR, and driving optimizers."""

import math

import numpy as np
import pytest

from minidl.modules import Linear
from minidl.optimizers import SGD, Adam, MomentumSGD, MultiStepLR, OneCycleLR, StepLR, WarmupCosineLR


def test_step_lr_multiplies_by_gamma_every_step_size_steps():
    s = StepLR(0.5, stepSize=3, gamma=0.2)
    expected, rate = [], 0.5
    for t in range(10):
        if t > 0 and t % 3 == 0:
            rate *= 0.2
        expected.append(rate)
    assert [s.lr(t) for t in range(10)] == pytest.approx(expected, rel=1e-12)
    assert s.lr(2) == 0.5 and s.lr(3) == pytest.approx(0.1) and s.lr(9) == pytest.approx(0.5 * 0.2 ** 3)


def test_multi_step_lr_counts_the_milestones_passed():
    s = MultiStepLR(1.0, milestones=[2, 5, 6], gamma=0.5)
    expected = [1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.125, 0.125, 0.125]
    assert [s.lr(t) for t in range(9)] == expected


def test_warmup_cosine_closed_form():
    base, total, warm, floor, start = 0.1, 50, 10, 0.002, 0.01
    s = WarmupCosineLR(base, totalSteps=total, warmupSteps=warm, minLr=floor, startLr=start)
    assert s.lr(0) == pytest.approx(0.01)
    assert s.lr(5) == pytest.approx(0.01 + 0.09 * 0.5)              # half way up the ramp
    assert s.lr(10) == pytest.approx(0.1)                           # the peak
    assert s.lr(30) == pytest.approx(0.002 + 0.098 * 0.5)           # cos(pi / 2) = 0: half way down
    assert s.lr(20) == pytest.approx(0.002 + 0.098 * (1 + math.cos(math.pi / 4)) / 2)
    assert s.lr(50) == pytest.approx(0.002) and s.lr(51) == 0.002 and s.lr(1000) == 0.002   # held at the floor
    rates = [s.lr(t) for t in range(total + 1)]
    assert all(a < b for a, b in zip(rates[:10], rates[1:11])), "rising during warmup"
    assert all(a > b for a, b in zip(rates[10:50], rates[11:51])), "falling after it"


def test_warmup_cosine_without_warmup_starts_at_the_base_rate():
    s = WarmupCosineLR(0.2, totalSteps=4)
    expected = [0.2 * (1 + math.cos(math.pi * t / 4)) / 2 for t in range(5)]
    assert [s.lr(t) for t in range(5)] == pytest.approx(expected, abs=1e-15)


def _oneCycleReference(maxLr, total, pct, div, finalDiv, t):
    """PyTorch's OneCycleLR (two phases, cosine), written out from its documentation."""
    initial = maxLr / div
    final = initial / finalDiv
    end1 = pct * total - 1
    if t <= end1:
        start, stop, frac = initial, maxLr, t / end1
    else:
        start, stop, frac = maxLr, final, (t - end1) / (total - 1 - end1)
    return stop + (start - stop) / 2 * (math.cos(math.pi * frac) + 1)


def test_one_cycle_closed_form():
    s = OneCycleLR(0.4, totalSteps=20, pctStart=0.25, divFactor=10, finalDivFactor=100)
    assert s.lr(0) == pytest.approx(0.04)             # maxLr / divFactor
    assert s.lr(4) == pytest.approx(0.4)              # the peak at 0.25 * 20 - 1
    assert s.lr(2) == pytest.approx(0.4 + (0.04 - 0.4) / 2 * (math.cos(math.pi * 0.5) + 1))
    assert s.lr(19) == pytest.approx(0.0004)          # initial / finalDivFactor at the last step
    assert s.lr(20) == pytest.approx(0.0004)          # the step() after the last update: held
    for t in range(20):
        assert s.lr(t) == pytest.approx(_oneCycleReference(0.4, 20, 0.25, 10, 100, t), rel=1e-12), t


def test_one_cycle_matches_pytorch():
    torch = pytest.importorskip("torch")
    total = 37
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.1)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.3, total_steps=total, pct_start=0.3,
                                              cycle_momentum=False)
    theirs = []
    for _ in range(total):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    ours = OneCycleLR(0.3, totalSteps=total, pctStart=0.3)
    assert [ours.lr(t) for t in range(total)] == pytest.approx(theirs, rel=1e-9)


def test_one_cycle_refuses_steps_past_the_end():
    s = OneCycleLR(0.1, totalSteps=3, pctStart=0.5)
    for _ in range(3):
        s.step()
    with pytest.raises(ValueError, match=r"OneCycleLR: step 4 is past totalSteps \(3\)"):
        s.step()
    assert s.t == 3


def test_attach_and_step_drive_the_optimizer():
    net = Linear(2, 2)
    opt = MomentumSGD(learnRate=123.0).setupOn(net)
    s = StepLR(0.1, stepSize=2, gamma=0.5).attach(opt)
    assert opt.learnRate == 0.1
    seen = []
    for _ in range(5):
        seen.append(opt.learnRate)
        s.step()
    assert seen == [0.1, 0.1, 0.05, 0.05, 0.025] and s.t == 5 and opt.learnRate == 0.025


def test_attach_resumes_at_t_and_reaches_adams_alpha():
    opt = Adam(alpha=1.0).setupOn(Linear(2, 2))
    s = WarmupCosineLR(0.01, totalSteps=10, warmupSteps=4)
    s.t = 2
    s.attach(opt)
    assert opt.alpha == pytest.approx(0.005)
    assert s.step() == pytest.approx(0.0075) and opt.alpha == pytest.approx(0.0075)


def test_attach_refuses_something_without_a_learning_rate():
    with pytest.raises(TypeError, match=r"StepLR.attach: expected an optimizer with a learnRate attribute, got int"):
        StepLR(0.1, 2).attach(3)


@pytest.mark.parametrize("make, message", [
    (lambda: StepLR(-0.1, 2), r"StepLR: baseLr must be >= 0, got -0.1"),
    (lambda: StepLR(float("nan"), 2), r"StepLR: baseLr must be a finite number >= 0, got nan"),
    (lambda: StepLR(0.1, 0), r"StepLR: stepSize must be an int >= 1, got 0"),
    (lambda: StepLR(0.1, 2.5), r"StepLR: stepSize must be an int >= 1, got 2.5"),
    (lambda: StepLR(0.1, 2, gamma=0), r"StepLR: gamma must be in \(0, 1\], got 0"),
    (lambda: StepLR(0.1, 2, gamma=1.5), r"StepLR: gamma must be in \(0, 1\], got 1.5"),
    (lambda: MultiStepLR(0.1, []), r"MultiStepLR: milestones must be a non-empty list of ints, got \[\]"),
    (lambda: MultiStepLR(0.1, [3, 3]), r"MultiStepLR: milestones must be strictly increasing, got \[3, 3\]"),
    (lambda: MultiStepLR(0.1, [0, 3]), r"MultiStepLR: each milestone must be an int >= 1, got 0"),
    (lambda: WarmupCosineLR(0.1, 0), r"WarmupCosineLR: totalSteps must be an int >= 1, got 0"),
    (lambda: WarmupCosineLR(0.1, 10, warmupSteps=10),
     r"WarmupCosineLR: warmupSteps must be < totalSteps \(10\), got 10"),
    (lambda: WarmupCosineLR(0.1, 10, warmupSteps=-1), r"WarmupCosineLR: warmupSteps must be an int >= 0, got -1"),
    (lambda: WarmupCosineLR(0.1, 10, minLr=0.2), r"WarmupCosineLR: minLr must be in \[0, 0.1\], got 0.2"),
    (lambda: OneCycleLR(0, 10), r"OneCycleLR: maxLr must be > 0, got 0"),
    (lambda: OneCycleLR(0.1, 1), r"OneCycleLR: totalSteps must be an int >= 2, got 1"),
    (lambda: OneCycleLR(0.1, 10, pctStart=1.0), r"OneCycleLR: pctStart must be in \(0, 1\), got 1.0"),
    (lambda: OneCycleLR(0.1, 10, pctStart=0.05), r"OneCycleLR: pctStart \* totalSteps must be in \[1, totalSteps\)"),
    (lambda: OneCycleLR(0.1, 10, divFactor=0.5), r"OneCycleLR: divFactor must be >= 1, got 0.5"),
], ids=["negative", "nan", "stepSize0", "stepSizeFloat", "gamma0", "gammaAbove1", "noMilestones",
        "repeatedMilestone", "milestone0", "total0", "warmupAll", "warmupNegative", "floorAboveBase",
        "maxLr0", "total1", "pct1", "pctTooSmall", "div"])
def test_arguments_are_checked(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_lr_refuses_a_negative_step():
    with pytest.raises(ValueError, match=r"StepLR.lr: step must be an int >= 0, got -1"):
        StepLR(0.1, 2).lr(-1)


def test_a_schedule_drives_the_trainer_per_batch(backend):
    from minidl.backend import gpuarray
    from minidl.cost import CrossEntropy
    from minidl.handlers import Trainer
    net = Linear(3, 2)
    opt = SGD(learnRate=1.0).setupOn(net)
    seen = []
    trainer = Trainer(net, CrossEntropy(), opt, batchsize=4, schedule=MultiStepLR(0.3, [2, 3], gamma=0.1),
                      onBatchFinish=lambda t: seen.append(t.currBatch))
    rates = []
    original = opt.update

    def update():
        rates.append(opt.learnRate)
        original()
    opt.update = update
    x = gpuarray.to_gpu(np.random.default_rng(0).standard_normal((16, 3)).astype(np.float32))
    y = gpuarray.to_gpu(np.array([0, 1] * 8, np.int32))
    trainer.train(x, y)
    assert rates == pytest.approx([0.3, 0.3, 0.03, 0.003]) and seen == [1, 2, 3, 4]
    assert trainer.history.rows[-1]["learnRate"] == pytest.approx(0.003), "the rate of the pass's last update"
