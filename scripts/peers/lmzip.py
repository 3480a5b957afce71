"""lmz (pip lmzip): its own archive of the file, file to file through its
Python API (lmz.compress / lmz.decompress). Args: level=N, threads=N."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Peer, main, pkg_version  # noqa: E402


def setup(opts, info):
    import lmz  # noqa: F401
    from lmz import api

    level = int(opts.get("level", str(api.DEFAULT_LEVEL)))
    workers = int(opts.get("threads", "1"))

    def compress(src, dst):
        api.compress(src, dst, level=level, workers=workers)

    def decompress(src, dst):
        api.decompress(src, dst, workers=workers, overwrite=True)

    return Peer(compress, decompress, version=pkg_version("lmzip"), note=f"file to file, level {level}")


if __name__ == "__main__":
    main(setup)
