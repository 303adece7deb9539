"""Which of the host's mounts the jobs' mount template keeps (no root needed)."""

from __future__ import annotations

from joblet.worker.mount_template import kept_mounts, mount_points, trimmed

KEEP = ("/usr", "/proc", "/sys", "/run/joblet", "/var/lib/joblet")


def test_mounts_on_the_way_to_or_under_a_kept_path_stay():
    points = ["/", "/proc", "/sys", "/sys/fs/cgroup", "/sys/fs/cgroup/memory", "/run", "/var/lib/joblet/volumes/v/data"]
    assert trimmed(points, KEEP) == []


def test_the_rest_goes_topmost_only():
    points = [
        "/",
        "/run",
        "/run/user/1000",
        "/run/user/1000/doc",  # under a dropped one: goes with it
        "/var/lib/docker/overlay2/a/merged",
        "/var/lib/docker/overlay2/b/merged",
        "/snap/core/1",
        "/run/joblet-other",  # a sibling whose name starts like a kept path
        "/usr",
    ]
    assert trimmed(points, KEEP) == [
        "/run/joblet-other",
        "/run/user/1000",
        "/snap/core/1",
        "/var/lib/docker/overlay2/a/merged",
        "/var/lib/docker/overlay2/b/merged",
    ]


def test_stacked_mounts_are_one_point():
    assert trimmed(["/mnt/x", "/mnt/x", "/usr"], KEEP) == ["/mnt/x"]


def test_a_kept_root_keeps_everything():
    assert trimmed(["/", "/mnt/x", "/home"], ("/",)) == []


def test_mount_points_are_read_with_their_escapes():
    text = (
        "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
        "40 22 0:50 / /mnt/with\\040space rw - tmpfs t rw\n"
        "41 22 0:51 / /mnt/back\\134slash rw - tmpfs t rw\n"
    )
    assert mount_points(text) == ["/", "/mnt/with space", "/mnt/back\\slash"]


def test_kept_mounts_are_what_a_template_is_rebuilt_for():
    text = (
        "22 1 254:0 / / rw shared:1 - ext4 /dev/vda rw\n"
        "30 22 0:40 / /run rw - tmpfs t rw\n"
        "31 30 0:41 / /run/joblet/v rw - tmpfs t rw\n"
        "32 22 0:42 / /var/lib/docker/overlay2/a/merged rw - overlay o rw\n"
    )
    assert kept_mounts(text, KEEP) == {("22", "/"), ("30", "/run"), ("31", "/run/joblet/v")}
    # a container's mount coming or going changes nothing kept; a volume's does
    assert kept_mounts(text.replace("32 22", "33 22"), KEEP) == kept_mounts(text, KEEP)
    assert kept_mounts(text.replace("31 30", "34 30"), KEEP) != kept_mounts(text, KEEP)


def test_of_proc_a_worker_keeps_the_mount_and_of_sys_and_dev_nothing(tmp_path):
    from joblet.config import load
    from joblet.worker.services import template_keep

    cfg = load(run_dir=tmp_path / "run", state_dir=tmp_path / "state", runtimes_dir=tmp_path / "rt")
    keep = template_keep(cfg)
    host = [  # a systemd host's table (cgroup v2), and a hybrid one's v1 hierarchies
        "/", "/proc", "/proc/sys/fs/binfmt_misc", "/sys", "/sys/kernel/security", "/sys/kernel/debug",
        "/sys/fs/cgroup", "/sys/fs/cgroup/pids", "/sys/fs/cgroup/cpuset", "/sys/fs/bpf", "/dev", "/dev/pts",
        "/dev/shm", "/dev/mqueue", str(tmp_path / "run"),
    ]  # fmt: skip
    # the worker opens the cgroup files and /dev/null for the sandbox: bwrap reads none of them
    assert trimmed(host, keep) == ["/dev", "/proc/sys/fs/binfmt_misc", "/sys"]
    gone = trimmed(host, keep)  # with what is mounted under them
    kept = {p for p in host if not any(p == g or p.startswith(g + "/") for g in gone)}
    assert kept == {"/", "/proc", str(tmp_path / "run")}


def _bare_template():
    import threading

    from joblet.worker.mount_template import MountTemplate

    t = MountTemplate.__new__(MountTemplate)  # no watcher, no namespaces: _renew alone
    t._lock, t._version, t._fd, t._kept, t._sealed = threading.Lock(), 0, -1, frozenset(), ()
    t._host_kept = lambda: frozenset({("/vol", "1")})  # type: ignore[method-assign]
    return t


def test_a_renewal_built_before_a_starts_own_template_is_not_swapped_in():
    """The watcher built from the table as it was, a start meanwhile built its own with the
    volume it had just mounted, and the watcher's older one was swapped in: the next job on
    that volume wrote into the empty directory under it (review)."""
    import os

    t = _bare_template()
    started = os.open("/dev/null", os.O_RDONLY)

    def build_while_a_job_starts() -> tuple[int, tuple]:
        with t._lock:  # a start's enter(), between the watcher's read and its swap
            t._fd, t._version = started, t._version + 1
        return os.open("/dev/null", os.O_RDONLY), ()

    t._build = build_while_a_job_starts  # type: ignore[method-assign]
    t._renew()
    assert t._fd == started and os.fstat(started)  # the start's stays; the renewal's was closed
    t._build = lambda: (os.open("/dev/null", os.O_RDONLY), ((1, 2),))  # type: ignore[method-assign]
    t._renew()  # the control: nothing meanwhile, swapped in (the start's closed)
    assert t._fd != started and t._kept == frozenset({("/vol", "1")}) and t._sealed == ((1, 2),)
    os.close(t._fd)


def test_a_renewal_that_fails_leaves_the_watcher_going(caplog):
    """Only ExecutionError was caught: an OSError (EMFILE) ended the watcher's thread for good."""
    t = _bare_template()

    def no_descriptors() -> tuple[int, tuple]:
        raise OSError(24, "Too many open files")

    t._build = no_descriptors  # type: ignore[method-assign]
    with caplog.at_level("WARNING", logger="joblet.worker.mount_template"):
        t._renew()
    assert t._fd == -1 and "Too many open files" in caplog.text
