#!/usr/bin/env bash
# Speed, ratio and peak memory of `weightlab compress` / `decompress` per codec,
# beside `zstd` and ZipNN, on the same files in the same run: the table of
# issue #3. Every number is the best of $REPS runs of the whole command (page
# cache warm); peak RSS is the largest of those runs (GNU time's %M). The
# weightlab rows are checked bit for bit (sha256 of the decompressed file).
#   scripts/measure-speed.sh [-j THREADS] FILE.safetensors...
# Codecs: $CODECS (space-separated); ZipNN is measured when .venv-peers has it.
set -euo pipefail
threads=1
if [ "${1:-}" = "-j" ]; then threads=$2; shift 2; fi
bin=${WEIGHTLAB:-target/release/weightlab}
[ -x "$bin" ] || { echo "build first: cargo build --release --features blosc2 (or set WEIGHTLAB=path)" >&2; exit 1; }
reps=${REPS:-3}
codecs=${CODECS:-"zstd:level=3 lz4 planes>zstd:level=3 blosc2:codec=zstd,level=5,shuffle=byte exp exp:gain=100 auto"}
py=.venv-peers/bin/python
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# best wall seconds and largest RSS (KiB) of $reps runs of a command
measure() {
  local best=1e9 rss=0 t m
  for _ in $(seq "$reps"); do
    read -r t m < <(/usr/bin/time -f "%e %M" -o "$tmp/time" "$@" >/dev/null 2>&1; cat "$tmp/time")
    best=$(awk -v a="$best" -v b="$t" 'BEGIN { print (b < a ? b : a) }')
    rss=$(( m > rss ? m : rss ))
  done
  echo "$best $rss"
}

row() { # file codec size archive csec crss dsec drss check
  awk -v f="$1" -v c="$2" -v s="$3" -v a="$4" -v ct="$5" -v cr="$6" -v dt="$7" -v dr="$8" -v ok="$9" -v fl="${10}" 'BEGIN {
    printf "| %s | `%s` | %.2f | %s | %.0f | %.0f | %.0f | %.0f | %s |\n",
      f, c, 100*a/s, fl, s/1e6/ct, s/1e6/dt, cr/1024, dr/1024, ok }'
}

echo "| file | codec | ratio % | floor % | compress MB/s | decompress MB/s | compress peak RSS MiB | decompress peak RSS MiB | round trip |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---|"
for f in "$@"; do
  name="$(basename "$(dirname "$f")")/$(basename "$f")"
  size=$(stat -c %s "$f")
  want=$(sha256sum "$f" | cut -d' ' -f1)
  floor=$("$bin" analyze "$f" | sed -n 's/.*floor with one model per tensor: .* = \([0-9.]*\) % of the tensor data.*/\1/p')
  cat "$f" > /dev/null
  for c in $codecs; do
    read -r ct cr < <(measure "$bin" -q compress -f "$f" -o "$tmp/a.wlab" --codec "$c" -j "$threads")
    read -r dt dr < <(measure "$bin" -q decompress -f "$tmp/a.wlab" -o "$tmp/o.safetensors" -j "$threads")
    ok=differs; [ "$(sha256sum "$tmp/o.safetensors" | cut -d' ' -f1)" = "$want" ] && ok="bit for bit"
    row "$name" "$c" "$size" "$(stat -c %s "$tmp/a.wlab")" "$ct" "$cr" "$dt" "$dr" "$ok" "$floor"
    rm -f "$tmp/a.wlab" "$tmp/o.safetensors"
  done
  # zstd -3, one thread, the file as bytes
  read -r ct cr < <(measure zstd -q -f -3 -T"$threads" "$f" -o "$tmp/z.zst")
  read -r dt dr < <(measure zstd -q -f -d "$tmp/z.zst" -o "$tmp/z.out")
  ok=differs; cmp -s "$f" "$tmp/z.out" && ok="bit for bit"
  row "$name" "zstd -3 (CLI)" "$size" "$(stat -c %s "$tmp/z.zst")" "$ct" "$cr" "$dt" "$dr" "$ok" "$floor"
  # ZipNN: its Python byte API, in-process timing (the interpreter's start
  # and import are not counted); RSS of the whole process
  if [ -x "$py" ] && "$py" -c "import zipnn" 2>/dev/null; then
    /usr/bin/time -f "%M" -o "$tmp/time" "$py" - "$f" "$threads" "$reps" > "$tmp/zipnn" 2>/dev/null <<'PY' || true
import json, struct, sys, time, warnings
warnings.filterwarnings("ignore")
import zipnn
path, threads, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = open(path, "rb").read()
# the file's majority float dtype, by bytes
(n,) = struct.unpack("<Q", data[:8])
by = {}
for k, t in json.loads(data[8:8 + n]).items():
    if k != "__metadata__":
        by[t["dtype"]] = by.get(t["dtype"], 0) + t["data_offsets"][1] - t["data_offsets"][0]
dtype = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}[max(by, key=by.get)]
z = zipnn.ZipNN(method="HUFFMAN", input_format="byte", bytearray_dtype=dtype, threads=threads)
bc = bd = 1e9
for _ in range(reps):
    t = time.perf_counter(); c = z.compress(data); bc = min(bc, time.perf_counter() - t)
    t = time.perf_counter(); d = z.decompress(c); bd = min(bd, time.perf_counter() - t)
print(len(c), bc, bd, dtype, "bit for bit" if bytes(d) == data else "differs (ZipNN's own round trip)")
PY
    if [ -s "$tmp/zipnn" ]; then
      read -r zs zc zd zdt zok < "$tmp/zipnn"
      zr=$(cat "$tmp/time")
      row "$name" "ZipNN $("$py" -c 'import importlib.metadata as m; print(m.version("zipnn"))') ($zdt, in-process)" \
        "$size" "$zs" "$zc" "$zr" "$zd" "$zr" "$zok" "$floor"
    fi
  fi
done
