"""h5py save/load in PuzzleLib 1.0.x's layout.

A file holds:
- ``params/<k>``: one dataset per distinct Variable (a shared weight is stored once);
- ``links/<root>.<child>...<var>``: an integer scalar naming the params dataset;
- ``attrs/<root>.<child>...<attr>``: non-trainable state (batch-norm statistics);
- PuzzleLib also writes an empty group ``attrs.<container>`` per container; they
  are written here too and accepted on load;
- ``blueprint`` (optional): the architecture as JSON text (minidl/blueprint.py),
  read by ``minidl.load`` and ignored by ``Module.load``.

``<root>`` is the root module's name ('' when unnamed, giving keys like
``.block1.W``, as PuzzleLib does). Loading matches keys with the root name
stripped, so weights saved from a model named ``net`` load into an unnamed
copy and vice versa.

Load treats the file as data that may be hostile or damaged (minidl/h5safe.py):
objects are reached through hard links only (soft and external links are
refused), a dataset must hold its own bytes (external raw storage and virtual
datasets are refused), and nothing is read before its declared shape and dtype
are found equal to the model's, so a small file cannot demand a large
allocation. A value loads only in the model's dtype, float32, in either byte
order; float16, float64, integers and bools are refused rather than cast. Every
problem (missing or unexpected keys, tolerated with ``strict=False``; shape or
dtype mismatches; refused or damaged structures, never tolerated) goes into one
LoadError that names the file, the model's key and the file's key. Load reads
and checks everything before writing anything, so a failed load leaves the
model exactly as it was.

Save replaces the target atomically and changes nothing else about it: an
existing file keeps its permission bits, a symbolic link is written through, a
missing folder is refused and errors name the target; minidl/filesave.py states
the whole contract.
"""

import io
import os
import secrets

import h5py
import numpy as np

from minidl import filesave, h5safe
from minidl.errors import LoadError
from minidl.h5safe import Malformed


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


# ---- saving ---------------------------------------------------------------------------------------

def writeH5(filename, writer):
    """Run writer(h5py.File) into filename, replacing it atomically (minidl/filesave.py), or,
    with filename None, into memory and return the file's bytes."""
    if filename is None:
        buffer = io.BytesIO()
        with h5py.File(buffer, "w") as hdf:
            writer(hdf)
        return buffer.getvalue()

    def write(tmp):
        with h5py.File(tmp, "w") as hdf:
            writer(hdf)
    filesave.replace(filename, write)
    return None


def save(module, filename=None, compress="gzip", withBlueprint=None):
    """Write module's weights to filename (see the module doc), or return the file as bytes; with
    the model's blueprint as the dataset ``blueprint`` where withBlueprint asks (Module.save)."""
    from minidl import blueprint   # it imports the layers, which import this module
    text = blueprint.dumps(module, required=withBlueprint) if withBlueprint is not False else None

    def writer(hdf):
        _write(module, hdf, compress)
        if text is not None:
            hdf.create_dataset("blueprint", data=text, dtype=h5py.string_dtype("utf-8"))
    return writeH5(filename, writer)


# ---- loading --------------------------------------------------------------------------------------

def openH5(source):
    """(h5py.File, close?) for a path, bytes or an open h5py.File; LoadError when it is not HDF5."""
    if isinstance(source, h5py.File):
        return source, False
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            return h5py.File(_openImage(bytes(source))), True
        return h5py.File(os.fspath(source), "r"), True
    except Exception as e:  # damage shows as OSError, ValueError, OverflowError, ... from libhdf5 or h5py
        raise LoadError("cannot load weights from %s: not a readable HDF5 file (%s)" % (describe(source), e)) from None


def _openImage(data):
    """Open bytes as a read-only in-memory HDF5 file (libhdf5's core driver: no Python callbacks
    per read). libhdf5 takes two open files of the same name for one, so each gets its own."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_fapl_core(backing_store=False)
    fapl.set_file_image(data)
    return h5py.h5f.open(("<minidl bytes %s>" % secrets.token_hex(8)).encode(), h5py.h5f.ACC_RDONLY, fapl=fapl)


def describe(source):
    """How messages name a load's source: the path in quotes, 'bytes', or an open file's name."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "bytes"
    if isinstance(source, h5py.File):
        try:
            return repr(source.filename)
        except Exception:
            return "an open h5py.File"
    return repr(os.fspath(source))


def load(module, source, strict=True):
    """Load weights from a path, bytes or an open h5py.File into module (see the module doc).

    Raises LoadError naming the file, and each model key with its file key, for every problem
    found; the model is then unchanged. A caller's open file is left open."""
    hdf, close = openH5(source)
    try:
        try:
            writes, problems = _readChecked(module, hdf, strict)
        except Malformed as e:
            writes, problems = [], [str(e)]
    finally:
        if close:
            try:
                hdf.close()
            except Exception:
                pass  # closing a damaged read-only file can fail; nothing was written to it
    if problems:
        raise LoadError("%s %r: cannot load weights from %s, model left unchanged:\n  %s"
                        % (type(module).__name__, module.name, describe(source), "\n  ".join(problems)))
    for target, value in writes:
        target.set(value)


