"""ZipNN (pip zipnn): byte grouping + Huffman (or zstd) on the whole file's
bytes, in memory, as its byte API does. Args: method=HUFFMAN|ZSTD|AUTO,
level=N (zstd), threads=N. The float type is the file's majority dtype."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Peer, main, pkg_version  # noqa: E402

DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}


def setup(opts, info):
    import zipnn  # noqa: F401  (ImportError -> unavailable)

    dtype = DTYPES.get(info["dtype"])
    if dtype is None:
        raise ValueError(f"ZipNN has no byte grouping for {info['dtype']}")
    z = zipnn.ZipNN(
        method=opts.get("method", "HUFFMAN"),
        input_format="byte",
        bytearray_dtype=dtype,
        threads=int(opts.get("threads", "1")),
        zstd_level=int(opts.get("level", "3")),
    )
    return Peer(z.compress, z.decompress, version=pkg_version("zipnn"),
                note=f"in-process byte API, {dtype}, method {opts.get('method', 'HUFFMAN')}", mode="bytes")


if __name__ == "__main__":
    main(setup)
