"""Whether the CUDA backend runs on tools/cudaemu, the CPU execution of CUDA (its device names
itself): tests that check the emulator itself, or that must shrink to fit its speed, ask here."""

import minidl.backend as B


def cudaEmulated():
    if not B.cudaAvailable():
        return False
    import pycuda.driver as drv
    return "cuemu" in drv.Device(0).name()
