#!/usr/bin/env bash
# The test command: sets up from nothing (Debian packages, services, .venv) and runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-dev.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
