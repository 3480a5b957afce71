#!/usr/bin/env bash
# Codec-only speed, one thread, of weightlab's codecs beside ZipNN's
# in-process byte API, on the same files in the same run: the comparison of
# issue #3 without the tool's hashing and file writes (ZipNN is timed on
# bytes in memory, so this is the like-for-like one). The two alternate for
# $ROUNDS rounds and each keeps its best, so that a slow spell of a shared
# machine lowers a round of both, not every round of one.
#   scripts/measure-codecs.sh FILE.safetensors...
# Codecs: $CODECS (default "exp zstd:level=3"); each round runs
# examples/codec_speed (best of its 7 passes, round trip checked) and
# scripts/peers/zipnn.py (best of $REPS, its own round trip checked).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
reps=${REPS:-3}
codecs=${CODECS:-"exp zstd:level=3"}
py=.venv-peers/bin/python
target=${CARGO_TARGET_DIR:-target}
cargo build --quiet --release --example codec_speed
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "| file | codec | ratio % | compress MB/s | decompress MB/s | vs ZipNN: compress | vs ZipNN: decompress |"
echo "|---|---|---:|---:|---:|---:|---:|"
for f in "$@"; do
  name="$(basename "$(dirname "$f")")/$(basename "$f")"
  size=$(stat -c %s "$f")
  : > "$tmp/ours"; : > "$tmp/zipnn"
  for _ in $(seq "$rounds"); do
    # shellcheck disable=SC2086
    "$target/release/examples/codec_speed" "$f" $codecs | tail -n +3 >> "$tmp/ours"
    if [ -x "$py" ]; then
      "$py" scripts/peers/zipnn.py --input "$f" --work "$tmp" --reps "$reps" 2>/dev/null | tail -1 >> "$tmp/zipnn" || true
    fi
  done
  # ZipNN's best seconds over all rounds, its size and whether it round-tripped
  read -r zc zd zs zok < <(python3 - "$tmp/zipnn" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if r.get("compress_secs")]
if rows:
    ok = "bit-for-bit" if all(r.get("verified") for r in rows) else "differs"
    print(min(min(r["compress_secs"]) for r in rows), min(min(r["decompress_secs"]) for r in rows), rows[0]["compressed_bytes"], ok)
else:
    print(0, 0, 0, "unavailable")
PY
)
  zcm=$(awk -v s="$size" -v t="$zc" 'BEGIN { print (t > 0 ? s / 1e6 / t : 0) }')
  zdm=$(awk -v s="$size" -v t="$zd" 'BEGIN { print (t > 0 ? s / 1e6 / t : 0) }')
  for c in $(awk '{print $1}' "$tmp/ours" | awk '!seen[$0]++'); do
    awk -v f="$name" -v c="$c" -v zc="$zcm" -v zd="$zdm" '
      $1 == c { r = $2; if ($3 > bc) bc = $3; if ($4 > bd) bd = $4 }
      END {
        vc = zc > 0 ? sprintf("%.2fx", bc / zc) : "n/a"; vd = zd > 0 ? sprintf("%.2fx", bd / zd) : "n/a"
        printf "| %s | `%s` | %.2f | %.0f | %.0f | %s | %s |\n", f, c, r, bc, bd, vc, vd
      }' "$tmp/ours"
  done
  awk -v f="$name" -v s="$size" -v zs="$zs" -v zc="$zcm" -v zd="$zdm" -v ok="$zok" 'BEGIN {
    if (zc > 0) printf "| %s | ZipNN (in-process, round trip %s) | %.2f | %.0f | %.0f | 1x | 1x |\n", f, ok, 100 * zs / s, zc, zd }'
done
