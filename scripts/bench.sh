#!/usr/bin/env bash
# Set up (scripts/setup.sh, plus BIRD 2, GoBGP and matplotlib) and run the benchmark suite:
# event latency, cold start at 1,000 and 10,000 services, churn, footprint, with BIRD,
# FRR's frr-reload.py and GoBGP as anchors. Prints a table, writes bench/latency.png and
# bench/results.json. As root (network namespaces). Takes ~10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
need_apt=()
command -v bird >/dev/null || need_apt+=(bird2)
command -v gobgpd >/dev/null || need_apt+=(gobgpd)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "bench: apt-get install ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[bench]'
exec .venv/bin/python -m bench "$@"
