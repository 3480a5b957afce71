# weightlab tasks. First time on a machine: scripts/setup.sh (installs just,
# cmake, libzstd-dev). The README's two commands do that for you.

set shell := ["bash", "-euo", "pipefail", "-c"]

features := "full"

import 'peers.just'

# List the recipes.
default:
    @just --list

# Run an experiment on real weights, fetched and cached:
#   just run experiment=bf16-planes   (or: just run bf16-planes)
run experiment="bf16-planes":
    #!/usr/bin/env bash
    set -euo pipefail
    exp="{{experiment}}"
    exp="${exp#experiment=}"
    cargo run --release --features {{features}} -- run "experiments/${exp}.toml"

# Re-render the tables and charts of an experiment from its results.parquet.
report experiment="bf16-planes":
    #!/usr/bin/env bash
    set -euo pipefail
    exp="{{experiment}}"
    exp="${exp#experiment=}"
    cargo run --release --features {{features}} -- report "${exp}"

# (one real-model test fetches MiniLM once into the cache)
# Unit, integration and CLI tests, then the Python package's (test-python).
test: && lint test-python
    cargo test --features {{features}} --no-fail-fast

# venv python/.venv, maturin/numpy/ml_dtypes/pytest from PyPI (a SKIPPED line
# without PyPI), the package built and installed, pytest: see python/test.sh.
# The Python package's tests (python/tests).
test-python:
    python/test.sh

# Installs cargo-fuzz if missing; new inputs go to fuzz/corpus-work, crashes
# to fuzz/artifacts (see fuzz/README.md). `just test` replays the committed
# corpora without libFuzzer. Or: `just fuzz time=60 codec_decode archive`.
#
# Coverage-guided fuzzing: each fuzz/ target for `time` seconds, one after another.
fuzz time="600" *targets:
    #!/usr/bin/env bash
    set -euo pipefail
    t="{{time}}"
    t="${t#time=}"
    fuzz/run.sh "$t" {{targets}}

# Criterion benches, throughput in bytes per second.
bench *args:
    cargo bench --features {{features}} {{args}}

# The release binary with every feature.
build:
    cargo build --release --features {{features}}

# Lints, as CI runs them after the tests: formatting (rustfmt.toml) and clippy with warnings as errors.
lint:
    cargo fmt --check
    cargo clippy --features {{features}} --all-targets -- -D warnings

# The fidelity evaluator (candle, in-process) against the reference Python stack
# (torch, transformers, sentence-transformers in a venv under target/):
# writes reports/fidelity-check/RESULTS.md.
fidelity-check:
    bash reports/fidelity-check/run.sh
