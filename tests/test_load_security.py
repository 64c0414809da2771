"""Loading refuses what a weights file must not make minidl do, with a LoadError naming file and key.

Each case writes, with plain h5py (not minidl's save), a file that is valid but for one thing:
storage outside the file (external raw storage, external and soft links, virtual datasets), a
declared size far beyond the model's, a malformed structure, flipped bytes, or a dtype other than
float32. Every load must raise LoadError that names the file, the model's key and the file's key,
and must leave the model byte-identical. Cases follow items 2-4 of the issue "Reliability and
security".
"""

import io
import os
import re

import h5py
import numpy as np
import pytest

from minidl.containers import Sequential
from minidl.errors import LoadError
from minidl.modules import BatchNorm2D, Conv2D

VARS = ["c.W", "c.b", "bn.scale", "bn.bias"]
ATTRS = ["bn.mean", "bn.var"]
SECRET = bytes(range(256)) * 4


def _model():
    net = Sequential("net")
    net.append(Conv2D(2, 3, 1, name="c"))
    net.append(BatchNorm2D(3, name="bn"))
    return net


def _reference():
    """The values a valid file holds, distinct from a fresh model's."""
    rng = np.random.default_rng(11)
    shapes = {"c.W": (3, 2, 1, 1)}
    return {k: rng.standard_normal(shapes.get(k, (1, 3, 1, 1))).astype(np.float32) for k in VARS + ATTRS}


def _writeValid(hdf, values):
    """PuzzleLib's layout written by hand: params/<i>, links/net.<key> = i, attrs/net.<key>, attrs.net."""
    params, links, attrs = hdf.create_group("params"), hdf.create_group("links"), hdf.create_group("attrs")
    for i, key in enumerate(VARS):
        params.create_dataset(str(i), data=values[key])
        links["net." + key] = np.int64(i)
    for key in ATTRS:
        attrs.create_dataset("net." + key, data=values[key])
    hdf.create_group("attrs.net")


def _file(tmp_path, edit, name="w.h5"):
    path = tmp_path / name
    with h5py.File(path, "w") as hdf:
        _writeValid(hdf, _reference())
        edit(hdf, tmp_path)
    return str(path)


def _snapshot(module):
    return {n: v.data.get().tobytes() for n, v in module.namedVars()} | \
           {n: a.get().tobytes() for n, a in module.namedAttrs()}


def _refused(module, source, pattern, strict=True):
    """Load must raise LoadError naming the source and matching pattern; the model stays byte-identical."""
    before = _snapshot(module)
    with pytest.raises(LoadError) as info:
        module.load(source, strict=strict)
    msg = str(info.value)
    where = "bytes" if isinstance(source, bytes) else repr(source)
    assert msg.startswith("%s %r: cannot load weights from %s, model left unchanged:" % (
        type(module).__name__, module.name, where)), msg
    assert re.search(pattern, msg), "%r not in\n%s" % (pattern, msg)
    assert _snapshot(module) == before, "a failed load changed the model"
    return msg


def _secret(tmp_path):
    path = tmp_path / "secret.bin"
    path.write_bytes(SECRET)
    return str(path)


def _other(tmp_path):
    """A second, valid HDF5 file a link or a virtual dataset could point into."""
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as hdf:
        _writeValid(hdf, _reference())
        hdf["x"] = _reference()["c.W"]
    return str(path)


def _replace(hdf, path, **kw):
    del hdf[path]
    hdf.create_dataset(path, **kw)


def _set(hdf, path, value):
    del hdf[path]
    hdf[path] = value


def _virtual(tmp_path, sourceFile):
    layout = h5py.VirtualLayout(shape=(3, 2, 1, 1), dtype="f4")
    layout[...] = h5py.VirtualSource(sourceFile, "x", shape=(3, 2, 1, 1))
    return layout


def _addVirtual(hdf, layout):
    del hdf["params/0"]
    hdf["params"].create_virtual_dataset("0", layout, fillvalue=7)


# ---- item 2: nothing outside the file ---------------------------------------------------------

