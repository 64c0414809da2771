"""Where the CUDA backend looks for NVIDIA's shared libraries (cuBLAS).

The search is a pure function of the environment and the ``nvidia/`` folders
it is given, so tests build fake layouts and check the order without loading
anything (importing this module imports neither pycuda nor a library). In order:

1. toolkits named by CUDA_HOME, CUDA_ROOT, CUDA_PATH (an explicit choice wins);
2. NVIDIA's pip wheels: ``nvidia/cu13/lib`` (CUDA 13 and later, one folder per
   CUDA major, as PyTorch's CUDA 13 wheels install it), then
   ``nvidia/cublas/lib`` (CUDA 12 and 11 wheels);
3. the default toolkit, /usr/local/cuda;
4. the loader path (LD_LIBRARY_PATH, ldconfig's cache) by soname.

Each toolkit root is looked in at lib64, lib, targets/x86_64-linux/lib and
targets/sbsa-linux/lib; within a folder the newest version comes first.
"""

import ctypes
import glob
import importlib.util
import os
import re
import site
import sys

TOOLKIT_VARS = ("CUDA_HOME", "CUDA_ROOT", "CUDA_PATH")
TOOLKIT_LIBDIRS = ("lib64", "lib", "targets/x86_64-linux/lib", "targets/sbsa-linux/lib")
DEFAULT_TOOLKIT = "/usr/local/cuda"
SONAME_MAJORS = (13, 12, 11)   # asked of the loader by name, newest first


def _unique(paths):
    seen, out = set(), []
    for p in paths:
        key = os.path.normpath(p)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def nvidiaDirs():
    """Every ``nvidia/`` folder on this interpreter's path: the namespace package's locations (found
    without importing it or anything under it), then ``nvidia`` under each site-packages folder and
    sys.path entry (a wheel may ship nvidia/__init__.py, which hides the other locations)."""
    dirs = []
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        dirs += list(spec.submodule_search_locations)
    roots = list(site.getsitepackages()) if hasattr(site, "getsitepackages") else []
    roots += [site.getusersitepackages()] + [p for p in sys.path if p]
    dirs += [os.path.join(r, "nvidia") for r in roots if os.path.isdir(os.path.join(r, "nvidia"))]
    return _unique(dirs)


def _wheelDirs(base, lib):
    """A nvidia/ folder's library folders for `lib`: nvidia/cuNN/lib (CUDA 13+), newest first, then
    nvidia/<lib>/lib (CUDA 12 and 11)."""
    majors = []
    for sub in glob.glob(os.path.join(base, "cu*")):
        m = re.fullmatch(r"cu(\d+)", os.path.basename(sub))
        if m:
            majors.append(int(m.group(1)))
    return [os.path.join(base, "cu%d" % v, "lib") for v in sorted(majors, reverse=True)] + \
        [os.path.join(base, lib, "lib")]


def searchDirs(env, nvidia, lib="cublas"):
    """The folders to look in for lib<lib>.so*, in order; `env` is a mapping like os.environ and
    `nvidia` a list of nvidia/ folders (nvidiaDirs())."""
    dirs = []
    for var in TOOLKIT_VARS:
        root = env.get(var)
        if root:
            dirs += [os.path.join(root, sub) for sub in TOOLKIT_LIBDIRS]
    for base in nvidia:
        dirs += _wheelDirs(base, lib)
    dirs += [os.path.join(DEFAULT_TOOLKIT, sub) for sub in TOOLKIT_LIBDIRS]
    return _unique(dirs)


def _version(name, lib):
    """(1, (13, 0, 2)) for lib<lib>.so.13.0.2, (0, ()) for lib<lib>.so, None for anything else."""
    m = re.fullmatch(r"lib%s\.so((?:\.\d+)*)" % re.escape(lib), name)
    if m is None:
        return None
    parts = tuple(int(v) for v in m.group(1).split(".")[1:])
    return (1 if parts else 0, parts)


def libraryFiles(folder, lib="cublas"):
    """lib<lib>.so* in `folder`, newest version first, the unversioned name (a toolkit's dev link)
    last; lib<lib>Lt and other near names are not matched."""
    found = []
    for path in glob.glob(os.path.join(folder, "lib%s.so*" % lib)):
        v = _version(os.path.basename(path), lib)
        if v is not None:
            found.append((v, path))
    return [path for _, path in sorted(found, key=lambda item: item[0], reverse=True)]


def loaderNames(lib="cublas"):
    """Sonames handed to the loader as they are, when no folder had the library."""
    return ["lib%s.so.%d" % (lib, v) for v in SONAME_MAJORS] + ["lib%s.so" % lib]


def candidates(env, nvidia, lib="cublas"):
    """Every path to try, in order: the files found in searchDirs(), then loaderNames()."""
    for folder in searchDirs(env, nvidia, lib):
        yield from libraryFiles(folder, lib)
    yield from loaderNames(lib)


def driverCudaMajor():
    """The CUDA major version the installed driver supports (12, 13, ...), or None when unknown."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        v = ctypes.c_int()
        if cuda.cuDriverGetVersion(ctypes.byref(v)) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return v.value // 1000   # 13000 is CUDA 13.0


def wheelFor(lib, cudaMajor):
    """The pip package with NVIDIA's lib<lib> for a CUDA major version: CUDA 12 and 11 wheels carry
    the version in the name (nvidia-cublas-cu12); from CUDA 13 on the name has none (nvidia-cublas)."""
    if cudaMajor is not None and cudaMajor <= 12:
        return "nvidia-%s-cu%d" % (lib, cudaMajor)
    return "nvidia-%s" % lib


def notFoundMessage(what, lib, env, nvidia, failures, cudaMajor):
    """The error text when no candidate loaded: every folder searched, the sonames asked of the
    loader, why a file that exists did not load, and what to install for this driver.
    `failures` maps each tried path to its OSError text."""
    loaded = [p for p in failures if os.path.isabs(p)]
    lines = ["CUDA backend: %s (lib%s.so) not found." % (what, lib),
             "Looked in: %s." % ", ".join(searchDirs(env, nvidia, lib)),
             "Then asked the loader (LD_LIBRARY_PATH, ldconfig) for: %s." % ", ".join(loaderNames(lib))]
    if loaded:
        lines.append("Found but could not load: %s." % "; ".join("%s (%s)" % (p, failures[p]) for p in loaded))
    if cudaMajor is None:
        hint = "pip install %s (CUDA 13) or %s (CUDA 12), matching your driver" % (wheelFor(lib, 13),
                                                                                   wheelFor(lib, 12))
    else:
        hint = "pip install %s (the driver supports CUDA %d)" % (wheelFor(lib, cudaMajor), cudaMajor)
    lines.append("Fix: %s, or set CUDA_HOME to a CUDA toolkit." % hint)
    return " ".join(lines)
