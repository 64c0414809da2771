"""NaN and infinities through every op family of the NumPy backend, numba kernels on and off.

Each op runs on inputs holding NaN or infinities at chosen places (image corners, edges and the
interior: where the fast kernels' shortcuts read neighbouring pixels, padding or whole tiles). Its
outputs must be NaN, +inf and -inf exactly where a float64 reference written here from the op's
formula has them, and the finite outputs must be the reference's numbers. The references use no
minidl code and no BLAS: explicit products and sums over a zero-padded input, so a NaN times a
padding zero counts, as IEEE arithmetic (and the im2col formulation of a convolution) says. So any
output whose window touches a NaN is NaN, and none other is.
"""

import numpy as np
import pytest

import minidl.backend as B
import minidl.backend.numpy as nb
from gradcheck import assertClose
from minidl.backend.numpy import gemm, jit, routing

INF = np.inf
# NumPy warns on arithmetic that makes a NaN ("invalid value encountered"); here that is the point
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning",
                                        "ignore:overflow encountered:RuntimeWarning")


@pytest.fixture(autouse=True)
def _numpyBackend(monkeypatch):
    monkeypatch.setattr(B, "_current", B._current)
    monkeypatch.setattr(B, "_currentName", B._currentName)
    B.setBackend("numpy")
    gemm.parts(2)   # set up the GEMM threads while numba is on (the split is decided once)
    yield


@pytest.fixture(params=["numba", "numpy"])
def path(request, monkeypatch):
    """Each test once with the numba kernels and once on the pure-NumPy paths."""
    if request.param == "numba":
        if not jit.enabled:
            pytest.skip("numba not installed (or MINIDL_NUMBA=0)")
    else:
        monkeypatch.setattr(jit, "enabled", False)
    return request.param


