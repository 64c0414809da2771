"""h5py save/load in PuzzleLib 1.0.x's layout.

A file holds:
- ``params/<k>``: one dataset per distinct Variable (a shared weight is stored once);
- ``links/<root>.<child>...<var>``: an integer scalar naming the params dataset;
- ``attrs/<root>.<child>...<attr>``: non-trainable state (batch-norm statistics);
- PuzzleLib also writes an empty group ``attrs.<container>`` per container; they
  are written here too and accepted on load.

``<root>`` is the root module's name ('' when unnamed, giving keys like
``.block1.W``, as PuzzleLib does). Loading matches keys with the root name
stripped, so weights saved from a model named ``net`` load into an unnamed
copy and vice versa.

Load reads and checks everything before writing anything: missing and
unexpected keys (tolerated with ``strict=False``), shape mismatches and unsafe
dtype casts (never tolerated) are all reported in one LoadError that names each
parameter with both shapes or dtypes, and the model is left untouched. Save
writes a temporary file in the destination folder and renames it over the
target, so a crash never leaves a half-written file.
"""

import io
import os
import tempfile

import h5py
import numpy as np

from minidl.errors import LoadError


def _rootName(module):
    return module.name if module.name is not None else ""


def _write(module, hdf, compress):
    root = _rootName(module)
    params, links = hdf.require_group("params"), hdf.require_group("links")
    index = {}
    for name, var in module.namedVars():
        if var not in index:
            index[var] = len(index)
            params.create_dataset(str(index[var]), data=var.data.get(), compression=compress)
        links.create_dataset("%s.%s" % (root, name), data=np.int64(index[var]))
    attrs = list(module.namedAttrs())
    if attrs:
        grp = hdf.require_group("attrs")
        for name, attr in attrs:
            grp.create_dataset("%s.%s" % (root, name), data=attr.get(), compression=compress)
    for cname in module.namedContainers():
        hdf.require_group("attrs." + (root if not cname else "%s.%s" % (root, cname)))


def writeH5(filename, writer):
    """Run writer(h5py.File) into filename atomically (temporary file + rename), or,
    with filename None, into memory and return the file's bytes."""
    if filename is None:
        buffer = io.BytesIO()
        with h5py.File(buffer, "w") as hdf:
            writer(hdf)
        return buffer.getvalue()

    filename = os.fspath(filename)
    folder = os.path.dirname(os.path.abspath(filename))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(filename), suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as hdf:
            writer(hdf)
        os.replace(tmp, filename)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return None


def save(module, filename=None, compress="gzip"):
    return writeH5(filename, lambda hdf: _write(module, hdf, compress))


def openH5(source):
    """(h5py.File, close?) for a path, bytes or an open h5py.File."""
    if isinstance(source, h5py.File):
        return source, False
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            return h5py.File(io.BytesIO(bytes(source)), "r"), True
        return h5py.File(os.fspath(source), "r"), True
    except (OSError, ValueError) as e:
        what = "bytes" if isinstance(source, (bytes, bytearray, memoryview)) else repr(os.fspath(source))
        raise LoadError("cannot load weights from %s: not a readable HDF5 file (%s)" % (what, e)) from None


def _stripRoot(key):
    """Drop the root module's name: 'net.block1.W' -> 'block1.W', '.W' -> 'W'."""
    return key.split(".", 1)[1] if "." in key else key


def _readTable(group):
    return {} if group is None else {_stripRoot(k): (k, group[k]) for k in group.keys()}


def load(module, source, strict=True):
    hdf, close = openH5(source)
    try:
        if "links" not in hdf or "params" not in hdf:
            raise LoadError("not a minidl/PuzzleLib weights file: groups 'params' and 'links' expected, found %s"
                            % sorted(hdf.keys()))
        links, params = _readTable(hdf["links"]), hdf["params"]
        attrsFile = _readTable(hdf["attrs"] if "attrs" in hdf else None)
        problems, writes = [], []

        def check(kind, name, target, stored, fileKey):
            value = np.asarray(stored[()])
            if value.shape != tuple(target.shape):
                problems.append("%s %r: shape mismatch, model has %s, file %r has %s"
                                % (kind, name, tuple(target.shape), fileKey, value.shape))
            elif not np.can_cast(value.dtype, target.dtype, "safe"):
                problems.append("%s %r: unsafe dtype cast, model has %s, file %r has %s"
                                % (kind, name, target.dtype, fileKey, value.dtype))
            else:
                writes.append((target, value.astype(target.dtype, copy=False)))

        modelVars = dict(module.namedVars())
        for name, var in modelVars.items():
            if name not in links:
                if strict:
                    problems.append("parameter %r: missing from the file" % name)
                continue
            fileKey, link = links[name]
            idx = str(int(link[()]))
            if idx not in params:
                problems.append("parameter %r: link %r points to params/%s, which does not exist" % (name, fileKey, idx))
                continue
            check("parameter", name, var.data, params[idx], fileKey)

        modelAttrs = dict(module.namedAttrs())
        for name, attr in modelAttrs.items():
            if name not in attrsFile:
                if strict:
                    problems.append("attribute %r: missing from the file" % name)
                continue
            fileKey, stored = attrsFile[name]
            check("attribute", name, attr, stored, fileKey)

        if strict:
            for name, (fileKey, _) in links.items():
                if name not in modelVars:
                    problems.append("parameter %r: unexpected key %r in the file" % (name, fileKey))
            for name, (fileKey, _) in attrsFile.items():
                if name not in modelAttrs:
                    problems.append("attribute %r: unexpected key %r in the file" % (name, fileKey))
            for key in hdf.keys():
                if key.startswith("attrs.") and len(hdf[key]) > 0:
                    problems.append("container attributes %r: unexpected non-empty group in the file" % key)

        if problems:
            raise LoadError("%s %r: cannot load weights, model left unchanged:\n  %s"
                            % (type(module).__name__, module.name, "\n  ".join(problems)))
    finally:
        if close:
            hdf.close()

    for target, value in writes:
        target.set(value)
