"""Costs: values against float64 formulas, gradients against finite differences."""

import numpy as np
import pytest

from gradcheck import assertClose, checkCostGradient
from minidl.backend import gpuarray, ops
from minidl.cost import BCE, MSE, CrossEntropy, SmoothL1
from minidl.errors import ModuleError


def _ce(scores, labels):
    s = scores.astype(np.float64)
    logp = s - s.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    return -logp[np.arange(len(labels)), labels].mean()


def test_cross_entropy(backend):
    scores = np.random.randn(5, 4).astype(np.float32) * 2
    labels = np.array([0, 3, 1, 1, 2], np.int32)
    ce = CrossEntropy()
    error, grad = ce(gpuarray.to_gpu(scores), gpuarray.to_gpu(labels))
    assert isinstance(error, float) and abs(error - _ce(scores, labels)) < 1e-5
    e = np.exp(scores - scores.max(1, keepdims=True))
    want = e / e.sum(1, keepdims=True)
    want[np.arange(5), labels] -= 1
    assertClose(grad.get(), want / 5, 1e-5, 1e-6, "grad")
    checkCostGradient(CrossEntropy(), scores, labels)


def test_cross_entropy_is_stable_for_large_logits(backend):
    scores = np.array([[1e4, 0, -1e4], [-5e3, 5e3, 0]], np.float32)
    error, grad = CrossEntropy()(gpuarray.to_gpu(scores), gpuarray.to_gpu(np.array([1, 1], np.int32)))
    assert np.isfinite(error) and abs(error - 1e4 / 2) < 1
    assert np.all(np.isfinite(grad.get()))


def test_validate_accumulate_and_query(backend):
    scores = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0, 1]]
    labels = np.array([0, 1, 2, 0, 1, 1], np.int32)    # rows 3 and 4 are wrong
    ce = CrossEntropy()
    assert ce.validate(gpuarray.to_gpu(scores), gpuarray.to_gpu(labels)) == pytest.approx(2 / 6)
    assert ce.validate(gpuarray.to_gpu(scores[:2]), gpuarray.to_gpu(labels[:2])) == 0
    assert ce.getMeanError() == pytest.approx(2 / 8)
    ce.resetAccumulator()
    assert ce.getMeanError() == 0.0
    error, grad = ce(gpuarray.to_gpu(scores), gpuarray.to_gpu(labels), queryError=False)
    assert error is None and grad.shape == (6, 4)
    ce(gpuarray.to_gpu(scores[:2]), labels[:2])                # host labels are accepted too
    want = (_ce(scores, labels) * 6 + _ce(scores[:2], labels[:2]) * 2) / 8
    assert ce.getMeanError() == pytest.approx(want, rel=1e-5)


def test_cross_entropy_errors(backend):
    ce = CrossEntropy()
    scores = gpuarray.to_gpu(np.zeros((3, 4), np.float32))
    with pytest.raises(ModuleError, match="CrossEntropy: expected int32 labels, got int64"):
        ce(scores, gpuarray.to_gpu(np.zeros(3, np.int64)))
    with pytest.raises(ModuleError, match=r"CrossEntropy: expected labels of shape \(3,\), got \(2,\)"):
        ce(scores, gpuarray.to_gpu(np.zeros(2, np.int32)))
    with pytest.raises(ModuleError, match=r"CrossEntropy: expected scores of shape \(N, C\), got \(3, 4, 1\)"):
        ce(gpuarray.to_gpu(np.zeros((3, 4, 1), np.float32)), gpuarray.to_gpu(np.zeros(3, np.int32)))
    if backend == "numpy":
        with pytest.raises(ModuleError, match=r"expected labels in \[0, 4\), got values in \[0, 4\]"):
            ce(scores, gpuarray.to_gpu(np.array([0, 4, 1], np.int32)))
        with pytest.raises(ModuleError, match=r"expected labels in \[0, 4\), got values in \[-1, 2\]"):
            ce(scores, gpuarray.to_gpu(np.array([2, -1, 1], np.int32)))


def test_label_range(backend):
    """The NumPy backend reports (min, max) as Python ints (None when empty); the CUDA one checks nothing."""
    found = ops.labelRange(gpuarray.to_gpu(np.array([3, -1, 2], np.int32)))
    if backend == "numpy":
        assert found == (-1, 3) and all(type(v) is int for v in found)
        assert ops.labelRange(gpuarray.to_gpu(np.zeros(0, np.int32))) is None
    else:
        assert found is None


@pytest.mark.parametrize("cls,loss", [
    (MSE, lambda p, t: ((p - t) ** 2).sum() / (2 * len(p))),
    (BCE, lambda p, t: (np.log1p(np.exp(-np.abs(p))) + np.maximum(p, 0) - t * p).sum() / len(p)),
    (SmoothL1, lambda p, t: np.where(np.abs(p - t) < 1, 0.5 * (p - t) ** 2, np.abs(p - t) - 0.5).sum() / len(p)),
], ids=["MSE", "BCE", "SmoothL1"])
def test_regression_costs(backend, cls, loss):
    pred = (np.random.randn(4, 3) * 2).astype(np.float32)
    if cls is BCE:
        target = np.random.randint(0, 2, (4, 3)).astype(np.float32)
    else:
        target = np.random.randn(4, 3).astype(np.float32)
        # keep |pred - target| away from SmoothL1's kink at 1
        d = pred - target
        target[np.abs(np.abs(d) - 1) < 0.05] += 0.2
    error, _ = cls()(gpuarray.to_gpu(pred), gpuarray.to_gpu(target))
    assert abs(error - loss(pred.astype(np.float64), target.astype(np.float64))) < 1e-5
    checkCostGradient(cls(), pred, target)
    with pytest.raises(ModuleError, match=r"%s: expected target of shape \(4, 3\) \(as pred\), got \(4, 2\)" % cls.__name__):
        cls()(gpuarray.to_gpu(pred), gpuarray.to_gpu(target[:, :2].copy()))
