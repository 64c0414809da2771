"""The NumPy backend's routing plans (minidl/backend/numpy/routing.py): one per geometry, cached, and
the only place an op family chooses its implementation.

The implementations themselves are held to naive loops and finite differences elsewhere
(test_conv.py, test_numpy_backend.py, test_nonfinite.py); here, which one each shape takes: the
benchmark's cases and the MobileNets' layers, so that a change of routing shows up as a failed
assertion naming the case rather than as a silent change of speed."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import minidl.backend as B
from minidl.backend.numpy import jit, routing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _numpyBackend(monkeypatch):
    monkeypatch.setattr(B, "_current", B._current)
    monkeypatch.setattr(B, "_currentName", B._currentName)
    B.setBackend("numpy")
    yield


@pytest.fixture
def kernels():
    if not jit.enabled:
        pytest.skip("numba not installed (or MINIDL_NUMBA=0): every plan is numpy")


# (case, algo, x shape, W shape, stride, pad, dilation, groups, forward/backwardData/backwardParams[/backward])
BENCHMARK_CASES = [
    ("conv3x3", "general", (32, 32, 32, 32), (64, 32, 3, 3), 1, 1, 1, 1, "winograd/winograd/im2col-flat"),
    ("first_layer", "general", (32, 3, 64, 64), (32, 3, 3, 3), 2, 1, 1, 1, "im2col/im2col/im2col"),
    ("grouped", "general", (32, 64, 16, 16), (64, 16, 3, 3), 1, 1, 1, 4, "im2col-flat/im2col-flat/im2col-flat"),
    ("dilated", "general", (32, 32, 32, 32), (32, 32, 3, 3), 1, 2, 2, 1, "winograd/winograd/im2col-flat"),
    ("depthwise3x3", "depthwise", (32, 128, 32, 32), (128, 1, 3, 3), 1, 1, 1, 128,
     "tall/tall-gather/tall/tall-fused"),
    ("depthwise3x3_s2", "depthwise", (32, 256, 16, 16), (256, 1, 3, 3), 2, 1, 1, 256, "flat/flat/flat/flat"),
    ("depthwise_x2", "depthwise", (32, 64, 32, 32), (128, 1, 3, 3), 1, 1, 1, 64,
     "tall/tall-gather/tall/tall-fused"),
    ("pointwise", "pointwise", (32, 128, 16, 16), (256, 128, 1, 1), 1, 0, 1, 1, "gemm/gemm/gram"),
    # and the shapes around the thresholds
    ("stem_wide_loses", "general", (8, 3, 32, 32), (16, 3, 3, 3), 1, 0, 1, 1, "im2col/im2col/im2col"),
    ("wide", "general", (8, 16, 12, 12), (16, 16, 3, 3), 1, 0, 1, 1, "im2col-wide/im2col-wide/im2col-wide"),
    ("depthwise_flat_16x16", "depthwise", (16, 8, 16, 16), (8, 1, 3, 3), 1, 1, 1, 8, "flat/flat/flat/flat"),
    # the flat form's batch thresholds (FLAT_MIN_BATCH 8 forward, FLAT_MIN_BATCH_BACKWARD 16 gradients)
    ("depthwise_flat_batch_7", "depthwise", (7, 8, 16, 16), (8, 1, 3, 3), 1, 1, 1, 8,
     "tall/tall-gather/tall/tall-fused"),
    ("depthwise_flat_batch_8", "depthwise", (8, 8, 16, 16), (8, 1, 3, 3), 1, 1, 1, 8,
     "flat/tall-gather/tall/tall-fused"),
    ("depthwise_flat_batch_15_s2", "depthwise", (15, 8, 16, 16), (8, 1, 3, 3), 2, 1, 1, 8,
     "flat/tall-gather/tall/tall-fused"),
    ("depthwise_flat_batch_16_s2", "depthwise", (16, 8, 16, 16), (8, 1, 3, 3), 2, 1, 1, 8, "flat/flat/flat/flat"),
    ("depthwise_batch_1_s2", "depthwise", (1, 64, 112, 112), (64, 1, 3, 3), 2, 1, 1, 64,
     "tall-phases/tall-gather/tall/tall-fused"),
    # stride 2 on maps of 56x56 and more: the phase planes' forward at any batch (PHASES_MIN_PLANE)
    ("depthwise_s2_56x56", "depthwise", (64, 128, 56, 56), (128, 1, 3, 3), 2, 1, 1, 128,
     "tall-phases/flat/flat/flat"),
    ("depthwise_s2_54x58", "depthwise", (64, 128, 54, 58), (128, 1, 3, 3), 2, 1, 1, 128, "flat/flat/flat/flat"),
    ("depthwise_tall_24x24", "depthwise", (16, 8, 24, 24), (8, 1, 3, 3), 1, 1, 1, 8,
     "tall/tall-gather/tall/tall-fused"),
    ("depthwise_scatter", "depthwise", (2, 2, 5, 6), (2, 1, 3, 3), 1, (3, 2), 1, 2,
     "tall/tall-scatter/tall/separate"),
    ("pointwise_short_maps", "pointwise", (64, 256, 4, 4), (256, 256, 1, 1), 1, 0, 1, 1,
     "gemm-chunked/gemm-chunked/gram-chunked"),
]


@pytest.mark.parametrize("case,algo,xs,ws,stride,pad,dil,groups,expected", BENCHMARK_CASES,
                         ids=[c[0] for c in BENCHMARK_CASES])
def test_benchmark_cases_take_the_routes_named(kernels, case, algo, xs, ws, stride, pad, dil, groups, expected):
    from minidl.modules import Conv2D
    conv = Conv2D(xs[1], ws[0], ws[2:], stride=stride, pad=pad, dilation=dil, groups=groups)
    assert conv.algo == algo, "Conv2D picks the contract family"
    plan = routing.plan(conv.algo, xs, conv.W.shape, conv.stride, conv.pad, conv.dilation, conv.groups)
    assert plan.summary() == expected, "%s:\n%s" % (case, plan)
    for route in plan.routes.values():
        assert route.why, "every route says why"


def test_plans_are_cached_per_geometry_and_kernel_switch(kernels, monkeypatch):
    geometry = ("general", (2, 32, 8, 8), (32, 32, 3, 3), 1, 1)
    first = routing.plan(*geometry)
    assert routing.plan(*geometry) is first, "one plan per geometry"
    assert routing.plan("general", [2, 32, 8, 8], np.array([32, 32, 3, 3]), (1, 1), [1, 1]) is first, \
        "ints, pairs and sequences of them name the same geometry"
    monkeypatch.setattr(jit, "enabled", False)
    off = routing.plan(*geometry)
    assert off.summary() == "numpy/numpy/numpy" and "numba is off" in off.routes["forward"].why
    monkeypatch.setattr(jit, "enabled", True)
    assert routing.plan(*geometry) is first


def test_plan_text_names_every_pass_and_its_fallback(kernels):
    text = str(routing.plan("general", (32, 32, 32, 32), (64, 32, 3, 3), stride=1, pad=1))
    lines = text.splitlines()
    assert lines[0].startswith("general (32, 32, 32, 32) * (64, 32, 3, 3)")
    assert [line.split()[0] for line in lines[1:]] == ["forward", "backwardData", "backwardParams"]
    assert "fallback: im2col-flat when the result is not finite" in lines[1]


def test_other_families(kernels):
    assert routing.plan("batchnorm", (64, 32, 16, 16))["train"] == "image-major"       # 256 floats a plane
    assert routing.plan("batchnorm", (64, 32, 32, 32))["train"] == "channel-major"     # 1024
    assert routing.plan("batchnorm", (0, 32, 4, 4))["moments"] == "numpy"
    assert routing.plan("activation", "relu")["forward"] == "kernel"
    assert routing.plan("activation", "sigmoid")["forward"] == "numpy"


def test_unknown_family_is_refused():
    with pytest.raises(ValueError, match="unknown op family 'winograd'.*depthwise"):
        routing.plan("winograd", (1, 1, 3, 3), (1, 1, 3, 3))


def test_mobilenet_layers_route_as_planned(kernels):
    """Every conv of MobileNetV2-0.5 on 32x32 images at batch 64 (the training benchmark): the
    implementations a step runs, counted by plan, with its 3x3 depthwise layers on the flat kernels
    wherever the flat geometry allows (stride 2, and stride 1 up to 16x16 maps) and on the tall
    blocks elsewhere (the 32x32 maps at stride 1)."""
    from minidl.models import loadMobileNetV2
    from minidl.modules import Conv2D
    net = loadMobileNetV2(width=0.5, numClasses=10, smallInput=True)
    counts = {}
    for conv, inshape in _walk(net, (64, 3, 32, 32), Conv2D):
        plan = routing.plan(conv.algo, inshape, conv.W.shape, conv.stride, conv.pad, conv.dilation, conv.groups)
        key = (conv.algo, plan.summary(), inshape[2] * inshape[3] <= 256 or conv.stride == (2, 2))
        counts[key] = counts.get(key, 0) + 1
    assert counts[("depthwise", "flat/flat/flat/flat", True)] >= 10, counts
    assert counts[("depthwise", "tall/tall-gather/tall/tall-fused", False)] >= 1, counts
    assert all(s == "flat/flat/flat/flat" for a, s, flat in counts if a == "depthwise" and flat), counts
    assert all(s.startswith("gemm") for a, s, _ in counts if a == "pointwise"), counts


def _walk(module, inshape, kind):
    """[(module of kind, its input shape)] in the order a forward pass meets them."""
    found = []
    _walkInto(module, inshape, kind, found)
    return found


def _walkInto(module, inshape, kind, found):
    """module's output shape for inshape, recording the modules of kind met inside it."""
    from minidl.containers import Parallel, Sequential
    if isinstance(module, Sequential):
        for child in module.modules.values():
            inshape = _walkInto(child, inshape, kind, found)
        return inshape
    if isinstance(module, Parallel):
        return [_walkInto(child, shape, kind, found) for child, shape in zip(module.modules.values(), inshape)]
    if isinstance(module, kind):
        found.append((module, tuple(int(v) for v in inshape)))
    return module.dataShapeFrom(inshape)


