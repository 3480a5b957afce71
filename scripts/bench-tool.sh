#!/usr/bin/env bash
# Whole commands as a user runs them, beside zstd and cp, in one run:
# weightlab compress / decompress at -j 1 and -j 2 against zstd -3 -T1/-T2,
# zstd -d and cp of the decompressed file, same disk, page cache warm.
# Each round runs every command once, in turn, so a slow spell of a shared
# machine hits all of them; the table gives the median wall time of the
# rounds and each command's time as a ratio of its zstd / cp counterpart
# (the issue's targets are ratios: decompress -j 1 <= 0.75x zstd -d and
# <= 1.5x cp; -j 2 <= 0.6x zstd -d; compress -j 1 <= 0.6x zstd -3 -T1).
#
#   ROUNDS=5 WEIGHTLAB=target/release/weightlab scripts/bench-tool.sh FILE.safetensors...
#
# Every output is written to a name that does not exist yet (the previous
# round's is removed before the timer starts), as a user writes a new file:
# replacing a file first frees its page cache inside the timed process, and
# that cost is the old file's, not the command's. ZipNN (its byte API on the
# whole file, file to file, as a script does) and lmzip (`lmz`) run from
# .venv-peers when installed there (`just peers zipnn lmzip`), each at 1 and 2
# threads like the others.
#
# Every round trip is compared with the input (sha256) once.
set -euo pipefail
bin=${WEIGHTLAB:-target/release/weightlab}
rounds=${ROUNDS:-5}
codec=${CODEC:-auto}
tmp=${TMPDIR_BENCH:-$(mktemp -d "${PWD}/.bench-tool.XXXXXX")}
trap 'rm -rf "$tmp"' EXIT

now() { date +%s%N; }
# run a command writing OUT, print its wall time in ms: timed OUT CMD...
timed() { local out=$1 t0 t1; shift; rm -f "$out"; t0=$(now); "$@" >/dev/null 2>&1 || { echo "error: $*" >&2; exit 1; }; t1=$(now); echo $(( (t1 - t0) / 1000000 )); }
peers_py=${PEERS_PYTHON:-.venv-peers/bin/python}
have_zipnn=0; have_lmz=0
[ -x "$peers_py" ] && "$peers_py" -c 'import zipnn' 2>/dev/null && have_zipnn=1
[ -x "$peers_py" ] && "$peers_py" -c 'import lmz' 2>/dev/null && have_lmz=1
# ZipNN file to file: zipnn_file c|d DTYPE THREADS IN OUT
zipnn_file() {
  "$peers_py" -c 'import sys, zipnn
mode, dt, th, src, dst = sys.argv[1:]
z = zipnn.ZipNN(input_format="byte", bytearray_dtype=dt, threads=int(th), method="HUFFMAN")
data = open(src, "rb").read()
open(dst, "wb").write(z.compress(data) if mode == "c" else z.decompress(data))' "$@"
}
# the majority dtype of a safetensors file, as ZipNN names it
zipnn_dtype() {
  python3 -c 'import json, struct, sys, collections
f = open(sys.argv[1], "rb"); n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n)); c = collections.Counter()
for k, v in h.items():
    if k != "__metadata__": c[v["dtype"]] += v["data_offsets"][1] - v["data_offsets"][0]