def test_external_storage_of_a_system_file_is_refused(backend, tmp_path):
    """The issue's reproduction: params/<k> stored in an external raw file loaded that file's bytes."""
    secret = _secret(tmp_path)
    path = tmp_path / "ext.h5"
    with h5py.File(path, "w") as hdf:
        hdf.create_group("params").create_dataset("0", shape=(64, 5, 1, 1), dtype="u1", external=[(secret, 0, 320)])
        hdf.create_group("links")["c.W"] = 0
    conv = Conv2D(5, 64, 1, useBias=False, name="c")
    _refused(conv, str(path), r"parameter 'W' \(file key 'c.W'\): params/0 keeps its values in external file\(s\) "
                              r"\['.*secret.bin'\]; minidl reads only the weights file itself")


REFUSED = {
    # id: (edit(hdf, tmp_path), pattern, refused also with strict=False)
    "external_storage_f32": (
        lambda h, t: _replace(h, "params/0", shape=(3, 2, 1, 1), dtype="f4", external=[(_secret(t), 0, 24)]),
        r"parameter 'c.W' \(file key 'net.c.W'\): params/0 keeps its values in external file", True),
    "external_storage_attr": (
        lambda h, t: _replace(h, "attrs/net.bn.mean", shape=(1, 3, 1, 1), dtype="f4", external=[(_secret(t), 0, 12)]),
        r"attribute 'bn.mean' \(file key 'net.bn.mean'\): attrs/net.bn.mean keeps its values in external", True),
    "external_storage_index": (
        lambda h, t: _replace(h, "links/net.c.b", shape=(1,), dtype="u1", external=[(_secret(t), 1, 1)]),
        r"parameter 'c.b' \(file key 'net.c.b'\): links/net.c.b keeps its values in external", True),
    "external_link_param": (
        lambda h, t: _set(h, "params/0", h5py.ExternalLink(_other(t), "/x")),
        r"parameter 'c.W' \(file key 'net.c.W'\): params/0 is an external link \(to '/x' in file '.*other.h5'\)",
        True),
    "external_link_group": (
        lambda h, t: _set(h, "params", h5py.ExternalLink(_other(t), "/params")),
        r"/params is an external link", True),
    "soft_link_param": (
        lambda h, t: (h["params"].create_dataset("9", data=_reference()["c.W"]),
                      _set(h, "params/0", h5py.SoftLink("/params/9"))),
        r"parameter 'c.W' \(file key 'net.c.W'\): params/0 is a soft link \(to '/params/9'\)", True),
    "soft_link_index": (
        lambda h, t: _set(h, "links/net.c.b", h5py.SoftLink("/links/net.bn.bias")),
        r"parameter 'c.b' \(file key 'net.c.b'\): links/net.c.b is a soft link", True),
    "dangling_soft_link": (
        lambda h, t: _set(h, "params/0", h5py.SoftLink("/nowhere")),
        r"params/0 is a soft link \(to '/nowhere'\)", True),
    "looping_soft_links": (
        lambda h, t: (_set(h, "params/0", h5py.SoftLink("/params/loop")),
                      h["params"].__setitem__("loop", h5py.SoftLink("/params/0"))),
        r"params/0 is a soft link \(to '/params/loop'\)", True),
    "soft_link_group": (
        lambda h, t: (h.move("links", "realLinks"), h.__setitem__("links", h5py.SoftLink("/realLinks"))),
        r"/links is a soft link", True),
    "virtual_missing_source": (
        lambda h, t: _addVirtual(h, _virtual(t, str(t / "missing.h5"))),
        r"parameter 'c.W' \(file key 'net.c.W'\): params/0 is a virtual dataset", True),
    "virtual_present_source": (
        lambda h, t: _addVirtual(h, _virtual(t, _other(t))),
        r"params/0 is a virtual dataset", True),
    # ---- item 4: malformed structure --------------------------------------------------------
    "index_as_string": (
        lambda h, t: _set(h, "links/net.c.b", "1"),
        r"parameter 'c.b' \(file key 'net.c.b'\): links/net.c.b is stored as a string, expected an integer", True),
    "index_as_array": (
        lambda h, t: _set(h, "links/net.c.b", np.array([1, 2])),
        r"links/net.c.b holds an array of shape \(2,\), expected one integer", True),
    "index_as_float": (
        lambda h, t: _set(h, "links/net.c.b", 1.7),
        r"links/net.c.b is stored as float64, expected an integer index", True),
    "index_as_bool": (
        lambda h, t: _set(h, "links/net.c.b", True),
        r"links/net.c.b is stored as bool, expected an integer index", True),
    "index_out_of_range": (
        lambda h, t: _set(h, "links/net.c.b", 9),
        r"parameter 'c.b': link 'net.c.b' points to params/9, which does not exist", True),
    "index_negative": (
        lambda h, t: _set(h, "links/net.c.b", -3),
        r"links/net.c.b holds -3, expected a non-negative index", True),
    "group_for_param": (
        lambda h, t: (h.__delitem__("params/0"), h["params"].create_group("0")),
        r"parameter 'c.W' \(file key 'net.c.W'\): params/0 is a group, expected a dataset", True),
    "group_for_index": (
        lambda h, t: (h.__delitem__("links/net.c.W"), h["links"].create_group("net.c.W")),
        r"links/net.c.W is a group, expected a dataset", True),
    "named_type_for_param": (
        lambda h, t: _set(h, "params/0", np.dtype("f4")),
        r"params/0 is a named datatype, expected a dataset", True),
    "links_as_dataset": (
        lambda h, t: _set(h, "links", np.arange(4)),
        r"/links is a dataset, expected a group", True),
    "params_as_dataset": (
        lambda h, t: _set(h, "params", np.arange(4)),
        r"/params is a dataset, expected a group", True),
    "attrs_as_dataset": (
        lambda h, t: _set(h, "attrs", np.arange(4)),
        r"/attrs is a dataset, expected a group", True),
    "null_dataspace": (
        lambda h, t: _set(h, "params/0", h5py.Empty("f4")),
        r"parameter 'c.W': shape mismatch, model has \(3, 2, 1, 1\), file 'net.c.W' has no dataspace", True),
    "never_written": (
        lambda h, t: _replace(h, "params/0", shape=(3, 2, 1, 1), dtype="f4", fillvalue=7),
        r"params/0 has no stored values \(never written; it would read as its fill value\)", True),
    "lossy_filter": (
        lambda h, t: _replace(h, "params/0", data=_reference()["c.W"], scaleoffset=1),
        r"params/0 needs HDF5 filter 6 \(scaleoffset\), which minidl does not read", True),
    "container_group_as_dataset": (
        lambda h, t: _set(h, "attrs.net", 1),
        r"container attributes 'attrs.net': /attrs.net is a dataset, expected a group", False),
    "container_group_as_soft_link": (
        lambda h, t: _set(h, "attrs.net", h5py.SoftLink("/params")),
        r"container attributes 'attrs.net': /attrs.net is a soft link", False),
    "key_not_utf8": (
        lambda h, t: h["links"].create_dataset(b"net.\xff", data=0),
        r"unexpected key b'net.\\xff' in /links \(not UTF-8\)", False),
    "two_keys_one_name": (
        lambda h, t: h["links"].__setitem__("other.c.W", 0),
        r"file keys 'net.c.W' and 'other.c.W' in /links both name 'c.W'", True),
}


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "lenient"])
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_structure(backend, tmp_path, case, strict):
    edit, pattern, lenientToo = REFUSED[case]
    if not strict and not lenientToo:
        pytest.skip("only strict loading checks keys the model does not use")
    _refused(_model(), _file(tmp_path, edit), pattern, strict=strict)


