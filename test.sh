#!/usr/bin/env bash
# Install the Debian packages the tests run (as root; otherwise it says what to run) and the
# test requirements into .venv, then run the whole suite. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure_system_packages.sh
source scripts/ensure_venv.sh requirements/test.txt
exec .venv/bin/python -m pytest "$@"
