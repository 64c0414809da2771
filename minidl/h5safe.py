"""Reading HDF5 files that may be hostile or damaged, for the weight and state loaders.

HDF5 can make a reader fetch bytes from places other than the file itself: soft and
external links, datasets stored in external raw files, and virtual datasets mapped onto
other files. A weights file is data, so none of that is followed here: every object is
reached through a hard link only, and a dataset must keep its own bytes in this file
(compact, contiguous or chunked layout). Nothing is read before its declared shape and
type are known, so a small file cannot demand a large allocation, and every libhdf5 or
h5py failure while reading is reported as a ``Malformed`` naming the HDF5 path.

What is accepted:
- links: hard links only (``child``); a soft, external or user-defined link is refused;
- datasets (``vetDataset``): no external storage, not virtual, the filters deflate (gzip),
  shuffle, fletcher32 and lzf only (the lossless ones h5py writes; scale-offset and n-bit
  can lose precision, and a plugin filter would load code chosen by the file);
- reads (``readArray``): the caller has matched shape and type; the values must have been
  written (a never-written dataset would read as its fill value); a chunk may be no larger than
  ``max(dataset, MAX_CHUNK_BYTES)``, and each stored chunk must be long enough for its filters
  (libhdf5 2.0 crashes on a fletcher32 chunk of under 4 bytes);
- values: the model's dtype exactly, in either byte order (``hasType``: the same IEEE format,
  only the order of its bytes differs, so the one lossless variant); ``readIndex``: one
  integer of any HDF5 integer type, so an index stored as 1.7 or "1" is refused, not rounded.

The functions take h5py's low-level identifiers (``h5py.File(...)["/"].id`` for the root
group): a load touches a few objects per parameter and the high-level wrappers cost several
times more. ``Malformed`` is internal: the loaders turn it into a ``LoadError`` that also names
the file and the model's key. A crash inside libhdf5 itself (a memory-safety bug in its
parser) cannot be caught here; load a file from an untrusted source in a subprocess.
"""

import contextlib
import functools
import math

import h5py
import numpy as np

# h5py's own chunk guess stays under 1 MiB; a chunk may exceed its dataset only when the
# dataset is resizable, which a weights file never needs.
MAX_CHUNK_BYTES = 4 << 20

_FILTERS = {h5py.h5z.FILTER_DEFLATE: "deflate", h5py.h5z.FILTER_SHUFFLE: "shuffle",
            h5py.h5z.FILTER_FLETCHER32: "fletcher32", h5py.h5z.FILTER_LZF: "lzf"}
_LAYOUTS = {h5py.h5d.COMPACT, h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED}
_KINDS = {h5py.h5g.GroupID: "a group", h5py.h5d.DatasetID: "a dataset"}


class Malformed(Exception):
    """A structure or value the loaders refuse; the message names the HDF5 path."""


@contextlib.contextmanager
def reading(where):
    """Turn any failure of h5py or libhdf5 inside the block into Malformed naming ``where``.

    A damaged file surfaces as OSError, KeyError, RuntimeError, ValueError, TypeError,
    OverflowError or MemoryError depending on which structure the damage hit, so everything
    but Malformed itself is caught; the original exception stays attached as __cause__."""
    try:
        yield
    except Malformed:
        raise
    except Exception as e:
        raise Malformed("%s cannot be read, the file is damaged (%s: %s)" % (where, type(e).__name__, e)) from e


def _text(raw):
    return raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else str(raw)


def child(group, name, path, kind):
    """The object ``group`` (a GroupID) holds under ``name`` through a hard link, or None if absent.

    ``path`` is the HDF5 path used in messages; ``kind`` is h5py.h5g.GroupID or
    h5py.h5d.DatasetID. Raises Malformed for a soft, external or user-defined link and for an
    object of another kind."""
    if not isinstance(name, str) or "/" in name or name in ("", "."):
        raise Malformed("%s: %r is not a key minidl writes" % (path, name))
    raw = name.encode("utf-8")
    with reading(path):
        try:
            linkType = group.links.get_info(raw).type  # this one link's record; follows nothing
        except Exception:  # absent (libhdf5 says so as RuntimeError or KeyError), or damaged
            if not group.links.exists(raw):
                return None
            raise
        if linkType == h5py.h5l.TYPE_SOFT:
            raise Malformed("%s is a soft link (to %r); minidl does not follow links inside weight files"
                            % (path, _text(group.links.get_val(raw))))
        if linkType == h5py.h5l.TYPE_EXTERNAL:
            filename, target = group.links.get_val(raw)
            raise Malformed("%s is an external link (to %r in file %r); minidl does not read other files"
                            % (path, _text(target), _text(filename)))
        if linkType != h5py.h5l.TYPE_HARD:
            raise Malformed("%s is a user-defined link (class %d); minidl follows hard links only" % (path, linkType))
        obj = h5py.h5o.open(group, raw)
    if not isinstance(obj, kind):
        found = _KINDS.get(type(obj), "a named datatype" if isinstance(obj, h5py.h5t.TypeID) else type(obj).__name__)
        raise Malformed("%s is %s, expected %s" % (path, found, _KINDS[kind]))
    return obj


