"""Threads: separate models trained at once from several Python threads, on every threading layer
numba can pick, without a crash and with the results of a run one after the other.

numba fixes its threading layer once per process, so each layer runs in a subprocess: named with
NUMBA_THREADING_LAYER, or chosen by minidl (OpenMP with a runtime of numba's own even when another
library loaded OpenMP first, as `import sklearn.cluster` and `import torch` do; workqueue under
OMP_WAIT_POLICY=active). The workqueue layer aborts the
process (SIGABRT, "Concurrent access has been detected") when two threads launch parallel kernels
at once; minidl serialises its launches there (jit.py).
"""

import importlib.util
import os
import subprocess
import sys

import pytest

from minidl.backend.numpy import jit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Two threads each train their own MobileNetV2-0.25 (every parallel kernel: depthwise flat and tall,
# batch norm channel- and image-major, ReLU6, im2col with the GEMM threads, the workspace pool) for
# three steps; then the same two trainings run one after the other, and the weights must agree.
SCRIPT = r"""
import sys, threading
if sys.argv[1] == "openmp-first":
    import sklearn.cluster  # noqa: F401   (loads OpenMP before minidl)
if sys.argv[1] == "torch-first":
    import torch  # noqa: F401   (puts its OpenMP runtime in the global symbol scope before minidl)
if sys.argv[1] == "tbb":
    try:
        from numba.np.ufunc import tbbpool  # noqa: F401
    except (ImportError, OSError):
        print("unavailable")
        sys.exit(0)
import numpy as np
import minidl.backend as B
B.setBackend("numpy")
from minidl.backend.numpy import routing
from minidl.backend.numpy.depthwise import plan as dwplan
dwplan.FLAT_MIN_BATCH = dwplan.FLAT_MIN_BATCH_BACKWARD = 1   # batch 4 runs the flat kernels too
routing.clearPlans()
from minidl.cost import CrossEntropy
from minidl.models import loadMobileNetV2
from minidl.optimizers import MomentumSGD
import numba

def build(seed):
    np.random.seed(seed)        # numpy's global generator: models are built in one thread
    return loadMobileNetV2(width=0.25, numClasses=10, smallInput=True, dropout=0)

def train(seed, net, out):
    opt, cost = MomentumSGD(learnRate=0.01).setupOn(net), CrossEntropy()
    rng = np.random.default_rng(seed)
    x = B.current().to_gpu(rng.random((4, 3, 32, 32), dtype=np.float32))
    y = rng.integers(0, 10, 4).astype(np.int32)
    for _ in range(3):
        net(x)
        cost(net.data, y, queryError=False)
        opt.zeroGradParams()
        net.backward(cost.grad, updGrad=False)
        opt.update()
    out[seed] = {name: var.data.get() for name, var in net.namedVars()}

together, apart = {}, {}
threads = [threading.Thread(target=train, args=(seed, build(seed), together)) for seed in (1, 2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
for seed in (1, 2):
    train(seed, build(seed), apart)
for seed in (1, 2):
    for name, value in apart[seed].items():
        assert np.allclose(together[seed][name], value, rtol=1e-4, atol=1e-6), (seed, name)
print("layer", numba.threading_layer())
"""

# (id, extra environment, the layer numba must report)
LAYERS = [
    ("workqueue", {"NUMBA_THREADING_LAYER": "workqueue"}, "workqueue"),
    # passive waiting, as minidl asks for when it picks omp itself: with libgomp's default spinning
    # the run takes 20x longer on two cores (the spinning teams starve each other)
    ("omp", {"NUMBA_THREADING_LAYER": "omp", "OMP_WAIT_POLICY": "passive"}, "omp"),
    ("tbb", {"NUMBA_THREADING_LAYER": "tbb"}, "tbb"),
    ("openmp-first", {}, "omp"),
    ("torch-first", {}, "omp"),
    ("omp-wait-active", {"OMP_WAIT_POLICY": "active"}, "workqueue"),
]


@pytest.mark.parametrize("name,extra,layer", LAYERS, ids=[c[0] for c in LAYERS])
def test_two_threads_train_separate_models(name, extra, layer):
    if not jit.enabled:
        pytest.skip("numba not installed (or MINIDL_NUMBA=0): no threading layer")
    if name == "openmp-first":
        pytest.importorskip("sklearn.cluster")
    if name == "torch-first" and importlib.util.find_spec("torch") is None:
        pytest.skip("PyTorch is not installed")
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_THREADING_LAYER", "OMP_WAIT_POLICY")}
    env.update(extra, MINIDL_BACKEND="numpy", MINIDL_NUMBA="1")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, name], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    if proc.stdout.strip() == "unavailable":
        pytest.skip("numba's TBB layer cannot load here (pip install tbb)")
    assert proc.returncode == 0, "exit status %d\n%s\n%s" % (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    assert proc.stdout.split()[-1] == layer, proc.stdout
