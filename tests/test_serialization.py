"""h5py save/load: PuzzleLib's layout, strict checks, atomic writes."""

import os

import h5py
import numpy as np
import pytest

from minidl import serialization
from minidl.backend import gpuarray
from minidl.containers import Sequential
from minidl.errors import LoadError
from minidl.modules import Conv2D, DepthwiseConv2D, SeparableConv2D


def _net(name="net"):
    net = Sequential(name)
    block = Sequential("block1")
    block.append(SeparableConv2D(3, 4, 3, pad=1, name="sep"))
    net.append(block)
    net.append(Conv2D(4, 2, 1, name="head"))
    return net


def _state(module):
    return {n: v.data.get() for n, v in module.namedVars()}


def _assertSameState(a, b):
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert np.array_equal(sa[k], sb[k]), k


def test_round_trip_path_bytes_and_open_file(backend, tmp_path):
    src = _net()
    x = gpuarray.to_gpu(np.random.randn(2, 3, 5, 5).astype(np.float32))
    want = src(x).get()
    path = tmp_path / "w.h5"
    assert src.save(str(path)) is None and path.exists()
    blob = src.save()
    assert isinstance(blob, bytes) and blob[:8] == b"\x89HDF\r\n\x1a\n"
    for source in (str(path), path, blob):
        dst = _net()
        dst.load(source)
        _assertSameState(src, dst)
        assert np.array_equal(dst(x).get(), want)
    with h5py.File(path, "r") as hdf:
        dst = _net()
        dst.load(hdf)
        assert hdf.id.valid, "a caller's open file is left open"
    _assertSameState(src, dst)


def test_puzzlelib_layout(backend, tmp_path):
    net = _net()
    path = tmp_path / "w.h5"
    net.save(str(path))
    with h5py.File(path, "r") as hdf:
        links = {k: int(hdf["links"][k][()]) for k in hdf["links"]}
        assert sorted(links) == sorted(["net.block1.sep.depthwise.W", "net.block1.sep.depthwise.b",
                                        "net.block1.sep.pointwise.W", "net.block1.sep.pointwise.b",
                                        "net.head.W", "net.head.b"])
        assert sorted(hdf["params"].keys(), key=int) == [str(i) for i in range(6)]
        assert np.array_equal(hdf["params"][str(links["net.head.W"])][()], net["head"].W.get())
        for group in ("attrs.net", "attrs.net.block1", "attrs.net.block1.sep"):
            assert group in hdf and len(hdf[group]) == 0


def test_shared_weights_stored_once(backend):
    a, b = Conv2D(3, 3, 3, name="a"), Conv2D(3, 3, 3, name="b")
    b.setVar("W", a.vars["W"])
    seq = Sequential("m").append(a).append(b)
    blob = seq.save()
    with h5py.File(__import__("io").BytesIO(blob), "r") as hdf:
        assert len(hdf["params"]) == 3
        assert int(hdf["links"]["m.a.W"][()]) == int(hdf["links"]["m.b.W"][()])
    fresh = Sequential("m").append(Conv2D(3, 3, 3, name="a")).append(Conv2D(3, 3, 3, name="b"))
    fresh["b"].setVar("W", fresh["a"].vars["W"])
    fresh.load(blob)
    assert np.array_equal(fresh["b"].W.get(), a.W.get())


def test_file_written_like_puzzlelib_loads(backend, tmp_path):
    """A file laid out exactly as PuzzleLib 1.0.x writes it (unnamed root, gzip, attrs.<container> groups)."""
    W1 = np.random.randn(3, 1, 3, 3).astype(np.float32)
    b1 = np.random.randn(1, 3, 1, 1).astype(np.float32)
    W2 = np.random.randn(5, 3, 1, 1).astype(np.float32)
    path = tmp_path / "puzzle.hdf"
    with h5py.File(path, "w", libver="earliest") as hdf:
        params, links = hdf.create_group("params"), hdf.create_group("links")
        for i, arr in enumerate([W1, b1, W2]):
            params.create_dataset(str(i), data=arr, compression="gzip")
        links[".depthwise.W"], links[".depthwise.b"], links[".pointwise.W"] = 0, 1, 2
        hdf.require_group("attrs.")
    seq = Sequential()
    seq.append(Conv2D(3, 3, 3, groups=3, name="depthwise"))
    seq.append(Conv2D(3, 5, 1, useBias=False, name="pointwise"))
    seq.load(str(path))
    assert np.array_equal(seq["depthwise"].W.get(), W1) and np.array_equal(seq["pointwise"].W.get(), W2)
    # the same weights load into a named model (the root name is not part of the match)
    named = Sequential("mobilenet")
    named.append(DepthwiseConv2D(3, 3, name="depthwise")).append(Conv2D(3, 5, 1, useBias=False, name="pointwise"))
    named.load(str(path))
    assert np.array_equal(named["depthwise"].b.get(), b1)


