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

# The HTML report test (tests/test_shadow_html.py) renders the page in Debian's headless Chromium.
if [ "$extra" = test ] && [ ! -x /usr/bin/chromium ]; then
    install_chromium() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null && { install_chromium || { apt-get update -qq && install_chromium; }; }; then
        echo "setup: chromium installed for the HTML report test"
    else
        echo "setup: /usr/bin/chromium is missing and could not be installed (needs root and apt-get):" \
             "install Debian's chromium package, or tests/test_shadow_html.py fails" >&2
        exit 1
    fi
fi