def assertSameNonFinite(got, ref, what, rtol=1e-3, atol=1e-3):
    """NaN, +inf and -inf exactly where ref has them; the finite values close to ref's."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, "%s: shape %s, expected %s" % (what, got.shape, ref.shape)
    for name, test in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        g, r = test(got), test(ref)
        if not np.array_equal(g, r):
            wrong = np.argwhere(g != r)
            raise AssertionError("%s: %s at %d places where the reference has none (first %s, holding %r) and "
                                 "missing at %d (first %s, holding %r)"
                                 % (what, name, int((g & ~r).sum()), _first(g & ~r), _at(ref, g & ~r),
                                    int((r & ~g).sum()), _first(r & ~g), _at(got, r & ~g))
                                 if len(wrong) else what)
    finite = np.isfinite(ref)
    assertClose(got[finite], ref[finite], rtol, atol, what + " (finite part)")


def _first(mask):
    idx = np.argwhere(mask)
    return tuple(int(i) for i in idx[0]) if len(idx) else None


def _at(a, mask):
    idx = np.argwhere(mask)
    return float(a[tuple(idx[0])]) if len(idx) else None


def poisoned(a, kind, places):
    """A float32 copy of a with NaN (kind "nan") or alternately +inf and -inf (kind "inf") at places
    (index tuples, negative indices counting from the end)."""
    a = np.array(a, np.float32)
    for k, p in enumerate(places):
        a[p] = np.nan if kind == "nan" else (INF if k % 2 == 0 else -INF)
    return a


def corners(shape):
    """Places in an (N, C, H, W) tensor where fast kernels read past an image's edge: the four
    corners of different (image, channel) planes, a first and a last column, and the interior."""
    n, c, h, w = shape
    places = [(0, 0, 0, 0), (n - 1, c - 1, h - 1, w - 1), (0, c - 1, 0, w - 1), (n - 1, 0, h - 1, 0),
              (0, min(1, c - 1), h // 2, w // 2)]
    if h > 2:
        places += [(n - 1, c // 2, 1, 0), (0, c // 2, h - 2, w - 1)]
    return places


# ---- references ---------------------------------------------------------------------------------

def _geometry(xshape, wshape, stride, pad, dil):
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dil
    kh, kw = wshape[2:]
    ho = (xshape[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (xshape[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    return ho, wo


def _taps(kh, kw, stride, dil, ho, wo):
    for i in range(kh):
        for j in range(kw):
            yield i, j, (slice(i * dil[0], i * dil[0] + stride[0] * (ho - 1) + 1, stride[0]),
                         slice(j * dil[1], j * dil[1] + stride[1] * (wo - 1) + 1, stride[1]))


def refConv(x, W, b, stride, pad, dil, groups, dy):
    """(y, dx, dW, db) of a grouped correlation over the zero-padded input, in float64: every
    product of a weight with a padded pixel (padding zeros included) is summed."""
    x, W, dy = (np.asarray(a, np.float64) for a in (x, W, dy))
    n, c, h, w = x.shape
    o, cg, kh, kw = W.shape
    og = o // groups
    ho, wo = _geometry(x.shape, W.shape, stride, pad, dil)
    xp = np.zeros((n, c, h + 2 * pad[0], w + 2 * pad[1]))
    xp[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + w] = x
    y, dxp, dW = np.zeros((n, o, ho, wo)), np.zeros_like(xp), np.zeros(W.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        for oc in range(o):
            for ci in range(cg):
                cin = (oc // og) * cg + ci
                for i, j, (sy, sx) in _taps(kh, kw, stride, dil, ho, wo):
                    y[:, oc] += W[oc, ci, i, j] * xp[:, cin, sy, sx]
                    dxp[:, cin, sy, sx] += W[oc, ci, i, j] * dy[:, oc]
                    dW[oc, ci, i, j] = np.sum(dy[:, oc] * xp[:, cin, sy, sx])
        if b is not None:
            y += np.asarray(b, np.float64).reshape(1, o, 1, 1)
        db = dy.sum(axis=(0, 2, 3)).reshape(1, o, 1, 1)
    return y, dxp[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + w], dW, db


# (id, x shape, W shape, stride, pad, dilation, groups, the path the numba side takes)
CONV_CASES = [
    ("im2col_strided", (2, 4, 7, 6), (6, 2, 3, 2), (2, 1), (1, 2), (1, 2), 2, "image"),
    ("flat_columns", (2, 4, 5, 7), (6, 4, 3, 3), (1, 1), (1, 1), (1, 1), 1, "flat"),
    ("wide_columns", (2, 4, 6, 7), (3, 4, 3, 3), (1, 1), (0, 1), (1, 1), 1, "wide"),
    ("winograd", (2, 3, 6, 7), (4, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1, "winograd"),
    ("winograd_dil_groups", (2, 4, 9, 8), (4, 2, 3, 3), (1, 1), (2, 1), (2, 1), 2, "winograd"),
    ("pointwise", (2, 5, 4, 3), (6, 5, 1, 1), (1, 1), (0, 0), (1, 1), 1, "pointwise"),
]


def _convCall(kind, xs, ws, stride, pad, dil, groups):
    """(forward, backward data, backward params) as functions of arrays, for the case's op family."""
    if kind == "pointwise":
        return (lambda x, W, b: nb.pointwiseConv2d(x, W, b),
                lambda dy, W: nb.pointwiseConv2dBackwardData(dy, W),
                lambda x, dy, wg, bg: nb.pointwiseConv2dBackwardParams(x, dy, wg, bg))
    h = dict(stride=stride, pad=pad, dilation=dil, groups=groups)
    return (lambda x, W, b: nb.conv2d(x, W, b, **h),
            lambda dy, W: nb.conv2dBackwardData(dy, W, xs, **h),
            lambda x, dy, wg, bg: nb.conv2dBackwardParams(x, dy, wg, bg, **h))


