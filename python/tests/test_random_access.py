"""safe_open: get_tensor and get_slice against the full load, and proof
that they decode only the chunks they need (a damaged chunk elsewhere does
not stop them)."""

import numpy as np
import pytest

import weightlab
import weightlab.numpy as wnp


@pytest.fixture
def archive(big_file, tmp_path):
    path, tensors = big_file
    arc = str(tmp_path / "big.wlab")
    weightlab.compress_file(path, arc, chunk_kib=64)
    return arc, tensors


def test_keys_metadata_and_get_tensor_equal_the_full_load(archive, every_dtype):
    arc, tensors = archive
    full = wnp.load_file(arc)
    with weightlab.safe_open(arc, framework="np") as f:
        assert f.keys() == sorted(n for n, *_ in tensors)
        assert f.offset_keys() == [n for n, *_ in tensors]
        assert f.metadata() is None
        for k in f.keys():
            t = f.get_tensor(k)
            assert t.dtype == full[k].dtype and t.shape == full[k].shape
            assert t.tobytes() == full[k].tobytes()
    path, etensors = every_dtype
    weightlab.compress_file(path)
    with weightlab.safe_open(path + ".wlab") as f:
        assert f.metadata() == {"format": "pt", "note": "ü"}
        full = wnp.load_file(path + ".wlab")
        for k in f.keys():
            assert f.get_tensor(k).tobytes() == full[k].tobytes()


KEYS = [
    slice(None), slice(0, 1), slice(3, 200), slice(100, 101), slice(500, 600), slice(-7, None), slice(None, None, 3),
    slice(400, 10, -5), slice(10, 10), 0, 255, -1, (slice(2, 40), slice(5, 9)), (7, 3), (slice(1, 90), 0),
    Ellipsis, (Ellipsis, 2), [1, 5, 9], np.int64(17),
]


@pytest.mark.parametrize("key", KEYS, ids=repr)
def test_get_slice_equals_indexing_the_full_tensor(archive, key):
    arc, _ = archive
    full = wnp.load_file(arc)
    with weightlab.safe_open(arc) as f:
        for name in ("big.weight", "emb.weight", "tied.weight"):
            s = f.get_slice(name)
            assert s.get_shape() == list(full[name].shape)
            got, want = s[key], full[name][key]
            assert np.asarray(got).dtype == want.dtype
            assert np.shape(got) == np.shape(want), (name, key)
            assert np.asarray(got).tobytes() == np.ascontiguousarray(want).tobytes(), (name, key)


def test_get_slice_of_a_1d_tensor_and_bad_indices(archive):
    arc, _ = archive
    full = wnp.load_file(arc)
    with weightlab.safe_open(arc) as f:
        s = f.get_slice("norm.bias")
        assert s.get_dtype() == "F32"
        assert s[10:20].tobytes() == full["norm.bias"][10:20].tobytes()
        with pytest.raises(IndexError):
            s[1000]
        with pytest.raises(KeyError):
            f.get_slice("nope")
        with pytest.raises(KeyError):
            f.get_tensor("nope")


def damage(path, offset):
    with open(path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0x20]))


def test_only_the_chunks_of_the_rows_asked_for_are_decoded(archive):
    arc, _ = archive
    with weightlab.safe_open(arc) as f:
        chunks = f._chunks("big.weight")
        full = f.get_tensor("big.weight")
    row = 1000 * 4
    assert len(chunks) > 4 and all((e - s) % row == 0 for s, e, _, _ in chunks), "chunks hold whole rows"
    s3, e3, off3, _ = chunks[3]
    damage(arc, off3 + 5)
    bad_rows = (s3 // row, e3 // row)
    with weightlab.safe_open(arc) as f:
        s = f.get_slice("big.weight")
        # rows of the other chunks still decode, and are right
        assert s[: bad_rows[0]].tobytes() == full[: bad_rows[0]].tobytes()
        assert s[bad_rows[1] :].tobytes() == full[bad_rows[1] :].tobytes()
        with pytest.raises(weightlab.CorruptArchiveError, match=r"tensor 'big\.weight', chunk 3 of"):
            s[bad_rows[0] + 1]
        with pytest.raises(weightlab.CorruptArchiveError, match="big.weight"):
            f.get_tensor("big.weight")
        # the tie shares the damaged chunks and says so
        with pytest.raises(weightlab.CorruptArchiveError, match=r"'tied\.weight' \(stored as a copy\)"):
            f.get_tensor("tied.weight")
        # other tensors are untouched
        f.get_tensor("emb.weight")
    with pytest.raises(weightlab.CorruptArchiveError, match="big.weight"):
        wnp.load_file(arc)
    with pytest.raises(weightlab.CorruptArchiveError):
        weightlab.verify(arc)


def test_closed_archive_refuses(archive):
    arc, _ = archive
    f = weightlab.safe_open(arc)
    f.close()
    with pytest.raises(weightlab.InvalidInputError, match="closed"):
        f.get_tensor("big.weight")
