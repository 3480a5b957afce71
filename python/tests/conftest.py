"""Fixtures for the weightlab package's tests: safetensors files written
here byte by byte (no dependency on the safetensors package), with seeded
synthetic tensors of every dtype the tool supports."""

import json
import os

import numpy as np
import pytest

# every dtype the Rust library supports: (name, bits per element)
DTYPES = [
    ("BOOL", 8), ("U8", 8), ("I8", 8), ("I16", 16), ("U16", 16), ("F16", 16), ("BF16", 16),
    ("I32", 32), ("U32", 32), ("F32", 32), ("F64", 64), ("I64", 64), ("U64", 64),
    ("F8_E4M3", 8), ("F8_E5M2", 8), ("F8_E8M0", 8), ("F6_E2M3", 6), ("F6_E3M2", 6), ("F4", 4), ("C64", 64),
]


def tensor_bytes(dtype, shape, seed):
    """Bytes of a seeded tensor: weight-like floats (with NaN, inf and -0
    among them) for F16/BF16/F32/F64/C64, random bits for the rest."""
    bits = dict(DTYPES)[dtype]
    n = int(np.prod(shape, dtype=np.int64))
    rng = np.random.default_rng(seed)
    nbytes = n * bits // 8
    if dtype in ("F32", "F64", "F16", "C64", "BF16"):
        count = 2 * n if dtype == "C64" else n
        v = rng.normal(0, 0.02, count).astype(np.float32)
        v[: min(count, 4)] = [np.nan, np.inf, -0.0, -np.inf][: min(count, 4)]
        if dtype == "F64":
            return v.astype("<f8").tobytes()
        if dtype == "F16":
            return v.astype("<f2").tobytes()
        if dtype == "BF16":
            return (v.view("<u4") >> 16).astype("<u2").tobytes()
        return v.astype("<f4").tobytes()
    if dtype == "BOOL":
        return (rng.random(n) < 0.3).astype(np.uint8).tobytes()
    return rng.integers(0, 256, nbytes, dtype=np.uint8).tobytes()


def write_safetensors(path, tensors, metadata=None):
    """``tensors``: [(name, dtype, shape, bytes)], laid out in that order."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    pos = 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [pos, pos + len(data)]}
        pos += len(data)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for *_, data in tensors:
            f.write(data)
    return path


def shape_for(dtype, i):
    """A shape per dtype whose element count fits its packing (F4: pairs, F6: fours)."""
    if dtype in ("F6_E2M3", "F6_E3M2"):
        return (12, 8)
    if dtype == "F4":
        return (10, 6)
    return [(37, 129), (5,), (3, 4, 5), (0, 7), ()][i % 5]


@pytest.fixture
def every_dtype(tmp_path):
    """A safetensors file with two tensors of every dtype; (path, [(name, dtype, shape, bytes)])."""
    tensors = []
    for i, (dt, _) in enumerate(DTYPES):
        for j in range(2):
            shape = shape_for(dt, i + j)
            tensors.append((f"t{i:02d}.{dt.lower()}.{j}", dt, shape, tensor_bytes(dt, shape, 100 * i + j)))
    path = write_safetensors(str(tmp_path / "every.safetensors"), tensors, metadata={"format": "pt", "note": "ü"})
    return path, tensors


@pytest.fixture
def big_file(tmp_path):
    """A 512x1000 F32 tensor (2 MB) and a 300x256 BF16 one: several chunks at chunk_kib=64."""
    tensors = [
        ("big.weight", "F32", (512, 1000), tensor_bytes("F32", (512, 1000), 7)),
        ("emb.weight", "BF16", (300, 256), tensor_bytes("BF16", (300, 256), 8)),
        ("tied.weight", "F32", (512, 1000), tensor_bytes("F32", (512, 1000), 7)),
        ("norm.bias", "F32", (1000,), tensor_bytes("F32", (1000,), 9)),
    ]
    return write_safetensors(str(tmp_path / "big.safetensors"), tensors), tensors


def file_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def sha(path):
    import hashlib

    return hashlib.sha256(file_bytes(path)).hexdigest()


@pytest.fixture
def tree(tmp_path):
    """A model directory in the Hugging Face layout: two shards, their index,
    config and tokenizer files, a 1_Pooling/ subfolder with its own weights."""
    root = tmp_path / "model"
    (root / "1_Pooling").mkdir(parents=True)
    a = [("encoder.0.weight", "BF16", (64, 48), tensor_bytes("BF16", (64, 48), 1)),
         ("encoder.0.bias", "BF16", (48,), tensor_bytes("BF16", (48,), 2))]
    b = [("encoder.1.weight", "F32", (64, 48), tensor_bytes("F32", (64, 48), 3))]
    write_safetensors(str(root / "model-00001-of-00002.safetensors"), a)
    write_safetensors(str(root / "model-00002-of-00002.safetensors"), b)
    index = {"metadata": {"total_size": 0}, "weight_map": {n: "model-00001-of-00002.safetensors" for n, *_ in a}}
    index["weight_map"].update({n: "model-00002-of-00002.safetensors" for n, *_ in b})
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    (root / "config.json").write_text(json.dumps({"hidden_size": 48}))
    (root / "tokenizer.json").write_text("{}")
    (root / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    write_safetensors(str(root / "1_Pooling" / "model.safetensors"),
                      [("dense.weight", "F16", (8, 8), tensor_bytes("F16", (8, 8), 4))])
    return root


def all_files(root):
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, root)] = file_bytes(p)
    return out
