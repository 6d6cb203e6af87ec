#!/usr/bin/env bash
# The LangChain baseline of bench/backfill.py lives in its own venv: langchain-postgres pins
# pgvector<0.4, which would downgrade the project's adapter. Usage:
#   bench/setup-langchain.sh && .venv/bin/python bench/backfill.py --langchain-python .bench-langchain/bin/python
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .bench-langchain/bin/python ] || "${PYTHON:-python3}" -m venv .bench-langchain
.bench-langchain/bin/python -m pip install --quiet --disable-pip-version-check "langchain-postgres==0.0.19" numpy
echo "bench: LangChain baseline interpreter at .bench-langchain/bin/python"
