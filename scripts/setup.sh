#!/usr/bin/env bash
# Install embed into ./.venv. `scripts/setup.sh` installs the tool and its offline models;
# `scripts/setup.sh test` adds the test tools. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "setup: Python >= 3.11 is required (found $("$PY" --version 2>&1)); set PYTHON=..." >&2
    exit 1
}
[ -x .venv/bin/python ] || "$PY" -m venv .venv

extra=models
[ "${1:-}" = "test" ] && extra=test
# torch is pinned to 2.13.0 (CPU build) in pyproject; installing it first keeps pip from
# resolving a CUDA build for anything that depends on it.
.venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[$extra]"
echo "setup: embed installed in .venv ($extra)"
