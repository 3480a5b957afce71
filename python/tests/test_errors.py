"""Errors are Python exceptions of the kind the library reports, with its messages."""

import os

import numpy as np
import pytest

import weightlab
import weightlab.numpy as wnp
from weightlab import errors

from conftest import file_bytes, tensor_bytes, write_safetensors


@pytest.fixture
def small(tmp_path):
    p = write_safetensors(str(tmp_path / "s.safetensors"), [("layer.0.w", "F32", (300, 40), tensor_bytes("F32", (300, 40), 5))])
    weightlab.compress_file(p)
    return p, p + ".wlab"


def test_keep_freed_memory_is_callable():
    weightlab.keep_freed_memory()


def test_the_hierarchy():
    for name in errors.__all__:
        cls = getattr(weightlab, name)
        assert issubclass(cls, weightlab.WeightlabError)
    assert issubclass(weightlab.TruncatedArchiveError, weightlab.CorruptArchiveError)
    assert issubclass(weightlab.WeightlabIOError, OSError)
    assert issubclass(weightlab.InvalidInputError, ValueError)


def test_not_an_archive(small, tmp_path):
    p, _ = small
    with pytest.raises(weightlab.CorruptArchiveError, match="not a weightlab archive") as e:
        wnp.load_file(p)
    assert e.value.exit_code == 3 and e.value.kind == "corruption"
    assert p in str(e.value)


def test_truncated_archive(small, tmp_path):
    _, arc = small
    cut = tmp_path / "cut.wlab"
    cut.write_bytes(file_bytes(arc)[:-100])
    with pytest.raises(weightlab.TruncatedArchiveError, match="cut short"):
        weightlab.safe_open(cut)


def test_a_damaged_chunk_names_the_tensor(small):
    _, arc = small
    with weightlab.safe_open(arc) as f:
        _, _, off, n = f._chunks("layer.0.w")[0]
    b = bytearray(file_bytes(arc))
    b[off + n // 2] ^= 0x01
    with open(arc, "wb") as fh:
        fh.write(b)
    with pytest.raises(weightlab.CorruptArchiveError, match=r"tensor 'layer\.0\.w', chunk 0 of 1.*damaged"):
        wnp.load_file(arc)
    with pytest.raises(weightlab.CorruptArchiveError, match=r"layer\.0\.w"):
        weightlab.decompress_file(arc, overwrite=True)


def test_a_damaged_index(small):
    _, arc = small
    b = bytearray(file_bytes(arc))
    b[-60] ^= 0x01  # inside the index JSON
    with open(arc, "wb") as fh:
        fh.write(b)
    with pytest.raises(weightlab.CorruptArchiveError, match="index"):
        weightlab.safe_open(arc)


def test_missing_file_names_it(tmp_path):
    # the library reports a missing input as invalid input (exit 2), in a sentence
    with pytest.raises(weightlab.InvalidInputError, match="missing.wlab: no such file") as e:
        wnp.load_file(tmp_path / "missing.wlab")
    assert e.value.exit_code == 2


def test_an_os_error_is_an_os_error(tmp_path):
    p = write_safetensors(str(tmp_path / "a.safetensors"), [("x", "F32", (4,), tensor_bytes("F32", (4,), 1))])
    (tmp_path / "plain").write_text("a file, not a directory")
    with pytest.raises(OSError) as e:
        weightlab.compress_file(p, tmp_path / "plain" / "a.wlab")
    assert isinstance(e.value, weightlab.WeightlabIOError) and e.value.exit_code == 1
    assert "plain" in str(e.value)


def test_bad_input_and_bad_spec(small, tmp_path):
    p, arc = small
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{oops")
    with pytest.raises(weightlab.InvalidInputError, match="malformed safetensors"):
        weightlab.compress_file(bad)
    with pytest.raises(weightlab.InvalidInputError):
        weightlab.compress_file(p, tmp_path / "x.wlab", codec="nosuchcodec")
    with pytest.raises(weightlab.InvalidInputError):
        wnp.save_file({"a": np.ones(2)}, tmp_path / "y.wlab", codec="zstd:level=99")
    with pytest.raises(weightlab.InvalidInputError, match="already exists"):
        weightlab.compress_file(p)  # s.safetensors.wlab exists: refused without overwrite
    weightlab.compress_file(p, overwrite=True)
    with pytest.raises(weightlab.InvalidInputError, match="framework"):
        weightlab.safe_open(arc, framework="tf")
    with pytest.raises(weightlab.InvalidInputError, match="give an output"):
        weightlab.decompress_file(p)
    with pytest.raises(weightlab.InvalidInputError, match="threads"):
        wnp.load_file(arc, threads=5000)
    with pytest.raises(weightlab.InvalidInputError):
        wnp.save_file({"a": np.ones(2)}, tmp_path / "z.wlab", metadata={"k": 1})


def test_read_into_checks_its_buffers(small):
    from weightlab import _native

    _, arc = small
    a = _native.Archive(arc)
    with pytest.raises(weightlab.InvalidInputError, match="buffer"):
        a.read_into([(0, np.empty(10, np.uint8))])
    with pytest.raises(weightlab.InvalidInputError, match="read-only"):
        a.read_into([(0, np.frombuffer(bytes(48000), np.uint8))])
    buf = np.empty(48000, np.uint8)
    with pytest.raises(weightlab.InvalidInputError, match="overlapping"):
        a.read_into([(0, buf), (0, buf)])
    with pytest.raises(weightlab.InvalidInputError, match="no tensor"):
        a.read_into([(7, buf)])
    with pytest.raises(weightlab.InvalidInputError):
        a.read_range_into(0, 10, 5, np.empty(0, np.uint8))
    a.read_into([(0, buf)], check_sha256=True)
    assert buf.tobytes() == tensor_bytes("F32", (300, 40), 5)
    a.close()
    assert a.closed
    os.remove(arc)
