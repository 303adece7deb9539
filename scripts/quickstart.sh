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
  install -m 600 /dev/null "$RUN/redis.log"  # logs are root's alone
  redis-server --port 0 --unixsocket "${JOBLET_REDIS_URL#unix://}" --unixsocketperm 700 \
    --save "" --appendonly no --daemonize yes --pidfile "$RUN/redis.pid" --logfile "$RUN/redis.log"
  for _ in $(seq 100); do redis-cli -s "${JOBLET_REDIS_URL#unix://}" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
if ! pgrep -f "$VENV/bin/joblet-worker" >/dev/null; then
  install -m 600 /dev/null "$RUN/worker.log"  # it holds jobs' arguments
  nohup "$VENV/bin/joblet-worker" >"$RUN/worker.log" 2>&1 &
  echo $! >"$RUN/worker.pid"
  echo "worker started (pid $!, log $RUN/worker.log; ./scripts/stop.sh stops it)"
fi
# ready once its heartbeat is in Redis (the worker writes it when Celery consumes)
for _ in $(seq 300); do
  "$VENV/bin/python" -c 'import sys; from joblet.api.client import Client; sys.exit(0 if Client().live_nodes() else 1)' \
    2>/dev/null && break
  kill -0 "$(cat "$RUN/worker.pid" 2>/dev/null || echo 0)" 2>/dev/null || { echo "the worker died: $RUN/worker.log" >&2; exit 1; }
  sleep 0.1
done
echo "export JOBLET_REDIS_URL=$JOBLET_REDIS_URL PATH=$VENV/bin:\$PATH   # to use rnx yourself"
echo '$ rnx run --network=none ip addr show'
"$VENV/bin/rnx" run --network=none ip addr show
echo '$ rnx run ip -4 addr show eth0'
"$VENV/bin/rnx" run ip -4 addr show eth0
echo '$ rnx list'
"$VENV/bin/rnx" list
