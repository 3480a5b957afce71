"""Scale-out: a model directory compressed as N slices (``shard=(i, n)``, in
separate calls as separate processes or machines would) and joined
(``join_slices``) is the directory one call writes, byte for byte."""

import json
import os

import pytest

import weightlab

from conftest import all_files, tensor_bytes, write_safetensors

MANIFEST = "weightlab-manifest.json"


@pytest.fixture
def bigger_tree(tree):
    """The conftest tree with two more shards of different sizes, so that
    slices get different numbers of files (the balancing is by size)."""
    write_safetensors(str(tree / "extra-a.safetensors"),
                      [("a.weight", "F32", (256, 96), tensor_bytes("F32", (256, 96), 11))])
    (tree / "2_Dense").mkdir()
    write_safetensors(str(tree / "2_Dense" / "model.safetensors"),
                      [("linear.weight", "BF16", (128, 64), tensor_bytes("BF16", (128, 64), 12)),
                       ("linear.bias", "BF16", (64,), tensor_bytes("BF16", (64,), 13))])
    return tree


def compress_in_slices(src, out, n):
    return [weightlab.compress_file(src, out, shard=(i, n), threads=2) for i in range(1, n + 1)]


@pytest.mark.parametrize("n", [3, 1, 12])
def test_slices_joined_equal_one_call(bigger_tree, tmp_path, n):
    one, sliced = tmp_path / "one.wlab", tmp_path / "sliced.wlab"
    whole = weightlab.compress_file(bigger_tree, one, threads=2)
    reports = compress_in_slices(bigger_tree, sliced, n)
    # every file in exactly one slice, and (with more files than slices) none idle
    assert sum(r["files"] for r in reports) == whole["files"] == 9
    assert sum(r["archives"] for r in reports) == whole["archives"] == 5
    assert sum(r["bytes"] for r in reports) == whole["bytes"]
    if n == 3:
        assert all(r["files"] > 0 for r in reports)
    # before the join: the partial manifests, and not yet a compressed directory
    before = all_files(sliced)
    assert MANIFEST not in before and not weightlab.is_compressed_dir(sliced)
    assert {f for f in before if f.startswith("weightlab-manifest.")} == {
        f"weightlab-manifest.{i}-of-{n}.json" for i in range(1, n + 1)}
    with pytest.raises(weightlab.WeightlabIOError, match=MANIFEST):
        weightlab.decompress_file(sliced, tmp_path / "too-early")

    joined = weightlab.join_slices(sliced)
    assert joined == {"files": whole["files"], "archives": whole["archives"], "bytes": whole["bytes"]}
    a, b = all_files(one), all_files(sliced)
    # the same files (the slices' manifests removed), every archive and copy the same bytes
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name] == b[name], name
    assert json.loads(b[MANIFEST]) == json.loads(a[MANIFEST])
    assert weightlab.verify(sliced)["files"] == 9
    back = tmp_path / "back"
    weightlab.decompress_file(sliced, back)
    assert all_files(back) == all_files(bigger_tree)


def test_a_missing_slice_is_refused(bigger_tree, tmp_path):
    out = tmp_path / "m.wlab"
    weightlab.compress_file(bigger_tree, out, shard=(1, 3))
    weightlab.compress_file(bigger_tree, out, shard=(3, 3))
    with pytest.raises(weightlab.InvalidInputError, match="slice 2/3 has not finished"):
        weightlab.join_slices(out)
    assert not weightlab.is_compressed_dir(out)
    # the missing slice run, the join goes through
    weightlab.compress_file(bigger_tree, out, shard=(2, 3))
    assert weightlab.join_slices(out)["files"] == 9
    assert weightlab.is_compressed_dir(out)
    assert not [f for f in os.listdir(out) if f.startswith("weightlab-manifest.") and "-of-" in f]


def test_slices_of_other_jobs_are_not_joined(bigger_tree, tmp_path):
    # each slice into a directory of its own (two jobs' slices may share
    # files), then their partial manifests side by side
    def slice_manifest(i, n, name):
        d = tmp_path / name
        weightlab.compress_file(bigger_tree, d, shard=(i, n))
        return (d / f"weightlab-manifest.{i}-of-{n}.json").read_bytes()

    out = tmp_path / "m.wlab"
    weightlab.compress_file(bigger_tree, out, shard=(1, 2))
    (out / "weightlab-manifest.2-of-3.json").write_bytes(slice_manifest(2, 3, "other-count"))
    with pytest.raises(weightlab.InvalidInputError, match="another job"):
        weightlab.join_slices(out)
    # slice 2/2 of a different input (one file more)
    (out / "weightlab-manifest.2-of-3.json").unlink()
    (bigger_tree / "README.md").write_text("changed listing")
    (out / "weightlab-manifest.2-of-2.json").write_bytes(slice_manifest(2, 2, "other-input"))
    with pytest.raises(weightlab.InvalidInputError, match="another job"):
        weightlab.join_slices(out)
    assert not weightlab.is_compressed_dir(out)


def test_nothing_to_join(tmp_path):
    (tmp_path / "empty.wlab").mkdir()
    with pytest.raises(weightlab.InvalidInputError, match="no slice manifests"):
        weightlab.join_slices(tmp_path / "empty.wlab")
    with pytest.raises(weightlab.WeightlabIOError):
        weightlab.join_slices(tmp_path / "absent.wlab")


def test_a_slice_run_twice_is_refused_unless_overwrite(bigger_tree, tmp_path):
    out = tmp_path / "m.wlab"
    weightlab.compress_file(bigger_tree, out, shard=(2, 3))
    with pytest.raises(weightlab.InvalidInputError, match="already exists"):
        weightlab.compress_file(bigger_tree, out, shard=(2, 3))
    assert weightlab.compress_file(bigger_tree, out, shard=(2, 3), overwrite=True)["files"] > 0


@pytest.mark.parametrize("shard, match", [
    ((0, 3), "i must be 1 to n"),
    ((4, 3), "i must be 1 to n"),
    ((1, 0), "i must be 1 to n"),
    ((1, 70000), "N 1 to 65536"),
    ("1/3", "pair"),
    ((1, 2, 3), "pair"),
    ((1.0, 3), "pair"),
    (3, "pair"),
])
def test_bad_shards_are_refused(bigger_tree, tmp_path, shard, match):
    with pytest.raises(weightlab.InvalidInputError, match=match):
        weightlab.compress_file(bigger_tree, tmp_path / "m.wlab", shard=shard)
    assert not (tmp_path / "m.wlab").exists()


def test_a_file_is_not_sliced(bigger_tree, tmp_path):
    with pytest.raises(weightlab.InvalidInputError, match="takes a model directory"):
        weightlab.compress_file(bigger_tree / "extra-a.safetensors", tmp_path / "x.wlab", shard=(1, 2))
    assert not (tmp_path / "x.wlab").exists()
