"""BigSmall (pip bigsmall): its .bs container of the file, file to file
through bigsmall.compress / bigsmall.decompress. Args: mode=balanced|...,
threads=N."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Peer, main, pkg_version  # noqa: E402


def setup(opts, info):
    import bigsmall

    mode = opts.get("mode", "balanced")
    workers = int(opts.get("threads", "1"))

    def compress(src, dst):
        bigsmall.compress(src, dst, mode=mode, workers=workers, progress=False)

    def decompress(src, dst):
        bigsmall.decompress(src, dst, progress=False)

    return Peer(compress, decompress, version=pkg_version("bigsmall"), note=f"file to file, mode {mode}")


if __name__ == "__main__":
    main(setup)