def test_valid_hand_written_file_loads(backend, tmp_path):
    """The control for every refused case: the same file without the edit loads exactly."""
    net = _model()
    net.load(_file(tmp_path, lambda h, t: None))
    want = _reference()
    for name, value in _snapshot(net).items():
        assert value == want[name].tobytes(), name


def test_lenient_load_ignores_what_the_model_does_not_use(backend, tmp_path):
    """strict=False tolerates keys the model has no use for, however odd; strict refuses each one."""
    def edit(hdf, tmp):
        hdf["links/net.extra.W"] = h5py.SoftLink("/nowhere")
        hdf["links/a.extra.b"], hdf["links/b.extra.b"] = 0, 1
        hdf["attrs/net.extra.mean"] = h5py.ExternalLink(_other(tmp), "/x")
    path = _file(tmp_path, edit)
    net = _model()
    net.load(path, strict=False)
    assert net["c"].W.get().tobytes() == _reference()["c.W"].tobytes()
    msg = _refused(_model(), path, r"parameter 'extra.W': unexpected key 'net.extra.W' in the file")
    assert "both name 'extra.b'" in msg and "attribute 'extra.mean': unexpected key" in msg


# ---- item 3: nothing is read before its size is known to fit ----------------------------------

@pytest.fixture
def noBigReads(monkeypatch):
    """Fail any read of a dataset that declares over a million elements, before it allocates."""
    for method in ("__getitem__", "read_direct"):
        real = getattr(h5py.Dataset, method)

        def guarded(self, *args, _real=real, **kwargs):
            if self.shape is not None and np.prod(self.shape, dtype=np.float64) > 1e6:
                raise AssertionError("read a dataset declaring %s elements" % (self.shape,))
            return _real(self, *args, **kwargs)
        monkeypatch.setattr(h5py.Dataset, method, guarded)


