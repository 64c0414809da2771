"""Fuzz the weights loader: every generated file loads with the right values or raises LoadError.

Two seeded families of cases, from a generator of our own rather than hypothesis (one number
replays a whole run, and no shrinking is needed: each case is one small file):

- structural: a valid file written by hand with plain h5py in one of the accepted variants (root
  name, index order, index integer type and shape, compact/contiguous/chunked layout with
  gzip/lzf/shuffle/fletcher32, either byte order of float32, HDF5 format version, extra entries
  load ignores), then 0-3 edits drawn from a table of refused structures (storage outside the
  file, links, bad indices, wrong kinds, shapes and dtypes, unwritten data, lossy filters,
  oversized chunks, missing, unexpected and ambiguous keys). With no edit the load must succeed
  with exactly the written values; with any edit it must raise LoadError.
- bytes: the image of a valid file with bits flipped, bytes overwritten or the end cut off. The
  load must raise LoadError, or succeed with exactly the values a plain h5py read of the same
  damaged image gives: a flipped bit in unchecksummed float data cannot be detected, so the loader
  must then load what the file says, not a fill value or another file's bytes.

After every refused load the model must be byte-identical to before.

Size: up to MINIDL_FUZZ_CASES cases per family (default 1500) from seed MINIDL_FUZZ_SEED (default
0), stopping early once MINIDL_FUZZ_SECONDS (default 30) have passed in a family and at least 300
cases have run. A case costs about 4 ms on one core of the 2-core development machine (a load
checks every object it touches), so the default run is the whole 3000 cases in about 12 s; the time
limit only guards a slow or loaded machine, and the cases run are always a prefix of the same
seeded sequence.
A longer run, e.g. (about 40 s per 5000 cases per family here):
    MINIDL_FUZZ_CASES=50000 MINIDL_FUZZ_SECONDS=0 MINIDL_FUZZ_SEED=7 python -m pytest -q tests/test_load_fuzz.py
A failure names the family, seed and case index, and the files are generated from those alone.
A crash of libhdf5 itself would end the process: pytest's faulthandler prints where, and
MINIDL_FUZZ_SEED/MINIDL_FUZZ_CASES replay it. (One such crash, in libhdf5 2.0's fletcher32
filter on a chunk stored in under 4 bytes, was found this way; the loader now refuses such
chunks before reading, see test_load_security.py.)
"""

import io
import os
import time

import h5py
import numpy as np
import pytest

from minidl.containers import Sequential
from minidl.errors import LoadError
from minidl.modules import BatchNorm2D, Conv2D

CASES = int(os.environ.get("MINIDL_FUZZ_CASES", "1500"))
SECONDS = float(os.environ.get("MINIDL_FUZZ_SECONDS", "30"))
SEED = int(os.environ.get("MINIDL_FUZZ_SEED", "0"))
MIN_CASES = 300  # run at least these however slow the machine, so the default run always means something

# the smallest model with both tables and two parameter shapes: a load costs a few ms per dataset
VARS = ["c.W", "c.b"]
ATTRS = ["bn.mean", "bn.var"]
SHAPES = {"c.W": (2, 1, 1, 1), "c.b": (1, 2, 1, 1), "bn.mean": (1, 2, 1, 1), "bn.var": (1, 2, 1, 1)}


def _model():
    net = Sequential("net")
    net.append(Conv2D(1, 2, 1, name="c"))
    net.append(BatchNorm2D(2, affine=False, name="bn"))
    return net


def _values(rng):
    return {k: rng.standard_normal(SHAPES[k]).astype(np.float32) for k in VARS + ATTRS}


class _Harness:
    """One model reused for every case, reset to its baseline after each successful load."""

    def __init__(self):
        self.model = _model()
        self.targets = {n: v.data for n, v in self.model.namedVars()} | dict(self.model.namedAttrs())
        self.baseline = {n: t.get() for n, t in self.targets.items()}
        self.counts = {"loaded": 0, "refused": 0}

    def state(self):
        return {n: t.get().tobytes() for n, t in self.targets.items()}

    def load(self, image, strict, where):
        """True when the load succeeded; on LoadError checks the model is unchanged."""
        before = self.state()
        try:
            self.model.load(image, strict=strict)
        except LoadError:
            assert self.state() == before, "%s: a refused load changed the model" % where
            self.counts["refused"] += 1
            return False
        self.counts["loaded"] += 1
        return True

    def assertHolds(self, values, where):
        for name, target in self.targets.items():
            got = target.get()
            assert got.dtype == np.float32 and got.tobytes() == np.ascontiguousarray(values[name], "<f4").tobytes(), \
                "%s: %r loaded %s, expected %s" % (where, name, got.ravel(), np.ravel(values[name]))

    def reset(self):
        for name, target in self.targets.items():
            target.set(self.baseline[name])


