"""Round trips, bit for bit: safetensors file -> archive -> numpy arrays and
back to the same file, for every dtype the tool supports."""

import hashlib

import numpy as np
import pytest

import weightlab
import weightlab.numpy as wnp
from weightlab import _dtypes

from conftest import DTYPES, file_bytes, sha, tensor_bytes, write_safetensors

try:
    import ml_dtypes
except ImportError:
    ml_dtypes = None

PACKED = {"F4", "F6_E2M3", "F6_E3M2"}
PLAIN = {"BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "I16": np.int16, "U16": np.uint16, "F16": np.float16,
         "I32": np.int32, "U32": np.uint32, "F32": np.float32, "F64": np.float64, "I64": np.int64, "U64": np.uint64,
         "C64": np.complex64}
EXT = {"BF16": ("bfloat16", np.uint16), "F8_E4M3": ("float8_e4m3fn", np.uint8),
       "F8_E5M2": ("float8_e5m2", np.uint8), "F8_E8M0": ("float8_e8m0fnu", np.uint8)}


def expected_dtype(dt, with_ml=True):
    if dt in PLAIN:
        return np.dtype(PLAIN[dt])
    if dt in PACKED:
        return np.dtype(np.uint8)
    attr, fallback = EXT[dt]
    if with_ml and ml_dtypes is not None and hasattr(ml_dtypes, attr):
        return np.dtype(getattr(ml_dtypes, attr))
    return np.dtype(fallback)


def check_loaded(loaded, tensors, with_ml=True):
    assert sorted(loaded) == sorted(n for n, *_ in tensors)
    for name, dt, shape, data in tensors:
        a = loaded[name]
        assert isinstance(a, np.ndarray), name
        assert a.dtype == expected_dtype(dt, with_ml), (name, a.dtype)
        if dt in PACKED:
            assert a.shape == (len(data),), name
        else:
            assert a.shape == tuple(shape), (name, a.shape)
        assert a.tobytes() == data, f"{name}: bits differ"


def test_every_dtype_round_trips_bit_for_bit(every_dtype, tmp_path):
    path, tensors = every_dtype
    assert {dt for _, dt, *_ in tensors} == {d for d, _ in DTYPES}
    r = weightlab.compress_file(path, threads=2)
    arc = path + ".wlab"
    assert r["bytes"] == len(file_bytes(path)) and r["archives"] == 1
    check_loaded(wnp.load_file(arc), tensors)
    out = str(tmp_path / "back.safetensors")
    weightlab.decompress_file(arc, out)
    assert sha(out) == sha(path)
    weightlab.verify(arc)


def test_without_ml_dtypes_bf16_and_fp8_are_unsigned_views(every_dtype, monkeypatch):
    path, tensors = every_dtype
    weightlab.compress_file(path)
    monkeypatch.setattr(_dtypes, "ml_dtypes", None)
    check_loaded(wnp.load_file(path + ".wlab"), tensors, with_ml=False)


@pytest.mark.skipif(ml_dtypes is None, reason="ml_dtypes is not installed")
def test_bf16_values_are_the_floats():
    v = np.array([1.0, -2.5, 0.0078125, 2.0**100], dtype=np.float32)
    bits = (v.view(np.uint32) >> 16).astype(np.uint16)
    a = _dtypes.as_array(np.frombuffer(bits.tobytes(), np.uint8).copy(), "BF16", (4,))
    np.testing.assert_array_equal(a.astype(np.float32), v)


@pytest.mark.parametrize("codec", ["auto", "exp", "zstd:level=3", "raw"])
def test_save_file_then_load_file(tmp_path, codec):
    rng = np.random.default_rng(0)
    tensors = {
        "a": rng.normal(size=(33, 17)).astype(np.float32),
        "b": rng.integers(-5, 5, size=(4, 5, 6)).astype(np.int64),
        "c": np.array(3.5, dtype=np.float64),
        "d": np.zeros((0, 3), dtype=np.float16),
        "e": np.asfortranarray(rng.normal(size=(6, 7))).astype(np.float32),  # not C order
        "f": rng.normal(size=(8,)).astype(">f4"),  # big-endian
        "g": rng.random(9) < 0.5,
    }
    if ml_dtypes is not None:
        tensors["h"] = rng.normal(size=(10, 3)).astype(ml_dtypes.bfloat16)
        tensors["i"] = rng.normal(size=(10,)).astype(ml_dtypes.float8_e4m3fn)
    p = tmp_path / "m.safetensors.wlab"
    wnp.save_file(tensors, p, metadata={"k": "v"}, codec=codec)
    back = wnp.load_file(p)
    assert sorted(back) == sorted(tensors)
    for k, v in tensors.items():
        want = v.astype(v.dtype.newbyteorder("<")) if v.dtype.byteorder == ">" else v
        assert back[k].dtype == want.dtype and back[k].shape == want.shape, k
        assert back[k].tobytes() == np.ascontiguousarray(want).tobytes(), k
    with weightlab.safe_open(p) as f:
        assert f.metadata() == {"k": "v"}
        assert f.codec("a") != ""
    # saving again replaces the file, as safetensors does
    wnp.save_file({"x": np.ones(3, np.float32)}, p)
    assert list(wnp.load_file(p)) == ["x"]


