#!/usr/bin/env bash
# Install what bgpspeaker's demo and tests need on a fresh Debian 12 machine (as root):
# FRR and iproute2 from Debian, Python dependencies into ./.venv.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -x /usr/lib/frr/bgpd ] || need_apt+=(frr)
command -v ip >/dev/null || need_apt+=(iproute2)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
command -v python3 >/dev/null || need_apt+=(python3)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: apt-get install ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
echo "setup: ok ($(.venv/bin/python -c 'import exabgp.version as v; print("exabgp", v.version)'), $(/usr/lib/frr/bgpd --version | head -1))"