def _cases(start):
    """Case numbers 0..CASES-1, stopping early once SECONDS have passed and MIN_CASES have run."""
    for case in range(CASES):
        if case >= MIN_CASES and SECONDS > 0 and time.perf_counter() - start > SECONDS:
            return
        yield case


def _report(family, harness, start, refusedShare):
    """Both outcomes must be common, or the generator has stopped exercising one of them."""
    total = harness.counts["loaded"] + harness.counts["refused"]
    print("%s fuzz: %d cases in %.1f s (seed %d): %s" % (family, total, time.perf_counter() - start, SEED,
                                                         harness.counts))
    assert harness.counts["loaded"] >= total // 10 and harness.counts["refused"] >= total * refusedShare, \
        harness.counts


# ---- structural family ----------------------------------------------------------------------

def _variant(rng):
    """One accepted way of writing the file: each choice here must load to the same values."""
    return {"root": ["net", "", "other"][rng.integers(3)], "order": [int(i) for i in rng.permutation(4)[:len(VARS)]],
            "indexType": ["<i8", "<i4", "|u1", ">u8", ">i2"][rng.integers(5)],
            "indexShape": [(), (1,)][rng.integers(2)],
            "compression": [None, "gzip", "lzf"][rng.integers(3)], "shuffle": bool(rng.integers(2)),
            "fletcher32": bool(rng.integers(2)), "byteOrder": "<>"[rng.integers(2)],
            "libver": ["earliest", "latest"][rng.integers(2)], "extras": bool(rng.integers(2)),
            "compact": bool(rng.integers(2))}


class _Paths:
    """Where a variant put each key: params/<i>, links/<root>.<key>, attrs/<root>.<key>."""

    def __init__(self, variant):
        self.root, self.order = variant["root"], variant["order"]

    def param(self, key):
        return "params/%d" % self.order[VARS.index(key)]

    def link(self, key):
        return "links/%s.%s" % (self.root, key)

    def attr(self, key):
        return "attrs/%s.%s" % (self.root, key)


def _writeVariant(hdf, values, variant):
    paths = _Paths(variant)
    opts = {}
    if variant["compression"] or variant["shuffle"] or variant["fletcher32"]:
        opts = {"compression": variant["compression"], "shuffle": variant["shuffle"],
                "fletcher32": variant["fletcher32"], "chunks": True}
    elif variant["compact"]:  # values kept in the object header itself
        opts = {"dcpl": h5py.h5p.create(h5py.h5p.DATASET_CREATE)}
        opts["dcpl"].set_layout(h5py.h5d.COMPACT)
    dtype = np.dtype(variant["byteOrder"] + "f4")
    for key in VARS:
        hdf.create_dataset(paths.param(key), data=values[key].astype(dtype), **opts)
        hdf.create_dataset(paths.link(key), data=np.array(paths.order[VARS.index(key)], variant["indexType"])
                           .reshape(variant["indexShape"]))
    for key in ATTRS:
        hdf.create_dataset(paths.attr(key), data=values[key].astype(dtype), **opts)
    hdf.create_group("attrs." + paths.root)
    if variant["extras"]:  # everything here is ignored by load, whatever it holds
        for unused in sorted(set(range(4)) - set(paths.order)):  # indices no link names, of no model shape
            hdf["params/%d" % unused] = np.zeros(5, np.float32)
        hdf["params/17"] = h5py.SoftLink("/nowhere")
        hdf["params"].create_dataset("18", shape=(1 << 30,), dtype="f8", chunks=(1024,), maxshape=(None,))
        hdf["notes"] = "trained on digits"
        hdf.create_group("attrs.%s.empty" % paths.root)
        hdf[paths.param("c.W")].attrs["comment"] = "HDF5 attributes are not read"


def _anyDataset(rng, paths):
    kind = rng.integers(3)
    if kind == 0:
        key = VARS[rng.integers(len(VARS))]
        return paths.param(key), SHAPES[key]
    if kind == 1:
        key = ATTRS[rng.integers(len(ATTRS))]
        return paths.attr(key), SHAPES[key]
    key = VARS[rng.integers(len(VARS))]
    return paths.link(key), ()


