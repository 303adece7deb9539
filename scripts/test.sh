#!/usr/bin/env bash
# Install everything and run the whole test suite (as root; tests start their own Redis).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh --test
VENV=${JOBLET_VENV:-/opt/joblet/venv}
"$VENV/bin/ruff" check joblet tests bench
"$VENV/bin/ruff" format --check joblet tests bench
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
