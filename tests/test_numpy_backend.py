"""NumPy-backend internals: the workspace pool and the numba kernels against the NumPy paths.

Every test here is about the NumPy backend, so the file pins it (_numpyBackend) whatever
MINIDL_BACKEND or the machine would select: most call minidl.backend.numpy directly, but a module
built in a test (the Winograd gradient check's Conv2D) and gradcheck's arrays take the current one."""

import os
import re

import numpy as np
import pytest

import minidl.backend as B
import minidl.backend.numpy as nb
from gradcheck import assertClose
from minidl.backend.numpy import jit, routing
from minidl.backend.numpy.array import Workspace


@pytest.fixture(autouse=True)
def _numpyBackend(monkeypatch):
    """Select the NumPy backend for each test and put back the previous selection afterwards, even
    "none yet" (B.backendName() would select one, and raise under MINIDL_BACKEND=cuda without a GPU)."""
    monkeypatch.setattr(B, "_current", B._current)
    monkeypatch.setattr(B, "_currentName", B._currentName)
    B.setBackend("numpy")
    yield


def test_workspace_reuses_only_free_buffers():
    ws = Workspace(1 << 30)
    a = ws.empty((512, 256), np.float32)
    view = a.reshape(-1)[10:]
    del a
    b = ws.empty((512, 256), np.float32)
    assert not np.shares_memory(b, view), "a buffer with a live view must not be handed out again"
    del view
    c = ws.empty((256, 512), np.float32)
    assert c.shape == (256, 512)
    assert ws.held == 2 * 512 * 256 * 4
    del b, c
    d = ws.empty((512, 256), np.float32)
    assert ws.held == 2 * 512 * 256 * 4, "freed buffers are reused, not reallocated"
    small = ws.empty((4, 4), np.float32)
    assert small.shape == (4, 4) and ws.held == 2 * 512 * 256 * 4, "small arrays bypass the pool"
    del d
    ws.release()
    assert ws.held == 0


def test_workspace_limit_releases_free_buffers():
    ws = Workspace(3 * (1 << 20))
    a = ws.empty((1 << 18,), np.float32)    # 1 MiB, in use
    ws.empty((1 << 18,), np.int32)          # 1 MiB, freed at once
    ws.empty((2 << 18,), np.float32)        # 2 MiB: over the limit, so the free 1 MiB goes first
    assert ws.held == 3 * (1 << 20) and a.shape == (1 << 18,)


MIB = 1 << 20