def _convInputs(seed, xs, ws, stride, pad, dil, which, kind, wPlaces):
    """Seeded x, W and dy for a conv of this geometry, with `which` of them poisoned (x and dy at
    their corners, W at wPlaces)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(np.float32)
    W = rng.standard_normal(ws).astype(np.float32)
    ho, wo = _geometry(xs, ws, stride, pad, dil)
    dy = rng.standard_normal((xs[0], ws[0], ho, wo)).astype(np.float32)
    if which == "x":
        x = poisoned(x, kind, corners(xs))
    elif which == "dy":
        dy = poisoned(dy, kind, corners(dy.shape))
    else:
        W = poisoned(W, kind, wPlaces)
    return x, W, dy


def _checkConvFamily(calls, xs, ws, stride, pad, dil, groups, which, kind):
    """Run forward, backward data and backward params with `which` input poisoned; compare all four
    results with refConv."""
    forward, backData, backParams = calls
    x, W, dy = _convInputs(7, xs, ws, stride, pad, dil, which, kind,
                           [(0, 0, 0, 0), (ws[0] - 1, ws[1] - 1, ws[2] - 1, ws[3] - 1)])
    b = np.random.default_rng(8).standard_normal((1, ws[0], 1, 1)).astype(np.float32)
    y, dx, dW, db = refConv(x, W, b, stride, pad, dil, groups, dy)
    assertSameNonFinite(forward(x, W, b), y, "forward")
    assertSameNonFinite(backData(dy, W), dx, "backward data")
    wg, bg = np.ones_like(W), np.ones_like(b)       # accumulated onto
    backParams(x, dy, wg, bg)
    assertSameNonFinite(wg, dW + 1, "weight gradient")
    assertSameNonFinite(bg, db + 1, "bias gradient")


@pytest.fixture
def winogradCalls(monkeypatch, planThreshold, route):
    """Route every stride-1 3x3 conv with numba through Winograd when the case is for Winograd, and
    none otherwise; count the calls."""
    from minidl.backend.numpy.conv import plan, winograd
    planThreshold(plan, "WINOGRAD_MIN_MAPS", 1 if route == "winograd" else 1 << 30)
    calls = []
    real = winograd.conv2d
    monkeypatch.setattr(winograd, "conv2d", lambda *a: calls.append(1) or real(*a))
    return calls


@pytest.mark.parametrize("kind", ["nan", "inf"])
@pytest.mark.parametrize("which", ["x", "dy", "W"])
@pytest.mark.parametrize("name,xs,ws,stride,pad,dil,groups,route", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv_non_finite(path, winogradCalls, name, xs, ws, stride, pad, dil, groups, route, which, kind):
    if path == "numba" and route in ("image", "flat", "wide"):
        taken = routing.plan("general", xs, ws, stride, pad, dil, groups).summary()
        form = {"image": "im2col", "flat": "im2col-flat", "wide": "im2col-wide"}[route]
        assert taken == "/".join([form] * 3), "the case changed path: %s" % taken
    if path == "numba" and route == "winograd":
        assert routing.plan("general", xs, ws, stride, pad, dil, groups)["forward"] == "winograd"
    _checkConvFamily(_convCall(route, xs, ws, stride, pad, dil, groups), xs, ws, stride, pad, dil, groups, which,
                     kind)
    if route == "winograd":
        assert len(winogradCalls) == (2 if path == "numba" else 0), "forward and input gradient take Winograd"


# (id, x shape, W shape, stride, pad, dilation, the numba kernels taken)
DEPTHWISE_CASES = [
    ("flat", (2, 5, 6, 7), (5, 1, 3, 3), (1, 1), (1, 1), (1, 1), "flat"),
    ("flat_s2", (2, 5, 6, 7), (5, 1, 3, 3), (2, 2), (1, 1), (1, 1), "flat"),
    ("flat_5x3_dil", (2, 3, 9, 8), (3, 1, 3, 5), (1, 1), (3, 4), (3, 2), "flat"),
    ("tall_same", (2, 3, 18, 17), (3, 1, 3, 3), (1, 1), (1, 1), (1, 1), "tall"),     # fused backward
    ("tall_x2_s2_dil", (2, 3, 9, 8), (6, 1, 3, 3), (2, 2), (2, 1), (2, 2), "tall-phases"),
    ("tall_s2_blocks", (5, 2, 41, 38), (2, 1, 3, 3), (2, 2), (1, 1), (1, 1), "tall-phases"),   # 3 blocks, last partial
    ("tall_pad_past_reach", (2, 2, 5, 6), (2, 1, 3, 3), (1, 1), (3, 2), (1, 1), "tall"),  # scatter backward
]


@pytest.mark.parametrize("kind", ["nan", "inf"])
@pytest.mark.parametrize("which", ["x", "dy", "W"])
@pytest.mark.parametrize("name,xs,ws,stride,pad,dil,route", DEPTHWISE_CASES, ids=[c[0] for c in DEPTHWISE_CASES])
def test_depthwise_non_finite(path, flatAtAnyBatch, name, xs, ws, stride, pad, dil, route, which, kind):
    if path == "numba":
        taken = routing.plan("depthwise", xs, ws, stride, pad, dil)["forward"]
        assert taken == route, "the case changed path: %s" % taken
    h = dict(stride=stride, pad=pad, dilation=dil)
    calls = (lambda x, W, b: nb.depthwiseConv2d(x, W, b, **h),
             lambda dy, W: nb.depthwiseConv2dBackwardData(dy, W, xs, **h),
             lambda x, dy, wg, bg: nb.depthwiseConv2dBackwardParams(x, dy, wg, bg, **h))
    _checkConvFamily(calls, xs, ws, stride, pad, dil, xs[1], which, kind)

    def fused(x, dy, wg, bg):    # the one-pass backward must agree with the two passes
        dx = nb.depthwiseConv2dBackward(x, dy, W, wg, bg, **h)
        assertSameNonFinite(dx, refDx, "fused backward data")
    x, W, dy = _convInputs(3, xs, ws, stride, pad, dil, which, kind, [(0, 0, 1, 1), (ws[0] - 1, 0, 0, ws[3] - 1)])
    _, refDx, dW, db = refConv(x, W, None, stride, pad, dil, xs[1], dy)
    wg, bg = np.zeros_like(W), np.zeros((1, ws[0], 1, 1), np.float32)
    fused(x, dy, wg, bg)
    assertSameNonFinite(wg, dW, "fused weight gradient")
    assertSameNonFinite(bg, db, "fused bias gradient")


# ---- batch norm ---------------------------------------------------------------------------------

def refBatchNorm(x, scale, bias, eps, dy, useBatchStats, mean=None, var=None):
    """(y, mean, biased var, dx, dscale, dbias) in float64, statistics from x unless given."""
    x, dy, scale, bias = (np.asarray(a, np.float64) for a in (x, dy, scale, bias))
    with np.errstate(invalid="ignore", over="ignore"):
        if mean is None:
            mean = x.mean(axis=(0, 2, 3), keepdims=True)
            var = ((x - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True)
        mean, var = np.asarray(mean, np.float64), np.asarray(var, np.float64)
        invStd = 1.0 / np.sqrt(var + eps)
        xhat = (x - mean) * invStd
        y = xhat * scale + bias
        count = x.size // x.shape[1]
        dbias = dy.sum(axis=(0, 2, 3), keepdims=True)
        dscale = (dy * xhat).sum(axis=(0, 2, 3), keepdims=True)
        dx = scale * invStd * (dy - (dbias + xhat * dscale) / count) if useBatchStats else dy * scale * invStd
    return y, mean, var, dx, dscale, dbias


@pytest.fixture(params=["channel-major", "image-major"])
def bnOrder(request, planThreshold):
    import minidl.backend.numpy.batchnorm as bnmod
    planThreshold(bnmod, "IMAGE_MAJOR_MAX_L", 0 if request.param == "channel-major" else 1 << 30)
    return request.param


@pytest.mark.parametrize("kind", ["nan", "inf"])
@pytest.mark.parametrize("which", ["x", "dy", "scale"])
def test_batchnorm_non_finite(path, bnOrder, which, kind):
    rng = np.random.default_rng(5)
    xs = (4, 3, 5, 6)
    x = (rng.standard_normal(xs) * 2 + 1).astype(np.float32)
    dy = rng.standard_normal(xs).astype(np.float32)
    scale = rng.standard_normal((1, 3, 1, 1)).astype(np.float32)
    bias = rng.standard_normal((1, 3, 1, 1)).astype(np.float32)
    if path == "numba":
        assert routing.plan("batchnorm", xs)["train"] == bnOrder, "the case changed path"
    if which == "x":
        x = poisoned(x, kind, [(0, 0, 0, 0), (3, 2, 4, 5)])    # channels 0 and 2; channel 1 stays finite
    elif which == "dy":
        dy = poisoned(dy, kind, [(0, 0, 0, 0), (3, 2, 4, 5)])
    else:
        scale = poisoned(scale, kind, [(0, 1, 0, 0)])
    eps = 1e-5
    # training: statistics from the batch, then the backward pass through them
    y, mean, var, dx, dscale, dbias = refBatchNorm(x, scale, bias, eps, dy, True)
    rm, rv = np.zeros((1, 3, 1, 1), np.float32), np.ones((1, 3, 1, 1), np.float32)
    gy, gm, gv = nb.batchNormTrain(x, scale, bias, rm, rv, eps, 0.5)
    assertSameNonFinite(gy, y, "train forward")
    assertSameNonFinite(gm, mean, "batch mean")
    assertSameNonFinite(gv, var, "batch variance")
    assertSameNonFinite(rm, 0.5 * mean, "running mean")
    gdx, gds, gdb = nb.batchNormBackward(x, dy, scale, np.asarray(gm), np.asarray(gv), eps, True)
    assertSameNonFinite(gdx, dx, "train backward dx")
    assertSameNonFinite(gds, dscale, "dscale")
    assertSameNonFinite(gdb, dbias, "dbias")
    # inference statistics (finite): the eval forward and the backward through fixed statistics
    fm = rng.standard_normal((1, 3, 1, 1)).astype(np.float32)
    fv = (rng.random((1, 3, 1, 1)) + 0.5).astype(np.float32)
    y, _, _, dx, dscale, dbias = refBatchNorm(x, scale, bias, eps, dy, False, fm, fv)
    assertSameNonFinite(nb.batchNormEval(x, scale, bias, fm, fv, eps), y, "eval forward")
    gdx, gds, gdb = nb.batchNormBackward(x, dy, scale, fm, fv, eps, False)
    assertSameNonFinite(gdx, dx, "fixed-statistics backward dx")
    assertSameNonFinite(gds, dscale, "fixed-statistics dscale")
    assertSameNonFinite(gdb, dbias, "fixed-statistics dbias")


# ---- elementwise and row-wise ops ---------------------------------------------------------------

@pytest.mark.parametrize("kind", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("which", ["mean", "var", "bias"])
def test_batchnorm_eval_non_finite_statistics(path, which, kind):
    """A non-finite running statistic or bias in one channel: the eval forward and the backward
    through fixed statistics give the formula's NaN and infinities there, and numbers elsewhere."""
    rng = np.random.default_rng(6)
    xs = (2, 3, 5, 6)
    x = rng.standard_normal(xs).astype(np.float32)
    dy = rng.standard_normal(xs).astype(np.float32)
    scale = rng.standard_normal((1, 3, 1, 1)).astype(np.float32)
    stats = {"mean": rng.standard_normal((1, 3, 1, 1)).astype(np.float32),
             "var": (rng.random((1, 3, 1, 1)) + 0.5).astype(np.float32),
             "bias": rng.standard_normal((1, 3, 1, 1)).astype(np.float32)}
    stats[which][0, 1, 0, 0] = {"nan": np.nan, "inf": INF, "-inf": -INF}[kind]
    eps = 1e-5
    y, _, _, dx, _, _ = refBatchNorm(x, scale, stats["bias"], eps, dy, False, stats["mean"], stats["var"])
    with np.errstate(invalid="ignore", divide="ignore"):
        got = nb.batchNormEval(x, scale, stats["bias"], stats["mean"], stats["var"], eps)
        gdx, _, _ = nb.batchNormBackward(x, dy, scale, stats["mean"], stats["var"], eps, False)
    assertSameNonFinite(got, y, "eval forward")
    if which != "bias":
        assertSameNonFinite(gdx, dx, "fixed-statistics backward dx")