def _remove(hdf, path):
    """Delete the link at path if there is one (an earlier edit may have removed it)."""
    if hdf.get(path, getlink=True) is not None:
        del hdf[path]


def _swap(hdf, path, **kwargs):
    """Replace the object at path: with kwargs for create_dataset, or a value/link via 'value'."""
    _remove(hdf, path)
    if "value" in kwargs:
        hdf[path] = kwargs["value"]
    else:
        hdf.create_dataset(path, **kwargs)


def _editExternalStorage(hdf, rng, paths, env):
    path, shape = _anyDataset(rng, paths)
    dtype = "f4" if shape else "u1"
    _swap(hdf, path, shape=shape or (1,), dtype=dtype, external=[(env["secret"], 0, 12 * 4)])


def _editSoftLink(hdf, rng, paths, env):
    path, shape = _anyDataset(rng, paths)
    copy = "/copies/%d" % rng.integers(1 << 30)
    hdf[copy] = np.zeros(shape, "f4") if shape else np.int64(0)  # a fitting target: only the link is wrong
    _swap(hdf, path, value=h5py.SoftLink([copy, "/nowhere", "/" + path][rng.integers(3)]))


def _editExternalLink(hdf, rng, paths, env):
    path, _ = _anyDataset(rng, paths)
    _swap(hdf, path, value=h5py.ExternalLink(env["twin"], "/" + path.replace(paths.root + ".", "net.", 1)))


def _editVirtual(hdf, rng, paths, env):
    key = VARS[rng.integers(len(VARS))]
    layout = h5py.VirtualLayout(shape=SHAPES[key], dtype="f4")
    source = env["twin"] if rng.integers(2) else env["missing"]
    layout[...] = h5py.VirtualSource(source, "params/%d" % VARS.index(key), shape=SHAPES[key])
    _remove(hdf, paths.param(key))
    hdf.create_virtual_dataset(paths.param(key), layout, fillvalue=float(rng.integers(10)))


def _editIndex(hdf, rng, paths, env):
    key = VARS[rng.integers(len(VARS))]
    good = paths.order[VARS.index(key)]
    bad = [good + 0.5, float(good), str(good), bool(good), np.array([good, good]), -1 - good, 50,
           np.array([[good]])][rng.integers(8)]
    _swap(hdf, paths.link(key), value=bad)


def _editCrossShape(hdf, rng, paths, env):
    """c.W's link points at c.b's dataset or the other way round: the shapes differ."""
    a, b = ("c.W", "c.b") if rng.integers(2) else ("c.b", "c.W")
    _swap(hdf, paths.link(a), value=np.int64(paths.order[VARS.index(b)]))


def _editKind(hdf, rng, paths, env):
    path, _ = _anyDataset(rng, paths)
    if rng.integers(2):
        _remove(hdf, path)
        hdf.create_group(path)
    else:
        _swap(hdf, path, value=np.dtype("f4"))


def _editShape(hdf, rng, paths, env):
    path, shape = _anyDataset(rng, paths)
    if not shape:
        shape = (1,)
    choice = rng.integers(4)
    if choice == 0:
        _swap(hdf, path, value=h5py.Empty("f4"))
        return
    if choice == 1:
        new = tuple(int(d) for d in shape) + (1,)
    elif choice == 2:
        new = tuple(int(d) + 1 if i == rng.integers(len(shape)) else int(d) for i, d in enumerate(shape))
        new = new if new != shape else (shape[0] + 1,) + shape[1:]
    else:
        new = (int(1 << rng.integers(20, 40)),) + shape[1:]
    # resizable, so the chunk index grows with the chunks written instead of being laid out whole
    ds = hdf.create_dataset(path + "_", shape=new, dtype="f4" if "links" not in path else "i8",
                            chunks=(1,) * len(new), maxshape=(None,) * len(new))
    ds[(0,) * len(new)] = 1
    _swap(hdf, path, value=ds)
    del hdf[path + "_"]


def _editDtype(hdf, rng, paths, env):
    path, shape = _anyDataset(rng, paths)
    if not shape:
        return _editIndex(hdf, rng, paths, env)
    dtype = ["f2", "f8", "i1", "u1", "i4", "?", "c8", "<i4", "S4"][rng.integers(9)]
    _swap(hdf, path, value=np.zeros(shape, dtype))


