"""How much the NumPy backend's workspace pool (array.Workspace) may keep: MINIDL_WORKSPACE_MB, or
a quarter of the memory this process may use.

The pool never keeps more than its buffers in use ever took at once (Workspace's docstring), so a
high limit keeps no more than a pass needed; it caps what a process that once needed more keeps
afterwards. A limit below a pass's needs costs time: each pass allocates the excess afresh, in
blocks that come from mmap and page-fault anew. Measured against the fixed 1280 MB this default
replaces (2 cores, 24 GB, where it is 6 GB; *ad hoc*, two alternating runs each, in
benchmarks/RESULTS.md's "the workspace's default limit"): full-width MobileNets at 224x224, whose
training steps at batch 32 keep 1.5 GB (V1) and 1.9 GB (V2) of buffers in use at once, took
1096-1188 ms a step instead of 1342-1357 (V1) and 1245-1316 instead of 1375-1637 (V2), and their
eval forwards at batch 64 (2.5 and 3.3 GB) 628-685 ms instead of 747-786 (V1) and 590-614 instead
of 1231-1243 (V2); the peak of the first two training steps rose by 41 MB (V1) and 5 MB (V2). The
MobileNet-0.5 and V3-Small steps at batch 64 on 32x32 inputs (310-496 MB) and one forward per batch
size 1..60 on MobileNetV2-0.5 (721 MB peak RSS) stay under either limit.

The memory a process may use: physical memory, or less where a memory cgroup (v2's memory.max,
v1's memory.limit_in_bytes) of the process or of one of its parents says so, as in a container
or under a job scheduler.
"""

import os
import re

# the least the default may be, whatever the machine says
MIN_DEFAULT_WORKSPACE_MB = 1280
# where the cgroup hierarchies are mounted, by convention: (hierarchy, mount point, limit file).
# Under a cgroup namespace the process's path is "/" and the mount point is the namespace's root.
_CGROUPS = (("v2", "/sys/fs/cgroup", "memory.max"), ("v2", "/sys/fs/cgroup/unified", "memory.max"),
            ("v1", "/sys/fs/cgroup/memory", "memory.limit_in_bytes"))
_SELF_CGROUP = "/proc/self/cgroup"
# limits this high mean none (v1 writes 2**63 rounded down to a page for "no limit")
_NO_LIMIT = 1 << 62


def _read(path, errors="strict"):
    """A file's text, stripped, or None where it cannot be read."""
    try:
        with open(path, encoding="ascii", errors=errors) as f:
            return f.read().strip()
    except (OSError, ValueError):        # missing, unreadable, or not ASCII (UnicodeDecodeError)
        return None


def _cgroupPaths(text):
    """{"v2" or "v1": the process's cgroup path} from /proc/self/cgroup's text ("id:controllers:path"
    lines; v2's is "0::path", v1's memory line names "memory" among its controllers). A hierarchy
    whose line is missing gets "/": its mount point is then the one place to look."""
    paths = {"v2": "/", "v1": "/"}
    for line in text.splitlines():
        parts = line.split(":", 2)       # the path itself may hold colons
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            paths["v2"] = parts[2]
        elif "memory" in parts[1].split(","):
            paths["v1"] = parts[2]
    return paths


def _limit(path):
    """The limit in a cgroup's limit file, or None where it says none or cannot be read."""
    text = _read(path)
    # "max" (v2) is no limit; 20 digits at most, so int() never meets a number too long to parse
    if text is None or re.fullmatch(r"[0-9]{1,20}", text) is None or int(text) >= _NO_LIMIT:
        return None
    return int(text)


def _walk(mount, path):
    """The directories whose limits apply to a process in cgroup path under mount: its own and each
    parent up to the mount point. Only the mount point where the process's own directory is not
    there (a container's cgroup mounted at its root, without a namespace: the directories the path
    names may exist there and be someone else's); none where the path leaves the mount (".." under
    a namespace: the process sits outside it)."""
    here = os.path.normpath(os.path.join(mount, path.lstrip("/")))
    if os.path.commonpath([here, mount]) != mount:
        return []
    if not os.path.isdir(here):
        return [mount]
    dirs = [here]
    while here != mount:
        here = os.path.dirname(here)
        dirs.append(here)
    return dirs


def cgroupLimit():
    """The lowest memory limit in bytes set on this process's cgroups or their parents, or None
    where none is set or none can be read (not Linux, no cgroups mounted)."""
    # surrogateescape: a cgroup name that is not ASCII still names its directory
    paths = _cgroupPaths(_read(_SELF_CGROUP, errors="surrogateescape") or "")
    limits = [_limit(os.path.join(d, name)) for key, mount, name in _CGROUPS for d in _walk(mount, paths[key])]
    limits = [v for v in limits if v is not None]
    return min(limits) if limits else None


def physicalMemory():
    """Bytes of physical memory, or None where the system does not say."""
    sysconf = getattr(os, "sysconf", None)      # none on Windows
    if sysconf is None:
        return None
    try:
        return sysconf("SC_PHYS_PAGES") * sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):               # no such name here
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