def _sigmoid64(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def refActivation(kind, x, dy, alpha, beta):
    """(y, dx) in float64 from the textbook formulas; a derivative is taken as 0 or 1 by the same
    comparisons as the forward (so NaN fails every comparison)."""
    x, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        if kind == "relu":
            return np.maximum(x, 0), dy * (x > 0)
        if kind == "clip":
            return np.minimum(np.maximum(x, alpha), beta), dy * ((x > alpha) & (x < beta))
        if kind == "leakyRelu":
            return np.where(x > 0, x, alpha * x), np.where(x > 0, dy, alpha * dy)
        if kind == "elu":
            y = np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))
            return y, np.where(x > 0, dy, dy * (y + alpha))
        if kind == "sigmoid":
            y = _sigmoid64(x)
            return y, dy * y * (1 - y)
        if kind == "tanh":
            y = np.tanh(x)
            return y, dy * (1 - y * y)
        if kind == "softPlus":
            return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0), dy * _sigmoid64(x)
    raise ValueError(kind)


ACTIVATIONS = [("relu", 0, 0), ("clip", 0, 6), ("clip", -1, 0.5), ("leakyRelu", 0.1, 0), ("elu", 1.0, 0),
               ("sigmoid", 0, 0), ("tanh", 0, 0), ("softPlus", 0, 0)]


