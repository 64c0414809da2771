"""The NumPy backend's notices about its compiled kernels (minidl/backend/numpy/notices.py): each is
one stderr line, printed once per process, only where it applies, and MINIDL_QUIET=1 silences it.

Each case runs a small subprocess: a fresh NUMBA_CACHE_DIR is a cold cache (the first run of an
install), the same directory again a warm one, and a NUMBA_CACHE_DIR numba cannot write to (with
numba told to look nowhere else) no cache at all; MINIDL_NUMBA=0, or an import of numba that fails,
turns the kernels off. The kernels compiled are ReLU's two (forward, backward), the cheapest.
"""

import importlib.util
import os
import re
import subprocess
import sys

import pytest

from minidl.backend.numpy import notices

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ReLU forward and backward, twice each, with the NumPy backend selected twice: two kernels compile
# on a cold cache, one notice. "user-numba" compiles a function of the script's own, "no-numba"
# makes `import numba` fail as it does where numba is not installed.
SCRIPT = r"""
import sys
if "no-numba" in sys.argv:
    sys.modules["numba"] = None
import numpy as np
import minidl
from minidl.backend import gpuarray, ops
if "user-numba" in sys.argv:
    import numba
    assert numba.njit(lambda v: v + 1)(1) == 2
    sys.exit(0)
minidl.setBackend("numpy")
minidl.setBackend("numpy")
x = gpuarray.to_gpu(np.linspace(-1, 1, 8, dtype=np.float32))
for _ in range(2):
    y = ops.activation(x, "relu", 0.0, 0.0)
    dx = ops.activationBackward(x, y, gpuarray.to_gpu(np.ones(8, np.float32)), "relu", 0.0, 0.0)
assert np.array_equal(y.get(), np.maximum(x.get(), 0)) and np.array_equal(dx.get(), x.get() > 0)
"""

COMPILING = re.compile(r"^minidl: compiling the NumPy backend's CPU kernels with numba, once per install "
                       r"\(~\d+ s on 2 cores\); later runs load them from numba's cache \(MINIDL_QUIET=1 hides this\)$")
WITHOUT = re.compile(r"^minidl: the NumPy backend runs without its compiled CPU kernels \((?P<reason>.+)\); "
                     r"(?P<remedy>.+) makes a MobileNet training step on 32x32 images about \d+x faster "
                     r"\(MINIDL_QUIET=1 hides this\)$")


def run(cacheDir, *args, **env):
    """The script's stderr lines that come from minidl, after it ran with these arguments and settings."""
    environ = {k: v for k, v in os.environ.items()
               if k not in ("MINIDL_QUIET", "MINIDL_NUMBA", "NUMBA_CACHE_DIR", "NUMBA_CACHE_LOCATOR_CLASSES")}
    environ.update(env, MINIDL_BACKEND="numpy", NUMBA_CACHE_DIR=str(cacheDir),
                   PYTHONPATH=ROOT + os.pathsep + environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", SCRIPT] + list(args), env=environ, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stderr.splitlines() if line.startswith("minidl")]


needsNumba = pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="numba is not installed")


@needsNumba
def test_cold_cache_announces_once_and_warm_cache_not(tmp_path):
    lines = run(tmp_path)
    assert len(lines) == 1 and COMPILING.match(lines[0]), lines
    assert lines[0] == notices.COMPILING
    assert run(tmp_path) == []       # the same cache, now warm: every kernel loads from it


@needsNumba
def test_without_a_writable_cache_folder_kernels_compile_and_say_so_every_run(tmp_path):
    # numba looks only where NUMBA_CACHE_DIR says, and that is a file: no folder to cache in, as
    # for a read-only install without a writable home. numba would raise at import with cache=True.
    if not hasattr(pytest.importorskip("numba").config, "CACHE_LOCATOR_CLASSES"):
        pytest.skip("this numba version has no NUMBA_CACHE_LOCATOR_CLASSES")
    (tmp_path / "file").write_text("")
    for _ in range(2):
        lines = run(tmp_path / "file", NUMBA_CACHE_LOCATOR_CLASSES="UserProvidedCacheLocator")
        assert lines == [notices.COMPILING_UNCACHED]
    assert re.fullmatch(r"minidl: compiling .* in every run: numba finds no writable cache folder here \(set "
                        r"NUMBA_CACHE_DIR to one; MINIDL_QUIET=1 hides this\)", lines[0])


@needsNumba
def test_quiet_silences_the_compile_notice(tmp_path):
    assert run(tmp_path, MINIDL_QUIET="1") == []
    assert len(run(tmp_path / "other", MINIDL_QUIET="0")) == 1      # "0" is not quiet


@needsNumba
def test_a_users_own_numba_function_is_not_announced(tmp_path):
    assert run(tmp_path, "user-numba") == []


@pytest.mark.parametrize("args, env, reason, remedy", [
    ((), {"MINIDL_NUMBA": "0"}, "MINIDL_NUMBA=0", "unsetting MINIDL_NUMBA"),
    (("no-numba",), {}, "numba: .+", "pip install 'minidl[fast]'"),
], ids=["disabled", "missing"])
def test_without_kernels_says_so_once(tmp_path, args, env, reason, remedy):
    lines = run(tmp_path, *args, **env)
    assert len(lines) == 1, lines
    match = WITHOUT.match(lines[0])
    assert match and re.fullmatch(reason, match["reason"]) and match["remedy"] == remedy, lines
    assert run(tmp_path, *args, MINIDL_QUIET="1", **env) == []
    assert not os.listdir(tmp_path)      # nothing compiled, nothing cached
