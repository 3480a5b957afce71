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
# Every weightlab output is compared with the input (sha256) once.
set -euo pipefail
bin=${WEIGHTLAB:-target/release/weightlab}
rounds=${ROUNDS:-5}
codec=${CODEC:-auto}
tmp=${TMPDIR_BENCH:-$(mktemp -d "${PWD}/.bench-tool.XXXXXX")}
trap 'rm -rf "$tmp"' EXIT

now() { date +%s%N; }
# run a command, print its wall time in ms
timed() { local t0 t1; t0=$(now); "$@" >/dev/null 2>&1; t1=$(now); echo $(( (t1 - t0) / 1000000 )); }
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
  for r in $(seq "$rounds"); do
    for j in 1 2; do
      t[c$j]+="$(timed "$bin" -q compress -f "$f" -o "$tmp/a$j.wlab" --codec "$codec" -j "$j") "
      t[d$j]+="$(timed "$bin" -q decompress -f "$tmp/a$j.wlab" -o "$tmp/o$j.safetensors" -j "$j") "
      t[zc$j]+="$(timed zstd -q -f -3 -T"$j" "$f" -o "$tmp/z$j.zst") "
    done
    t[zd]+="$(timed zstd -q -f -d "$tmp/z1.zst" -o "$tmp/z.out") "
    t[cp]+="$(timed cp "$tmp/o1.safetensors" "$tmp/cp.out") "
  done
  want=$(sha256sum "$f" | cut -d' ' -f1)
  for j in 1 2; do
    got=$(sha256sum "$tmp/o$j.safetensors" | cut -d' ' -f1)
    [ "$got" = "$want" ] || { echo "error: -j $j round trip of $f differs" >&2; exit 1; }
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
  row "weightlab decompress -j 1" d1 "$zd" "$cpm" ""
  row "weightlab decompress -j 2" d2 "$zd" "$cpm" ""
  row "zstd -d" zd "" "$cpm" ""
  row "cp (of the output)" cp "" "" ""
  unset t
done
