"""safetensors dtype names <-> numpy dtypes.

BF16 and the FP8 formats have no numpy dtype of their own: they come as
``ml_dtypes.bfloat16``, ``ml_dtypes.float8_e4m3fn``, ``float8_e5m2`` and
``float8_e8m0fnu`` when the ``ml_dtypes`` package is installed, and else
as a view of the same bits as ``uint16`` (BF16) or ``uint8`` (FP8). The
sub-byte formats (F4, F6_E2M3, F6_E3M2) are packed, several elements to a
byte, which numpy cannot hold in an array of their shape: they come as
the packed bytes, a flat ``uint8`` array.
"""

import numpy as np

try:
    import ml_dtypes
except ImportError:  # optional
    ml_dtypes = None

# dtype name -> numpy dtype (little-endian, as safetensors stores them)
NATIVE = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype("u1"),
    "I8": np.dtype("i1"),
    "I16": np.dtype("<i2"),
    "U16": np.dtype("<u2"),
    "F16": np.dtype("<f2"),
    "I32": np.dtype("<i4"),
    "U32": np.dtype("<u4"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "I64": np.dtype("<i8"),
    "U64": np.dtype("<u8"),
    "C64": np.dtype("<c8"),
}

# dtype name -> (ml_dtypes attribute, the unsigned integer of its width)
EXTENDED = {
    "BF16": ("bfloat16", np.dtype("<u2")),
    "F8_E4M3": ("float8_e4m3fn", np.dtype("u1")),
    "F8_E5M2": ("float8_e5m2", np.dtype("u1")),
    "F8_E8M0": ("float8_e8m0fnu", np.dtype("u1")),
}

# packed several to a byte: returned as their bytes
SUB_BYTE = {"F4", "F6_E2M3", "F6_E3M2"}


def numpy_dtype(name, raw=False):
    """The numpy dtype a tensor of safetensors dtype ``name`` comes as, and
    whether it is packed (sub-byte: a flat array of its bytes). ``raw``:
    the plain integer dtype of the same width instead of an ml_dtypes one.
    """
    if name in NATIVE:
        return NATIVE[name], False
    if name in EXTENDED:
        attr, bits = EXTENDED[name]
        if not raw and ml_dtypes is not None and hasattr(ml_dtypes, attr):
            return np.dtype(getattr(ml_dtypes, attr)), False
        return bits, False
    if name in SUB_BYTE:
        return np.dtype("u1"), True
    from .errors import UnsupportedError

    raise UnsupportedError(f"dtype '{name}' has no numpy equivalent (unsupported)")


def as_array(buf, name, shape, raw=False):
    """A view of the decoded bytes ``buf`` (a flat uint8 array) as the tensor."""
    dt, packed = numpy_dtype(name, raw)
    if packed:
        return buf
    return buf.view(dt).reshape(tuple(shape))


def safetensors_name(dtype):
    """The safetensors dtype name of a numpy dtype (ml_dtypes' included)."""
    dt = np.dtype(dtype)
    if ml_dtypes is not None:
        for name, (attr, _) in EXTENDED.items():
            if hasattr(ml_dtypes, attr) and dt == np.dtype(getattr(ml_dtypes, attr)):
                return name
    for name, nd in NATIVE.items():
        if dt.kind == nd.kind and dt.itemsize == nd.itemsize:
            return name
    from .errors import UnsupportedError

    raise UnsupportedError(f"numpy dtype {dt} has no safetensors equivalent (unsupported)")