@pytest.mark.parametrize("first", [None, "torch", "sklearn.cluster"])
def test_thread_settings_wait_for_backend_selection(tmp_path, first):
    """Importing the NumPy backend loads no OpenMP runtime; selecting it loads numba's, with
    passive waiting, and leaves the environment as it was. The first parallel kernel then runs on
    that runtime, even where another library loaded its own OpenMP first (PyTorch's is in the
    global symbol scope, where numba's calls would otherwise bind): the binding the dynamic linker
    reports goes to a runtime loaded at selection, and its threads burn no CPU while the caller
    sleeps."""
    if not jit.enabled:
        pytest.skip("numba not installed (or MINIDL_NUMBA=0): no threads to set up")
    if first is not None and importlib.util.find_spec(first.split(".")[0]) is None:
        pytest.skip("%s is not installed" % first)
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc and glibc's LD_DEBUG")
    script = r"""
import os, sys, time
if sys.argv[1] != "None":
    __import__(sys.argv[1])
import numpy as np
import minidl.backend.numpy
from minidl.backend.numpy import jit
print("import", os.environ.get("OMP_WAIT_POLICY"), "numba.np.ufunc.omppool" in sys.modules)
before = jit._openmpFiles()
import minidl
minidl.setBackend("numpy")
print("select", os.environ.get("OMP_WAIT_POLICY"), "numba.np.ufunc.omppool" in sys.modules)
print("new", *sorted(jit._openmpFiles() - before))
from minidl.backend.numpy.elementwise import kernels
x = np.random.randn(1 << 20).astype(np.float32)
kernels.clipForward(x, x.copy(), np.float32(0), np.float32(1))
import numba
c0 = time.process_time(); time.sleep(0.3); idle = time.process_time() - c0
print("layer", numba.threading_layer(), idle)
"""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "NUMBA_THREADING_LAYER")}
    env.update(LD_DEBUG="bindings", LD_DEBUG_OUTPUT=str(tmp_path / "ld"))
    proc = subprocess.run([sys.executable, "-c", script, str(first)], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = {line.split(" ", 1)[0]: line.split(" ")[1:] for line in proc.stdout.splitlines()}
    assert lines["import"] == ["None", "False"], "importing the backend set OMP_WAIT_POLICY or loaded OpenMP"
    assert lines["select"] == ["None", "True"], "selecting the backend left OMP_WAIT_POLICY set, or loaded no OpenMP"
    loadedNow = lines["new"]
    assert loadedNow, "selecting the backend loaded no OpenMP runtime of numba's own"
    # where the linker bound the OpenMP layer's parallel-region entry (one log file per process)
    bound = set()
    for log in tmp_path.iterdir():
        for line in log.read_text(errors="replace").splitlines():
            if "omppool" in line and "`GOMP_parallel'" in line:
                bound.add(os.path.realpath(line.split(" to ", 1)[1].split(" [", 1)[0]))
    assert bound and bound <= {os.path.realpath(f) for f in loadedNow}, (bound, loadedNow)
    layer, idle = lines["layer"]
    assert layer == "omp"
    # a spinning pool burns ~0.3 s per spare core in that sleep (measured 1.0 CPU-s per idle second
    # with OMP_WAIT_POLICY=active on 2 cores); passive threads sleep at once
    assert float(idle) < 0.1, "OpenMP threads kept spinning: %s CPU-s in 0.3 s idle" % idle
