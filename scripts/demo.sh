#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the demo: FRR in a namespace, the real speaker in
# another, a small example cluster; prints FRR's table with the VIPs. --keep stays up.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -m lab.demo "$@"
