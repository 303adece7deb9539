#!/usr/bin/env bash
# Undo quickstart.sh: stop its worker (running jobs become STOPPED) and Redis, remove the
# default bridge and joblet's nftables tables.
set -u
RUN=${JOBLET_RUN_DIR:-/run/joblet}
for name in worker redis; do
  if [ -f "$RUN/$name.pid" ]; then
    pid=$(cat "$RUN/$name.pid")
    kill -TERM "$pid" 2>/dev/null && for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$RUN/$name.pid"
  fi
done
ip link del joblet0 2>/dev/null
nft delete table inet joblet 2>/dev/null
nft delete table bridge joblet 2>/dev/null
for group in /sys/fs/cgroup/joblet /sys/fs/cgroup/unified/joblet /sys/fs/cgroup/*/joblet; do
  rmdir "$group" 2>/dev/null  # the worker's (empty) cgroup roots
done
echo "joblet stopped"
