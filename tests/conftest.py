"""Shared fixtures: the backend fixture and seeding.

Every test that touches arrays takes ``backend``; it runs once per backend
(NumPy always; CUDA where pycuda and a device are present, skipped otherwise).
``MINIDL_BACKEND=numpy|cuda`` restricts the run to that one backend, so
``MINIDL_BACKEND=cuda pytest`` runs the whole suite on the GPU.
"""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

import minidl.backend as B  # noqa: E402

_REQUESTED = os.environ.get("MINIDL_BACKEND", "auto").lower()
BACKENDS = [_REQUESTED] if _REQUESTED in ("numpy", "cuda") else ["numpy", "cuda"]


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs the CUDA backend (skipped where it cannot load)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


@pytest.fixture(params=[pytest.param(name, marks=[pytest.mark.cuda] if name == "cuda" else []) for name in BACKENDS])
def backend(request, monkeypatch):
    name = request.param
    if name == "cuda":
        if not B.cudaAvailable():
            pytest.skip("CUDA backend unavailable here (needs pycuda and a GPU)")
        _poisonCudaMemory(monkeypatch)
    previous = B.backendName()
    B.setBackend(name)
    yield name
    B.setBackend(previous)


def _poisonCudaMemory(monkeypatch):
    """Every block the CUDA backend allocates starts as all-ones bytes (NaN as float32, -1 as int32),
    pooled blocks included, so a kernel that reads memory it never wrote fails its test on a GPU as
    on the CPU execution of the backend, instead of passing on a previous call's leftovers."""
    import pycuda.driver as drv
    from minidl.backend.cuda import context
    allocate = context.allocator

    def poisoned(nbytes):
        block = allocate(nbytes)
        drv.memset_d8(int(block), 0xFF, nbytes)
        return block
    monkeypatch.setattr(context, "allocator", poisoned)


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(1234)
    yield


@pytest.fixture
def planThreshold(monkeypatch):
    """Move a NumPy-backend routing threshold for one test: set(module, name, value) patches it and
    forgets the cached routing plans (cached per geometry), and they are forgotten again after."""
    from minidl.backend.numpy import routing

    def set(module, name, value):
        monkeypatch.setattr(module, name, value)
        routing.clearPlans()
    yield set
    routing.clearPlans()


@pytest.fixture
def flatAtAnyBatch(planThreshold):
    """The depthwise plan's flat kernels for any batch (their batch thresholds moved to 1) and map
    size (the stride-2 forward's move to the phase planes off), so tests on small batches still
    cover them as training batches use them."""
    from minidl.backend.numpy.depthwise import plan
    planThreshold(plan, "FLAT_MIN_BATCH", 1)
    planThreshold(plan, "FLAT_MIN_BATCH_BACKWARD", 1)
    planThreshold(plan, "PHASES_MIN_PLANE", 1 << 30)    # and for stride-2 forwards on large maps


@pytest.fixture(autouse=True)
def _poisonedWorkspace(monkeypatch):
    """Every float buffer the NumPy backend's workspace hands out starts as NaN, so an op that reads
    memory it never wrote (a stale buffer from an earlier call) fails its test instead of passing by
    luck on zeros or on a previous call's identical values."""
    from minidl.backend.numpy.array import Workspace
    empty = Workspace.empty

    def poisoned(self, shape, dtype):
        buf = empty(self, shape, dtype)
        if buf.dtype.kind == "f":
            buf.fill(np.nan)
        return buf
    monkeypatch.setattr(Workspace, "empty", poisoned)
    yield
