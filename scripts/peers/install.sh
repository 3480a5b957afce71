#!/usr/bin/env bash
# Create .venv-peers with the Python peers the experiment runner measures
# (scripts/peers/NAME.py run inside it). Each package is installed on its own,
# so one that fails to build leaves the others usable; the runner reports a
# missing one as unavailable. Usage: scripts/peers/install.sh [PACKAGE...]
set -uo pipefail
cd "$(dirname "$0")/../.."
venv=.venv-peers
python=${PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv" || { echo "cannot create $venv (is python3-venv installed?)" >&2; exit 1; }
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
pkgs=("$@")
# zipnn needs torch (a large download): it is installed last
[ ${#pkgs[@]} -eq 0 ] && pkgs=(lmzip pysz bigsmall zipnn)
status=0
for p in "${pkgs[@]}"; do
    echo "== pip install $p"
    if "$venv/bin/python" -m pip install --quiet "$p"; then
        echo "   $p: installed"
    else
        echo "   $p: FAILED (the runner will show it as unavailable)" >&2
        status=1
    fi
done
"$venv/bin/python" -m pip list 2>/dev/null | grep -iE '^(zipnn|lmzip|pysz|bigsmall|torch|numpy) ' || true
exit $status
