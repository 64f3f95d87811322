#!/usr/bin/env bash
# Install test requirements into .venv, then run the whole suite. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure_venv.sh requirements/test.txt
exec .venv/bin/python -m pytest "$@"
