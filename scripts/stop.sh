#!/usr/bin/env bash
# Undo quickstart.sh: stop its worker (running jobs become STOPPED) and Redis, remove the
# default bridge, the bridges and overlay ports of user networks (the quickstart's Redis keeps
# nothing on disk, so its networks end with it) and joblet's nftables tables.
set -u
RUN=${JOBLET_RUN_DIR:-/run/joblet}
for name in worker redis; do
  if [ -f "$RUN/$name.pid" ]; then
    pid=$(cat "$RUN/$name.pid")
    kill -TERM "$pid" 2>/dev/null && for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$RUN/$name.pid"
  fi
done
if ! flock -n /proc/self/ns/net true; then  # another installation's worker (joblet/worker/ns_lock.py)
  echo "joblet stopped; another joblet worker still runs here: its bridges and tables are left"
  exit 0
fi
ip link del joblet0 2>/dev/null
for link in $(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E '^j[bx][0-9a-f]{10}$'); do
  ip link del "$link" 2>/dev/null  # exactly what joblet names a network's bridge (jb) or overlay port (jx)
done
nft delete table inet joblet 2>/dev/null
nft delete table bridge joblet 2>/dev/null
nft delete table arp joblet 2>/dev/null
nft delete table ip joblet 2>/dev/null  # the connection caps
# the worker's (empty) cgroup roots: JOBLET_CGROUP_ROOT's, with its v1 twins, else the default
ROOT=${JOBLET_CGROUP_ROOT:-}
NAME=$(basename "${ROOT:-joblet}")
for group in ${ROOT:+"$ROOT"} /sys/fs/cgroup/"$NAME" /sys/fs/cgroup/unified/"$NAME" \
  /sys/fs/cgroup/{cpu,memory,blkio,pids}/"$NAME"; do  # the v1 controllers the worker uses (cgroups.py)
  rmdir "$group" 2>/dev/null
done
echo "joblet stopped"
