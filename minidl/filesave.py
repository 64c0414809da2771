"""Replacing a file atomically, for weight and optimizer-state saves (``replace``).

The contract:
- the new contents go to ``.<name>.minidl-<host>-<pid>-<random>.tmp`` beside the target, are
  flushed to disk and renamed over the target: a crash leaves the old file or the new one,
  never a mix;
- a target that is a symbolic link is written through: the file it points to is replaced and
  the link stays (a dangling link creates its target);
- an existing file keeps its permission bits; a new one gets 0666 less the umask, as ``open()``
  gives. Owner, group, ACLs, extended attributes and other hard links to the old file are not
  carried over (the rename makes a new file);
- a missing folder is refused (FileNotFoundError): minidl creates no folders, like ``open()``,
  ``numpy.save`` and PuzzleLib's save. So are a directory or other non-regular target
  (IsADirectoryError, OSError EINVAL), a symbolic link loop (ELOOP) and an existing file without
  write permission (PermissionError);
- an OSError names the target the caller gave (its ``filename``), never the temporary file;
- any Python exception, KeyboardInterrupt included, removes the temporary file. A process killed
  outright (kill -9, power cut) leaves it behind; the next save of the same target removes those
  left by processes of this host that no longer run (POSIX only: a process is known gone when
  ``kill(pid, 0)`` says so; elsewhere, and for other hosts sharing the folder, they stay).
"""

import errno
import hashlib
import os
import re
import secrets
import socket
import stat

_TEMP_TAIL = re.compile(r"(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)-[0-9a-f]{8}\.tmp")
_liveTemps = set()  # temporary files this process is writing now (a pid check cannot tell its own threads apart)


def replace(filename, write):
    """Call write(path of a new empty file) and make that file filename's, as the module doc says."""
    filename = os.fspath(filename)
    target, mode = _saveTarget(filename)
    _removeStaleTemps(target)
    tmp = None
    try:
        tmp = _createTemp(target)
        write(tmp)
        _flush(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
        _liveTemps.discard(tmp)
        tmp = None
        _flushFolder(os.path.dirname(target))
    except OSError as e:
        raise _naming(e, filename, tmp) from e
    finally:
        if tmp is not None:
            _liveTemps.discard(tmp)
            try:
                os.remove(tmp)
            except OSError:
                pass


def _saveTarget(filename):
    """(the real path to replace, the permission bits to keep or None) for a save to filename."""
    target = os.path.realpath(filename)
    if os.path.islink(target):  # realpath stops where links loop
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), filename)
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, "No such folder %r (save creates no folders)"
                                % os.path.dirname(os.path.abspath(filename)), filename)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return target, None
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), filename)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "Not a regular file (save replaces files only)", filename)
    if not os.access(target, os.W_OK):
        raise PermissionError(errno.EACCES, "Permission denied (the existing file is read-only)", filename)
    return target, stat.S_IMODE(st.st_mode)


def _tempPrefix(target):
    """'.<name>.minidl-': the start of every temporary file for target (the name cut to keep it legal)."""
    return ".%s.minidl-" % os.path.basename(target)[:128]


def _hostTag():
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _createTemp(target):
    """Create an empty temporary file beside target; open() semantics give it 0666 less the umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(16):
        tmp = os.path.join(os.path.dirname(target), "%s%s-%d-%s.tmp"
                           % (_tempPrefix(target), _hostTag(), os.getpid(), secrets.token_hex(4)))
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        _liveTemps.add(tmp)
        os.close(fd)
        return tmp
    raise FileExistsError(errno.EEXIST, "cannot pick a free temporary name beside the target")


def _removeStaleTemps(target):
    """Remove temporary files of target left by killed processes of this host (POSIX only: a
    process is known gone when kill(pid, 0) says so; elsewhere they stay)."""
    if os.name != "posix":
        return
    prefix, host = _tempPrefix(target), _hostTag()
    try:
        entries = list(os.scandir(os.path.dirname(target)))
    except OSError:
        return
    for entry in entries:
        match = _TEMP_TAIL.fullmatch(entry.name[len(prefix):]) if entry.name.startswith(prefix) else None
        if match is None or match["host"] != host or _running(int(match["pid"]), entry.path):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                os.remove(entry.path)
        except OSError:
            pass  # another save removed it first, or the folder forbids it: harmless either way


def _running(pid, path):
    if pid == os.getpid():
        return path in _liveTemps
    if pid <= 0:
        return True  # not a name this module writes: leave it alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _flush(path):
    """Put path's bytes on disk before the rename makes them the target's (else a power cut can
    leave the new name on an empty file)."""
    fd = os.open(path, os.O_RDWR)  # Windows flushes only a writable handle
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _flushFolder(folder):
    """Make the rename durable where the platform allows; best effort, the data is already safe."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _naming(e, filename, tmp):
    """e, re-made to name the save's target instead of its temporary file."""
    detail = e.strerror if e.errno is not None and e.strerror else str(e)
    if tmp is not None:
        detail = detail.replace(tmp, filename)
    if e.errno is not None:
        return OSError(e.errno, detail, filename)  # OSError picks the subclass from errno
    return OSError("cannot save %r: %s" % (filename, detail))