def test_workspace_limit_counts_buffers_in_use():
    """The pool never holds more than its limit: with the limit taken by buffers in use, a request
    gets an array the pool does not keep, and a pooled buffer freed later is reused."""
    ws = Workspace(3 * MIB)
    held = [ws.empty((MIB // 4,), np.float32) for _ in range(3)]     # 3 x 1 MiB, in use
    extra = ws.empty((MIB // 4,), np.float32)
    assert ws.held == 3 * MIB, "a fourth buffer in use must not be kept past the 3 MiB limit"
    assert not any(np.shares_memory(extra, h) for h in held)
    big = ws.empty((4 * MIB,), np.uint8)         # larger than the whole limit: never kept
    assert ws.held == 3 * MIB and big.size == 4 * MIB
    del extra, big
    address = held[-1].__array_interface__["data"][0]
    del held[-1]
    again = ws.empty((MIB // 4,), np.float32)
    assert again.__array_interface__["data"][0] == address and ws.held == 3 * MIB


def test_workspace_drops_least_recently_used_free_buffers_first():
    ws = Workspace(1 << 30)
    sizes = [2 * MIB, MIB - 4096, 5 * (MIB // 16)]     # three buckets, none within 2x of a larger one
    held = [ws.empty((size,), np.uint8) for size in sizes]
    del held                                           # all three were in use at once, now free
    ws.empty((sizes[0],), np.uint8)                    # the oldest, used again: now the most recent
    ws.empty((6 * (MIB // 16),), np.uint8)             # a size no free buffer serves: one must go
    assert sorted(ws.buckets) == sorted([sizes[0], sizes[2], 6 * (MIB // 16)]), \
        "the least recently handed out free buffer is dropped, and only as many as needed"


def test_workspace_holds_no_more_than_was_ever_in_use_at_once():
    """Buffers of one size, then of another that none of them serves: the pool keeps the larger set,
    not both (a training step's forward and backward ask for sizes in turn like this)."""
    ws = Workspace(1 << 30)
    first = [ws.empty((MIB,), np.uint8) for _ in range(3)]
    del first
    second = [ws.empty((3 * MIB,), np.uint8) for _ in range(2)]
    assert ws.held == 6 * MIB and ws.peakInUse == 6 * MIB
    del second
    again = [ws.empty((MIB,), np.uint8) for _ in range(3)]     # 3 MiB is over twice their size: new ones
    assert sorted(ws.buckets) == [MIB, 3 * MIB] and ws.held == 6 * MIB, "one free 3 MiB buffer made room"
    del again
    ws.release()
    assert ws.held == 0 and ws.peakInUse == 0


def test_workspace_prefers_a_free_buffer_of_the_size_asked_for():
    ws = Workspace(1 << 30)
    larger, exact = ws.empty((3 * MIB // 2,), np.uint8), ws.empty((MIB,), np.uint8)
    exactAt = exact.__array_interface__["data"][0]
    del larger, exact                                  # both free; the 1.5 MiB one could serve 1 MiB
    got = ws.empty((MIB,), np.uint8)
    assert got.__array_interface__["data"][0] == exactAt and ws.held == 5 * MIB // 2


def test_workspace_hands_out_the_front_of_a_larger_free_buffer():
    ws = Workspace(1 << 30)
    big, bigger = ws.empty((3 * MIB,), np.uint8), ws.empty((4 * MIB,), np.uint8)
    bigAt, biggerAt = big.__array_interface__["data"][0], bigger.__array_interface__["data"][0]
    del big, bigger                                    # both free
    a = ws.empty((3 * MIB // 4 + 4096,), np.float32)   # 3 MiB + 16 KiB: only the 4 MiB one is large enough
    assert a.shape == (3 * MIB // 4 + 4096,) and a.__array_interface__["data"][0] == biggerAt
    b = ws.empty((384, 1024), np.float32)              # 1.5 MiB: the 3 MiB one, twice its size (4 MiB is in use)
    assert b.shape == (384, 1024) and b.__array_interface__["data"][0] == bigAt
    assert ws.held == 7 * MIB, "served from free buffers, nothing new"
    c = ws.empty((MIB,), np.uint8)                     # both in use: a buffer of its own
    assert not (np.shares_memory(c, a) or np.shares_memory(c, b)) and ws.held == 8 * MIB
    del a, b, c
    d = ws.empty((MIB,), np.uint8)                     # its own size, free again, before a larger one
    assert ws.held == 8 * MIB and d.base is not None and d.base.size == MIB


def test_workspace_bad_setting_fails_when_the_backend_loads():
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, MINIDL_WORKSPACE_MB="1.5", MINIDL_BACKEND="numpy")
    code = "import numpy, minidl.backend as B; B.current().zeros((2,), numpy.float32)"
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True)
    assert proc.returncode != 0 and "ValueError: MINIDL_WORKSPACE_MB must be a whole number" in proc.stderr, \
        proc.stderr[-2000:]


def test_workspace_is_thread_safe():
    """Threads asking for and dropping buffers at once (thread switches forced every microsecond):
    no buffer is ever handed to two holders, and the pool stays within its limit."""
    import sys
    import threading
    ws = Workspace(6 * MIB)
    errors = []

    def work(tag):
        try:
            rng = np.random.default_rng(tag)
            mine = []
            for i in range(400):
                size = (MIB // 4) * int(rng.integers(1, 3))
                a = ws.empty((size // 4,), np.float32)
                a.fill(tag)
                mine.append(a)
                if len(mine) > 3:
                    b = mine.pop(int(rng.integers(0, len(mine))))
                    if not (b == tag).all():
                        errors.append("thread %d: a buffer it held was written by another" % tag)
                        return
                assert ws.held <= 6 * MIB
        except Exception as e:      # noqa: BLE001 - reported below
            errors.append("thread %d: %r" % (tag, e))

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(previous)
    assert not errors, errors[:3]


def test_blas_pin_is_shared_by_threads():
    """Two threads in gemm.overBatch at once: numpy's BLAS stays at one thread until the last one
    leaves, then gets its thread count back. (With each call restoring the count it saved, the first
    to leave unpinned BLAS under the other's GEMMs, and the second then pinned it for good.)"""
    import threading
    from minidl.backend.numpy import gemm
    split = gemm._setup()
    if split is None:
        pytest.skip("no GEMM threads here (numba off, threadpoolctl missing or one core)")
    blas = split[0]
    original = [c.num_threads for c in blas]
    for c in blas:
        c.set_num_threads(2)
    aInside, bInside, aDone = threading.Event(), threading.Event(), threading.Event()
    seen = []

    def pieceA(t, lo, hi):
        if t == 0:
            aInside.set()
            bInside.wait(10)

    def pieceB(t, lo, hi):
        if t == 0:
            bInside.set()
            aDone.wait(10)      # A has left overBatch; B's GEMMs would run now
            seen.append([c.num_threads for c in blas])

    def runA():
        gemm.overBatch(2, pieceA)
        aDone.set()

    def runB():
        aInside.wait(10)
        gemm.overBatch(2, pieceB)

    try:
        threads = [threading.Thread(target=runA), threading.Thread(target=runB)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        after = [c.num_threads for c in blas]
    finally:
        for c, n in zip(blas, original):
            c.set_num_threads(n)
    assert seen == [[1] * len(blas)], "BLAS unpinned while another thread was still in overBatch: %s" % seen
    assert after == [2] * len(blas), "BLAS thread count not restored after both calls: %s" % after


@pytest.mark.slow
def test_varying_batch_sizes_stay_within_memory():
    """One forward per batch size 1..60 on MobileNetV2-0.5 with default settings: under 2 GB of
    peak RSS (8.4 GB when the limit bounded only free buffers)."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "MINIDL_WORKSPACE_MB"}
    env["MINIDL_BACKEND"] = "numpy"
    code = """if True:
        import resource, numpy as np, minidl.backend as B
        from minidl.models import loadMobileNetV2
        net = loadMobileNetV2(width=0.5, numClasses=10, smallInput=True)
        rng = np.random.default_rng(0)
        for n in range(1, 61):
            net(B.current().to_gpu(rng.random((n, 3, 32, 32), dtype=np.float32)))
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    """
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout.split()[-1]) < 2048, "peak RSS %s MB" % proc.stdout.split()[-1]


CONV_CASES = [
    ("dw", (2, 4, 7, 6), (4, 1, 3, 3), (1, 1), (1, 1), (1, 1)),
    ("dw_x3_s2_d2", (2, 3, 9, 8), (9, 1, 3, 3), (2, 2), (2, 1), (2, 2)),
    ("dw_5x3_hw", (1, 2, 8, 9), (4, 1, 5, 3), (2, 1), (0, 2), (1, 3)),
    ("dw_2x4_x2", (2, 3, 9, 10), (6, 1, 2, 4), (1, 1), (1, 2), (1, 1)),   # rows not of three taps
    ("dw_same_x2_s2", (9, 3, 30, 27), (6, 1, 3, 3), (2, 2), (1, 1), (1, 1)),  # "same" padding: fused backward
    ("dw_5x4_x2_s2", (2, 3, 11, 10), (6, 1, 5, 4), (2, 2), (1, 2), (1, 1)),  # rows not of three taps, at stride 2
    ("dw_s2_pad_past_reach", (3, 2, 7, 9), (2, 1, 3, 3), (2, 2), (3, 4), (1, 1)),   # padding wider than the kernel
    # planes large enough that a channel splits into several blocks of images, the last one partial
    ("dw_blocks", (5, 2, 40, 37), (4, 1, 3, 3), (1, 1), (1, 1), (1, 1)),
    ("dw_blocks_s2_d2", (7, 2, 41, 38), (2, 1, 3, 3), (2, 2), (2, 1), (2, 1)),
    # small maps at stride 1 with "same" padding take the flat kernels (depthwise/flat.py): 1x1 maps
    # (every tap but the centre reads padding), channels split into blocks with a partial last one,
    # kernels with unequal sides, dilation
    ("dw_flat_1x1", (2, 3, 1, 1), (3, 1, 3, 3), (1, 1), (1, 1), (1, 1)),
    ("dw_flat_blocks", (3, 300, 4, 4), (300, 1, 3, 3), (1, 1), (1, 1), (1, 1)),
    ("dw_flat_3x5_d", (2, 3, 9, 9), (3, 1, 3, 5), (1, 1), (3, 4), (3, 2)),
    ("dw_flat_1x3", (2, 4, 3, 6), (4, 1, 1, 3), (1, 1), (0, 1), (1, 1)),
    ("dw_flat_5x5", (2, 7, 5, 6), (7, 1, 5, 5), (1, 1), (2, 2), (1, 1)),
    # and stride 2 on even heights, any map size: odd widths, 2x1 maps, blocks, dilation, a large map
    ("dw_flat_s2", (3, 5, 6, 6), (5, 1, 3, 3), (2, 2), (1, 1), (1, 1)),
    ("dw_flat_s2_odd_width", (2, 3, 10, 5), (3, 1, 3, 3), (2, 2), (1, 1), (1, 1)),
    ("dw_flat_s2_2x1", (2, 3, 2, 1), (3, 1, 3, 3), (2, 2), (1, 1), (1, 1)),
    ("dw_flat_s2_blocks", (3, 300, 4, 4), (300, 1, 3, 3), (2, 2), (1, 1), (1, 1)),
    ("dw_flat_s2_3x5_d", (2, 3, 10, 9), (3, 1, 3, 5), (2, 2), (3, 4), (3, 2)),
    ("dw_flat_s2_large", (2, 2, 34, 30), (2, 1, 3, 3), (2, 2), (1, 1), (1, 1)),
    # even kernels are "same" too when dilated: (2-1)*2 == 2*1
    ("dw_flat_2x2_d2", (2, 3, 6, 6), (3, 1, 2, 2), (1, 1), (1, 1), (2, 2)),
    ("dw_flat_s2_4x2_d2", (2, 3, 8, 5), (3, 1, 4, 2), (2, 2), (3, 1), (2, 2)),
]


@pytest.fixture
def numbaAndNumpy(monkeypatch):
    """Run a function with the numba kernels and again with the NumPy paths."""
    if not jit.enabled:
        pytest.skip("numba not installed (or MINIDL_NUMBA=0): the NumPy paths are the only ones")

    def both(fn):
        fast = fn()
        monkeypatch.setattr(jit, "enabled", False)
        slow = fn()
        monkeypatch.setattr(jit, "enabled", True)
        return fast, slow
    return both


def _copy(r):
    return [np.array(v) for v in r] if isinstance(r, tuple) else np.array(r)


@pytest.mark.parametrize("xs,ws,stride", [((1, 1, 4, 1), (1, 1, 2, 3), (2, 2)), ((0, 3, 8, 8), (3, 1, 3, 3), (2, 2)),
                                           ((0, 3, 8, 8), (6, 1, 3, 3), (1, 1))], ids=["no_column", "no_image", "no_image_s1"])
def test_depthwise_forward_with_nothing_to_compute(numbaAndNumpy, xs, ws, stride):
    """An output with no element (a map just too small for one output column, which the modules
    refuse, or an empty batch): the empty result of the right shape on every path."""
    x, W = np.ones(xs, np.float32), np.ones(ws, np.float32)
    fast, slow = numbaAndNumpy(lambda: _copy(nb.depthwiseConv2d(x, W, None, stride, (0, 0), (1, 1))))
    want = (xs[0], ws[0], (xs[2] - ws[2]) // stride[0] + 1, (xs[3] - ws[3]) // stride[1] + 1)
    assert fast.shape == slow.shape == want and fast.size == 0


def test_depthwise_phase_forward_with_flat_backward(numbaAndNumpy, flatAtAnyBatch, planThreshold):
    """The split large stride-2 maps get at training batches (plan.PHASES_MIN_PLANE): the phase-plane
    forward and the flat backward, whose tap ranges the plan still carries, against the NumPy path."""
    from minidl.backend.numpy.depthwise import plan as dwplan
    planThreshold(dwplan, "PHASES_MIN_PLANE", 1)
    xs, ws, stride, pad, dil = (3, 5, 10, 9), (5, 1, 3, 3), (2, 2), (1, 1), (1, 1)
    plan = routing.plan("depthwise", xs, ws, stride, pad, dil)
    assert plan.summary() == "tall-phases/flat/flat/flat" and "pixels" in plan.routes["forward"].why, plan
    rng = np.random.default_rng(3)
    x, W = rng.standard_normal(xs, dtype=np.float32), rng.standard_normal(ws, dtype=np.float32)
    b = rng.standard_normal((1, ws[0], 1, 1), dtype=np.float32)
    yf, ys = numbaAndNumpy(lambda: _copy(nb.depthwiseConv2d(x, W, b, stride, pad, dil)))
    assertClose(yf, ys, 1e-5, 1e-5, "forward")
    dy = rng.standard_normal(yf.shape, dtype=np.float32)

    def both():
        wg, bg = np.zeros_like(W), np.zeros_like(b)
        return np.array(nb.depthwiseConv2dBackward(x, dy, W, wg, bg, stride, pad, dil)), wg, bg
    for got, want, what in zip(*numbaAndNumpy(both), ("dx", "dW", "db")):
        assertClose(got, want, 1e-5, 1e-4, what)


@pytest.mark.parametrize("name,xs,ws,stride,pad,dil", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_depthwise_kernels_match_numpy_path(numbaAndNumpy, flatAtAnyBatch, name, xs, ws, stride, pad, dil):
    plan = routing.plan("depthwise", xs, ws, stride, pad, dil)
    flat = plan["forward"] == "flat"
    assert flat == (name == "dw" or name.startswith("dw_flat")), "the case no longer takes the kernels it names"
    if not flat:
        # stride 2 on the tall blocks' phase planes (tall.forwardStride2), any other stride as it is
        forward = "tall-phases" if tuple(stride) == (2, 2) else "tall"
        assert plan.summary().startswith(forward + "/tall-"), plan.summary()
    if name == "dw_same_x2_s2":
        assert plan["backward"] == "tall-fused", plan.summary()
    x = np.random.randn(*xs).astype(np.float32)
    W = np.random.randn(*ws).astype(np.float32)
    b = np.random.randn(1, ws[0], 1, 1).astype(np.float32)
    yf, ys = numbaAndNumpy(lambda: _copy(nb.depthwiseConv2d(x, W, b, stride, pad, dil)))
    assertClose(yf, ys, 1e-5, 1e-5, "forward")
    dy = np.random.randn(*yf.shape).astype(np.float32)
    df, ds = numbaAndNumpy(lambda: _copy(nb.depthwiseConv2dBackwardData(dy, W, xs, stride, pad, dil)))
    assertClose(df, ds, 1e-5, 1e-5, "backward data")

    def params():
        wg, bg = np.ones_like(W), np.ones_like(b)   # accumulation onto existing values
        nb.depthwiseConv2dBackwardParams(x, dy, wg, bg, stride, pad, dil)
        return wg, bg
    (wf, bf), (wsl, bsl) = numbaAndNumpy(params)
    assertClose(wf, wsl, 1e-5, 1e-4, "weight grad")
    assertClose(bf, bsl, 1e-5, 1e-4, "bias grad")

    def both():     # the fused op ("same" padding runs one kernel for both passes)
        wg, bg = np.ones_like(W), np.ones_like(b)
        dx = nb.depthwiseConv2dBackward(x, dy, W, wg, bg, stride, pad, dil)
        return np.array(dx), wg, bg
    for fused in numbaAndNumpy(both):
        assertClose(fused[0], ds, 1e-5, 1e-5, "fused backward data")
        assertClose(fused[1], wsl, 1e-5, 1e-4, "fused weight grad")
        assertClose(fused[2], bsl, 1e-5, 1e-4, "fused bias grad")


def test_im2col_conv_matches_numpy_path(numbaAndNumpy):
    x = np.random.randn(2, 4, 7, 6).astype(np.float32)
    W = np.random.randn(6, 2, 3, 2).astype(np.float32)
    h = dict(stride=(2, 1), pad=(1, 2), dilation=(1, 2), groups=2)
    yf, ys = numbaAndNumpy(lambda: _copy(nb.conv2d(x, W, None, **h)))
    assertClose(yf, ys, 1e-5, 1e-5, "forward")
    dy = np.random.randn(*yf.shape).astype(np.float32)
    df, ds = numbaAndNumpy(lambda: _copy(nb.conv2dBackwardData(dy, W, x.shape, **h)))
    assertClose(df, ds, 1e-5, 1e-5, "backward data")


@pytest.mark.parametrize("insize,size,stride,pad,dilation", [
    ((5, 7), (3, 3), (1, 1), (1, 1), (1, 1)),
    ((8, 5), (4, 2), (2, 2), (3, 1), (2, 2)),
    ((1, 1), (3, 3), (1, 1), (1, 1), (1, 1)),
    ((9, 6), (3, 5), (2, 1), (0, 4), (1, 3)),
    ((4, 4), (3, 3), (3, 2), (5, 0), (1, 1)),      # padding past the kernel's reach: rows read nothing
])
def test_tap_ranges_against_enumeration(insize, size, stride, pad, dilation):
    """shapes.tapRanges (the flat kernels' padding masks) against every output checked one by one."""
    from minidl.shapes import tapRanges, windowOutSize
    out = [windowOutSize(insize[a], size[a], stride[a], pad[a], dilation[a]) for a in range(2)]
    ranges = tapRanges(insize, out, size, stride, pad, dilation)
    for t, (y0, y1, x0, x1) in enumerate(ranges):
        i, j = divmod(t, size[1])
        for a, (lo, hi), k in ((0, (y0, y1), i), (1, (x0, x1), j)):
            inside = [o for o in range(out[a]) if 0 <= o * stride[a] + k * dilation[a] - pad[a] < insize[a]]
            assert lo <= hi and list(range(lo, hi)) == inside, (t, a)


FLAT_CASES = [
    # stride 1 with "same" padding: the flat columns (conv/columns.py), fewer than Winograd's maps
    # (x shape, W shape, pad, dilation, groups)
    ("3x3", (2, 4, 5, 7), (6, 4, 3, 3), (1, 1), (1, 1), 1),
    ("5x3_dilated_groups", (2, 6, 9, 8), (4, 3, 5, 3), (4, 2), (2, 2), 2),
    ("1x1_maps", (3, 2, 1, 1), (5, 2, 3, 3), (1, 1), (1, 1), 1),
    ("1x5", (2, 3, 4, 6), (2, 3, 1, 5), (0, 2), (1, 1), 1),
    ("2x2_dilated", (2, 3, 6, 6), (4, 3, 2, 2), (1, 1), (2, 2), 1),
]


@pytest.mark.parametrize("name,xs,ws,pad,dil,groups", FLAT_CASES, ids=[c[0] for c in FLAT_CASES])
def test_flat_columns_conv_against_naive_loops(name, xs, ws, pad, dil, groups):
    """The general conv's three passes on the flat columns, against the naive loops."""
    from reference import naiveConv2d
    if not jit.enabled:
        pytest.skip("numba not installed (or MINIDL_NUMBA=0): no flat columns")
    plan = routing.plan("general", xs, ws, 1, pad, dil, groups)
    assert plan.summary() == "im2col-flat/im2col-flat/im2col-flat", "the case no longer takes the flat columns"
    x = np.random.randn(*xs).astype(np.float32)
    W = np.random.randn(*ws).astype(np.float32)
    b = np.random.randn(1, ws[0], 1, 1).astype(np.float32)
    dy = np.random.randn(xs[0], ws[0], xs[2], xs[3]).astype(np.float32)
    y, dx, dW, db = naiveConv2d(x, W, b, 1, pad, dil, groups, dy=dy)
    assertClose(nb.conv2d(x, W, b, (1, 1), pad, dil, groups), y, 1e-4, 1e-4, "forward")
    assertClose(nb.conv2dBackwardData(dy, W, xs, (1, 1), pad, dil, groups), dx, 1e-4, 1e-4, "backward data")
    wg, bg = np.ones_like(W), np.ones_like(b)
    nb.conv2dBackwardParams(x, dy, wg, bg, (1, 1), pad, dil, groups)
    assertClose(wg, dW + 1, 1e-4, 1e-4, "weight gradient")
    assertClose(bg, db + 1, 1e-4, 1e-4, "bias gradient")


WGRAD_CASES = [
    # (x shape, W shape, stride, groups, whether dy^T is copied before the GEMM)
    ("small_groups_wide", (3, 16, 6, 7), (8, 8, 3, 3), 1, 2, True),
    ("small_groups_narrow", (3, 16, 7, 6), (8, 8, 3, 3), 2, 2, True),
    ("many_maps", (2, 8, 5, 6), (40, 8, 3, 3), 1, 1, False),
    ("few_rows", (3, 3, 6, 5), (16, 3, 3, 3), 1, 1, False),
]


@pytest.mark.parametrize("name,xs,ws,stride,groups,copies", WGRAD_CASES, ids=[c[0] for c in WGRAD_CASES])
def test_conv_weight_and_bias_gradients_against_naive_loops(name, xs, ws, stride, groups, copies):
    """conv2dBackwardParams on both of its GEMM orientations (dy^T copied or not), accumulating onto
    existing values, against the naive loops."""
    from reference import naiveConv2d
    plan = routing.plan("general", xs, ws, stride, 1, 1, groups)
    if jit.enabled:
        assert plan.copyGradT == copies, "the case no longer takes the path it names"
    ho, wo = plan.outsize
    x = np.random.randn(*xs).astype(np.float32)
    W = np.random.randn(*ws).astype(np.float32)
    dy = np.random.randn(xs[0], ws[0], ho, wo).astype(np.float32)
    _, _, dW, db = naiveConv2d(x, W, None, stride, 1, 1, groups, dy=dy)
    wg, bg = np.ones_like(W), np.ones((1, ws[0], 1, 1), np.float32)
    nb.conv2dBackwardParams(x, dy, wg, bg, (stride, stride), (1, 1), (1, 1), groups)
    assertClose(wg, dW + 1, 1e-4, 1e-4, "weight gradient")
    assertClose(bg, db + 1, 1e-4, 1e-4, "bias gradient")


@pytest.mark.parametrize("order", ["channel-major", "image-major"])
@pytest.mark.parametrize("useBatchStats", [True, False], ids=["train", "eval"])
def test_batchnorm_kernels_match_numpy_path(numbaAndNumpy, planThreshold, useBatchStats, order):
    import minidl.backend.numpy.batchnorm as bnmod
    planThreshold(bnmod, "IMAGE_MAJOR_MAX_L", 0 if order == "channel-major" else 1 << 30)
    assert routing.plan("batchnorm", (4, 3, 5, 5))["train"] == order
    x = (np.random.randn(4, 3, 5, 5) * 2 + 1).astype(np.float32)
    scale = np.random.randn(1, 3, 1, 1).astype(np.float32)
    bias = np.random.randn(1, 3, 1, 1).astype(np.float32)

    def train():
        rm, rv = np.zeros((1, 3, 1, 1), np.float32), np.ones((1, 3, 1, 1), np.float32)
        y, m, v = nb.batchNormTrain(x, scale, bias, rm, rv, 1e-5, 0.3)
        return np.array(y), np.array(m), np.array(v), rm, rv
    for f, s in zip(*numbaAndNumpy(train)):
        assertClose(f, s, 1e-5, 1e-5, "train outputs")
    mean = np.random.randn(1, 3, 1, 1).astype(np.float32)
    var = np.random.rand(1, 3, 1, 1).astype(np.float32) + 0.5
    assertClose(*numbaAndNumpy(lambda: _copy(nb.batchNormEval(x, scale, bias, mean, var, 1e-5))), 1e-5, 1e-5, "eval")
    dy = np.random.randn(*x.shape).astype(np.float32)
    fast, slow = numbaAndNumpy(lambda: _copy(nb.batchNormBackward(x, dy, scale, mean, var, 1e-5, useBatchStats)))
    for f, s, what in zip(fast, slow, ("dx", "dscale", "dbias")):
        assertClose(f, s, 1e-4, 1e-4, what)


def test_batchnorm_eval_coefficients_are_the_numpy_formulas_bits():
    """The eval kernel's per-channel a and b are NumPy's float32 scale / sqrt(var + eps) and
    bias - mean * a, bit for bit (no fast-math), so its outputs are the NumPy path's up to the
    multiply-add of the pass itself."""
    if not jit.enabled:
        pytest.skip("numba not installed (or MINIDL_NUMBA=0)")
    from minidl.backend.numpy.batchnorm import kernels
    rng = np.random.default_rng(3)
    c = 20000
    scale, bias, mean = (rng.standard_normal(c).astype(np.float32) * 10 for _ in range(3))
    var = (rng.random(c) * 100).astype(np.float32)
    for eps in (1e-5, 1e-3, 0.1):
        a, b = np.empty(c, np.float32), np.empty(c, np.float32)
        assert kernels.evalCoefficients(scale, bias, mean, var, np.float32(eps), a, b)
        ra = scale / np.sqrt(var + np.float32(eps))
        assert np.array_equal(a, ra) and np.array_equal(b, bias - mean * ra), eps


@pytest.mark.parametrize("order", ["channel-major", "image-major"])
def test_batchnorm_zero_denominator_matches_numpy_path(numbaAndNumpy, planThreshold, order):
    """sqrt(var + eps) of zero (a constant channel whose eps rounds to zero in float32; a variance of
    exactly -eps) divides by zero: the kernels give NumPy's infinities and NaN, not an exception."""
    import minidl.backend.numpy.batchnorm as bnmod
    planThreshold(bnmod, "IMAGE_MAJOR_MAX_L", 0 if order == "channel-major" else 1 << 30)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    x[:, 1] = 2.0                                          # channel 1 constant: batch variance 0
    dy = rng.standard_normal(x.shape).astype(np.float32)
    scale, bias = np.ones((1, 3, 1, 1), np.float32), np.full((1, 3, 1, 1), 0.5, np.float32)
    mean = np.zeros((1, 3, 1, 1), np.float32)
    var = np.array([1.0, -0.5, 2.0], np.float32).reshape(1, 3, 1, 1)      # channel 1: var + 0.5 == 0

    def train():
        rm, rv = np.zeros((1, 3, 1, 1), np.float32), np.ones((1, 3, 1, 1), np.float32)
        y, m, v = _copy(nb.batchNormTrain(x, scale, bias, rm, rv, 1e-50, 0.3))
        return [y, m, v] + _copy(nb.batchNormBackward(x, dy, scale, m, v, 1e-50, True))

    def evalAndFixed():
        return [np.array(nb.batchNormEval(x, scale, bias, mean, var, 0.5))] + \
            _copy(nb.batchNormBackward(x, dy, scale, mean, var, 0.5, False))
    with np.errstate(divide="ignore", invalid="ignore"):
        for fn in (train, evalAndFixed):
            fast, slow = numbaAndNumpy(fn)
            assert not np.isfinite(slow[0]).all(), "the case must divide by zero"
            for f, s in zip(fast, slow):
                np.testing.assert_allclose(f, s, rtol=1e-5, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize("kind,alpha,beta", [("relu", 0.0, 0.0), ("clip", 0.0, 6.0), ("clip", -1.0, 0.5)])
def test_clip_kernels_match_numpy_path(numbaAndNumpy, kind, alpha, beta):
    x = (np.random.randn(3, 700) * 4).astype(np.float32)
    yf, ys = numbaAndNumpy(lambda: _copy(nb.activation(x, kind, alpha, beta)))
    assert np.array_equal(yf, ys)
    dy = np.random.randn(*x.shape).astype(np.float32)
    df, ds = numbaAndNumpy(lambda: _copy(nb.activationBackward(x, yf, dy, kind, alpha, beta)))
    assert np.array_equal(df, ds)


def test_layer_suites_pass_on_the_pure_numpy_path():
    """With numba off (MINIDL_NUMBA=0) every op takes its NumPy implementation; the conv and layer
    suites must pass there too, against the same naive references."""
    import subprocess
    import sys
    if not jit.enabled:
        pytest.skip("numba is not in use here, so the whole suite already ran on the NumPy paths")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, MINIDL_NUMBA="0", MINIDL_BACKEND="numpy")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                           os.path.join(root, "tests", "test_conv.py"), os.path.join(root, "tests", "test_layers.py"),
                           os.path.join(root, "tests", "test_models.py")],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout


@pytest.mark.parametrize("loaded,policy,layer", [
    (True, None, "omp"),            # numba's runtime loaded now, passive: OpenMP
    (False, None, "workqueue"),     # no libgomp, or its runtime was loaded before with its own settings
    (True, "active", "workqueue"),  # the user's choice stands; spinning threads: workqueue
    (True, "PASSIVE", "omp"),
    (True, "", "omp"),              # empty is unset, for libgomp too: minidl loads its runtime
])
def test_threading_layer_choice(monkeypatch, loaded, policy, layer):
    """The layer follows the user's OMP_WAIT_POLICY where set, else whether minidl could load
    numba's runtime with passive waiting; the environment is left as it was either way (the
    loader itself sees no user value: it sets passive for the load)."""
    if not jit.enabled:
        pytest.skip("numba not installed (or MINIDL_NUMBA=0)")
    asked = []

    def loader():
        asked.append(os.environ.get("OMP_WAIT_POLICY"))
        return loaded
    monkeypatch.setattr(jit, "_loadPassiveRuntime", loader)
    if policy is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", policy)
    assert jit._threadingLayer() == layer
    assert os.environ.get("OMP_WAIT_POLICY") == policy
    assert asked == ([None] if not policy else [])


def test_runtime_loader_restores_process_settings(monkeypatch):
    """Where numba's runtime is already loaded (this process selected the backend), the loader says
    so (False: it could not set the runtime's policy) and leaves no trace: OMP_WAIT_POLICY unset,
    the dlopen flags as they were."""
    import sys
    if not jit.enabled or "numba.np.ufunc.omppool" not in sys.modules:
        pytest.skip("numba's OpenMP layer is not loaded in this process")
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    flags = sys.getdlopenflags()
    assert jit._loadPassiveRuntime() is False
    assert "OMP_WAIT_POLICY" not in os.environ
    assert sys.getdlopenflags() == flags


@pytest.mark.parametrize("l", [6, 300], ids=["chunked", "direct"])
def test_batch_gemms_match_einsum(monkeypatch, l):
    """batchGram / batchLeft against float64 einsum; a chunk of 3 images gives several chunks per
    thread, the last one partial; the plan chooses chunks exactly for short maps."""
    from minidl.backend.numpy.conv import plan, pointwise
    chunk = 1 if l >= plan.DIRECT_MIN_L else 3
    n, m, p = 11, 5, 7
    a = np.random.randn(n, m, l).astype(np.float32)
    b = np.random.randn(n, p, l).astype(np.float32)
    for u, v in ((a, b), (b, a)):     # fewer rows first, then more rows first
        gram = pointwise.batchGram(u, v, np.empty((u.shape[1], v.shape[1]), np.float32), chunk)
        assertClose(gram, np.einsum("nml,npl->mp", u.astype(np.float64), v), 1e-4, 1e-4, "batchGram")
    w = np.random.randn(p, m).astype(np.float32)
    left = pointwise.batchLeft(w, a, np.empty((n, p, l), np.float32), chunk)
    expected = np.einsum("pm,nml->npl", w.astype(np.float64), a)
    assertClose(left, expected, 1e-4, 1e-4, "batchLeft")
    bias = np.random.randn(p, 1).astype(np.float32)      # added per image (or chunk) after its GEMM
    left = pointwise.batchLeft(w, a, np.full((n, p, l), np.nan, np.float32), chunk, bias)
    assertClose(left, expected + bias, 1e-4, 1e-4, "batchLeft with a bias")


# (id, x shape, O, pad, dilation, groups): stride-1 3x3 convs forced through Winograd F(2x2, 3x3)
WINOGRAD_CASES = [
    ("pad1", (2, 3, 6, 6), 4, (1, 1), (1, 1), 1),
    ("odd_sizes", (2, 2, 7, 5), 3, (1, 1), (1, 1), 1),       # tiles past the output, dropped
    ("pad0", (1, 2, 6, 7), 2, (0, 0), (1, 1), 1),
    ("pad_past_reach", (3, 4, 4, 5), 2, (3, 2), (1, 1), 1),  # the input gradient then crops (pad -1)
    ("dil2", (2, 3, 9, 8), 2, (2, 2), (2, 2), 1),           # four phase planes
    ("dil_hw", (2, 2, 11, 6), 3, (1, 2), (3, 1), 1),        # three row phases of unequal length
    ("dil_w_odd", (2, 2, 6, 7), 3, (1, 1), (1, 2), 1),       # column phases of odd length
    ("groups2", (2, 4, 5, 6), 6, (1, 1), (1, 1), 2),
    ("groups_dil", (2, 4, 8, 8), 4, (2, 1), (2, 1), 2),
    # many small images: several per chunk, the batch split unevenly over the GEMM threads
    ("chunks", (9, 2, 4, 3), 3, (1, 1), (1, 1), 1),
]


@pytest.fixture
def winograd():
    """The Winograd module, or a skip where numba is not in use (no Winograd path then)."""
    if not jit.enabled:
        pytest.skip("numba not installed (or MINIDL_NUMBA=0): no Winograd path")
    import minidl.backend.numpy.conv.winograd as wmod
    return wmod


@pytest.fixture
def winogradEverywhere(monkeypatch, planThreshold, winograd):
    """Route every stride-1 3x3 conv of the NumPy backend through Winograd, and count the calls."""
    from minidl.backend.numpy.conv import plan
    wmod = winograd
    planThreshold(plan, "WINOGRAD_MIN_MAPS", 1)
    calls = []
    real = wmod.conv2d
    monkeypatch.setattr(wmod, "conv2d", lambda *a: calls.append(1) or real(*a))
    return calls


@pytest.mark.parametrize("name,xs,o,pad,dil,groups", WINOGRAD_CASES, ids=[c[0] for c in WINOGRAD_CASES])
def test_winograd_conv_matches_naive_loops(winogradEverywhere, name, xs, o, pad, dil, groups):
    from reference import naiveConv2d
    x = np.random.randn(*xs).astype(np.float32)
    W = np.random.randn(o, xs[1] // groups, 3, 3).astype(np.float32)
    b = np.random.randn(1, o, 1, 1).astype(np.float32)
    h = dict(stride=(1, 1), pad=pad, dilation=dil, groups=groups)
    y = _copy(nb.conv2d(x, W, b, **h))
    dy = np.random.randn(*y.shape).astype(np.float32)
    dx = _copy(nb.conv2dBackwardData(dy, W, x.shape, **h))
    assert len(winogradEverywhere) == 2, "both passes must take the Winograd path"
    ry, rdx, _, _ = naiveConv2d(x, W, b, dy=dy, **h)
    assertClose(y, ry, 1e-5, 1e-5, "forward")
    assertClose(dx, rdx, 1e-5, 1e-5, "input gradient")
    assertClose(_copy(nb.conv2d(x, W, None, **h)), ry - b, 1e-5, 1e-5, "forward without bias")


def test_winograd_conv_gradients_match_finite_differences(winogradEverywhere):
    from gradcheck import checkGradients
    from minidl.modules import Conv2D
    conv = Conv2D(4, 6, 3, pad=(2, 1), dilation=(2, 1), groups=2, initscheme="gaussian")
    checkGradients(conv, np.random.randn(2, 4, 7, 6).astype(np.float32), kind="linear")
    assert winogradEverywhere


def test_winograd_threshold_and_im2col_agree(planThreshold, winograd):
    """At the real threshold, a 32 -> 32 conv takes Winograd and equals the im2col path; grouped convs
    with fewer maps per group, other strides and other kernel sizes stay on im2col."""
    from minidl.backend.numpy.conv import plan

    def forward(ws, stride, groups):
        return routing.plan("general", (3, ws[1] * groups, 10, 9), ws, stride, 1, 1, groups)["forward"]
    assert forward((32, 32, 3, 3), 1, 1) == "winograd"
    assert forward((64, 16, 3, 3), 1, 4) != "winograd"
    assert forward((32, 32, 3, 3), 2, 1) != "winograd"
    assert forward((32, 32, 5, 5), 1, 1) != "winograd"
    x = np.random.randn(3, 32, 10, 9).astype(np.float32)
    W = (np.random.randn(32, 32, 3, 3) / 17).astype(np.float32)
    h = dict(stride=(1, 1), pad=(2, 1), dilation=(2, 1), groups=1)
    y = _copy(nb.conv2d(x, W, None, **h))
    dy = np.random.randn(*y.shape).astype(np.float32)
    dx = _copy(nb.conv2dBackwardData(dy, W, x.shape, **h))
    planThreshold(plan, "WINOGRAD_MIN_MAPS", 1 << 30)
    assert routing.plan("general", x.shape, W.shape, 1, (2, 1), (2, 1), 1)["forward"] != "winograd"
    assertClose(y, _copy(nb.conv2d(x, W, None, **h)), 1e-5, 1e-5, "forward vs im2col")
    assertClose(dx, _copy(nb.conv2dBackwardData(dy, W, x.shape, **h)), 1e-5, 1e-5, "input gradient vs im2col")


def test_batchnorm_train_refuses_an_empty_batch():
    """An empty batch has no statistics: a clear error, and the running statistics stay as they were
    (they would become NaN)."""
    rm, rv = np.zeros((1, 3, 1, 1), np.float32), np.ones((1, 3, 1, 1), np.float32)
    scale, bias = np.ones((1, 3, 1, 1), np.float32), np.zeros((1, 3, 1, 1), np.float32)
    for shape in ((0, 3, 40, 40), (0, 3, 4, 4)):
        with pytest.raises(ValueError, match=r"batchNormTrain: expected a batch .* got shape \(0, 3"):
            nb.batchNormTrain(np.zeros(shape, np.float32), scale, bias, rm, rv, 1e-5, 0.1)
        assert (rm == 0).all() and (rv == 1).all()
        assert routing.plan("batchnorm", shape)["train"] == "numpy"
