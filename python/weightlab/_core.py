"""safe_open, the loader behind weightlab.numpy and weightlab.torch."""

import operator
import os

import numpy as np

from . import _dtypes, _native
from .errors import InvalidInputError, UnsupportedError

_FRAMEWORKS = {"np": "np", "numpy": "np", "pt": "pt", "torch": "pt", "pytorch": "pt"}


class safe_open:
    """Open a weightlab archive the way ``safetensors.safe_open`` opens a file.

    >>> with weightlab.safe_open("model.safetensors.wlab", framework="np") as f:
    ...     names = f.keys()
    ...     w = f.get_tensor(names[0])          # decodes only that tensor's chunks
    ...     rows = f.get_slice(names[0])[:10]   # decodes only the chunks of rows 0..9

    ``framework``: ``"np"`` (numpy arrays) or ``"pt"`` (torch tensors on
    ``device``). ``threads``: decoding threads (0: one per core). The archive
    is memory-mapped; ``close()`` (or leaving the ``with`` block) unmaps it.
    """

    def __init__(self, filename, framework="np", device="cpu", threads=0):
        fw = _FRAMEWORKS.get(str(framework).lower())
        if fw is None:
            raise InvalidInputError(f"framework '{framework}' is not one of np, pt (invalid input)")
        self._fw = fw
        self._device = device
        self._threads = int(threads)
        self._archive = _native.Archive(os.fspath(filename))
        self._tensors = self._archive.tensors()
        self._by_name = {t[0]: i for i, t in enumerate(self._tensors)}

    # context manager
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        self._archive.close()

    def keys(self):
        """Tensor names, sorted (as safetensors gives them)."""
        return sorted(self._by_name)

    def offset_keys(self):
        """Tensor names in the order of their data in the original file."""
        return [t[0] for t in self._tensors]

    def metadata(self):
        """The original file's ``__metadata__`` (a dict of strings), or None."""
        return self._archive.metadata()

    def info(self):
        """Facts about the archive: original file name, size and sha256, chunk size, writer."""
        return self._archive.info()

    def codec(self, name):
        """The codec spec that encoded tensor ``name``."""
        return self._tensors[self._index(name)][4]

    def _index(self, name):
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no tensor named '{name}' in the archive") from None

    def _convert(self, arr, name):
        if self._fw == "np":
            return arr
        from . import torch as wtorch

        return wtorch._to_torch(arr, name, self._device)

    def _raw(self):
        # torch takes the bits as plain integers and views them as its own dtype
        return self._fw == "pt"

    def get_tensor(self, name):
        """Decode one tensor (only its chunks are read), chunks in parallel."""
        i = self._index(name)
        _, dtype, shape, size, _, _ = self._tensors[i]
        buf = np.empty(size, dtype=np.uint8)
        self._archive.read_into([(i, buf)], self._threads)
        return self._convert(_dtypes.as_array(buf, dtype, shape, self._raw()), dtype)

    def get_slice(self, name):
        """A lazy view of tensor ``name``: ``[rows]`` decodes only the chunks that hold those rows."""
        return _Slice(self, self._index(name))

    def _load_all(self):
        """Every tensor, all chunks of all of them decoded in one parallel pass."""
        bufs = [np.empty(t[3], dtype=np.uint8) for t in self._tensors]
        self._archive.read_into(list(enumerate(bufs)), self._threads)
        return {
            t[0]: self._convert(_dtypes.as_array(b, t[1], t[2], self._raw()), t[1])
            for t, b in sorted(zip(self._tensors, bufs), key=lambda x: x[0][0])
        }

    def _chunks(self, name):
        """(start, end, archive offset, encoded length) of each chunk of tensor ``name``."""
        return self._archive.chunks(self._index(name))


class _Slice:
    """What ``safe_open.get_slice`` returns: shape and dtype without decoding,
    and indexing that decodes the rows (first dimension) it needs."""

    def __init__(self, f, i):
        self._f = f
        self._i = i
        _, self._dtype, self._shape, self._size, _, _ = f._tensors[i]

    def get_shape(self):
        return list(self._shape)

    def get_dtype(self):
        return self._dtype

    @property
    def shape(self):
        return tuple(self._shape)

    def _rows(self, lo, hi):
        """Rows lo..hi as an array of shape (hi - lo, *shape[1:])."""
        dt, packed = _dtypes.numpy_dtype(self._dtype, self._f._raw())
        if packed:
            raise UnsupportedError(
                f"tensor '{self._f._tensors[self._i][0]}': rows of the packed dtype {self._dtype} cannot be sliced (unsupported)"
            )
        row = dt.itemsize
        for d in self._shape[1:]:
            row *= d
        buf = np.empty((hi - lo) * row, dtype=np.uint8)
        self._f._archive.read_range_into(self._i, lo * row, hi * row, buf, self._f._threads)
        return buf.view(dt).reshape((hi - lo, *self._shape[1:]))

    def __getitem__(self, key):
        f = self._f
        name = f._tensors[self._i][0]
        key_t = key if isinstance(key, tuple) else (key,)
        first = key_t[0] if key_t else Ellipsis
        rest = key_t[1:]
        if len(self._shape) == 0 or first is Ellipsis or first is None or not _is_row_index(first):
            # anything but an int or a slice on the rows: decode the whole tensor
            arr = f.get_tensor(name) if f._fw == "np" else self._whole_np()
            out = arr[key]
        else:
            n = self._shape[0]
            if isinstance(first, slice):
                r = range(*first.indices(n))
                if len(r) == 0:
                    out = self._rows(0, 0)[(slice(None),) + rest]
                else:
                    lo, hi = min(r[0], r[-1]), max(r[0], r[-1]) + 1
                    stop = r.stop - lo
                    local = slice(r.start - lo, stop if stop >= 0 else None, r.step)
                    out = self._rows(lo, hi)[(local,) + rest]
            else:
                j = operator.index(first)
                if not -n <= j < n:
                    raise IndexError(f"index {j} is out of bounds for axis 0 with size {n}")
                j %= n
                out = self._rows(j, j + 1)[(0,) + rest]
            if f._fw == "np":
                return out
        if f._fw == "np":
            return out
        return f._convert(np.ascontiguousarray(out), self._dtype)

    def _whole_np(self):
        _, dtype, shape, size, _, _ = self._f._tensors[self._i]
        buf = np.empty(size, dtype=np.uint8)
        self._f._archive.read_into([(self._i, buf)], self._f._threads)
        return _dtypes.as_array(buf, dtype, shape, True)


def _is_row_index(k):
    if isinstance(k, slice):
        return True
    if isinstance(k, (bool, np.bool_)):
        return False
    try:
        operator.index(k)
        return True
    except TypeError:
        return False