def _editUnwritten(hdf, rng, paths, env):
    path, shape = _anyDataset(rng, paths)
    kwargs = {"chunks": (1,) * len(shape)} if shape and rng.integers(2) else {}
    _swap(hdf, path, shape=shape or (1,), dtype="f4" if shape else "i8", fillvalue=int(rng.integers(3)), **kwargs)


def _editFilter(hdf, rng, paths, env):
    path, shape = _anyDataset(rng, paths)
    shape = shape or (1,)
    dtype = "f4" if "links" not in path else "i8"
    if rng.integers(2):
        _swap(hdf, path, data=np.ones(shape, dtype), scaleoffset=2 if dtype == "f4" else 0)
    else:  # a chunk of 32 MB or more for a few bytes (left unwritten: writing it would take a while)
        _swap(hdf, path, shape=shape, dtype=dtype, maxshape=(None,) + shape[1:], chunks=(1 << 22,) + shape[1:])


def _editGroup(hdf, rng, paths, env):
    name = ["links", "params", "attrs"][rng.integers(3)]
    choice = rng.integers(3)
    moved = "%s_moved%d" % (name, rng.integers(1 << 30))  # a second group edit may move it again
    if choice == 0:
        _swap(hdf, name, value=np.arange(3))
    elif choice == 1:
        hdf.move(name, moved)
        hdf[name] = h5py.SoftLink("/" + moved)
    else:
        hdf.move(name, moved)
        hdf[name] = h5py.ExternalLink(env["twin"], "/" + name)


def _editAmbiguous(hdf, rng, paths, env):
    """Two more keys for one model key under other roots (two, since an edit may have removed the first)."""
    key = VARS[rng.integers(len(VARS))]
    for root in ("yy", "zz"):
        _swap(hdf, "links/%s.%s" % (root, key), value=np.int64(paths.order[VARS.index(key)]))


def _editMissing(hdf, rng, paths, env):
    path, _ = _anyDataset(rng, paths)
    _remove(hdf, path if not path.startswith("params") else paths.link(VARS[rng.integers(len(VARS))]))


def _editUnexpected(hdf, rng, paths, env):
    choice = rng.integers(3)
    if choice == 0:
        _swap(hdf, "links/%s.zz.W" % paths.root, value=np.int64(0))
    elif choice == 1:
        _swap(hdf, "attrs/%s.zz.mean" % paths.root, value=np.zeros((1, 3, 1, 1), np.float32))
    else:
        _swap(hdf, "attrs.%s/x" % paths.root, value=1)
        name = paths.root.encode() + b".\xff"  # not UTF-8
        if rng.integers(2) and name not in list(hdf["links"]):
            hdf["links"].create_dataset(name, data=0)


EDITS = [_editExternalStorage, _editSoftLink, _editExternalLink, _editVirtual, _editIndex, _editCrossShape,
         _editKind, _editShape, _editDtype, _editUnwritten, _editFilter, _editGroup, _editAmbiguous]
STRICT_ONLY = [_editMissing, _editUnexpected]


def _image(variant, values):
    buffer = io.BytesIO()
    with h5py.File(buffer, "w", libver=(variant["libver"], "latest")) as hdf:
        _writeVariant(hdf, values, variant)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bases():
    """Valid files in 48 seeded variants, written once: a case edits a copy of one."""
    rng = np.random.default_rng([SEED, 0])
    out = []
    for _ in range(48):
        values, variant = _values(rng), _variant(rng)
        out.append((_image(variant, values), values, variant))
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """What refused edits point at: raw bytes, a valid weights file (the twin), a missing file."""
    folder = tmp_path_factory.mktemp("fuzz")
    secret = folder / "secret.bin"
    secret.write_bytes(np.arange(64, dtype=np.float32).tobytes())
    twin = folder / "twin.h5"
    twinVariant = _variant(np.random.default_rng(99)) | {"root": "net", "order": list(range(len(VARS))),
                                                         "extras": False}
    twin.write_bytes(_image(twinVariant, _values(np.random.default_rng(99))))
    return {"secret": str(secret), "twin": str(twin), "missing": str(folder / "missing.h5")}