def _declare(where, shape, dtype="f4"):
    """A dataset declaring shape, with one chunk written so it is partly stored (a tiny file)."""
    def edit(hdf, tmp):
        del hdf[where]
        ds = hdf.create_dataset(where, shape=shape, dtype=dtype, chunks=(1,) * len(shape), compression="gzip")
        ds[(0,) * len(shape)] = 1
    return edit


@pytest.mark.parametrize("where,shape,pattern", [
    ("params/0", (40000, 40000), r"parameter 'c.W': shape mismatch, model has \(3, 2, 1, 1\), file 'net.c.W' "
                                 r"has \(40000, 40000\)"),
    ("params/0", (1 << 20, 1 << 20), r"file 'net.c.W' has \(1048576, 1048576\)"),
    ("attrs/net.bn.var", (1 << 40,), r"attribute 'bn.var': shape mismatch, model has \(1, 3, 1, 1\)"),
    ("links/net.c.W", (1 << 30,), r"links/net.c.W holds an array of shape \(1073741824,\), expected one integer"),
], ids=["param_6GB", "param_4TB", "attr_4TB", "index_8GB"])
def test_huge_declaration_is_refused_before_reading(backend, tmp_path, noBigReads, where, shape, pattern):
    path = _file(tmp_path, _declare(where, shape))
    assert os.path.getsize(path) < 100_000, "the point is a small file"
    _refused(_model(), path, pattern)


def test_oversized_chunk_is_refused(backend, tmp_path):
    """A resizable dataset may declare a chunk far larger than itself; reading one allocates it all."""
    def edit(hdf, tmp):
        _replace(hdf, "params/0", data=_reference()["c.W"], maxshape=(None, 2, 1, 1), chunks=(1 << 20, 2, 1, 1),
                 compression="gzip")
    _refused(_model(), _file(tmp_path, edit), r"params/0 declares chunks of 8388608 bytes for 24 bytes of data")


# ---- item 4: damaged bytes ------------------------------------------------------------------

def _damaged(mutate):
    blob = _model().save()
    with h5py.File(io.BytesIO(blob), "r") as hdf:
        spots = {"chunk": hdf["params/0"].id.get_chunk_info(0),
                 "header": h5py.h5o.get_info(hdf["params/0"].id).addr,
                 "links": h5py.h5o.get_info(hdf["links"].id).addr}
    data = bytearray(blob)
    mutate(data, spots)
    return bytes(data)


