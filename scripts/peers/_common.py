"""Shared harness of the Python peers (run by weightlab's experiment runner).

Each peer script defines `setup(opts, info)` returning a Peer: `compress` and
`decompress` callables (file to file, or bytes to bytes), a version string and
a note. This harness does what the runner does for its own codecs: one
verifying warm-up round trip, then `--reps` timed compress and decompress
passes, and prints ONE JSON object on stdout (the last line). A missing
package prints {"available": false, "note": ...}: never a made-up number.

The runner reads: available, note, version, compressed_bytes, compress_secs,
decompress_secs, verified, lossless, bound, max_abs_err, max_rel_err, rmse,
psnr, bound_held, peak_mem_bytes.
"""

import argparse
import json
import os
import resource
import struct
import sys
import time
import traceback

# The peer scripts are named after their packages (zipnn.py, bigsmall.py):
# drop this directory from the import path so `import zipnn` finds the
# package, not the script.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.modules.pop("zipnn", None)
sys.modules.pop("bigsmall", None)


class Peer:
    def __init__(self, compress, decompress, version="", note="", mode="file", lossless=True, bound="", check=None,
                 to_safetensors=None):
        # mode "file": compress(src_path, dst_path); "bytes": compress(bytes) -> bytes
        self.compress = compress
        self.decompress = decompress
        self.version = version
        self.note = note
        self.mode = mode
        self.lossless = lossless
        self.bound = bound
        # lossy peers: check(original_bytes, decoded_bytes) -> dict of error stats
        self.check = check
        # lossy peers: to_safetensors(original_bytes, decoded) -> the decoded model as a
        # safetensors file of the original's layout (the runner runs the model on it)
        self.to_safetensors = to_safetensors


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def unavailable(note):
    emit({"available": False, "note": note})
    sys.exit(0)


def parse_opts(s):
    """'k=v,k=v' (or space separated) -> dict of strings."""
    out = {}
    for part in s.replace(",", " ").split():
        if "=" in part:
            k, v = part.split("=", 1)
            out[k.strip()] = v.strip()
        elif part:
            out[part] = "1"
    return out


def safetensors_info(path):
    """Header of a safetensors file: (header_len, {name: (dtype, shape, start, end)}), and the majority dtype by bytes."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    tensors = {k: (v["dtype"], v["shape"], v["data_offsets"][0], v["data_offsets"][1])
               for k, v in header.items() if k != "__metadata__"}
    by_dtype = {}
    for dt, _, a, b in tensors.values():
        by_dtype[dt] = by_dtype.get(dt, 0) + (b - a)
    major = max(by_dtype, key=by_dtype.get) if by_dtype else "BF16"
    return {"header_len": 8 + n, "tensors": tensors, "dtype": major}


def tensors_equal(info, original, decoded_path):
    """True when every tensor of `decoded_path` has the original's bytes (header may differ)."""
    try:
        d = safetensors_info(decoded_path)
    except Exception:
        return False
    with open(decoded_path, "rb") as f:
        dec = f.read()
    if set(d["tensors"]) != set(info["tensors"]):
        return False
    h0, h1 = info["header_len"], d["header_len"]
    for name, (dt, shape, a, b) in info["tensors"].items():
        dt2, shape2, a2, b2 = d["tensors"][name]
        if dt != dt2 or shape != shape2 or original[h0 + a:h0 + b] != dec[h1 + a2:h1 + b2]:
            return False
    return True


def main(setup):
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--args", default="")
    ap.add_argument("--no-warmup", action="store_true")
    ap.add_argument("--decoded-out", default="",
                    help="lossy peers: write the decoded model here as safetensors (for the runner's [fidelity])")
    a = ap.parse_args()
    opts = parse_opts(a.args)
    opts.setdefault("threads", str(a.threads))
    try:
        info = safetensors_info(a.input)
    except Exception as e:  # not a safetensors file: still measurable as bytes
        info = {"header_len": 0, "tensors": {}, "dtype": "BF16", "error": str(e)}
    try:
        peer = setup(opts, info)
    except ImportError as e:
        unavailable(f"not installed: {e} (run `just peers`)")
    except Exception as e:
        unavailable(f"setup failed: {e}")

    with open(a.input, "rb") as f:
        original = f.read()
    os.makedirs(a.work, exist_ok=True)
    packed = os.path.join(a.work, "peer.packed")
    unpacked = os.path.join(a.work, "peer.unpacked.safetensors")
    state = {}

    def one_round():
        if peer.mode == "bytes":
            t0 = time.perf_counter()
            c = peer.compress(original)
            t1 = time.perf_counter()
            d = peer.decompress(c)
            t2 = time.perf_counter()
            state["size"] = getattr(c, "size", None) if not isinstance(c, (bytes, bytearray, memoryview)) else len(c)
            if state["size"] is None:
                state["size"] = len(c)
            state["decoded"] = d
        else:
            for p in (packed, unpacked):
                if os.path.isdir(p):
                    import shutil
                    shutil.rmtree(p)
                elif os.path.exists(p):
                    os.remove(p)
            t0 = time.perf_counter()
            peer.compress(a.input, packed)
            t1 = time.perf_counter()
            peer.decompress(packed, unpacked)
            t2 = time.perf_counter()
            state["size"] = dir_size(packed)
            state["decoded"] = None
        return t1 - t0, t2 - t1

    def verify(out):
        out["compressed_bytes"] = state["size"]
        if peer.lossless:
            if peer.mode == "bytes":
                out["verified"] = bytes(state["decoded"]) == original
                if not out["verified"]:
                    out["note"] = (out.get("note", "") + "; round trip differs from the original").lstrip("; ")
            else:
                with open(unpacked, "rb") as f:
                    same = f.read() == original
                if same:
                    out["verified"] = True
                elif tensors_equal(info, original, unpacked):
                    out["verified"] = True
                    out["note"] = (out.get("note", "") + "; tensors bit-identical, safetensors header rewritten").lstrip("; ")
                else:
                    out["verified"] = False
                    out["note"] = (out.get("note", "") + "; round trip differs").lstrip("; ")
        else:
            decoded = state["decoded"] if peer.mode == "bytes" else open(unpacked, "rb").read()
            stats = peer.check(original, decoded)
            out.update(stats)
            out["verified"] = bool(stats.get("bound_held", True))
            if a.decoded_out and peer.to_safetensors is not None:
                tmp = a.decoded_out + ".tmp"
                with open(tmp, "wb") as f:
                    f.write(peer.to_safetensors(original, decoded))
                os.replace(tmp, a.decoded_out)
                out["decoded_path"] = a.decoded_out

    out = {"available": True, "version": peer.version, "note": peer.note, "lossless": peer.lossless,
           "bound": peer.bound, "compress_secs": [], "decompress_secs": []}
    try:
        if not a.no_warmup:
            one_round()
            verify(out)
        for _ in range(a.reps):
            tc, td = one_round()
            out["compress_secs"].append(tc)
            out["decompress_secs"].append(td)
        if a.no_warmup:
            verify(out)
    except Exception as e:
        traceback.print_exc(file=sys.stderr)
        emit({"available": True, "verified": False, "version": peer.version,
              "note": f"failed: {type(e).__name__}: {e}"})
        return
    # ru_maxrss is KiB on Linux: the whole process (interpreter, library, data)
    out["peak_mem_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    emit(out)


def dir_size(p):
    if os.path.isdir(p):
        return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(p) for f in fs)
    return os.path.getsize(p)


def pkg_version(name):
    try:
        from importlib.metadata import version
        return f"{name} {version(name)}"
    except Exception:
        return name
