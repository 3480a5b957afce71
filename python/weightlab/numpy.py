"""weightlab.numpy: the API of ``safetensors.numpy`` for weightlab archives.

>>> from weightlab.numpy import load_file, save_file
>>> save_file({"w": np.ones((2, 3), np.float32)}, "model.safetensors.wlab")
>>> load_file("model.safetensors.wlab")["w"].shape
(2, 3)
"""

import numpy as np

from . import _dtypes
from ._core import safe_open
from ._save import flat_bytes, save_items
from .errors import InvalidInputError


def load_file(filename, threads=0):
    """Every tensor of an archive as numpy arrays, ``{name: array}``.

    All chunks of all tensors are decoded in parallel (``threads``: 0 is one
    per core) straight into the returned arrays, the GIL released. BF16 and
    FP8 arrive as ``ml_dtypes`` dtypes when ml_dtypes is installed, else as
    ``uint16`` / ``uint8`` views of the same bits; sub-byte dtypes (F4, F6)
    as flat arrays of their packed bytes.
    """
    with safe_open(filename, framework="np", threads=threads) as f:
        return f._load_all()


def save_file(tensors, filename, metadata=None, codec="auto", threads=0):
    """Compress ``{name: numpy array}`` into an archive at ``filename``
    (replaced if it exists, as safetensors does).

    ``codec``: a codec spec (``auto``, ``exp``, ``zstd:level=3``, a lossy
    ``sz:abs=1e-3``...; see ``weightlab codecs``). ``metadata``: a dict of
    strings stored as the file's ``__metadata__``. Returns a dict with the
    original and the stored size in bytes.
    """
    if not isinstance(tensors, dict):
        raise InvalidInputError("tensors must be a dict of name to numpy array (invalid input)")
    items = []
    for name, arr in tensors.items():
        if not isinstance(name, str):
            raise InvalidInputError(f"tensor name {name!r} is not a string (invalid input)")
        a = np.asarray(arr)
        items.append((name, _dtypes.safetensors_name(a.dtype), a.shape, flat_bytes(a)))
    return save_items(items, filename, metadata=metadata, codec=codec, threads=threads)
