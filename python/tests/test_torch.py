"""weightlab.torch: run only where PyTorch is installed (it is not a
dependency, and too heavy for CI's install: `pip install torch` to run these)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: the weightlab.torch tests are skipped (pip install torch)")

import weightlab  # noqa: E402
import weightlab.numpy as wnp  # noqa: E402
import weightlab.torch as wt  # noqa: E402

from conftest import DTYPES  # noqa: E402,F401


def test_load_file_gives_torch_tensors_bit_for_bit(every_dtype):
    path, tensors = every_dtype
    weightlab.compress_file(path)
    loaded = wt.load_file(path + ".wlab")
    want = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "I64": torch.int64, "BOOL": torch.bool,
            "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "C64": torch.complex64}
    for name, dt, shape, data in tensors:
        t = loaded[name]
        assert isinstance(t, torch.Tensor)
        if dt in want:
            assert t.dtype == want[dt], name
        if dt not in ("F4", "F6_E2M3", "F6_E3M2"):
            assert tuple(t.shape) == tuple(shape), name
        b = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        assert b == data, name


def test_save_file_and_safe_open_pt(tmp_path):
    state = {"w": torch.randn(20, 8, dtype=torch.bfloat16), "b": torch.arange(5, dtype=torch.int32)}
    wt.save_file(state, tmp_path / "t.wlab")
    back = wt.load_file(tmp_path / "t.wlab")
    for k, v in state.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v)
    with weightlab.safe_open(tmp_path / "t.wlab", framework="pt") as f:
        assert torch.equal(f.get_tensor("w"), state["w"])
        assert torch.equal(f.get_slice("w")[3:9], state["w"][3:9])
    # and the same bits in numpy
    assert wnp.load_file(tmp_path / "t.wlab")["b"].tolist() == [0, 1, 2, 3, 4]
    assert np.asarray(wnp.load_file(tmp_path / "t.wlab")["w"]).shape == (20, 8)
