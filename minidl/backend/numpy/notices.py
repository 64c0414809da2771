"""The NumPy backend's two notices about its compiled CPU kernels, one line each on stderr, each at
most once per process.

- COMPILING, just before numba compiles the first of minidl's kernels whose machine code is not
  in numba's disk cache: the first run after installing or updating minidl (or with a new
  NUMBA_CACHE_DIR). Later runs load every kernel from the cache and print nothing. Where numba
  finds no writable cache folder (jit.CACHE is False), COMPILING_UNCACHED, in every run.
- WITHOUT_KERNELS, when the NumPy backend is selected and the kernels are off: numba missing (or
  failing to import), or MINIDL_NUMBA=0. Every op still works through plain NumPy, only slower.

MINIDL_QUIET=1 (any value but empty or "0"), set any time before the notice would print, silences
both; nothing else changes.

How a cache miss is seen: numba triggers its "numba:compile" event after looking in the disk
cache and finding nothing, right before it compiles (a kernel loaded from the cache triggers
none). A listener registered when jit.py loads hears exactly those compiles, so a kernel call
costs nothing extra, first call or later.

The figures quoted were measured on a 2-core machine (README, "Speed on the CPU"): the kernels
that examples/train_mobilenet.py uses compile in ~23 s of CPU time (COMPILE_SECONDS rounds up;
a busy machine takes longer), the kernels of a MobileNetV2 step on 32x32 images in ~28 s, and
that step (width 0.5, batch 64) runs SPEEDUP times faster with the kernels than without (0.35 s
against 1.75 s). On the example's 8x8 digits the kernels gain nothing.
"""

import os
import sys

COMPILE_SECONDS = 25
SPEEDUP = 5

COMPILING = ("minidl: compiling the NumPy backend's CPU kernels with numba, once per install (~%d s on 2 cores); "
             "later runs load them from numba's cache (MINIDL_QUIET=1 hides this)" % COMPILE_SECONDS)

COMPILING_UNCACHED = ("minidl: compiling the NumPy backend's CPU kernels with numba (~%d s on 2 cores), in every "
                      "run: numba finds no writable cache folder here (set NUMBA_CACHE_DIR to one; MINIDL_QUIET=1 "
                      "hides this)" % COMPILE_SECONDS)

WITHOUT_KERNELS = ("minidl: the NumPy backend runs without its compiled CPU kernels (%s); %s makes a MobileNet "
                   "training step on 32x32 images about " + str(SPEEDUP) + "x faster (MINIDL_QUIET=1 hides this)")

_said = set()
_watching = []


def quiet():
    """Whether MINIDL_QUIET asks for no notices."""
    return os.environ.get("MINIDL_QUIET", "") not in ("", "0")


def say(key, text):
    """Print text to stderr the first time `key` comes up in this process, unless quiet()."""
    if key in _said:
        return
    _said.add(key)
    if not quiet():
        print(text, file=sys.stderr, flush=True)


def withoutKernels(reason):
    """WITHOUT_KERNELS, once, with the reason the kernels are off (jit.disabledBy) and the remedy."""
    remedy = "unsetting MINIDL_NUMBA" if reason == "MINIDL_NUMBA=0" else "pip install 'minidl[fast]'"
    say("without", WITHOUT_KERNELS % (reason, remedy))


def watchCompiles(cached):
    """Print COMPILING (COMPILING_UNCACHED where the kernels have no disk cache: not cached) before
    numba's first compile of one of minidl's functions in this process.

    Registered once, when jit.py loads with numba; its callbacks run only when numba compiles.
    """
    if _watching:
        return
    text = COMPILING if cached else COMPILING_UNCACHED
    from numba.core import event

    class CompileListener(event.Listener):
        def on_start(self, ev):
            if "compiling" in _said:
                return
            data = ev.data if isinstance(ev.data, dict) else {}
            func = getattr(data.get("dispatcher"), "py_func", None)     # a user's own numba code: silent
            if getattr(func, "__module__", "").startswith("minidl."):
                say("compiling", text)

        def on_end(self, ev):
            pass

    listener = CompileListener()
    event.register("numba:compile", listener)
    _watching.append(listener)
