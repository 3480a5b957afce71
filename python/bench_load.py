"""Load speed: a weightlab archive into numpy (and torch), beside safetensors
loading the uncompressed file and ZipNN decompressing it, where installed.

    python python/bench_load.py MODEL.safetensors [--threads 2] [--reps 5] [--codec auto] [--layer PREFIX]

Compresses the file once into a temporary directory, reads both files once
so that they are in the page cache, then times each loader as the best of
``--reps`` runs in this process (the import is not counted). Speeds are
tensor bytes (the file without its header) per second. Random access:
``get_tensor`` of the largest tensor, of each tensor of one layer (names
starting with ``--layer``) and of that layer's largest tensor. Prints a Markdown
table with the CPU, the core count and the load average, which say how far
to trust it: on a shared machine the numbers move with the other work.
"""

import argparse
import json
import os
import platform
import re
import struct
import sys
import tempfile
import time

import numpy as np

# This file sits beside the package's source folder (python/weightlab/, no
# compiled module), which Python would import ahead of the installed package.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]

import weightlab  # noqa: E402
import weightlab.numpy as wnp  # noqa: E402


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def best(fn, reps):
    t_best = float("inf")
    out = None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        t_best = min(t_best, time.perf_counter() - t)
        del out
        out = None
    return t_best


