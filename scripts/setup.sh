#!/usr/bin/env bash
# Installs what weightlab needs beyond the Rust toolchain and Python/pip:
#   - system packages: cmake (blosc2's C build), libzstd-dev + pkg-config (one
#     shared zstd for the zstd crate and blosc2, see CRATES.md pitfall 1)
#   - just (from PyPI's rust-just wheel, a prebuilt binary), placed in
#     ~/.cargo/bin, which is on PATH wherever cargo is.
# Safe to run again: it only installs what is missing.
set -euo pipefail

need_apt=()
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
pkg-config --exists libzstd 2>/dev/null || need_apt+=(libzstd-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v just >/dev/null 2>&1; then
  echo "setup: installing just" >&2
  bin="${CARGO_HOME:-$HOME/.cargo}/bin"
  mkdir -p "$bin"
  tmp=$(mktemp -d)
  if python3 -m pip install -q --disable-pip-version-check --target "$tmp" rust-just 2>/dev/null \
     && [ -x "$tmp/bin/just" ]; then
    cp "$tmp/bin/just" "$bin/just"
  else
    cargo install just --locked --root "${CARGO_HOME:-$HOME/.cargo}"
  fi
  rm -rf "$tmp"
  command -v just >/dev/null 2>&1 || { echo "setup: just installed in $bin, which is not on PATH" >&2; exit 1; }
fi
