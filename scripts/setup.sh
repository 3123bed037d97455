#!/usr/bin/env bash
# Install what bgpspeaker's demo and tests need on a fresh Debian 12 machine (as root):
# FRR, iproute2 and kubectl from Debian, Python dependencies into ./.venv.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -x /usr/lib/frr/bgpd ] || need_apt+=(frr)
command -v ip >/dev/null || need_apt+=(iproute2)
[ -x /usr/bin/python3 ] || need_apt+=(python3)
/usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
command -v setpriv >/dev/null || need_apt+=(util-linux)
command -v kubectl >/dev/null || need_apt+=(kubernetes-client)  # tests/test_deploy.py renders deploy/ offline
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: apt-get install ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Debian's own interpreter, so the daemon (and its ExaBGP children) can run as a
# non-root user: an interpreter under /root (pyenv) is not reachable by one.
if [ ! -x .venv/bin/python ] || ! grep -q '^home = /usr/bin$' .venv/pyvenv.cfg; then
    rm -rf .venv
    /usr/bin/python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
echo "setup: ok ($(.venv/bin/python -c 'import exabgp.version as v; print("exabgp", v.version)'), $(/usr/lib/frr/bgpd --version | head -1))"
