#!/usr/bin/env bash
# Run the fuzz targets one after another, each for SECONDS (default 600):
#   fuzz/run.sh [SECONDS] [TARGET...]
# New inputs go to fuzz/corpus-work/TARGET (gitignored), crashes to
# fuzz/artifacts/TARGET; fuzz/corpus/TARGET (committed) is read as seeds.
# `cargo fuzz cmin TARGET` (see README.md) folds corpus-work back in.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-600}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(codec_decode archive archive_index safetensors ct2 toml)
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1   # cargo fuzz needs -Z flags; the toolchain is stable
max_len() {
    case "$1" in
        codec_decode) echo 16384 ;;
        archive) echo 131072 ;;
        archive_index) echo 512 ;;
        safetensors) echo 16384 ;;
        *) echo 8192 ;;
    esac
}
for t in "${targets[@]}"; do
    mkdir -p "corpus-work/$t" "corpus/$t" "artifacts/$t"
    echo "== $t: ${secs}s"
    nice -n 19 cargo fuzz run "$t" "corpus-work/$t" "corpus/$t" -- \
        -max_total_time="$secs" -max_len="$(max_len "$t")" \
        -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 -print_final_stats=1
done