def test_save_file_matches_safetensors_byte_for_byte(tmp_path):
    st = pytest.importorskip("safetensors.numpy", reason="safetensors is not installed: the comparison with its writer is skipped")
    rng = np.random.default_rng(1)
    tensors = {"w": rng.normal(size=(16, 8)).astype(np.float32), "b": rng.normal(size=(8,)).astype(np.float16),
               "i": np.arange(5, dtype=np.int64)}
    st.save_file(tensors, str(tmp_path / "ref.safetensors"))
    wnp.save_file(tensors, tmp_path / "ours.wlab")
    weightlab.decompress_file(tmp_path / "ours.wlab", tmp_path / "ours.safetensors")
    ref = st.load_file(str(tmp_path / "ref.safetensors"))
    ours = st.load_file(str(tmp_path / "ours.safetensors"))
    for k in tensors:
        assert ref[k].tobytes() == ours[k].tobytes() and ref[k].dtype == ours[k].dtype
    weightlab.compress_file(tmp_path / "ref.safetensors")
    for k, v in wnp.load_file(tmp_path / "ref.safetensors.wlab").items():
        assert v.tobytes() == ref[k].tobytes() and v.dtype == ref[k].dtype and v.shape == ref[k].shape


def test_threads_give_the_same_arrays_and_the_same_archive(big_file, tmp_path):
    path, tensors = big_file
    a1, a2 = str(tmp_path / "one.wlab"), str(tmp_path / "two.wlab")
    weightlab.compress_file(path, a1, threads=1, chunk_kib=64)
    weightlab.compress_file(path, a2, threads=2, chunk_kib=64)
    assert file_bytes(a1) == file_bytes(a2)
    one, two = wnp.load_file(a1, threads=1), wnp.load_file(a2, threads=2)
    check_loaded(one, tensors)
    for k in one:
        assert one[k].tobytes() == two[k].tobytes()
    # the tie is stored once and decodes as its own array
    assert one["tied.weight"].tobytes() == one["big.weight"].tobytes()
    assert not np.shares_memory(one["tied.weight"], one["big.weight"])


def test_lossy_codec_keeps_its_bound(tmp_path):
    v = np.random.default_rng(3).normal(size=(64, 64)).astype(np.float32)
    wnp.save_file({"w": v}, tmp_path / "l.wlab", codec="sz:abs=1e-3")
    back = wnp.load_file(tmp_path / "l.wlab")["w"]
    assert back.dtype == v.dtype and back.shape == v.shape
    assert np.max(np.abs(back - v)) <= 1e-3
    assert back.tobytes() != v.tobytes()


def test_progress_callback_and_report(big_file, tmp_path):
    path, _ = big_file
    calls = []
    r = weightlab.compress_file(path, tmp_path / "p.wlab", progress=lambda d, t: calls.append((d, t)))
    n = len(file_bytes(path))
    assert calls == [(0, n), (n, n)]
    assert r["stored_bytes"] < r["bytes"] == n
    calls.clear()
    weightlab.decompress_file(tmp_path / "p.wlab", tmp_path / "p.safetensors", progress=lambda d, t: calls.append((d, t)))
    assert calls == [(0, n), (n, n)]
    assert hashlib.sha256(file_bytes(tmp_path / "p.safetensors")).hexdigest() == sha(path)


def test_an_exception_in_the_progress_callback_propagates(big_file, tmp_path):
    path, _ = big_file

    def boom(d, t):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        weightlab.compress_file(path, tmp_path / "x.wlab", progress=boom)
    assert not (tmp_path / "x.wlab").exists()
