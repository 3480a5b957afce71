"""The exceptions weightlab raises: one class per kind of error of the Rust
library (`weightlab::ErrorKind`), each carrying the message the command-line
tool prints (which names the file, the tensor and the chunk where it can).

Each class has a ``kind`` attribute (the library's name of the kind) and an
``exit_code`` (the command-line tool's exit status for it).
"""


class WeightlabError(Exception):
    """Any error of weightlab."""

    kind = "error"
    exit_code = 1


class InvalidInputError(WeightlabError, ValueError):
    """Malformed input: a bad safetensors file, a bad codec spec, a bad argument."""

    kind = "invalid input"
    exit_code = 2


class CorruptArchiveError(WeightlabError):
    """A damaged archive or stream: a checksum mismatch, a lying index, not an archive."""

    kind = "corruption"
    exit_code = 3


class TruncatedArchiveError(CorruptArchiveError):
    """An archive that ends before the data it promises."""

    kind = "truncated"
    exit_code = 3


class HashMismatchError(WeightlabError):
    """A sha256 that does not match (a tensor, a file, a manifest entry)."""

    kind = "hash mismatch"
    exit_code = 4


class UnsupportedError(WeightlabError):
    """Well-formed but not supported: a newer format, an unknown codec id or dtype."""

    kind = "unsupported"
    exit_code = 5


class BoundViolatedError(WeightlabError):
    """A lossy codec did not keep its declared error bound."""

    kind = "error bound violated"
    exit_code = 6


class NetworkError(WeightlabError):
    """A download failed."""

    kind = "network"
    exit_code = 7


class WeightlabIOError(WeightlabError, OSError):
    """An operating-system I/O error (a missing file, a full disk)."""

    kind = "i/o error"
    exit_code = 1

    def __init__(self, message):
        # one argument: OSError would read two as (errno, strerror)
        super().__init__(message)


__all__ = [
    "WeightlabError",
    "InvalidInputError",
    "CorruptArchiveError",
    "TruncatedArchiveError",
    "HashMismatchError",
    "UnsupportedError",
    "BoundViolatedError",
    "NetworkError",
    "WeightlabIOError",
]
