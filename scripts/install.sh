#!/usr/bin/env bash
# Install everything joblet needs on a Debian/Ubuntu host (as root): system packages and a venv
# at $JOBLET_VENV (default /opt/joblet/venv) with joblet. `--test` adds what the test suite
# needs too (iperf3, systemd-analyze, a RabbitMQ server, docker-compose, pytest and friends).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${JOBLET_VENV:-/opt/joblet/venv}
TEST=${1:-}
case $TEST in "" | --test) ;; *) echo "install.sh: unknown option $TEST (only --test)" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }
cmds="redis-server:redis-server redis-cli:redis-tools nft:nftables ip:iproute2 tc:iproute2 ping:iputils-ping
  unshare:util-linux setpriv:util-linux nsenter:util-linux bwrap:bubblewrap mkfs.ext4:e2fsprogs python3:python3"
[ "$TEST" = --test ] && cmds="$cmds iperf3:iperf3 systemd-analyze:systemd rabbitmq-server:rabbitmq-server"
need=()
for cmd in $cmds; do
  command -v "${cmd%%:*}" >/dev/null 2>&1 || need+=("${cmd#*:}")
done
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
export DEBIAN_FRONTEND=noninteractive
if ((${#need[@]})); then
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The compose file's config check (tests/unit/test_deploy.py). Without recommends: they would
# pull in the Docker engine, which must not run beside the tests (docs/DEPLOY.md).
if [ "$TEST" = --test ] && ! command -v docker-compose >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip >/dev/null
"$VENV/bin/pip" install -q ".[worker${TEST:+,test}]"  # --test: the test extra too
echo "joblet installed in $VENV (rnx, joblet-worker)"
