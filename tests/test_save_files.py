"""What save does to the file system (minidl/filesave.py): item 9 of the issue "Reliability and security".

Save replaces its target atomically and changes nothing else: an existing file keeps its mode and a
new one follows the umask; a symbolic link is written through; errors name the target, never the
temporary file; a missing folder, a directory, a non-regular file and a read-only file are refused;
no temporary file survives a Python exception, and those left by killed processes are removed by the
next save of the same target. Every test checks the weights that end up on disk by loading them.
"""

import errno
import os
import signal
import stat

import numpy as np
import pytest

from minidl import serialization
from minidl.containers import Sequential
from minidl.modules import Conv2D

posixOnly = pytest.mark.skipif(os.name != "posix", reason="needs fork, kill(pid, 0) and POSIX modes")


def _net(seed):
    np.random.seed(seed)
    return Sequential("net").append(Conv2D(2, 3, 3, name="c"))


def _holds(path, seed):
    """True when the file at path holds exactly the weights of _net(seed)."""
    fresh = Sequential("net").append(Conv2D(2, 3, 3, name="c"))
    fresh.load(str(path))
    want = _net(seed)
    return all(np.array_equal(v.data.get(), want.getVar(n).data.get()) for n, v in fresh.namedVars())


def _listing(folder):
    return sorted(os.listdir(folder))


@posixOnly
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o755], ids=oct)
def test_existing_file_keeps_its_mode(backend, tmp_path, mode):
    path = tmp_path / "w.h5"
    _net(1).save(str(path))
    os.chmod(path, mode)
    _net(2).save(str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == mode
    assert _holds(path, 2)


@posixOnly
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)],
                         ids=["umask022", "umask077", "umask002"])
def test_new_file_follows_the_umask(backend, tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        _net(1).save(str(tmp_path / "w.h5"))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "w.h5").st_mode) == mode


@posixOnly
def test_save_through_symlinks_writes_their_target(backend, tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "w.h5"
    _net(1).save(str(target))
    os.symlink("real/w.h5", tmp_path / "hop")     # relative link
    os.symlink(tmp_path / "hop", tmp_path / "w.h5")  # a chain of two
    _net(2).save(str(tmp_path / "w.h5"))
    assert os.path.islink(tmp_path / "w.h5") and os.path.islink(tmp_path / "hop"), "the links stay links"
    assert _holds(target, 2), "the file the links point to holds the new weights"
    assert _listing(tmp_path / "real") == ["w.h5"]


@posixOnly
def test_dangling_symlink_creates_its_target(backend, tmp_path):
    os.symlink("made.h5", tmp_path / "link.h5")
    _net(1).save(str(tmp_path / "link.h5"))
    assert os.path.islink(tmp_path / "link.h5") and _holds(tmp_path / "made.h5", 1)


@posixOnly
def test_symlink_loop_is_refused(backend, tmp_path):
    os.symlink("b.h5", tmp_path / "a.h5")
    os.symlink("a.h5", tmp_path / "b.h5")
    with pytest.raises(OSError) as info:
        _net(1).save(str(tmp_path / "a.h5"))
    assert info.value.errno == errno.ELOOP and info.value.filename == str(tmp_path / "a.h5")
    assert os.path.islink(tmp_path / "a.h5") and _listing(tmp_path) == ["a.h5", "b.h5"]


def test_missing_folder_is_refused(backend, tmp_path):
    path = tmp_path / "missing" / "w.h5"
    with pytest.raises(FileNotFoundError, match=r"No such folder '.*missing' \(save creates no folders\)") as info:
        _net(1).save(str(path))
    assert info.value.filename == str(path)
    assert not (tmp_path / "missing").exists()


def test_directory_target_is_refused_by_name(backend, tmp_path):
    (tmp_path / "w.h5").mkdir()
    with pytest.raises(IsADirectoryError) as info:
        _net(1).save(str(tmp_path / "w.h5"))
    assert info.value.filename == str(tmp_path / "w.h5") and _listing(tmp_path) == ["w.h5"]


@posixOnly
def test_fifo_target_is_refused(backend, tmp_path):
    os.mkfifo(tmp_path / "w.h5")
    with pytest.raises(OSError, match="Not a regular file") as info:
        _net(1).save(str(tmp_path / "w.h5"))
    assert info.value.filename == str(tmp_path / "w.h5")
    assert stat.S_ISFIFO(os.stat(tmp_path / "w.h5").st_mode), "the fifo is still there"


def _asNonRoot(monkeypatch, path):
    """Root may write anything; make os.access answer for path as it would for its owner."""
    if os.geteuid() == 0:
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, m, **kw: bool(os.stat(p).st_mode & stat.S_IWUSR)
                            if m == os.W_OK and os.path.samefile(p, path) else real(p, m, **kw))


