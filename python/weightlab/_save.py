"""Writing archives from tensors held in memory: a safetensors image built
in one buffer (one copy of the tensors, as safetensors' own ``save_file``
makes), compressed by the Rust library straight from it."""

import json
import os

import numpy as np

from . import _native
from .errors import InvalidInputError


def save_items(items, filename, metadata=None, codec="auto", threads=0):
    """``items``: [(name, safetensors dtype name, shape, flat uint8 array of its bytes)].

    Tensors are laid out as safetensors lays them out (by alignment, larger
    first, then by name), so the archive decodes to the file
    ``safetensors.numpy.save_file`` would write, up to header spacing.
    """
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise InvalidInputError("metadata must be a dict of str to str (invalid input)")
    names = [it[0] for it in items]
    if len(set(names)) != len(names):
        raise InvalidInputError("two tensors have the same name (invalid input)")
    items = sorted(items, key=lambda it: (-_align(it[1]), it[0]))
    header = {}
    if metadata is not None:
        header["__metadata__"] = dict(metadata)
    pos = 0
    for name, dtype, shape, data in items:
        if name == "__metadata__":
            raise InvalidInputError("a tensor cannot be named __metadata__ (invalid input)")
        header[name] = {"dtype": dtype, "shape": [int(d) for d in shape], "data_offsets": [pos, pos + data.nbytes]}
        pos += data.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    image = np.empty(8 + len(h) + pos, dtype=np.uint8)
    image[:8] = np.frombuffer(len(h).to_bytes(8, "little"), dtype=np.uint8)
    image[8 : 8 + len(h)] = np.frombuffer(h, dtype=np.uint8)
    at = 8 + len(h)
    for _, _, _, data in items:
        image[at : at + data.nbytes] = data
        at += data.nbytes
    path = os.fspath(filename)
    base = os.path.basename(path)
    if base.endswith(_native.SUFFIX):
        base = base[: -len(_native.SUFFIX)]
    return _native.compress_buffer(image, base, path, codec=codec, threads=int(threads), overwrite=True)


_WIDTH = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "F4": 1, "F6_E2M3": 1, "F6_E3M2": 1,
          "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8, "C64": 8}


def _align(dtype):
    return _WIDTH.get(dtype, 1)


def flat_bytes(arr):
    """The bytes of a numpy array, C order, little-endian, as a flat uint8 array."""
    a = np.asarray(arr)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    a = np.ascontiguousarray(a)
    return a.reshape(-1).view(np.uint8) if a.size else np.empty(0, dtype=np.uint8)