def names(group, path):
    """The link names in ``group``, in storage order; a name that is not UTF-8 stays bytes."""
    out = []
    with reading(path):
        for raw in group:
            try:
                out.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                out.append(raw)
    return out


def shapeOf(ds, path):
    """The declared shape (a tuple), or None for a dataset with a null dataspace."""
    with reading(path):
        space = ds.get_space()
        if space.get_simple_extent_type() == h5py.h5s.NULL:
            return None
        return tuple(int(d) for d in space.get_simple_extent_dims())


def typeName(ds, path):
    """The stored type for messages: NumPy's name where h5py maps it, else the HDF5 class."""
    with reading(path):
        stored = ds.get_type()
        try:
            dtype = stored.dtype
        except Exception:  # a type h5py has no NumPy equivalent for (time, bitfield, ...)
            return "an HDF5 type of class %d" % stored.get_class()
        return "a string" if h5py.check_string_dtype(dtype) is not None else str(dtype)


@functools.lru_cache(maxsize=None)
def _fileTypes(dtype):
    """The HDF5 types of dtype in little- and big-endian order (built once per dtype)."""
    return tuple(h5py.h5t.py_create(dtype.newbyteorder(order)) for order in "<>")


def hasType(ds, dtype, path):
    """True when the stored type is exactly ``dtype``'s format, in either byte order."""
    with reading(path):
        stored = ds.get_type()
        return any(stored.equal(ref) for ref in _fileTypes(np.dtype(dtype)))


def vetDataset(ds, path):
    """Raise Malformed unless ``ds`` keeps its own bytes in this file, behind lossless filters
    (see the module doc). Reads metadata only."""
    with reading(path):
        dcpl = ds.get_create_plist()
        layout = dcpl.get_layout()
        if layout == h5py.h5d.VIRTUAL:
            raise Malformed("%s is a virtual dataset (its values come from other files); minidl refuses it" % path)
        if layout not in _LAYOUTS:
            raise Malformed("%s has an unknown storage layout (%d)" % (path, layout))
        count = dcpl.get_external_count()
        if count > 0:
            files = [_text(dcpl.get_external(i)[0]) for i in range(count)]
            raise Malformed("%s keeps its values in external file(s) %r; minidl reads only the weights file itself"
                            % (path, files))
        for i in range(dcpl.get_nfilters()):
            code, _, _, name = dcpl.get_filter(i)
            if code not in _FILTERS:
                raise Malformed("%s needs HDF5 filter %d (%s), which minidl does not read (allowed: %s)"
                                % (path, code, _text(name), ", ".join(sorted(_FILTERS.values()))))


def readArray(ds, shape, dtype, path):
    """Read ``ds`` into a new array of ``shape`` and native ``dtype``.

    The caller has passed ``vetDataset`` and found ``shapeOf``/``hasType`` equal to the
    destination's, so this allocates the destination's size, never the file's claim. It
    refuses a dataset whose values were never written (they would read as the fill value) and
    chunks that are oversized or stored too short (``_vetChunks``)."""
    out = np.empty(shape, np.dtype(dtype).newbyteorder("="))
    if out.size == 0:
        return out
    with reading(path):
        dcpl = ds.get_create_plist()
        if ds.get_space_status() != h5py.h5d.SPACE_STATUS_ALLOCATED:
            raise Malformed("%s has no stored values (never written; it would read as its fill value)" % path)
        if dcpl.get_layout() == h5py.h5d.CHUNKED:
            _vetChunks(ds, dcpl, out.nbytes, path)
        ds.read(h5py.h5s.ALL, h5py.h5s.ALL, out)  # libhdf5 converts byte order into out's
    return out


