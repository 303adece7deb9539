# joblet's job init. Runs as pid 1 of the job's new namespaces (started by `unshare`).
# It joins the job's cgroup, names the host, waits until the worker has wired the network,
# configures it, mounts /work, /etc/hosts and /etc/resolv.conf, then tells the worker where
# the command is; the worker starts the command with `nsenter` (so it is never pid 1 and its
# exact exit status or signal reaches the worker). Afterwards it only reaps orphans.
# Talks to the worker over stdin (the worker's "go") and stdout (its own reports).
set -u
for procs in $JL_CGS; do echo 0 > "$procs" || exit 90; done
printf '%s' "$JL_HOSTNAME" > /proc/sys/kernel/hostname || exit 91
echo ready
read -r _go || exit 92
if [ -f "$JL_RUN/net.batch" ]; then
  ip -batch "$JL_RUN/net.batch" >&2 || exit 93
  # a sysfs of the job's own network namespace, so /sys/class/net shows its interfaces
  mount -t sysfs -o ro,nosuid,nodev,noexec sysfs /sys || exit 98
fi
if [ -f "$JL_RUN/tc.batch" ]; then
  tc -batch "$JL_RUN/tc.batch" >&2 || exit 89
fi
if [ -f "$JL_RUN/mounts" ]; then
  # lines: "tmpfs DIR", "dir DIR", "rw SRC DST", "ro SRC DST" (paths without blanks)
  while read -r what a b; do
    case $what in
      tmpfs) mount -t tmpfs -o size=64k,mode=755 joblet "$a" || exit 99 ;;
      dir) mkdir -p "$a" || exit 99 ;;
      rw) mount --bind "$a" "$b" || exit 99 ;;
      ro) mount --bind "$a" "$b" && mount -o remount,bind,ro "$b" || exit 99 ;;
    esac
  done < "$JL_RUN/mounts"
fi
mount --bind "$JL_WORK" /work || exit 94
if [ -f "$JL_RUN/hosts" ]; then
  mount --bind "$JL_RUN/hosts" /etc/hosts || exit 95
fi
if [ -f "$JL_RUN/resolv.conf" ]; then
  mount --bind "$JL_RUN/resolv.conf" /etc/resolv.conf || exit 96
fi
cd /work || exit 97
PATH=$JL_PATH
found=
case $1 in
  */*) if [ -f "$1" ] && [ -x "$1" ]; then found=$1; fi ;;
  *) found=$(command -v "$1" 2>/dev/null) || found=
     if [ -z "$found" ] && [ -f "/work/$1" ] && [ -x "/work/$1" ]; then found=/work/$1; fi ;;
esac
if [ -z "$found" ]; then
  echo notfound
  exit 0
fi
echo "ok $found"
exec </dev/null >/dev/null 2>&1
while :; do sleep 2147483647 & wait; done
