#!/usr/bin/env bash
# Install, start a private Redis and a worker, and run two real isolated jobs.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
VENV=${JOBLET_VENV:-/opt/joblet/venv}
RUN=${JOBLET_RUN_DIR:-/run/joblet}
mkdir -p "$RUN"
export JOBLET_REDIS_URL=${JOBLET_REDIS_URL:-unix://$RUN/redis.sock}
if [ ! -S "${JOBLET_REDIS_URL#unix://}" ] && [[ $JOBLET_REDIS_URL == unix://* ]]; then
  redis-server --port 0 --unixsocket "${JOBLET_REDIS_URL#unix://}" --unixsocketperm 700 \
    --save "" --appendonly no --daemonize yes --pidfile "$RUN/redis.pid" --logfile "$RUN/redis.log"
  sleep 0.5
fi
if ! pgrep -f "$VENV/bin/joblet-worker" >/dev/null; then
  nohup "$VENV/bin/joblet-worker" >"$RUN/worker.log" 2>&1 &
  echo $! >"$RUN/worker.pid"
  echo "worker started (pid $!, log $RUN/worker.log; ./scripts/stop.sh stops it)"
  sleep 3
fi
echo "export JOBLET_REDIS_URL=$JOBLET_REDIS_URL PATH=$VENV/bin:\$PATH   # to use rnx yourself"
echo '$ rnx run --network=none ip addr show'
"$VENV/bin/rnx" run --network=none ip addr show
echo '$ rnx run ip -4 addr show eth0'
"$VENV/bin/rnx" run ip -4 addr show eth0
echo '$ rnx list'
"$VENV/bin/rnx" list
