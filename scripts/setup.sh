#!/usr/bin/env bash
# Set up this checkout on a fresh machine: a virtualenv in .venv with deceptwatch installed.
#   bash scripts/setup.sh          # the package with local-model support (torch CPU, transformers)
#   bash scripts/setup.sh --dev    # plus test, lint, PostgreSQL and benchmark (inspect_ai) dependencies
# Every install goes through constraints.txt, which pins torch: an unpinned torch pulls
# several GB of CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="local"
if [[ "${1:-}" == "--dev" ]]; then
  extras="local,postgres,dev,inspect,bench"
fi
python="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[${extras}]"
