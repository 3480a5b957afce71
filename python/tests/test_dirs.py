"""Model directories: compressed into a directory of the same shape and back, byte for byte."""

import os

import pytest

import weightlab
import weightlab.numpy as wnp

from conftest import all_files, tensor_bytes


def test_directory_round_trip(tree, tmp_path):
    r = weightlab.compress_file(tree, threads=2)
    out = str(tree) + ".wlab"
    assert weightlab.is_compressed_dir(out) and not weightlab.is_compressed_dir(tree)
    assert r["files"] == 7 and r["archives"] == 3
    stored = all_files(out)
    assert "weightlab-manifest.json" in stored
    assert "model-00001-of-00002.safetensors.wlab" in stored and "1_Pooling/model.safetensors.wlab" in stored
    assert stored["config.json"] == all_files(tree)["config.json"]
    # each archive of the directory loads on its own
    shard = wnp.load_file(os.path.join(out, "model-00001-of-00002.safetensors.wlab"))
    assert shard["encoder.0.weight"].tobytes() == tensor_bytes("BF16", (64, 48), 1)
    assert weightlab.verify(out)["files"] == 7
    back = tmp_path / "back"
    weightlab.decompress_file(out, back)
    assert all_files(back) == all_files(tree)
    # the default output of a directory strips the suffix; it exists now
    with pytest.raises(weightlab.InvalidInputError, match="already exists"):
        weightlab.compress_file(tree)


def test_directory_damage_is_found(tree, tmp_path):
    out = tmp_path / "m.wlab"
    weightlab.compress_file(tree, out)
    with open(out / "tokenizer.json", "a") as f:
        f.write(" ")
    with pytest.raises(weightlab.HashMismatchError, match="tokenizer.json"):
        weightlab.verify(out)
    with pytest.raises(weightlab.HashMismatchError):
        weightlab.decompress_file(out, tmp_path / "back")
    (out / "weightlab-manifest.json").write_text('{"format": "weightlab-repository", "version": 1, "writer": "x", "files": '
                                                 '[{"path": "../evil", "size": 1, "sha256": "", "stored": "copy", "stored_path": "x"}]}')
    with pytest.raises(weightlab.CorruptArchiveError, match="plain relative"):
        weightlab.decompress_file(out, tmp_path / "back2")
    assert not (tmp_path / "evil").exists()
