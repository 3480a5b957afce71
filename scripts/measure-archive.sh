#!/usr/bin/env bash
# Round-trips safetensors files through `weightlab compress` / `decompress`
# with each codec, checks the sha256 of the result and `verify`, flips one byte
# of the archive and checks that verify and decompress fail naming a tensor,
# and prints a markdown table of ratio and MB/s (wall clock, whole CLI run,
# page cache warm).
#   scripts/measure-archive.sh [-j THREADS] FILE.safetensors...
# Codecs: $CODECS (space-separated), default: every generic codec and auto.
set -euo pipefail
threads=0
if [ "${1:-}" = "-j" ]; then threads=$2; shift 2; fi
bin=${WEIGHTLAB:-target/release/weightlab}
[ -x "$bin" ] || { echo "build first: cargo build --release --features blosc2 (or set WEIGHTLAB=path)" >&2; exit 1; }
codecs=${CODECS:-"zstd:level=3 zstd:level=19 zstd:level=19,threads=2 lz4 xz:level=9 deflate:level=1 deflate:level=9 planes>zstd:level=3 blosc2:codec=zstd,level=5,shuffle=byte auto"}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
now() { date +%s.%N; }
echo "| file | codec | size MB | archive MB | ratio % | compress MB/s | decompress MB/s | sha256 same | verify | flipped byte caught |"
echo "|---|---|---:|---:|---:|---:|---:|---|---|---|"
for f in "$@"; do
  size=$(stat -c %s "$f")
  want=$(sha256sum "$f" | cut -d' ' -f1)
  cat "$f" > /dev/null
  for c in $codecs; do
    a="$tmp/a.wlab"; o="$tmp/o.safetensors"
    t0=$(now); "$bin" -q compress -f "$f" -o "$a" --codec "$c" -j "$threads"; t1=$(now)
    "$bin" -q decompress -f "$a" -o "$o" -j "$threads"; t2=$(now)
    asize=$(stat -c %s "$a")
    same=no; [ "$(sha256sum "$o" | cut -d' ' -f1)" = "$want" ] && same=yes
    ver=fail; "$bin" -q verify "$a" --original "$f" -j "$threads" >/dev/null && ver=ok
    # flip a byte in the middle of the chunk data
    python3 - "$a" <<'PY'
import sys
p = sys.argv[1]; b = bytearray(open(p, 'rb').read()); b[len(b) // 3] ^= 0x20; open(p, 'wb').write(b)
PY
    caught=no
    if ! msg=$("$bin" -q verify "$a" 2>&1 >/dev/null) && echo "$msg" | grep -q "tensor '" \
       && ! "$bin" -q decompress "$a" -o "$tmp/bad.safetensors" 2>/dev/null && [ ! -e "$tmp/bad.safetensors" ]; then
      caught=yes
    fi
    awk -v f="$(basename "$(dirname "$f")")/$(basename "$f")" -v c="$c" -v s="$size" -v a="$asize" \
        -v t0="$t0" -v t1="$t1" -v t2="$t2" -v same="$same" -v ver="$ver" -v caught="$caught" 'BEGIN {
      printf "| %s | `%s` | %.1f | %.1f | %.2f | %.0f | %.0f | %s | %s | %s |\n",
        f, c, s/1e6, a/1e6, 100*a/s, s/1e6/(t1-t0), s/1e6/(t2-t1), same, ver, caught }'
    rm -f "$a" "$o"
  done
done
