"""examples/ray_compress.py on a local Ray cluster: its slices, run as Ray
tasks and joined, are the directory one call writes. Runs only where Ray is
installed (`pip install ray` in the test venv; `test.sh` does not install it)."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("ray", reason="ray not installed: pip install ray")

import weightlab  # noqa: E402

from conftest import all_files, tensor_bytes, write_safetensors  # noqa: E402

EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "ray_compress.py")


def run(*args, cwd):
    # a local cluster, whatever the environment says; run from elsewhere than
    # python/, whose weightlab/ source folder (no compiled module) Ray's
    # workers would import first (they put the driver's directory on sys.path)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, os.path.abspath(EXAMPLE), *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=env, cwd=cwd)


def test_ray_tasks_make_the_one_call_directory(tree, tmp_path):
    write_safetensors(str(tree / "model-extra.safetensors"),
                      [("x.weight", "F32", (200, 64), tensor_bytes("F32", (200, 64), 21))])
    out, one = tmp_path / "ray.wlab", tmp_path / "one.wlab"
    p = run(tree, out, "--tasks", 3, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "3 tasks joined, 8 files" in p.stdout, p.stdout
    for i in (1, 2, 3):
        assert f"slice {i}/3:" in p.stdout
    weightlab.compress_file(tree, one)
    assert all_files(out) == all_files(one)
    back = tmp_path / "back"
    weightlab.decompress_file(out, back)
    assert all_files(back) == all_files(tree)


def test_a_failing_slice_is_reported(tree, tmp_path):
    # the output inside the input: every slice refuses it
    p = run(tree, tree / "out.wlab", "--tasks", 2, cwd=tmp_path)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "a slice failed: InvalidInputError" in p.stderr and "inside the input directory" in p.stderr, p.stderr
    assert not (tree / "out.wlab").exists()


def test_bad_arguments(tree, tmp_path):
    p = run(tree, tmp_path / "o.wlab", "--tasks", 0, cwd=tmp_path)
    assert p.returncode == 2 and "must be at least 1" in p.stderr
    p = run(tmp_path / "absent", tmp_path / "o.wlab", cwd=tmp_path)
    assert p.returncode == 2 and "not a directory" in p.stderr