def _stripRoot(key):
    """Drop the root module's name: 'net.block1.W' -> 'block1.W', '.W' -> 'W'."""
    return key.split(".", 1)[1] if "." in key else key


def _table(group, path, wanted, strict, problems):
    """{model key: file key} for the links or attrs group. Two file keys for one model key (their
    roots differ) are a problem where that key is wanted or loading is strict; so is, when strict,
    a name that is not UTF-8."""
    table = {}
    for key in h5safe.names(group, path):
        if not isinstance(key, str):
            if strict:
                problems.append("unexpected key %r in %s (not UTF-8)" % (key, path))
            continue
        name = _stripRoot(key)
        if name in table:
            if strict or name in wanted:
                problems.append("file keys %r and %r in %s both name %r" % (table[name], key, path, name))
            continue
        table[name] = key
    return table


def _readChecked(module, hdf, strict):
    """([(device array, value to set)], [problems]) for loading hdf into module; writes nothing."""
    GROUP, DATASET = h5py.h5g.GroupID, h5py.h5d.DatasetID
    with h5safe.reading("/"):
        root = hdf["/"].id
    params = h5safe.child(root, "params", "/params", GROUP)
    links = h5safe.child(root, "links", "/links", GROUP)
    if params is None or links is None:
        raise Malformed("not a minidl/PuzzleLib weights file: groups 'params' and 'links' expected, found %s"
                        % sorted(h5safe.names(root, "/"), key=str))
    attrs = h5safe.child(root, "attrs", "/attrs", GROUP)
    problems, writes = [], []
    modelVars, modelAttrs = dict(module.namedVars()), dict(module.namedAttrs())
    linkKeys = _table(links, "/links", modelVars, strict, problems)
    attrKeys = _table(attrs, "/attrs", modelAttrs, strict, problems) if attrs is not None else {}

    for name, var in modelVars.items():
        if name not in linkKeys:
            if strict:
                problems.append("parameter %r: missing from the file" % name)
            continue
        fileKey = linkKeys[name]
        try:
            link = _present(h5safe.child(links, fileKey, "links/" + fileKey, DATASET), "links/" + fileKey)
            idx = h5safe.readIndex(link, "links/" + fileKey)
            stored = h5safe.child(params, str(idx), "params/%d" % idx, DATASET)
            if stored is None:
                problems.append("parameter %r: link %r points to params/%d, which does not exist"
                                % (name, fileKey, idx))
                continue
            _check("parameter", name, var.data, stored, fileKey, "params/%d" % idx, problems, writes)
        except Malformed as e:
            problems.append("parameter %r (file key %r): %s" % (name, fileKey, e))

    for name, attr in modelAttrs.items():
        if name not in attrKeys:
            if strict:
                problems.append("attribute %r: missing from the file" % name)
            continue
        fileKey = attrKeys[name]
        try:
            stored = _present(h5safe.child(attrs, fileKey, "attrs/" + fileKey, DATASET), "attrs/" + fileKey)
            _check("attribute", name, attr, stored, fileKey, "attrs/" + fileKey, problems, writes)
        except Malformed as e:
            problems.append("attribute %r (file key %r): %s" % (name, fileKey, e))

    if strict:
        for name, fileKey in linkKeys.items():
            if name not in modelVars:
                problems.append("parameter %r: unexpected key %r in the file" % (name, fileKey))
        for name, fileKey in attrKeys.items():
            if name not in modelAttrs:
                problems.append("attribute %r: unexpected key %r in the file" % (name, fileKey))
        for key in h5safe.names(root, "/"):
            if isinstance(key, str) and key.startswith("attrs."):
                try:
                    group = h5safe.child(root, key, "/" + key, GROUP)
                    if group is not None and h5safe.names(group, "/" + key):
                        problems.append("container attributes %r: unexpected non-empty group in the file" % key)
                except Malformed as e:
                    problems.append("container attributes %r: %s" % (key, e))
    return writes, problems


def _present(obj, path):
    if obj is None:  # listed by the group, yet not there: the group's index is damaged
        raise Malformed("%s is listed but cannot be found, the file is damaged" % path)
    return obj


def _check(kind, name, target, stored, fileKey, path, problems, writes):
    """Queue stored's value for target, or record why not; reads only after every check passed."""
    h5safe.vetDataset(stored, path)
    shape = h5safe.shapeOf(stored, path)
    if shape != tuple(target.shape):
        problems.append("%s %r: shape mismatch, model has %s, file %r has %s"
                        % (kind, name, tuple(target.shape), fileKey, "no dataspace" if shape is None else shape))
    elif not h5safe.hasType(stored, target.dtype, path):
        problems.append("%s %r: dtype mismatch, model has %s, file %r has %s (only %s loads; convert the file "
                        "to change precision)" % (kind, name, target.dtype, fileKey, h5safe.typeName(stored, path),
                                                  target.dtype))
    else:
        writes.append((target, h5safe.readArray(stored, shape, target.dtype, path)))