@pytest.mark.parametrize("which", ["x", "dy"])
@pytest.mark.parametrize("kind,alpha,beta", ACTIVATIONS, ids=["%s_%g_%g" % a for a in ACTIVATIONS])
def test_activation_non_finite(path, kind, alpha, beta, which):
    """Arrays of 16 elements and more take the numba kernels (relu, clip); every position holds one
    of NaN, +inf, -inf or a number, in both x and dy."""
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((3, 40)) * 4).astype(np.float32)
    dy = rng.standard_normal((3, 40)).astype(np.float32)
    special = np.array([np.nan, INF, -INF], np.float32)
    target = x if which == "x" else dy
    target[:, ::5] = np.resize(special, target[:, ::5].shape)
    y, dx = refActivation(kind, x, dy, alpha, beta)
    got = np.array(nb.activation(x, kind, alpha, beta))
    assertSameNonFinite(got, y, "forward", 1e-5, 1e-6)
    assertSameNonFinite(nb.activationBackward(x, got, dy, kind, alpha, beta), dx, "backward", 1e-4, 1e-6)
    # in place (the MobileNets' Activation(inplace=True)): the output over the input, dx over dy
    xi, dyi = x.copy(), dy.copy()
    yi = nb.activation(xi, kind, alpha, beta, out=xi)
    assertSameNonFinite(yi, y, "forward in place", 1e-5, 1e-6)
    if kind in ("relu", "clip"):
        assertSameNonFinite(nb.activationBackward(x, yi, dyi, kind, alpha, beta, out=dyi), dx, "backward in place",
                            1e-4, 1e-6)


