"""Compress a model directory as parallel Ray tasks, one slice each, then join.

    python ray_compress.py DIR OUT [--tasks N] [--threads T] [--codec SPEC]

Each task runs ``weightlab.compress_file(DIR, OUT, shard=(i, N))``: slice i
of N of the directory's files (deterministic, balanced by size), written
into OUT with its partial manifest. When every task has finished,
``weightlab.join_slices(OUT)`` checks that all N slices are there and
writes the manifest one process would have written: OUT is then the
directory ``weightlab.compress_file(DIR, OUT)`` makes, byte for byte.

``ray.init()`` is called with no address: a local cluster on this machine
(or the one ``RAY_ADDRESS`` names, Ray's own rule). On a cluster of several
machines DIR and OUT must be on storage that every node sees, by the same
path. ``--tasks`` defaults to the cluster's CPU count; each task asks Ray
for ``--threads`` CPUs and uses that many codec threads.

Needs ``pip install ray`` beside the weightlab package.
"""

import argparse
import os
import sys
import time

import ray

import weightlab


@ray.remote
def compress_slice(src, out, i, n, threads, codec):
    t = time.perf_counter()
    r = weightlab.compress_file(src, out, shard=(i, n), threads=threads, codec=codec)
    return dict(r, slice=i, seconds=time.perf_counter() - t, node=ray.get_runtime_context().get_node_id())


def positive(s):
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{s}: must be at least 1")
    return v


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", help="the model directory (Hugging Face layout)")
    ap.add_argument("out", help="the compressed directory to write (DIR.wlab by convention)")
    ap.add_argument("--tasks", type=positive, help="number of slices, one Ray task each (default: the cluster's CPUs)")
    ap.add_argument("--threads", type=positive, default=1, help="codec threads (and Ray CPUs) per task (default 1)")
    ap.add_argument("--codec", default="auto")
    a = ap.parse_args(argv)
    if not os.path.isdir(a.dir):
        ap.error(f"{a.dir}: not a directory")
    src, out = os.path.abspath(a.dir), os.path.abspath(a.out)

    ray.init(include_dashboard=False, log_to_driver=False)
    try:
        n = a.tasks or max(1, int(ray.cluster_resources().get("CPU", 1)) // a.threads)
        t = time.perf_counter()
        task = compress_slice.options(num_cpus=a.threads)
        refs = [task.remote(src, out, i, n, a.threads, a.codec) for i in range(1, n + 1)]
        try:
            reports = ray.get(refs)
        except ray.exceptions.RayTaskError as e:
            # the task's own exception (a weightlab error names the file)
            cause = e.cause if getattr(e, "cause", None) is not None else e
            print(f"ray_compress: a slice failed: {type(cause).__name__}: {cause}", file=sys.stderr)
            return getattr(cause, "exit_code", 1)
        joined = weightlab.join_slices(out)
        secs = time.perf_counter() - t
    finally:
        ray.shutdown()

    stored = sum(r["stored_bytes"] for r in reports)
    for r in reports:
        print(f"slice {r['slice']}/{n}: {r['files']} files ({r['archives']} archives), "
              f"{r['bytes'] / 1e6:.1f} MB -> {r['stored_bytes'] / 1e6:.1f} MB in {r['seconds']:.2f} s")
    print(f"{src} -> {out}: {n} tasks joined, {joined['files']} files, {joined['bytes'] / 1e6:.1f} MB -> "
          f"{stored / 1e6:.1f} MB ({100 * stored / max(joined['bytes'], 1):.2f} %) in {secs:.2f} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except weightlab.WeightlabError as e:
        print(f"ray_compress: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
