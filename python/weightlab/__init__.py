"""weightlab: compressed neural-network weights straight into numpy and
PyTorch, with the API of safetensors.

Change one import::

    from weightlab.numpy import load_file      # was: from safetensors.numpy import load_file
    from weightlab.torch import load_file      # was: from safetensors.torch import load_file
    from weightlab import safe_open            # was: from safetensors import safe_open

and compress files or whole model directories::

    weightlab.compress_file("model.safetensors")         # -> model.safetensors.wlab
    weightlab.compress_file("all-MiniLM-L6-v2/")         # -> all-MiniLM-L6-v2.wlab/
    weightlab.decompress_file("model.safetensors.wlab")  # -> model.safetensors

and scale a directory out, one slice per process or machine::

    weightlab.compress_file("big-model/", "big-model.wlab", shard=(i, n))   # for each i in 1..n
    weightlab.join_slices("big-model.wlab")                                   # once all n are done

The codecs are the Rust library's (no command-line tool is run). Errors are
the exceptions of ``weightlab.errors``.
"""

import operator
import os

from . import _native, errors
from ._core import safe_open
from .errors import *  # noqa: F401,F403

__version__ = _native.VERSION
SUFFIX = _native.SUFFIX


def _default_output(path, compress):
    p = os.fspath(path).rstrip("/\\") or os.fspath(path)
    if compress:
        return p + SUFFIX
    if not p.endswith(SUFFIX):
        raise errors.InvalidInputError(f"{p}: does not end in {SUFFIX}, give an output path (invalid input)")
    return p[: -len(SUFFIX)]


def _shard(shard):
    if shard is None:
        return None
    try:
        i, n = (operator.index(x) for x in shard)
    except (TypeError, ValueError):
        raise errors.InvalidInputError(
            f"shard must be a pair (i, n) of integers with 1 <= i <= n, not {shard!r} (invalid input)") from None
    if not 1 <= i <= n:
        raise errors.InvalidInputError(f"shard ({i}, {n}): i must be 1 to n (invalid input)")
    return (i, n)


def compress_file(input, output=None, codec="auto", threads=0, overwrite=False, sync=False, progress=None, chunk_kib=4096,
                  shard=None):
    """Compress a safetensors file (to ``FILE.wlab``) or a model directory
    (to ``DIR.wlab/``, a directory of the same shape with a manifest), as
    ``weightlab compress`` does.

    ``threads``: 0 is one per core. An existing output is refused unless
    ``overwrite`` (zstd's habit); ``sync`` syncs each output before it is
    renamed into place. ``progress``: a callable ``progress(done_bytes,
    total_bytes)``, called before the work starts and when it is done (a
    directory is one call into the library: there are no steps between).
    ``shard=(i, n)`` (a directory only): compress only slice ``i`` of ``n``
    (1-based; deterministic, balanced by size) of its files and write that
    slice's partial manifest ``weightlab-manifest.I-of-N.json``, as
    ``weightlab compress DIR -o OUT --shard I/N``; once all ``n`` slices have
    run into the same ``output``, :func:`join_slices` writes its manifest.
    Returns ``{"files", "archives", "bytes", "stored_bytes"}`` (of this
    slice only, with ``shard``).
    """
    shard = _shard(shard)
    out = os.fspath(output) if output is not None else _default_output(input, True)
    return _native.compress_path(os.fspath(input), out, codec=codec, threads=int(threads), chunk_kib=int(chunk_kib),
                                 overwrite=bool(overwrite), sync=bool(sync), progress=progress, shard=shard)


def join_slices(dir):
    """Join the slices that ``compress_file(DIR, OUT, shard=(i, n))`` calls
    (in any processes or machines) wrote into ``OUT``, as ``weightlab
    join-slices OUT`` does: checks that all ``n`` slices of the same input
    have finished, writes the manifest one unsliced call would have written
    and removes the slices' partial manifests. A missing slice or one of
    another job raises :class:`~weightlab.errors.InvalidInputError`.
    Returns ``{"files", "archives", "bytes"}`` of the whole directory.
    """
    rows = _native.join_slices(os.fspath(dir))
    return {"files": len(rows), "archives": sum(1 for r in rows if r[3] == "archive"),
            "bytes": sum(r[1] for r in rows)}


def decompress_file(input, output=None, threads=0, overwrite=False, sync=False, progress=None):
    """Decompress an archive (``FILE.wlab`` to ``FILE``) or a compressed model
    directory (``DIR.wlab/`` to ``DIR/``, byte for byte), as ``weightlab
    decompress`` does. Arguments as for :func:`compress_file`.
    """
    out = os.fspath(output) if output is not None else _default_output(input, False)
    return _native.decompress_path(os.fspath(input), out, threads=int(threads), overwrite=bool(overwrite),
                                   sync=bool(sync), progress=progress)


def verify(input, threads=0):
    """Check an archive or a compressed directory completely, as ``weightlab
    verify`` does: every chunk, every tensor's sha256 and the file's (and
    every copied file's, for a directory). Raises on damage."""
    return _native.verify_path(os.fspath(input), threads=int(threads))


def is_compressed_dir(path):
    """Is ``path`` a compressed model directory (it has a weightlab manifest)?"""
    return _native.is_compressed_dir(os.fspath(path))


def keep_freed_memory():
    """Make the C allocator (glibc) keep freed memory for reuse instead of
    handing it back to the kernel, for the whole process: the codecs
    allocate and free chunk-sized buffers, and fresh pages cost page faults
    each time. The command-line tool does this at its start; a library must
    not change its host process unasked, so here it is a choice. Measured
    on a 269 MB BF16 archive, two threads, ``numpy.load_file``: about 20 %
    faster (on a machine loaded by other work). The cost: freed memory stays
    resident (up to 1 GB). Does nothing off glibc."""
    _native.keep_freed_memory()


__all__ = ["safe_open", "compress_file", "join_slices", "decompress_file", "verify", "is_compressed_dir", "keep_freed_memory", "errors"] + errors.__all__
