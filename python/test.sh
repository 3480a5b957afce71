#!/usr/bin/env bash
# `just test-python`: build the Python package and run its tests in
# python/.venv (made on first use). Needs Python 3.9+ with venv and pip, and
# PyPI (or its mirror) for maturin, numpy, ml_dtypes and pytest; when pip
# cannot reach it, a SKIPPED line is printed and the recipe succeeds.
# WEIGHTLAB_PY_PROFILE=release|dev picks the cargo profile. release is the
# default: what `pip install ./python` builds (so the two share python/target),
# and cold on the 2-core machine it took 804 s against the dev profile's
# 1091 s (both under a load of 10-12 from other work, so only roughly: the
# dev profile keeps opt-level 3 for the codecs' crates and saves little).
# WEIGHTLAB_PY_VENV: another venv (default python/.venv). torch's tests run
# only in a venv that has torch (pip install torch there).
set -euo pipefail
cd "$(dirname "$0")"
py=${PYTHON:-python3}
venv=${WEIGHTLAB_PY_VENV:-.venv}
profile=${WEIGHTLAB_PY_PROFILE:-release}
skip() { echo "test-python: SKIPPED: $*"; exit 0; }

command -v "$py" >/dev/null 2>&1 || skip "no $py on PATH"
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv" || { rm -rf "$venv"; skip "$py cannot make a venv (python3-venv missing?)"; }
fi
venv=$(cd "$venv" && pwd)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! timeout 900 "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    maturin numpy ml_dtypes pytest >"$log" 2>&1; then
  if grep -qiE "connect|resolv|network|timed out|no matching distribution|could not find a version|proxy|ssl|unreachable" "$log"; then
    tail -n 3 "$log"
    skip "pip cannot reach PyPI to install maturin, numpy, ml_dtypes and pytest"
  fi
  cat "$log"
  exit 1
fi
# The package as a user installs it (pip install ./python), with the venv's
# maturin (no build isolation: nothing more to fetch) and the profile chosen.
echo "test-python: building the package (cargo profile $profile) into python/target"
PATH="$venv/bin:$PATH" MATURIN_PEP517_ARGS="--profile $profile" timeout 1800 "$venv/bin/python" -m pip install -q \
  --disable-pip-version-check --no-build-isolation --no-deps --force-reinstall .
# `pytest`, not `python -m pytest`: the installed package is tested, not
# the source folder (which has no compiled module).
set +e
timeout 900 "$venv/bin/pytest" -q -rs -p no:cacheprovider tests
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "test-python: pytest collected no tests"
  exit 0
fi
exit "$rc"