def _vetChunks(ds, dcpl, dataBytes, path):
    """Refuse chunks larger than max(dataBytes, MAX_CHUNK_BYTES) (reading one allocates it whole),
    and any stored chunk too short for the filters that will read it: libhdf5 2.0's fletcher32
    filter reads before the start of a chunk stored with fewer than 4 bytes and crashes the
    process, and a chunk stored without filters must hold the whole chunk."""
    chunkBytes = math.prod(dcpl.get_chunk()) * ds.get_type().get_size()  # Python ints: no overflow
    if chunkBytes > max(dataBytes, MAX_CHUNK_BYTES):
        raise Malformed("%s declares chunks of %d bytes for %d bytes of data" % (path, chunkBytes, dataBytes))
    codes = [dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())]

    def check(chunk):
        active = [code for i, code in enumerate(codes) if not chunk.filter_mask >> i & 1]
        least = 4 if h5py.h5z.FILTER_FLETCHER32 in active else 1
        if chunk.size < least or (not active and chunk.size != chunkBytes):
            raise Malformed("%s: the chunk at %s is stored in %d bytes, which cannot hold it; the file is damaged"
                            % (path, chunk.chunk_offset, chunk.size))

    if hasattr(ds, "chunk_iter"):  # h5py 3.8+ over libhdf5 1.14+: one pass over the chunk index
        ds.chunk_iter(check)
    else:
        for i in range(ds.get_num_chunks()):
            check(ds.get_chunk_info(i))


def readIndex(ds, path):
    """The one non-negative integer a ``links/<key>`` dataset holds (shape () or (1,)); a float,
    bool, string or array is refused rather than converted."""
    vetDataset(ds, path)
    shape = shapeOf(ds, path)
    if shape not in ((), (1,)):
        raise Malformed("%s holds %s, expected one integer" % (path, "no value" if shape is None else
                                                                 "an array of shape %s" % (shape,)))
    with reading(path):
        isInteger = ds.get_type().get_class() == h5py.h5t.INTEGER
    if not isInteger:
        raise Malformed("%s is stored as %s, expected an integer index" % (path, typeName(ds, path)))
    value = int(readArray(ds, shape, np.int64, path).reshape(()))  # libhdf5 converts any integer type
    if value < 0:
        raise Malformed("%s holds %d, expected a non-negative index" % (path, value))
    return value


MAX_STRING_BYTES = 16 << 20


def readScalar(ds, path, kind):
    """The one value a scalar dataset holds, as a Python value: kind "integer" (any HDF5 integer type),
    "real" (an integer or float type, as float) or "string" (fixed or variable length, UTF-8, at
    most MAX_STRING_BYTES). Anything else, a value never written, or a fixed-length string declared
    longer than the limit (reading it would allocate the declared length, whatever the file holds)
    raises Malformed; nothing is read before those checks."""
    vetDataset(ds, path)
    shape = shapeOf(ds, path)
    if shape != ():
        raise Malformed("%s holds %s, expected one value" % (path, "no value" if shape is None else
                                                           "an array of shape %s" % (shape,)))
    with reading(path):
        stored = ds.get_type()
        typeClass = stored.get_class()
        written = ds.get_space_status() == h5py.h5d.SPACE_STATUS_ALLOCATED
        isString = typeClass == h5py.h5t.STRING
        variable = isString and stored.is_variable_str()
        size = stored.get_size()
    wanted = {"integer": (h5py.h5t.INTEGER,), "real": (h5py.h5t.INTEGER, h5py.h5t.FLOAT),
              "string": (h5py.h5t.STRING,)}[kind]
    if typeClass not in wanted:
        raise Malformed("%s is stored as %s, expected %s" % (path, typeName(ds, path),
                                                            "a string" if kind == "string" else "a number"))
    if isString and not variable and size > MAX_STRING_BYTES:
        raise Malformed("%s declares a string of %d bytes, more than the %d allowed" % (path, size, MAX_STRING_BYTES))
    if not written:
        raise Malformed("%s has no stored value (never written; it would read as its fill value)" % path)
    if not isString:
        value = readArray(ds, (), np.int64 if kind == "integer" else np.float64, path).reshape(())
        return int(value) if kind == "integer" else float(value)
    with reading(path):
        value = h5py.Dataset(ds)[()]
    if isinstance(value, bytes):
        if len(value) > MAX_STRING_BYTES:
            raise Malformed("%s holds a string of %d bytes, more than the %d allowed" % (path, len(value),
                                                                                      MAX_STRING_BYTES))
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise Malformed("%s is not UTF-8 (%s)" % (path, e)) from None
    if len(value) > MAX_STRING_BYTES:
        raise Malformed("%s holds a string of %d characters, more than the %d allowed" % (path, len(value),
                                                                                       MAX_STRING_BYTES))
    return value