def test_softmax_dropout_and_array_ops_non_finite(path):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 7)).astype(np.float32)
    x[1, 2], x[3, 0], x[4, 6] = np.nan, INF, -INF
    with np.errstate(invalid="ignore"):
        x64 = x.astype(np.float64)
        e = np.exp(x64 - x64.max(axis=1, keepdims=True))
        y = e / e.sum(axis=1, keepdims=True)
    gy = np.array(nb.softmax(x))
    assertSameNonFinite(gy, y, "softmax")
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dy[0, 3] = np.nan
    yc = np.where(np.isfinite(y), y, 0.25).astype(np.float32)     # a finite y, to see dy's effect alone
    with np.errstate(invalid="ignore"):
        ref = yc * (dy - (dy * yc).sum(axis=1, keepdims=True))
    assertSameNonFinite(nb.softmaxBackward(yc, dy), ref, "softmax backward")
    out, mask = nb.dropout(x, 0.5, 3)
    with np.errstate(invalid="ignore"):
        assertSameNonFinite(out, x.astype(np.float64) * np.asarray(mask), "dropout")
        assertSameNonFinite(nb.dropoutBackward(dy, mask), dy.astype(np.float64) * np.asarray(mask),
                            "dropout backward")
    acc = np.zeros_like(x)
    nb.axpy(acc, x, 2.0)
    assertSameNonFinite(acc, 2.0 * x.astype(np.float64), "axpy")
    with np.errstate(invalid="ignore"):
        assertSameNonFinite(nb.addArrays([x, dy]), x.astype(np.float64) + dy, "addArrays")
    parts = nb.split(nb.concat([x, dy], 1), [7, 7], 1)
    assertSameNonFinite(parts[0], x, "concat and split")


