#!/usr/bin/env bash
# Install everything joblet needs on a Debian/Ubuntu host (as root): system packages, a venv
# at $JOBLET_VENV (default /opt/joblet/venv) with joblet and its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${JOBLET_VENV:-/opt/joblet/venv}
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }
need=()
for cmd in redis-server:redis-server redis-cli:redis-tools nft:nftables ip:iproute2 tc:iproute2 ping:iputils-ping \
    unshare:util-linux setpriv:util-linux nsenter:util-linux bwrap:bubblewrap mkfs.ext4:e2fsprogs iperf3:iperf3 python3:python3 \
    systemd-analyze:systemd rabbitmq-server:rabbitmq-server; do
  command -v "${cmd%%:*}" >/dev/null 2>&1 || need+=("${cmd#*:}")
done
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The compose file's config check (tests/unit/test_deploy.py). Without recommends: they would
# pull in the Docker engine, which must not run beside the tests (docs/DEPLOY.md).
if ! command -v docker-compose >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip >/dev/null
"$VENV/bin/pip" install -q ".[worker,test]"
echo "joblet installed in $VENV (rnx, joblet-worker)"
