"""The one gradient checker every gradient test uses.

Central differences of L = sum(module(x) * dy) (accumulated in float64 from
the module's float32 outputs), compared with the module's analytic input and
parameter gradients. Two modes:
- "element": perturb every element (tiny tensors);
- "direction": perturb along a few random directions v and compare
  (L(x+eps v) - L(x-eps v)) / 2eps with <grad, v> (big tensors).
On failure the report names the tensor, the worst index and both values.
"""

import numpy as np

from minidl.backend import gpuarray

# Tolerances, in one table. float32 forward passes limit how closely a finite
# difference can match; linear ops can use a large eps and so a tight tolerance.
TOLERANCES = {
    "linear": dict(eps=0.5, rtol=2e-4, atol=2e-4),
    "smooth": dict(eps=1e-2, rtol=2e-2, atol=2e-3),
}


def assertClose(actual, expected, rtol, atol, what="value"):
    """Elementwise |a - e| <= atol + rtol*|e|; the message names the worst index and both values."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise AssertionError("%s: shape %s, expected %s" % (what, actual.shape, expected.shape))
    if actual.size == 0:
        return
    excess = np.abs(actual - expected) - (atol + rtol * np.abs(expected))
    worst = np.unravel_index(np.argmax(excess), excess.shape)
    if excess[worst] > 0 or not np.all(np.isfinite(actual)):
        raise AssertionError("%s: worst at index %s: got %.8g, expected %.8g (|diff| %.3g, rtol %g, atol %g)"
                             % (what, tuple(int(i) for i in worst), actual[worst], expected[worst],
                                abs(actual[worst] - expected[worst]), rtol, atol))


def maxRelError(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected) / (np.abs(expected) + 1e-3))) if actual.size else 0.0


def asList(data):
    """A module's data or gradient as a list: itself for a multi-array one, else [data]."""
    return data if isinstance(data, list) else [data]


def checkGradients(module, x, kind="smooth", mode="auto", directions=3, params=True, seed=0, dy=None):
    """Check module's input gradient and (if params) every parameter gradient.

    x: a host float32 array or a list of them (multi-input modules).
    Returns the largest relative error seen (for reporting).
    """
    tol = TOLERANCES[kind]
    eps, rtol, atol = tol["eps"], tol["rtol"], tol["atol"]
    rng = np.random.default_rng(seed)
    isList = isinstance(x, list)
    xs = [np.asarray(a, dtype=np.float32) for a in (x if isList else [x])]

    def run(hostInputs):
        dev = [gpuarray.to_gpu(a) for a in hostInputs]
        return module(dev if isList else dev[0])

    out = asList(run(xs))
    dys = [np.asarray(rng.standard_normal(o.shape), dtype=np.float32) for o in out] if dy is None else asList(dy)
    module.zeroGradParams()
    grad = module.backward([gpuarray.to_gpu(d) for d in dys] if isinstance(module.data, list) else
                           gpuarray.to_gpu(dys[0]))
    grads = [g.get() for g in asList(grad)]
    paramGrads = {name: var.grad.get() for name, var in module.namedVars()} if params else {}
    dys64 = [d.astype(np.float64) for d in dys]

    def loss():
        # forward on the current state; the module's inputs were set by the caller
        return sum(float((o.get().astype(np.float64) * d).sum()) for o, d in zip(asList(module.data), dys64))

    worst = 0.0
    targets = []
    for i, a in enumerate(xs):
        def setter(v, i=i):
            pert = list(xs)
            pert[i] = v.astype(np.float32)
            run(pert)
        targets.append(("input%d" % i if isList else "input", a, grads[i], setter, lambda: run(xs)))
    for name, var in (module.namedVars() if params else []):
        base = var.data.get()

        def setter(v, var=var):
            var.data.set(v.astype(np.float32))
            run(xs)

        def restore(var=var, base=base):
            var.data.set(base)
        targets.append((name, base, paramGrads[name], setter, restore))

    for name, base, analytic, setter, restore in targets:
        useElements = mode == "element" or (mode == "auto" and base.size <= 64)
        if useElements:
            numeric = np.zeros(base.shape, dtype=np.float64)
            for idx in np.ndindex(base.shape):
                v = base.astype(np.float64).copy()
                v[idx] += eps
                setter(v)
                plus = loss()
                v[idx] -= 2 * eps
                setter(v)
                numeric[idx] = (plus - loss()) / (2 * eps)
            restore()
            assertClose(analytic, numeric, rtol, atol, "gradient of %s (%s)" % (name, type(module).__name__))
            worst = max(worst, maxRelError(analytic, numeric))
        else:
            got, want = [], []
            for _ in range(directions):
                v = rng.standard_normal(base.shape)
                v /= np.sqrt(v.size)
                setter(base + eps * v)
                plus = loss()
                setter(base - eps * v)
                want.append((plus - loss()) / (2 * eps))
                got.append(float((analytic.astype(np.float64) * v).sum()))
            restore()
            assertClose(got, want, rtol, atol, "directional gradient of %s (%s)" % (name, type(module).__name__))
            worst = max(worst, maxRelError(got, want))
    return worst


def checkCostGradient(cost, pred, target, kind="smooth"):
    """Element-wise central differences of cost(pred, target)'s error against its grad."""
    tol = TOLERANCES[kind]
    eps, rtol, atol = tol["eps"], tol["rtol"], tol["atol"]
    pred = np.asarray(pred, dtype=np.float32)
    targetDev = gpuarray.to_gpu(target)
    _, grad = cost(gpuarray.to_gpu(pred), targetDev)
    analytic = grad.get()
    numeric = np.zeros(pred.shape)
    for idx in np.ndindex(pred.shape):
        v = pred.astype(np.float64).copy()
        v[idx] += eps
        plus, _ = cost(gpuarray.to_gpu(v.astype(np.float32)), targetDev)
        v[idx] -= 2 * eps
        minus, _ = cost(gpuarray.to_gpu(v.astype(np.float32)), targetDev)
        numeric[idx] = (plus - minus) / (2 * eps)
    assertClose(analytic, numeric, rtol, atol, "gradient of %s" % type(cost).__name__)
    return maxRelError(analytic, numeric)