def _structuralCase(rng, bases, env):
    image, values, variant = bases[rng.integers(len(bases))]
    strict = bool(rng.integers(4))
    pool = EDITS + (STRICT_ONLY if strict else [])
    edits = [pool[i] for i in rng.integers(len(pool), size=[0, 0, 1, 1, 1, 2, 3][rng.integers(7)])]
    # an edit that turns /links, /params or /attrs into a link goes last: an edit after it would
    # write through that link, perhaps into the shared twin file
    edits.sort(key=lambda edit: edit is _editGroup)
    if edits:
        buffer = io.BytesIO(image)
        with h5py.File(buffer, "r+") as hdf:
            for edit in edits:
                edit(hdf, rng, _Paths(variant), env)
        image = buffer.getvalue()
    return image, values, strict, [e.__name__ for e in edits]


def test_fuzz_structure(backend, bases, env):
    rng = np.random.default_rng([SEED, 1])
    harness = _Harness()
    start = time.perf_counter()
    for case in _cases(start):
        image, values, strict, edits = _structuralCase(rng, bases, env)
        where = "structural case %d (MINIDL_FUZZ_SEED=%d, edits %s, strict=%s)" % (case, SEED, edits, strict)
        if harness.load(image, strict, where):
            assert not edits, "%s: loaded a file it must refuse" % where
            harness.assertHolds(values, where)
            harness.reset()
        else:
            assert edits, "%s: refused a valid file" % where
    _report("structural", harness, start, refusedShare=0.5)


# ---- bytes family ---------------------------------------------------------------------------

def _plainRead(image, baseline):
    """What plain h5py reads for each key from image: the independent oracle for a successful load.

    A key is found by its name after the root's (a damaged root name does not matter: load
    ignores the root); with baseline given (a lenient load), a key that is not found keeps the
    model's baseline value."""
    out = {}
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)  # libhdf5's own in-memory driver, as load uses for bytes
    fapl.set_fapl_core(backing_store=False)
    fapl.set_file_image(image)
    with h5py.File(h5py.h5f.open(b"oracle", h5py.h5f.ACC_RDONLY, fapl=fapl)) as hdf:
        for group, keys in (("links", VARS), ("attrs", ATTRS)):
            stored = {}
            for name in (hdf[group] if group in hdf or baseline is None else []):
                if isinstance(name, str):  # h5py gives a name that is not UTF-8 as bytes: no key's
                    stored.setdefault(name.partition(".")[2] if "." in name else name, []).append(name)
            for key in keys:
                found = stored.get(key, [])
                if not found and baseline is not None:
                    out[key] = baseline[key]
                    continue
                (name,) = found
                if group == "links":
                    index = int(np.asarray(hdf["links"][name][()]).reshape(()))
                    out[key] = np.asarray(hdf["params/%d" % index][()])
                else:
                    out[key] = np.asarray(hdf["attrs"][name][()])
    return out


def _damage(rng, image):
    data = bytearray(image)
    kind = rng.integers(5)
    if kind == 0:  # a few flipped bits anywhere
        for _ in range(1 + rng.integers(4)):
            data[rng.integers(len(data))] ^= 1 << int(rng.integers(8))
    elif kind == 1:  # flipped bits among the superblock and root structures
        for _ in range(1 + rng.integers(3)):
            data[rng.integers(min(len(data), 2048))] ^= 1 << int(rng.integers(8))
    elif kind == 2:  # a run of bytes overwritten
        at, size = rng.integers(len(data)), 1 + rng.integers(8)
        data[at:at + size] = bytes([int(rng.choice([0, 255, rng.integers(256)]))]) * len(data[at:at + size])
    elif kind == 3:  # an 8-byte field (a size, address or dimension) made huge
        at = 8 * rng.integers(len(data) // 8)
        data[at:at + 8] = int(rng.integers(1 << 62)).to_bytes(8, "little")
    else:  # cut off
        del data[rng.integers(len(data)):]
    return bytes(data)


def test_fuzz_bytes(backend, bases):
    rng = np.random.default_rng([SEED, 2])
    harness = _Harness()
    start = time.perf_counter()
    for case in _cases(start):
        base = bases[rng.integers(len(bases))][0]
        image = _damage(rng, base)
        strict = bool(rng.integers(4))
        where = "bytes case %d (MINIDL_FUZZ_SEED=%d, strict=%s)" % (case, SEED, strict)
        if harness.load(image, strict, where):
            try:
                want = _plainRead(image, None if strict else harness.baseline)
            except Exception as e:
                pytest.fail("%s: loaded a file plain h5py cannot read (%s: %s)" % (where, type(e).__name__, e))
            harness.assertHolds(want, where)
            harness.reset()
    _report("bytes", harness, start, refusedShare=0.1)