def test_pooling_non_finite(path):
    rng = np.random.default_rng(6)
    xs = (2, 3, 7, 6)
    for kind in ("nan", "inf"):
        x = poisoned(rng.standard_normal(xs), kind, corners(xs))
        size, stride, pad = (3, 2), (2, 2), (1, 1)
        ho, wo = _geometry(xs, (1, 1) + size, stride, pad, (1, 1))
        xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-INF)
        xz = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
        taps = list(_taps(size[0], size[1], stride, (1, 1), ho, wo))
        with np.errstate(invalid="ignore"):
            ymax = np.max([xp[:, :, sy, sx] for _, _, (sy, sx) in taps], axis=0)     # NaN wins, as in np.max
            yavg = np.sum([xz[:, :, sy, sx] for _, _, (sy, sx) in taps], axis=0) / 6.0
        y, idx = nb.maxPool2d(x, size, stride, pad)
        assertSameNonFinite(y, ymax, "max pool %s" % kind)
        assertSameNonFinite(nb.avgPool2d(x, size, stride, pad, True), yavg, "avg pool %s" % kind)
        # backward: dy non-finite; with a finite x every window has one maximum
        xf = rng.standard_normal(xs).astype(np.float32)
        _, idx = nb.maxPool2d(xf, size, stride, pad)
        dy = poisoned(rng.standard_normal((2, 3, ho, wo)), kind, corners((2, 3, ho, wo)))
        dmax, davg = np.zeros((2, 3, 9, 8)), np.zeros((2, 3, 9, 8))
        xfp = np.pad(xf.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-INF)
        best = np.argmax([xfp[:, :, sy, sx] for _, _, (sy, sx) in taps], axis=0)
        with np.errstate(invalid="ignore"):
            for t, (_, _, (sy, sx)) in enumerate(taps):
                dmax[:, :, sy, sx] += np.where(best == t, dy, 0)
                davg[:, :, sy, sx] += dy / 6.0
        assertSameNonFinite(nb.maxPool2dBackward(dy, idx, xs, size, stride, pad), dmax[:, :, 1:8, 1:7],
                            "max pool backward %s" % kind)
        assertSameNonFinite(nb.avgPool2dBackward(dy, xs, size, stride, pad, True), davg[:, :, 1:8, 1:7],
                            "avg pool backward %s" % kind)


@pytest.mark.parametrize("which", ["x", "dy", "W"])
def test_linear_non_finite(path, which):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((6, 5)).astype(np.float32)
    W = rng.standard_normal((5, 4)).astype(np.float32)
    b = rng.standard_normal((4,)).astype(np.float32)
    dy = rng.standard_normal((6, 4)).astype(np.float32)
    target = {"x": x, "dy": dy, "W": W}[which]
    target[0, 0], target[-1, -1], target[2, 1] = np.nan, INF, -INF
    x64, W64, dy64 = (a.astype(np.float64) for a in (x, W, dy))
    with np.errstate(invalid="ignore"):
        y = (x64[:, :, None] * W64[None]).sum(axis=1) + b
        dx = (dy64[:, None, :] * W64[None]).sum(axis=2)
        dW = (x64[:, :, None] * dy64[:, None, :]).sum(axis=0)
        db = dy64.sum(axis=0)
    assertSameNonFinite(nb.linear(x, W, b), y, "forward")
    assertSameNonFinite(nb.linearBackwardData(dy, W), dx, "backward data")
    wg, bg = np.zeros_like(W), np.zeros_like(b)
    nb.linearBackwardParams(x, dy, wg, bg)
    assertSameNonFinite(wg, dW, "weight gradient")
    assertSameNonFinite(bg, db, "bias gradient")


