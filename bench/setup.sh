#!/usr/bin/env bash
# bench/setup.sh: install what bench/run.sh needs, on Debian 12 as root (apt), then a venv.
#   apt: nginx (the backend and the reference proxy), wrk, curl
#   venv bench/.venv: tproxy from this working tree (pip install -e, with its dependencies:
#        Twisted, pluggy, ...); the "twisted" system runs on the same Twisted.
# Knobs: BASE_PYTHON (python3) makes the venv; VENV (bench/.venv). For PyPy:
#   apt-get install pypy3 pypy3-venv; BASE_PYTHON=pypy3 VENV=bench/.venv-pypy bash bench/setup.sh
# and then PYTHON=bench/.venv-pypy/bin/python bash bench/run.sh
# Re-runnable: it installs only what is missing and re-installs tproxy (editable, cheap).
set -euo pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$BENCH/lib.sh"   # BENCH, REPO, VENV
BASE_PYTHON=${BASE_PYTHON:-python3}

need_apt=0
for pkg in nginx wrk curl; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt=1
done
if [ "$need_apt" = 1 ]; then
    # Keep apt from starting nginx on port 80 (invoke-rc.d honours policy-rc.d).
    added_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        added_policy=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx wrk curl
    if [ "$added_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

if [ ! -x "$VENV/bin/python" ]; then
    "$BASE_PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e "$REPO"
# regenerate Twisted's plugin cache, so that "twistd tproxy" is known (see NOTES: dropin.cache)
"$VENV/bin/python" -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"

nginx -v
wrk --version 2>&1 | head -1 || true
"$VENV/bin/python" -c "import platform, twisted, tproxy; print(platform.python_implementation(), platform.python_version(), '/ twisted', twisted.__version__, '/ tproxy', tproxy.__version__)"
echo "setup done: now run bash bench/run.sh (or SMOKE=1 bash bench/run.sh)"