def test_strict_errors_leave_model_untouched(backend):
    src = _net()
    blob = src.save()
    dst = Sequential("net")
    block = Sequential("block1")
    block.append(SeparableConv2D(3, 4, 3, pad=1, name="sep"))
    dst.append(block)
    dst.append(Conv2D(4, 2, 1, useBias=False, name="head"))
    dst.append(Conv2D(2, 2, 1, name="extra"))
    before = _state(dst)
    with pytest.raises(LoadError) as info:
        dst.load(blob)
    msg = str(info.value)
    assert "model left unchanged" in msg
    assert "parameter 'extra.W': missing from the file" in msg
    assert "parameter 'head.b': unexpected key 'net.head.b' in the file" in msg
    for k, v in _state(dst).items():
        assert np.array_equal(v, before[k]), "failed load changed %s" % k
    dst.load(blob, strict=False)
    assert np.array_equal(dst["head"].W.get(), src["head"].W.get())
    assert np.array_equal(dst["extra"].W.get(), before["extra.W"])


def test_shape_mismatch_is_never_tolerated(backend):
    blob = _net().save()
    dst = Sequential("net")
    block = Sequential("block1")
    block.append(SeparableConv2D(3, 4, 3, pad=1, name="sep"))
    dst.append(block)
    dst.append(Conv2D(4, 3, 1, name="head"))
    before = _state(dst)
    for strict in (True, False):
        with pytest.raises(LoadError, match=r"parameter 'head.W': shape mismatch, model has \(3, 4, 1, 1\), "
                                            r"file 'net.head.W' has \(2, 4, 1, 1\)"):
            dst.load(blob, strict=strict)
    for k, v in _state(dst).items():
        assert np.array_equal(v, before[k])


def test_dtype_other_than_float32_rejected(backend, tmp_path):
    """Lossy (float64) and lossless-but-different (float16) dtypes alike: see test_load_security.py."""
    conv = Conv2D(1, 2, 1, useBias=False, name="c")
    for dtype in (np.float64, np.float16):
        path = tmp_path / ("%s.h5" % np.dtype(dtype).name)
        with h5py.File(path, "w") as hdf:
            hdf.create_group("params").create_dataset("0", data=np.zeros((2, 1, 1, 1), dtype))
            hdf.create_group("links")["c.W"] = 0
        with pytest.raises(LoadError, match=r"parameter 'W': dtype mismatch, model has float32, file 'c.W' has %s"
                                            % np.dtype(dtype).name):
            conv.load(str(path))


def test_corrupt_and_foreign_files(backend, tmp_path):
    conv = Conv2D(1, 2, 1, name="c")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"this is not hdf5 at all")
    with pytest.raises(LoadError, match=r"cannot load weights from '.*junk.h5': not a readable HDF5 file"):
        conv.load(str(junk))
    with pytest.raises(LoadError, match=r"cannot load weights from bytes: not a readable HDF5 file"):
        conv.load(b"garbage")
    with pytest.raises(LoadError, match=r"cannot load weights from '.*missing.h5'"):
        conv.load(str(tmp_path / "missing.h5"))
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as hdf:
        hdf["x"] = 1
    with pytest.raises(LoadError, match=r"groups 'params' and 'links' expected, found \['x'\]"):
        conv.load(str(other))


def test_save_is_atomic(backend, tmp_path, monkeypatch):
    path = tmp_path / "w.h5"
    net = _net()
    net.save(str(path))
    original = path.read_bytes()
    real = serialization._write

    def crashing(module, hdf, compress):
        real(module, hdf, compress)
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(serialization, "_write", crashing)
    with pytest.raises(KeyboardInterrupt):
        _net().save(str(path))
    assert path.read_bytes() == original, "a crashed save must not touch the existing file"
    assert os.listdir(tmp_path) == ["w.h5"], "no temporary file left behind"


def test_bytes_sources_stay_apart(backend):
    """Bytes open as in-memory HDF5 images; two open at once must not be taken for one file."""
    a, b = _net(), _net()
    blobA, blobB = a.save(), b.save()
    first, closeFirst = serialization.openH5(blobA)
    try:
        dst = _net()
        dst.load(blobB)
        _assertSameState(b, dst)
        assert np.array_equal(first["params"]["0"][()], a.getVar("block1.sep.depthwise.W").data.get())
    finally:
        first.close()
    assert closeFirst