def header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return n + 8, h


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--codec", default="auto")
    ap.add_argument("--layer", default=None,
                    help="tensor-name prefix of one layer to time get_tensor on (default: the first 'layers.N.' "
                         "or 'layer.N.' prefix in the file)")
    ap.add_argument("--keep-freed-memory", action="store_true",
                    help="weightlab.keep_freed_memory() first (process-wide; what the CLI does)")
    a = ap.parse_args()
    load_start = os.getloadavg()
    if a.keep_freed_memory:
        weightlab.keep_freed_memory()

    size = os.path.getsize(a.file)
    hlen, h = header(a.file)
    tensor_bytes = size - hlen
    dtypes = {}
    for t in h.values():
        dtypes[t["dtype"]] = dtypes.get(t["dtype"], 0) + t["data_offsets"][1] - t["data_offsets"][0]
    major = max(dtypes, key=dtypes.get)
    largest = max(h, key=lambda k: h[k]["data_offsets"][1] - h[k]["data_offsets"][0])
    if a.layer is None:
        found = [re.match(r"^(.*?\blayers?\.(\d+)\.)", k) for k in h]
        found = sorted((int(m.group(2)), m.group(1)) for m in found if m)
        a.layer = found[0][1] if found else ""
    rows = []

    with tempfile.TemporaryDirectory() as tmp:
        arc = os.path.join(tmp, os.path.basename(a.file) + ".wlab")
        t = time.perf_counter()
        weightlab.compress_file(a.file, arc, codec=a.codec, threads=a.threads)
        t_c = time.perf_counter() - t
        asize = os.path.getsize(arc)
        for p in (a.file, arc):  # into the page cache
            with open(p, "rb") as f:
                while f.read(1 << 24):
                    pass

        reads = {}  # bytes a loader reads from disk, when not the uncompressed file

        def row(what, secs, note=""):
            rows.append((what, secs, tensor_bytes / secs / 1e9, note))

        def timed(what, fn, note=""):
            try:
                row(what, best(fn, a.reps), note)
            except Exception as e:  # a loader that cannot read this file
                rows.append((what, None, None, f"failed: {type(e).__name__}: {e}"))

        row("weightlab.numpy.load_file (archive)", best(lambda: wnp.load_file(arc, threads=a.threads), a.reps),
            f"codec {a.codec}, archive {100 * asize / size:.1f} % of the file")
        try:
            import torch

            import weightlab.torch as wt

            row("weightlab.torch.load_file (archive)", best(lambda: wt.load_file(arc, threads=a.threads), a.reps))
        except ImportError:
            torch = None
        try:
            import safetensors.numpy as stn

            timed("safetensors.numpy.load_file (uncompressed, page cache)", lambda: stn.load_file(a.file))
            try:
                if torch is None:
                    raise ImportError("no torch")
                import safetensors.torch as stt

                timed("safetensors.torch.load_file (uncompressed, page cache)", lambda: stt.load_file(a.file),
                      "its default backend maps the file: pages are faulted in on first use")
                timed("safetensors.torch.load_file(backend='pread')", lambda: stt.load_file(a.file, backend="pread"),
                      "every byte read into memory (safetensors >= 0.8)")

                def touched():
                    # one element per 4 KiB page of every tensor: the page faults a first use pays
                    d = stt.load_file(a.file)
                    for t in d.values():
                        flat = t.reshape(-1)
                        if flat.numel():
                            flat[:: max(1, 4096 // t.element_size())].to(torch.float32).sum()
                    return d

                timed("safetensors.torch.load_file, every page touched", touched)
            except ImportError:
                pass
        except ImportError:
            rows.append(("safetensors", None, None, "not installed"))
        try:
            import zipnn

            zdt = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}.get(major)
            if zdt is None:
                rows.append(("ZipNN", None, None, f"no byte grouping for {major}"))
            else:
                data = open(a.file, "rb").read()
                z = zipnn.ZipNN(method="HUFFMAN", input_format="byte", bytearray_dtype=zdt, threads=a.threads)
                c = z.compress(data)
                reads["ZipNN decompress (bytes in memory)"] = len(c)
                row("ZipNN decompress (bytes in memory)", best(lambda: z.decompress(c), a.reps),
                    f"{zdt}, {100 * len(c) / size:.1f} % of the file")
        except ImportError:
            rows.append(("ZipNN", None, None, "not installed"))

        nbytes = {k: v["data_offsets"][1] - v["data_offsets"][0] for k, v in h.items()}
        layer = [k for k in h if k.startswith(a.layer)] if a.layer else []
        with weightlab.safe_open(arc, threads=a.threads) as f:
            n_largest = nbytes[largest]
            t_get = best(lambda: f.get_tensor(largest), max(a.reps, 5))
            t_row = best(lambda: f.get_slice(largest)[0], max(a.reps, 5))
            if layer:
                big = max(layer, key=nbytes.get)
                t_layer = best(lambda: [f.get_tensor(k) for k in layer], max(a.reps, 20))
                t_big = best(lambda: f.get_tensor(big), max(a.reps, 20))

        def open_and_layer():
            with weightlab.safe_open(arc, threads=a.threads) as g:
                return [g.get_tensor(k) for k in layer]

        if layer:
            t_open_layer = best(open_and_layer, max(a.reps, 20))

    print(f"file: {a.file} ({size / 1e6:.1f} MB, {len(h)} tensors, mostly {major}); compress took {t_c:.2f} s")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores, threads={a.threads}; load average at the start "
          f"{' '.join(f'{x:.2f}' for x in load_start)}, at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}; python {sys.version.split()[0]}, numpy {np.__version__}, "
          f"weightlab {weightlab.__version__}; best of {a.reps}"
          f"{'; keep_freed_memory' if a.keep_freed_memory else ''}")
    print()
    print("| loader | seconds | GB/s of tensor bytes | a 1 GB/s disk: seconds | note |")
    print("|---|---:|---:|---:|---|")
    for what, secs, gbs, note in rows:
        if secs is None:
            print(f"| {what} | | | | {note} |")
            continue
        read = reads.get(what, asize if what.startswith("weightlab") else size) / 1e9
        print(f"| {what} | {secs:.4f} | {gbs:.2f} | {max(secs, read):.3f} (reading {read:.2f} GB) | {note} |")
    print()
    print(f"get_tensor('{largest}') ({n_largest / 1e6:.1f} MB): {1e3 * t_get:.2f} ms; "
          f"get_slice('{largest}')[0]: {1e3 * t_row:.2f} ms")
    if layer:
        print(f"one layer, '{a.layer}*' ({len(layer)} tensors, {sum(nbytes[k] for k in layer) / 1e6:.2f} MB): "
              f"get_tensor of each {1e3 * t_layer:.2f} ms (archive open), {1e3 * t_open_layer:.2f} ms with "
              f"safe_open; its largest, '{big}' ({nbytes[big] / 1e6:.2f} MB): {1e3 * t_big:.2f} ms")
    wl = {w: s for w, s, _, _ in rows if s is not None}
    z = wl.get("ZipNN decompress (bytes in memory)")
    for w in ("weightlab.numpy.load_file (archive)", "weightlab.torch.load_file (archive)"):
        if z and w in wl:
            print(f"{w}: {z / wl[w]:.2f}x ZipNN's decompress")
    print("(a 1 GB/s disk column: the larger of the load time from page cache and the time to read the file, "
          "an estimate where reading and decoding overlap, not a measurement)")


if __name__ == "__main__":
    main()