print({"BF16": "bfloat16", "F16": "float16", "F32": "float32"}.get(c.most_common(1)[0][0], "bfloat16"))' "$1"
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; $rounds rounds; codec $codec; $(date -u +%F)"
echo
echo "| file | MB | command | median ms | MB/s | vs zstd | vs cp | ratio % |"
echo "|---|---:|---|---:|---:|---:|---:|---:|"
for f in "$@"; do
  size=$(stat -c %s "$f")
  name=$(basename "$f")
  declare -A t=()
  cat "$f" >/dev/null  # warm the page cache
  [ $have_zipnn = 1 ] && zdt=$(zipnn_dtype "$f")
  for r in $(seq "$rounds"); do
    for j in 1 2; do
      t[c$j]+="$(timed "$tmp/a$j.wlab" "$bin" -q compress "$f" -o "$tmp/a$j.wlab" --codec "$codec" -j "$j") "
      t[d$j]+="$(timed "$tmp/o$j.safetensors" "$bin" -q decompress "$tmp/a$j.wlab" -o "$tmp/o$j.safetensors" -j "$j") "
      t[zc$j]+="$(timed "$tmp/z$j.zst" zstd -q -3 -T"$j" "$f" -o "$tmp/z$j.zst") "
      if [ $have_zipnn = 1 ]; then
        t[nc$j]+="$(timed "$tmp/n$j.znn" zipnn_file c "$zdt" "$j" "$f" "$tmp/n$j.znn") "
        t[nd$j]+="$(timed "$tmp/n$j.out" zipnn_file d "$zdt" "$j" "$tmp/n$j.znn" "$tmp/n$j.out") "
      fi
      if [ $have_lmz = 1 ]; then
        t[lc$j]+="$(timed "$tmp/l$j.lmz" .venv-peers/bin/lmz compress -q -j "$j" "$f" "$tmp/l$j.lmz") "
        t[ld$j]+="$(timed "$tmp/l$j.out" .venv-peers/bin/lmz decompress -q -j "$j" "$tmp/l$j.lmz" "$tmp/l$j.out") "
      fi
    done
    t[zd]+="$(timed "$tmp/z.out" zstd -q -d "$tmp/z1.zst" -o "$tmp/z.out") "
    t[cp]+="$(timed "$tmp/cp.out" cp "$tmp/o1.safetensors" "$tmp/cp.out") "
  done
  want=$(sha256sum "$f" | cut -d' ' -f1)
  outs=("$tmp/o1.safetensors" "$tmp/o2.safetensors" "$tmp/z.out")
  [ $have_zipnn = 1 ] && outs+=("$tmp/n1.out" "$tmp/n2.out")
  [ $have_lmz = 1 ] && outs+=("$tmp/l1.out" "$tmp/l2.out")
  for o in "${outs[@]}"; do
    got=$(sha256sum "$o" | cut -d' ' -f1)
    [ "$got" = "$want" ] || { echo "error: the round trip $o of $f differs" >&2; exit 1; }
  done
  med() { tr ' ' '\n' <<<"${t[$1]}" | grep . | median; }
  zc1=$(med zc1); zc2=$(med zc2); zd=$(med zd); cpm=$(med cp)
  arch=$(stat -c %s "$tmp/a1.wlab"); zarch=$(stat -c %s "$tmp/z1.zst")
  row() { # label key vs-zstd-ms vs-cp-ms compressed-size
    local m; m=$(med "$2")
    awk -v f="$name" -v mb="$size" -v l="$1" -v m="$m" -v z="$3" -v c="$4" -v a="$5" 'BEGIN {
      printf "| %s | %.0f | %s | %d | %.0f | %s | %s | %s |\n", f, mb/1e6, l, m, mb/1e6/(m/1000),
        (z == "" ? "" : sprintf("%.2fx", m/z)), (c == "" ? "" : sprintf("%.2fx", m/c)), (a == "" ? "" : sprintf("%.2f", 100*a/mb)) }'
  }
  row "weightlab compress -j 1" c1 "$zc1" "" "$arch"
  row "weightlab compress -j 2" c2 "$zc2" "" "$arch"
  row "zstd -3 -T1" zc1 "" "" "$zarch"
  row "zstd -3 -T2" zc2 "" "" "$zarch"
  if [ $have_zipnn = 1 ]; then
    for j in 1 2; do row "ZipNN $("$peers_py" -c 'import importlib.metadata as m; print(m.version("zipnn"))') compress, $j thread(s)" nc$j "$zc1" "" "$(stat -c %s "$tmp/n$j.znn")"; done
  fi
  if [ $have_lmz = 1 ]; then
    for j in 1 2; do row "lmzip $("$peers_py" -c 'import importlib.metadata as m; print(m.version("lmzip"))') compress -j $j" lc$j "$zc1" "" "$(stat -c %s "$tmp/l$j.lmz")"; done
  fi
  row "weightlab decompress -j 1" d1 "$zd" "$cpm" ""
  row "weightlab decompress -j 2" d2 "$zd" "$cpm" ""
  row "zstd -d" zd "" "$cpm" ""
  if [ $have_zipnn = 1 ]; then
    for j in 1 2; do row "ZipNN decompress, $j thread(s)" nd$j "$zd" "$cpm" ""; done
  fi
  if [ $have_lmz = 1 ]; then
    for j in 1 2; do row "lmzip decompress -j $j" ld$j "$zd" "$cpm" ""; done
  fi
  row "cp (of the output)" cp "" "" ""
  unset t
done