@posixOnly
def test_read_only_file_is_refused(backend, tmp_path, monkeypatch):
    path = tmp_path / "w.h5"
    _net(1).save(str(path))
    os.chmod(path, 0o444)
    _asNonRoot(monkeypatch, path)
    with pytest.raises(PermissionError, match=r"the existing file is read-only") as info:
        _net(2).save(str(path))
    assert info.value.filename == str(path) and _holds(path, 1) and _listing(tmp_path) == ["w.h5"]


@posixOnly
@pytest.mark.parametrize("how", ["chmod", "simulated"])
def test_read_only_folder_error_names_the_target(backend, tmp_path, monkeypatch, how):
    """A folder that refuses new files; as root chmod does not stop writes, so 'simulated' makes
    creating any temporary file fail the way a read-only folder does."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if how == "chmod":
        if os.geteuid() == 0:
            pytest.skip("root writes into a 0555 folder")
        os.chmod(folder, 0o555)
    else:
        real = os.open

        def refusing(path, flags, *args, **kwargs):
            if os.path.dirname(os.fspath(path)) == str(folder) and flags & os.O_CREAT:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
            return real(path, flags, *args, **kwargs)
        monkeypatch.setattr(os, "open", refusing)
    try:
        with pytest.raises(PermissionError) as info:
            _net(1).save(str(folder / "w.h5"))
    finally:
        os.chmod(folder, 0o755)
    assert info.value.filename == str(folder / "w.h5") and ".tmp" not in str(info.value)
    assert _listing(folder) == []


def test_writer_errors_name_the_target_and_leave_nothing(backend, tmp_path, monkeypatch):
    """An OSError raised while writing (a full disk) names the target; any exception removes the temporary file."""
    path = tmp_path / "w.h5"
    _net(1).save(str(path))

    def diskFull(module, hdf, compress):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), hdf.filename)
    monkeypatch.setattr(serialization, "_write", diskFull)
    with pytest.raises(OSError) as info:
        _net(2).save(str(path))
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)

    def broken(module, hdf, compress):
        raise ValueError("a bug in a writer")
    monkeypatch.setattr(serialization, "_write", broken)
    with pytest.raises(ValueError, match="a bug in a writer"):
        _net(2).save(str(path))
    assert _listing(tmp_path) == ["w.h5"] and _holds(path, 1)


def _forkSave(path, writer):
    """Run writeH5(path, writer) in a forked child; returns its pid (the child never returns)."""
    pid = os.fork()
    if pid == 0:
        try:
            serialization.writeH5(str(path), writer)
            code = 0
        except BaseException:
            code = 3
        os._exit(code)
    return pid


def _killedMidWrite(hdf):
    hdf["junk"] = np.zeros(1000, np.float32)
    hdf.flush()
    os.kill(os.getpid(), signal.SIGKILL)


@posixOnly
def test_temporary_files_of_killed_saves_are_removed_by_the_next_save(backend, tmp_path):
    """kill -9 mid-save leaves a temporary file (nothing in-process can prevent that); each later
    save of the same target removes it, so leftovers never pile up; other targets' stay."""
    path, other = tmp_path / "w.h5", tmp_path / "other.h5"
    _net(1).save(str(path))

    def temps(name):
        return [n for n in _listing(tmp_path) if n.startswith("." + name + ".")]
    for _ in range(3):
        for target in (path, other):
            pid = _forkSave(target, _killedMidWrite)
            assert os.waitpid(pid, 0)[1] == signal.SIGKILL
        assert len(temps("w.h5")) == 1 and len(temps("other.h5")) == 1, "only the latest kill's file remains"
    _net(2).save(str(path))
    assert temps("w.h5") == [] and len(temps("other.h5")) == 1
    assert _holds(path, 2)


@posixOnly
def test_a_running_saves_temporary_file_is_left_alone(backend, tmp_path):
    """Another process is writing the same target: the cleanup must not pull its file away."""
    path = tmp_path / "w.h5"
    ready, go = os.pipe(), os.pipe()
    values = _net(5)

    def slowWriter(hdf):
        os.write(ready[1], b"r")
        os.read(go[0], 1)
        serialization._write(values, hdf, "gzip")
    pid = _forkSave(path, slowWriter)
    try:
        assert os.read(ready[0], 1) == b"r"
        running = [n for n in _listing(tmp_path) if n.endswith(".tmp")]
        assert len(running) == 1
        _net(1).save(str(path))
        assert running[0] in _listing(tmp_path), "a live save's temporary file was removed"
    finally:
        os.write(go[1], b"g")
        status = os.waitpid(pid, 0)[1]
    assert os.waitstatus_to_exitcode(status) == 0, "the other process's save failed"
    assert _listing(tmp_path) == ["w.h5"] and _holds(path, 5)
