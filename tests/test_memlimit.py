"""The workspace pool's limit (minidl/backend/numpy/memlimit.py): MINIDL_WORKSPACE_MB, or a quarter
of the memory the process may use, read from a faked sysconf and a faked cgroup tree."""

import os
import re

import pytest

from minidl.backend.numpy import memlimit

MIB, GiB = 1 << 20, 1 << 30


@pytest.mark.parametrize("text,mb", [("0", 0), ("256", 256), (" 64 ", 64), (None, 3000)])
def test_setting(monkeypatch, text, mb):
    monkeypatch.setattr(memlimit, "defaultWorkspaceMB", lambda: 3000)     # unset: the default, whatever it is
    assert memlimit.workspaceLimit({} if text is None else {"MINIDL_WORKSPACE_MB": text}) == mb * MIB


@pytest.mark.parametrize("text", ["abc", "1.5", "", "-5", "8GB"])
def test_bad_setting_names_the_variable(text):
    with pytest.raises(ValueError, match=r"MINIDL_WORKSPACE_MB must be a whole number of megabytes.*got "
                                         + re.escape(repr(text))):
        memlimit.workspaceLimit({"MINIDL_WORKSPACE_MB": text})


def _fake(monkeypatch, tmp_path, physicalMB, selfCgroup, files):
    """memlimit on a machine with physicalMB of memory (None: sysconf refuses; "gone": no
    os.sysconf, as on Windows), selfCgroup as /proc/self/cgroup's text (None: no such file), and
    a cgroup tree under tmp_path: files maps "v2:/dir", "unified:/dir" or "v1:/dir" (a directory
    below that mount point) to its limit file's text (bytes as they are; None: the directory alone)."""
    def sysconf(name):
        if physicalMB is None:
            raise ValueError("unrecognized configuration name")
        return {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": physicalMB * 256}[name]

    if physicalMB == "gone":
        monkeypatch.delattr(memlimit.os, "sysconf")
    else:
        monkeypatch.setattr(memlimit.os, "sysconf", sysconf)
    # the module's own mount points, moved below tmp_path
    mounts = {"v2": ("/sys/fs/cgroup", "memory.max"), "unified": ("/sys/fs/cgroup/unified", "memory.max"),
              "v1": ("/sys/fs/cgroup/memory", "memory.limit_in_bytes")}
    for where, text in files.items():
        mount, directory = where.split(":", 1)
        root, name = mounts[mount]
        path = os.path.join(str(tmp_path) + root, directory.lstrip("/"))
        os.makedirs(path, exist_ok=True)
        if text is not None:
            with open(os.path.join(path, name), "wb") as f:
                f.write(text if isinstance(text, bytes) else text.encode() + b"\n")
    self = tmp_path / "self_cgroup"
    if selfCgroup is not None:
        self.write_bytes(selfCgroup.encode("utf-8", "surrogateescape"))
    monkeypatch.setattr(memlimit, "_CGROUPS", tuple((key, str(tmp_path) + root, name)
                                                    for key, root, name in memlimit._CGROUPS))
    monkeypatch.setattr(memlimit, "_SELF_CGROUP", str(self))


V1_LINES = "9:name=systemd:/\n4:memory:%s\n3:cpuset:/\n0::/\n"     # a hybrid machine's, as this one's


@pytest.mark.parametrize("physicalMB,selfCgroup,files,mb", [
    (16384, "0::/\n", {}, 4096),                                    # a quarter of physical memory
    (16384 + 3, "0::/\n", {}, 4096),                                # rounded down to whole megabytes
    (2048, "0::/\n", {}, 1280),                                     # never under MIN_DEFAULT_WORKSPACE_MB
    (65536, "0::/\n", {"v2:/": "max"}, 16384),                      # cgroup v2 with no limit
    (65536, "0::/\n", {"v2:/": str(8 * GiB)}, 2048),                # a container of 8 GiB on a 64 GiB host
    # a job's own cgroup below the mount point, and its parents: the lowest set anywhere counts
    (65536, "0::/jobs/42\n", {"v2:/jobs/42": str(12 * GiB), "v2:/jobs": "max", "v2:/": str(32 * GiB)}, 3072),
    (65536, "0::/jobs/42\n", {"v2:/jobs/42": str(20 * GiB), "v2:/jobs": str(8 * GiB)}, 2048),
    (65536, "0::/jobs/42\n", {"v2:/jobs/42": None, "v2:/jobs": str(10 * GiB)}, 2560),   # on the parent only
    (65536, "0::/a:b\n", {"v2:/a:b": str(8 * GiB)}, 2048),          # a colon in the path
    (65536, "0::/job\n", {"unified:/job": str(8 * GiB)}, 2048),     # v2 mounted beside v1 (hybrid)
    # v1: the memory controller's line among others; its "no limit" value
    (65536, V1_LINES % "/docker/abc", {"v1:/docker/abc": str(4 * GiB)}, 1280),
    (65536, "4:memory,hugetlb:/docker/abc\n", {"v1:/docker/abc": str(12 * GiB)}, 3072),
    (65536, V1_LINES % "/", {"v1:/": "9223372036854771712"}, 16384),
    (65536, "0::/a\n4:memory:/b\n", {"v2:/a": str(20 * GiB), "v1:/b": str(6 * GiB)}, 1536),   # the lower wins
    # a path the mount does not show (a container's cgroup mounted at its root): its mount point
    (65536, V1_LINES % "/docker/abc", {"v1:/": str(16 * GiB)}, 4096),
    # ... and not a directory of the same name there, which is someone else's
    (65536, V1_LINES % "/docker/abc", {"v1:/": str(16 * GiB), "v1:/docker": str(GiB)}, 4096),
    # a path outside the namespace's root: nothing there is the process's
    (65536, "0::/../other\n", {"v2:/": str(8 * GiB)}, 16384),
    (65536, "0::/../../../../etc\n", {}, 16384),
    # no /proc/self/cgroup, or one that is not ASCII: the mount points still count
    (65536, None, {"v2:/": str(8 * GiB)}, 2048),
    (65536, "0::/caf\udce9\n", {"v2:/caf\udce9": str(8 * GiB)}, 2048),
    # odd limit files are no limit
    (65536, "0::/\n", {"v2:/": ""}, 16384),
    (65536, "0::/\n", {"v2:/": "-1"}, 16384),
    (65536, "0::/\n", {"v2:/": b"\xb2\xff"}, 16384),
    (65536, "0::/\n", {"v2:/": "\u00b2"}, 16384),                   # not ASCII (isdigit() would say yes)
    (65536, "0::/\n", {"v2:/": "9" * 5000}, 16384),                 # too long for int() to parse
    (None, "0::/\n", {}, 1280),                                     # sysconf refuses, no cgroups: the floor
    ("gone", "0::/\n", {}, 1280),                                   # no os.sysconf (Windows)
    (None, "0::/\n", {"v2:/": str(64 * GiB)}, 16384),               # the cgroup's limit alone
    (None, V1_LINES % "/", {"v1:/": "9223372036854771712"}, 1280),  # v1's "no limit" is not a limit
])
def test_default_is_a_quarter_of_the_memory_the_process_may_use(monkeypatch, tmp_path, physicalMB, selfCgroup,
                                                                files, mb):
    _fake(monkeypatch, tmp_path, physicalMB, selfCgroup, files)
    assert memlimit.defaultWorkspaceMB() == mb
    assert memlimit.workspaceLimit({}) == mb * MIB


def test_default_on_this_machine_is_sane():
    from minidl.backend.numpy.array import workspace
    physical = memlimit.physicalMemory()
    if physical is not None:
        assert 1280 <= memlimit.defaultWorkspaceMB() <= max(1280, physical // 4 >> 20)
    if "MINIDL_WORKSPACE_MB" not in os.environ:
        assert workspace.limit == memlimit.defaultWorkspaceMB() * MIB
