#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite: lint, types, unit, watcher
# and, as root, the integration scenarios against FRR in network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/ruff check bgpspeaker tests bench lab
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
