"""How much the NumPy backend's workspace pool (array.Workspace) may keep: MINIDL_WORKSPACE_MB, or
a quarter of the memory this process may use.

The pool never keeps more than its buffers in use ever took at once (Workspace's docstring), so a
high limit keeps no more than a pass needed; it caps what a process that once needed more keeps
afterwards. A limit below a step's needs costs time: each step allocates the excess afresh, in
blocks that come from mmap and page-fault anew. Measured against the fixed 1280 MB this default
replaces (2 cores, 24 GB, where it is 6 GB; benchmarks/RESULTS.md, "the workspace's default
limit"): full-width MobileNets at 224x224 and batch 32, whose training steps keep 1.5 GB (V1) and
1.9 GB (V2) of buffers in use at once, took 1096-1188 ms a step instead of 1342-1357 (V1) and
1245-1316 instead of 1375-1637 (V2); the peak of their first two steps rose by 41 MB (V1) and 5 MB
(V2). The MobileNet-0.5 and V3-Small steps at batch 64 on 32x32 inputs (310-496 MB) and one forward
per batch size 1..60 on MobileNetV2-0.5 (721 MB peak RSS) stay under either limit.

The memory a process may use: physical memory, or less where a memory cgroup (v2's memory.max,
v1's memory.limit_in_bytes) of the process or of one of its parents says so, as in a container
or under a job scheduler.
"""

import os
import re

# the least the default may be, whatever the machine says
MIN_DEFAULT_WORKSPACE_MB = 1280
# where the cgroup hierarchies are mounted, by convention: (the process's cgroup path's prefix
# in /proc/self/cgroup, mount point, limit file). Under a cgroup namespace the path is "/" and the
# mount point is the namespace's root; without one the walk up from a path the mount does not show
# ends at the mount point, the container's own cgroup.
_CGROUPS = (("0::", "/sys/fs/cgroup", "memory.max"), ("0::", "/sys/fs/cgroup/unified", "memory.max"),
            ("memory", "/sys/fs/cgroup/memory", "memory.limit_in_bytes"))
_SELF_CGROUP = "/proc/self/cgroup"


def _read(path):
    """A file's text, stripped, or None where it cannot be read."""
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except (OSError, ValueError):        # missing, unreadable, or not ASCII (UnicodeDecodeError)
        return None


def _cgroupPaths(text):
    """{"0::" (v2) or "memory" (v1): the process's cgroup path} from /proc/self/cgroup's text."""
    paths = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            paths["0::"] = parts[2]
        elif "memory" in parts[1].split(","):
            paths["memory"] = parts[2]
    return paths


def cgroupLimit():
    """The lowest memory limit in bytes set on this process's cgroups or their parents, or None
    where none is set or none can be read (not Linux, no cgroups mounted)."""
    paths = _cgroupPaths(_read(_SELF_CGROUP) or "")
    lowest = None
    for key, mount, name in _CGROUPS:
        if key not in paths:
            continue
        here = os.path.normpath(mount + "/" + paths[key].strip("/"))
        while True:
            text = _read(os.path.join(here, name))
            # "max" (v2) is no limit, and v1 writes a huge number for none: min() leaves those be
            if text is not None and re.fullmatch(r"[0-9]+", text):
                lowest = int(text) if lowest is None else min(lowest, int(text))
            if here == mount or len(here) <= len(mount):
                break
            here = os.path.dirname(here)
    return lowest


def physicalMemory():
    """Bytes of physical memory, or None where the system does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):      # no os.sysconf (Windows), or no such name
        return None


def defaultWorkspaceMB():
    """MINIDL_WORKSPACE_MB's value when it is unset: a quarter of the memory this process may use
    (the lower of physical memory and its cgroups' limits), at least MIN_DEFAULT_WORKSPACE_MB (that
    alone where neither can be read)."""
    known = [v for v in (physicalMemory(), cgroupLimit()) if v is not None]
    if not known:
        return MIN_DEFAULT_WORKSPACE_MB
    return max(MIN_DEFAULT_WORKSPACE_MB, (min(known) // 4) >> 20)


def workspaceLimit(environ=os.environ):
    """The workspace pool's limit in bytes, from MINIDL_WORKSPACE_MB (megabytes, a whole number >= 0;
    0 pools nothing) or defaultWorkspaceMB() when unset. ValueError naming the variable otherwise."""
    text = environ.get("MINIDL_WORKSPACE_MB")
    if text is None:
        return defaultWorkspaceMB() << 20
    if re.fullmatch(r"\s*[0-9]+\s*", text) is None:
        raise ValueError("MINIDL_WORKSPACE_MB must be a whole number of megabytes, 0 or more (0 turns the "
                         "NumPy backend's buffer pool off; unset means %d MB here: a quarter of the memory "
                         "this process may use, at least %d), got %r"
                         % (defaultWorkspaceMB(), MIN_DEFAULT_WORKSPACE_MB, text))
    return int(text) << 20