def test_costs_non_finite(path):
    """A sample's loss mixes its row: a non-finite score makes the loss and that row's gradient
    non-finite as the formula says, and leaves the other rows alone."""
    rng = np.random.default_rng(9)
    s = rng.standard_normal((4, 5)).astype(np.float32)
    s[0, 1], s[1, 2], s[2, 3] = np.nan, INF, -INF
    labels = np.array([0, 1, 3, 4], np.int32)
    s64 = s.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        shifted = s64 - s64.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        loss = (np.log(e.sum(axis=1)) - shifted[np.arange(4), labels]).sum() / 4
        grad = e / e.sum(axis=1, keepdims=True)
        grad[np.arange(4), labels] -= 1
    gl, gg = nb.crossEntropy(s, labels)
    assertSameNonFinite(gl, loss, "cross-entropy loss")
    assertSameNonFinite(gg, grad / 4, "cross-entropy gradient")
    t = rng.random((4, 5)).astype(np.float32)
    d = s64 - t
    with np.errstate(invalid="ignore", over="ignore"):
        gl, gg = nb.mse(s, t)
        assertSameNonFinite(gl, (d * d).sum() / 8, "mse loss")
        assertSameNonFinite(gg, d / 4, "mse gradient")
        gl, gg = nb.bce(s, t)
        assertSameNonFinite(gl, (np.log1p(np.exp(-np.abs(s64))) + np.maximum(s64, 0) - t * s64).sum() / 4, "bce loss")
        assertSameNonFinite(gg, (_sigmoid64(s64) - t) / 4, "bce gradient")
        gl, gg = nb.smoothL1(s, t)
        ad = np.abs(d)
        assertSameNonFinite(gl, np.where(ad < 1, 0.5 * d * d, ad - 0.5).sum() / 4, "smooth L1 loss")
        assertSameNonFinite(gg, np.minimum(np.maximum(d, -1), 1) / 4, "smooth L1 gradient")


@pytest.mark.parametrize("rule", ["sgd", "momentum", "nesterov", "adam", "rmsprop", "adagrad"])
def test_optimizer_updates_non_finite(path, rule):
    """A non-finite gradient entry makes exactly that parameter non-finite."""
    rng = np.random.default_rng(10)
    p = rng.standard_normal((3, 6)).astype(np.float32)
    g = rng.standard_normal((3, 6)).astype(np.float32)
    g[0, 0], g[1, 4], g[2, 5] = np.nan, INF, -INF
    state = [np.zeros_like(p), np.zeros_like(p)]
    with np.errstate(invalid="ignore", over="ignore"):
        {"sgd": lambda: nb.sgdUpdate(p, g, 0.1, 0.0),
         "momentum": lambda: nb.momentumUpdate(p, g, state[0], 0.1, 0.9, 0.0),
         "nesterov": lambda: nb.nesterovUpdate(p, g, state[0], 0.1, 0.9, 0.0),
         "adam": lambda: nb.adamUpdate(p, g, state[0], state[1], 1e-3, 0.9, 0.999, 1e-8, 1, 0.0),
         "rmsprop": lambda: nb.rmspropUpdate(p, g, state[0], 0.1, 0.9, 1e-8, 0.0),
         "adagrad": lambda: nb.adagradUpdate(p, g, state[0], 0.1, 1e-8, 0.0)}[rule]()
    assert np.array_equal(~np.isfinite(p), ~np.isfinite(g)), rule