def _flipChunk(data, spots):
    chunk = spots["chunk"]
    data[chunk.byte_offset + chunk.size // 2] ^= 0xFF


@pytest.mark.parametrize("mutate,pattern", [
    (_flipChunk, r"parameter 'c.W' \(file key 'net.c.W'\): params/0 cannot be read, the file is damaged "
                 r"\(OSError: .*filter returned failure"),
    (lambda d, s: d.__setitem__(s["header"], 7), r"parameter 'c.W' \(file key 'net.c.W'\): params/0 cannot be read, "
                                                 r"the file is damaged \(KeyError: .*bad object header version"),
    (lambda d, s: d.__setitem__(s["links"], 7), r"/links cannot be read, the file is damaged"),
], ids=["chunk", "dataset_header", "group_header"])
def test_flipped_bytes_say_the_file_is_damaged(backend, mutate, pattern):
    _refused(_model(), _damaged(mutate), pattern)


def _shortChunkFile(tmp_path):
    """A gzip+fletcher32 file whose params/0 chunk is recorded as stored in 0 bytes: the bytes of
    the record's size field are found by zeroing each candidate until libhdf5 reports size 0."""
    path = tmp_path / "short.h5"
    with h5py.File(path, "w", libver="earliest") as hdf:
        _writeValid(hdf, _reference())
        _replace(hdf, "params/0", data=_reference()["c.W"], compression="gzip", fletcher32=True)
        size = hdf["params/0"].id.get_chunk_info(0).size
    data = path.read_bytes()
    field = size.to_bytes(4, "little")
    for at in (i for i in range(len(data) - 3) if data[i:i + 4] == field):
        path.write_bytes(data[:at] + bytes(4) + data[at + 4:])
        try:
            with h5py.File(path, "r") as hdf:
                if hdf["params/0"].id.get_chunk_info(0).size == 0:
                    return str(path)
        except Exception:
            continue  # those bytes were part of another structure
    raise AssertionError("no chunk size field found")


@pytest.mark.skipif(os.name != "posix", reason="runs the load in a forked child")
def test_chunk_too_short_for_its_checksum_is_refused_before_libhdf5_crashes(tmp_path):
    """libhdf5 2.0's fletcher32 filter reads before the start of a chunk stored in under 4 bytes and
    kills the process (found by the fuzz test). The loader must refuse the chunk before reading it.
    The load runs in a forked child on the NumPy backend, so a regression fails this test instead
    of crashing the suite."""
    path = _shortChunkFile(tmp_path)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            import minidl.backend
            minidl.backend.setBackend("numpy")
            _refused(_model(), path, r"parameter 'c.W' \(file key 'net.c.W'\): params/0: the chunk at \(0, 0, 0, 0\) "
                                     r"is stored in 0 bytes, which cannot hold it; the file is damaged")
            code = 0
        finally:
            os._exit(code)
    status = os.waitpid(pid, 0)[1]
    assert not os.WIFSIGNALED(status), "the load crashed the process (signal %d)" % os.WTERMSIG(status)
    assert os.waitstatus_to_exitcode(status) == 0, "the load did not raise the expected LoadError"


# ---- item 4: only float32 loads --------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float16", "float64", "int8", "uint8", "int16", "int32", "bool", "complex64"])
def test_other_dtypes_are_refused_not_cast(backend, tmp_path, dtype):
    """float16/int8/uint8/bool used to load silently as 'safe casts'; a weights file holds float32."""
    value = np.ones((3, 2, 1, 1), dtype)
    _refused(_model(), _file(tmp_path, lambda h, t: _set(h, "params/0", value)),
             r"parameter 'c.W': dtype mismatch, model has float32, file 'net.c.W' has %s \(only float32 loads"
             % np.dtype(dtype).name)


def test_big_endian_float32_loads_exactly(backend, tmp_path):
    """The one lossless variant accepted: the same IEEE float32, bytes in the other order."""
    want = _reference()
    net = _model()
    net.load(_file(tmp_path, lambda h, t: _set(h, "params/0", want["c.W"].astype(">f4"))))
    assert net["c"].W.get().dtype == np.float32
    assert np.array_equal(net["c"].W.get(), want["c.W"])


def test_errors_name_an_open_file(backend, tmp_path):
    path = _file(tmp_path, lambda h, t: _set(h, "links/net.c.b", 1.7))
    net = _model()
    with h5py.File(path, "r") as hdf:
        with pytest.raises(LoadError, match=r"cannot load weights from '.*w.h5', model left unchanged:\n"
                                            r"  parameter 'c.b' \(file key 'net.c.b'\)"):
            net.load(hdf)
        assert hdf.id.valid
