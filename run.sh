#!/usr/bin/env bash
# Install into .venv (once per requirements change), then start the platform on its
# embedded default. Settings come from the environment, e.g. PORT=9000 ./run.sh
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure_venv.sh requirements/base.txt
exec .venv/bin/python manage.py serve "$@"
