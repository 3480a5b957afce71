"""weightlab.torch: the API of ``safetensors.torch`` for weightlab archives.

torch is imported only when one of these functions is called; it is not a
dependency of the package.

>>> from weightlab.torch import load_file
>>> state = load_file("model.safetensors.wlab")          # {name: torch.Tensor}
>>> model.load_state_dict(state)
"""

import numpy as np

from . import _dtypes
from ._core import safe_open
from ._save import flat_bytes, save_items
from .errors import InvalidInputError, UnsupportedError

# safetensors dtype name -> torch dtype attribute (checked at run time: the
# newer ones exist only in newer torch)
_TORCH = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "I16": "int16",
    "U16": "uint16",
    "F16": "float16",
    "BF16": "bfloat16",
    "I32": "int32",
    "U32": "uint32",
    "F32": "float32",
    "F64": "float64",
    "I64": "int64",
    "U64": "uint64",
    "C64": "complex64",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
}
# torch has no unsigned 16/32/64-bit numpy bridge in older versions, and
# none for its float8/bfloat16: those go through a signed integer view
_VIA = {"U16": np.int16, "U32": np.int32, "U64": np.int64, "BF16": np.int16,
        "F8_E4M3": np.int8, "F8_E5M2": np.int8, "F8_E8M0": np.int8}


def _torch():
    try:
        import torch
    except ImportError as e:
        raise ImportError("weightlab.torch needs PyTorch: pip install torch") from e
    return torch


def _torch_dtype(torch, name):
    attr = _TORCH.get(name)
    dt = getattr(torch, attr, None) if attr else None
    if dt is None:
        raise UnsupportedError(f"dtype {name} has no equivalent in torch {torch.__version__} (unsupported)")
    return dt


def _to_torch(arr, name, device="cpu"):
    """A numpy array of the tensor's raw bits (``as_array(..., raw=True)``) as
    a torch tensor of its dtype, sharing the memory (then moved to ``device``)."""
    torch = _torch()
    if name in _dtypes.SUB_BYTE:
        t = torch.from_numpy(arr)  # the packed bytes, flat uint8
    else:
        dt = _torch_dtype(torch, name)
        via = _VIA.get(name)
        t = torch.from_numpy(arr.view(via)).view(dt) if via is not None else torch.from_numpy(arr)
    return t if str(device) == "cpu" else t.to(device)


def load_file(filename, device="cpu", threads=0):
    """Every tensor of an archive as torch tensors on ``device``, ``{name: tensor}``.

    Decoded in parallel straight into the tensors' memory (on the CPU;
    moved to ``device`` afterwards), the GIL released.
    """
    with safe_open(filename, framework="pt", device=device, threads=threads) as f:
        return f._load_all()


def save_file(tensors, filename, metadata=None, codec="auto", threads=0):
    """Compress ``{name: torch.Tensor}`` into an archive at ``filename``."""
    torch = _torch()
    names = {getattr(torch, _TORCH[k]): k for k in _TORCH if getattr(torch, _TORCH[k], None) is not None}
    items = []
    if not isinstance(tensors, dict):
        raise InvalidInputError("tensors must be a dict of name to tensor (invalid input)")
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise InvalidInputError(f"'{name}' is not a torch.Tensor (invalid input)")
        dname = names.get(t.dtype)
        if dname is None:
            raise UnsupportedError(f"tensor '{name}': torch dtype {t.dtype} has no safetensors equivalent (unsupported)")
        c = t.detach().to("cpu").contiguous()
        via = _VIA.get(dname)
        a = c.view(torch.int8 if c.element_size() == 1 else getattr(torch, f"int{8 * c.element_size()}")).numpy() if via is not None else c.numpy()
        items.append((name, dname, tuple(t.shape), flat_bytes(a)))
    return save_items(items, filename, metadata=metadata, codec=codec, threads=threads)
