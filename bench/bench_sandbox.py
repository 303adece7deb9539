"""What the sandbox costs a job's start, against the start joblet had before it, in one run.

    sudo /path/to/venv/bin/python bench/bench_sandbox.py [--host-mounts N] [--cases A,B]

Both cases start `true` in fresh pid, ipc, uts, mount and network namespaces inside a cgroup
and wait for it, without Celery or Redis (those are the same for both and measured by
bench_start.py):

- `previous`: the two-stage start joblet used before the sandbox: `unshare` with a shell as
  pid 1 that says "ready", waits for "go", runs `ip -batch` (lo up), mounts the namespace's
  sysfs, bind-mounts /work and says "ok"; then `nsenter` + `setpriv` start the command as
  pid 2 with Docker's capabilities.
- `sandbox`: today's start: pids limit, the job's network namespace made by the worker (lo
  up), its mount namespace copied from the worker's mount template (the host's less the
  mounts no job uses) with /work and its own sysfs, bwrap with the job's root and seccomp
  inside it, then the command.
- `sandbox_untrimmed`: the same, its mount namespace copied from the host's (before the
  template, docs/PERFORMANCE_LOG.md item 26).
- `sandbox_preexec`: the same, started the way joblet did before commit e71c017 (a
  preexec_fn joins the cgroups one after the other and the namespace: a fork of the process,
  which holds a worker-sized heap here).
The cases run in turn, round after round, so that other load on the machine hits them alike.
`--host-mounts N` runs it all in a mount namespace of its own with N more (tmpfs) mounts, as
on a host with containers or snaps: the host's table is not touched. There, a case that copies
the host's namespace leaves the kernel work of tearing down its copy to the case after it;
`--cases` runs only the named ones (e.g. `sandbox` in one run, `sandbox_untrimmed` in the next).
Baselines: `unshare --net true`, and plain `bwrap` with a read-only /usr and nothing else.
`ceiling()` (run by run_all.py) starts the `sandbox` case from several threads at once: the
start rate the sandbox alone allows on this machine, and the machine's CPU per start.
Prints a table (medians, p90, the sandbox's cost over `previous`) and writes
bench/results/sandbox.json. Cleans up its cgroup and temp dir.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench_start import machine_busy_s

from joblet.config import load
from joblet.network_agent.netns import JobNetns
from joblet.worker.cgroups import JobCgroup, detect_root
from joblet.worker.etc_view import Secrets, sync
from joblet.worker.execution import Launch, Sandbox, tool
from joblet.worker.mount_template import MountTemplate
from joblet.worker.mounts import JobMounts, remove_dirs
from joblet.worker.nsthread import JobThread
from joblet.worker.sandbox import SECRETS, Host, Layout, bwrap_args, make_cover, survey, sys_covers
from joblet.worker.seccomp_filter import job_filter
from joblet.worker.services import template_keep, template_sealed

N, WARMUP = 40, 5
BALLAST_MIB = 64  # the worker's RSS is ~50-80 MiB: what a fork (preexec_fn) has to copy the page tables of
RESULTS = Path(__file__).resolve().parent / "results" / "sandbox.json"
PREVIOUS_INIT = """
for procs in $JL_CGS; do echo 0 > "$procs"; done
echo ready
read -r _go
ip -batch "$JL_NET"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs /sys
mount --bind "$JL_WORK" /work
echo ok
exec </dev/null >/dev/null 2>&1
while :; do sleep 2147483647 & wait; done
"""
CAPS = "+chown,+dac_override,+fowner,+fsetid,+kill,+setgid,+setuid,+setpcap,+net_bind_service,+net_raw,+sys_chroot"


def previous(cg: JobCgroup, work: Path) -> None:
    """joblet's start before the sandbox (a none job)."""
    (work.parent / "net.batch").write_text("link set lo up\n")
    init = subprocess.Popen(
        [
            tool("unshare"),
            "--net",
            "--mount",
            "--uts",
            "--ipc",
            "--pid",
            "--fork",
            "--kill-child",
            "--mount-proc",
            "/bin/sh",
            "-c",
            PREVIOUS_INIT,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={
            "JL_CGS": str(cg.procs_file),
            "JL_WORK": str(work),
            "JL_NET": str(work.parent / "net.batch"),
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        },
    )
    assert init.stdout is not None and init.stdin is not None
    assert init.stdout.readline() == b"ready\n"
    init.stdin.write(b"go\n")
    init.stdin.flush()
    assert init.stdout.readline() == b"ok\n"
    pid = init.pid
    fd = os.open(cg.procs_file, os.O_WRONLY)
    main = subprocess.Popen(
        [
            tool("nsenter"),
            "-t",
            str(pid),
            "-m",
            "-u",
            "-i",
            "-n",
            f"--pid=/proc/{pid}/ns/pid_for_children",
            "--wdns=/work",
            "--",
            tool("setpriv"),
            "--no-new-privs",
            "--inh-caps=-all",
            f"--bounding-set=-all,{CAPS}",
            "--",
            "/usr/bin/true",
        ],
        preexec_fn=lambda: os.write(fd, b"0"),
    )
    os.close(fd)
    assert main.wait() == 0
    cg.kill()
    init.wait()


def worker_files(run: Path) -> Path:
    """What a worker keeps in its run directory for every job: the covers (returned) and its
    copy of /etc."""
    cover = make_cover(run)
    sync("/etc", str(run / "etc"), Secrets(SECRETS))
    return cover


def template_for(run_dir: Path) -> MountTemplate:
    """The mount template a worker with this run directory keeps (worker/mount_template.py)."""
    return MountTemplate(template_keep(load(run_dir=run_dir, state_dir=run_dir.parent / "state")), template_sealed())


def none_job_root(
    run_dir: Path,
    cover: Path,
    inside: JobThread,
    template: MountTemplate | None,
    worker_covers: bool = True,
    host_covers: bool = False,
) -> tuple[JobMounts, Host, Layout]:
    """A none job's mount namespace (made by `inside`, its thread) and its root's layout, as
    the worker makes them; `worker_covers` False: bwrap binds the /sys covers (item 29's before);
    `host_covers`: the covers are `cover`, on the host's filesystem (item 42's before), not
    those in the job's files."""
    job = run_dir / "job"
    host = survey(cover if host_covers else job / "cover", (), SECRETS, str(run_dir / "etc"))
    covers = sys_covers(host) if worker_covers else None
    mounts = JobMounts.create(job, 1 << 30, lambda _: None, inside, template, covers)
    mounts.write("hostname", "bench\n")
    mounts.write("hosts", "127.0.0.1 localhost\n")
    layout = Layout(
        hostname="bench",
        work_dir=str(job / "work"),
        run_dir=str(job),
        sys_dir=str(job / "sys"),
        net_files=("hosts",),
        sys_masked=worker_covers,
    )
    return mounts, host, layout


def sandboxed(
    cg: JobCgroup, run_dir: Path, cover: Path, kind: type[Sandbox] = Sandbox, template: MountTemplate | None = None
) -> None:
    """Today's start of a none job (copied from `template` when given), from the pids limit
    to the command's end."""
    cg.limit_pids(4096)
    inside = JobThread("bench")
    netns = JobNetns.create(inside)
    mounts, host, layout = none_job_root(run_dir, cover, inside, template)
    box = kind(
        Launch(
            "bench",
            cg,
            bwrap_args(host, layout),
            ["/usr/bin/true"],
            {"PATH": "/usr/bin:/bin"},
            inside,
        )
    )
    main = box.start()
    box.go()
    assert main.wait() == 0
    box.close()
    cg.kill()
    mounts.close()
    netns.close()
    inside.close()


class PreexecSandbox(Sandbox):
    """The start before commit e71c017, kept to compare in the same run: a preexec_fn joins
    the cgroups (one after the other), so Python forks the whole process (from the job's
    thread, in the job's namespaces, which the preexec_fn used to join itself)."""

    def start(self) -> subprocess.Popen[bytes]:
        la = self.launch
        filter_r, filter_w = os.pipe()
        os.write(filter_w, job_filter())
        os.close(filter_w)
        argv = [tool("bwrap"), *la.bwrap_args, "--seccomp", str(filter_r), "--", *la.argv]
        procs = [os.open(f, os.O_WRONLY) for f in la.cgroup.procs_files]

        def enter() -> None:
            for fd in procs:
                os.write(fd, b"0")

        self.main = self.spawn(argv, la.env, (filter_r,), preexec_fn=enter)
        for fd in (*procs, filter_r):
            os.close(fd)
        return self.main

    def go(self) -> None:
        self.released = True  # it never waited


def ceiling(n: int, threads: int) -> dict[str, float]:
    """n sandboxed `none` starts, `threads` at a time, each thread with its own cgroup and
    directories: the start rate the kernel work of the sandbox alone allows on this machine
    (no Celery, no Redis, no worker bookkeeping), the ceiling for a job runner that keeps it."""
    base = detect_root()
    work = Path(tempfile.mkdtemp(prefix="joblet-bench-ceiling-"))
    groups = [JobCgroup(base / f"joblet-bench-ceiling-{os.getpid()}-{i}") for i in range(threads)]
    errors: list[BaseException] = []
    template = template_for(work / "run")

    covers = [worker_files(work / str(i) / "run") for i in range(threads)]  # the worker's, made before it starts jobs

    def loop(i: int, count: int) -> None:
        try:
            for _ in range(count):
                sandboxed(groups[i], work / str(i) / "run", covers[i], template=template)
        except BaseException as exc:  # noqa: BLE001 - reported after the join
            errors.append(exc)

    try:
        for group in groups:
            group.create()
        shares = [n // threads + (i < n % threads) for i in range(threads)]
        workers = [threading.Thread(target=loop, args=(i, c)) for i, c in enumerate(shares)]
        t0, busy0 = time.perf_counter(), machine_busy_s()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed, busy = time.perf_counter() - t0, machine_busy_s() - busy0
    finally:
        template.close()
        for group in groups:
            group.remove()  # and its v1 twins
        remove_dirs([work])
    if errors:
        raise errors[0]
    return {
        "starts": n,
        "threads": threads,
        "total_s": elapsed,
        "starts_per_s": n / elapsed,
        "machine_cpu_ms_per_start": busy / n * 1000,  # kernel threads (namespace cleanup) included
        "machine_busy": busy / (elapsed * (os.cpu_count() or 1)),
    }


def command(argv: list[str]) -> Callable[[], None]:
    return lambda: subprocess.run(argv, check=True)


def measure(cases: dict[str, Callable[[], None]]) -> dict[str, list[float]]:
    """The cases in turn, round after round, so that load from others hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(WARMUP + N):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            if round_ >= WARMUP:
                times[name].append((time.perf_counter() - start) * 1000)
    return times


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "median_ms": round(statistics.median(ordered), 2),
        "p90_ms": round(ordered[int(len(ordered) * 0.9) - 1], 2),
        "n": len(ordered),
    }


def busy_host(mounts: int) -> Path | None:
    """Run the rest of this process in a mount namespace of its own holding `mounts` more
    mounts, as a host with containers or snaps does (they vanish with it; the host's own
    table is not touched): re-executes this script under `unshare -m`."""
    if os.environ.get("JOBLET_BENCH_BUSY_HOST") == str(mounts):
        base = Path(tempfile.mkdtemp(prefix="joblet-bench-mounts-"))
        for i in range(mounts):
            (base / str(i)).mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "bench", str(base / str(i))], check=True)
        return base
    env = {**os.environ, "JOBLET_BENCH_BUSY_HOST": str(mounts)}
    argv = [tool("unshare"), "-m", "--propagation", "slave", sys.executable, *sys.argv]
    os.execve(argv[0], argv, env)
    return None  # not reached


def option(name: str, default: str) -> str:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


def all_cases(cg: JobCgroup, tmp: Path, cover: Path, template: MountTemplate) -> dict[str, Callable[[], None]]:
    minimal = ["--ro-bind", "/usr", "/usr", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/lib", "/lib"]
    return {
        "unshare_net_true": command([tool("unshare"), "--net", "true"]),
        "bwrap_minimal_true": command([tool("bwrap"), *minimal, "/usr/bin/true"]),
        "previous": lambda: previous(cg, tmp / "work"),
        "sandbox_preexec": lambda: sandboxed(cg, tmp / "run", cover, PreexecSandbox, template),
        "sandbox_untrimmed": lambda: sandboxed(cg, tmp / "run", cover),
        "sandbox": lambda: sandboxed(cg, tmp / "run", cover, template=template),
    }


def ratios(results: dict[str, dict[str, float]]) -> None:
    """The derived rows, for the cases that ran."""
    pairs = {"sandbox_over_untrimmed": "sandbox_untrimmed", "sandbox_over_preexec": "sandbox_preexec"}
    if "sandbox" in results and "previous" in results:
        diff = results["sandbox"]["median_ms"] - results["previous"]["median_ms"]
        results["sandbox_minus_previous_ms"] = {"median_ms": round(diff, 2)}
    for row, other in pairs.items():
        if "sandbox" in results and other in results:
            results[row] = {"median_ms": round(results["sandbox"]["median_ms"] / results[other]["median_ms"], 2)}


def main() -> int:
    if os.geteuid() != 0:
        print("bench_sandbox: run as root", file=sys.stderr)
        return 2
    extra = int(option("--host-mounts", "0"))
    mounted = busy_host(extra) if extra else None
    ballast = [bytearray(1 << 20) for _ in range(BALLAST_MIB)]  # noqa: F841 - a worker's heap, for fork
    tmp = Path(tempfile.mkdtemp(prefix="joblet-bench-sandbox-"))
    cg = JobCgroup(detect_root() / f"joblet-bench-sandbox-{os.getpid()}")
    template = template_for(tmp / "run")
    try:
        cg.create()
        cover = worker_files(tmp / "run")
        (tmp / "work").mkdir()
        cases = all_cases(cg, tmp, cover, template)
        wanted = option("--cases", ",".join(cases)).split(",")
        cases = {name: fn for name, fn in cases.items() if name in wanted}
        results = {name: summary(times) for name, times in measure(cases).items()}
        results["template_builds"] = {"median_ms": template.builds}
    finally:
        template.close()
        cg.remove()  # and its v1 twins
        remove_dirs([tmp, *([mounted] if mounted else [])])
    ratios(results)
    print(f"{'case':<28}{'median ms':>11}{'p90 ms':>9}")
    for name, row in results.items():
        print(f"{name:<28}{row['median_ms']:>11.2f}{row.get('p90_ms', float('nan')):>9.2f}")
    out = RESULTS.with_name(f"sandbox-{extra}-host-mounts.json") if extra else RESULTS
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({**results, "host_mounts": extra, "cases": list(cases)}, indent=2) + "\n")
    print(f"wrote {out}; cleanup: {'nothing left behind' if not tmp.exists() else tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
