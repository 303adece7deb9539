"""Limits: rates, token buckets, cgroup files (v2 and v1 against fake trees), sizes."""

from __future__ import annotations

from pathlib import Path

import pytest

from joblet.api.limits import Limits, parse_rate
from joblet.api.volumes import parse_size
from joblet.errors import ValidationError
from joblet.network_agent.shaping import tbf_args
from joblet.worker.cgroups import JobCgroup, enable_controllers, host_huge_pages, refuse_huge_pages


@pytest.mark.parametrize(
    ("text", "bits"),
    [
        ("10mbit", 10_000_000),
        ("512kbit", 512_000),
        ("1gbit", 1_000_000_000),
        ("2mbps", 16_000_000),
        ("800000", 800_000),
        ("1.5Mbit", 1_500_000),
        ("1tbit", 10**12),  # the most tc's bucket holds; it was refused as no rate (usability run)
    ],
)
def test_rates(text, bits):
    assert parse_rate(text) == bits


def test_a_rate_past_the_most_says_so():
    with pytest.raises(ValueError, match="is above 1000gbit"):
        parse_rate("99999999999tbit")


@pytest.mark.parametrize("text", ["fast", "10 parsecs", "-1mbit", "1bit"])
def test_bad_rates(text):
    with pytest.raises(ValueError):
        parse_rate(text)


@pytest.mark.parametrize(
    ("text", "hint"), [("10MB", "10mbit for bits or 10mbps"), ("512kb/s", "512kbit"), ("9b", "9bit")]
)
def test_a_rate_in_b_is_refused_as_ambiguous(text, hint):
    """`--max-bandwidth=10MB` shaped 10 megabits/s, where --max-output=10MB is bytes."""
    with pytest.raises(ValueError, match=f"ambiguous rate .*: say {hint}"):
        parse_rate(text)


def test_iobps_caps_the_network_unless_bandwidth_is_set():
    assert Limits(max_iobps=1_250_000).rate_in() == 10_000_000  # the guide's reading
    both = Limits(max_iobps=1_250_000, max_bandwidth="1mbit", max_bandwidth_out="2mbit")
    assert both.rate_in() == 1_000_000 and both.rate_out() == 2_000_000
    assert Limits().rate_in() is None


def test_bucket_is_ten_milliseconds_of_rate_but_at_least_two_packets():
    args = tbf_args(100_000_000, 1500)
    assert args[:4] == ["rate", "100000000bit", "burst", "125000"]
    assert tbf_args(1_000_000, 1500)[3] == "3100"


def fake_tree(tmp_path: Path, controllers: str) -> tuple[Path, Path]:
    root = tmp_path / "cg"
    parent = root / "joblet"
    parent.mkdir(parents=True)
    for d in (root, parent):
        (d / "cgroup.controllers").write_text(controllers)
        (d / "cgroup.subtree_control").write_text("")
    return root, parent


def test_v2_limits_in_the_jobs_own_group(tmp_path):
    root, parent = fake_tree(tmp_path, "cpu io memory pids\n")
    assert enable_controllers(root, parent)
    assert (parent / "cgroup.subtree_control").read_text() in ("+io", "+memory", "+cpu", "+pids")  # last write wins
    job = JobCgroup(parent / "job1", v1_base=tmp_path / "v1")
    job.create()
    (job.path / "memory.swap.max").write_text("max")
    job.limit(Limits(max_cpu=150, max_memory=64, max_iobps=1_000_000), v2=True, device="254:0")
    assert (job.path / "cpu.max").read_text() == "150000 100000"
    assert (job.path / "memory.max").read_text() == str(64 << 20)
    assert (job.path / "memory.swap.max").read_text() == "0"
    assert (job.path / "io.max").read_text() == "254:0 rbps=1000000 wbps=1000000"
    assert not (tmp_path / "v1").exists()
    assert job.oom_killed() is None  # no events file yet
    (job.path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert job.oom_killed() == "own"
    (job.path / "memory.events").write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 1\n")
    assert job.oom_killed() == "shared"  # killed, its own limit never reached: a parent's struck


def test_v1_limits_in_twin_directories(tmp_path):
    root, parent = fake_tree(tmp_path, "")
    assert not enable_controllers(root, parent)
    v1 = tmp_path / "v1"
    for c in ("cpu", "memory", "blkio"):
        (v1 / c).mkdir(parents=True)
    job = JobCgroup(parent / "job1", v1_base=v1)
    job.limit(Limits(max_cpu=50, max_memory=8, max_iobps=4096), v2=False, device="8:0")
    assert (v1 / "cpu" / "joblet" / "job1" / "cpu.cfs_quota_us").read_text() == "50000"
    assert (v1 / "memory" / "joblet" / "job1" / "memory.limit_in_bytes").read_text() == str(8 << 20)
    assert (v1 / "blkio" / "joblet" / "job1" / "blkio.throttle.write_bps_device").read_text() == "8:0 4096"
    assert len(job.procs_files) == 4  # v2 first, then the three v1 twins
    assert job.oom_killed() is None
    memory = v1 / "memory" / "joblet" / "job1"
    (memory / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    (memory / "memory.max_usage_in_bytes").write_text(f"{5 << 20}\n")
    assert job.oom_killed() == "shared"  # it never came near its own 8 MB
    (memory / "memory.memsw.max_usage_in_bytes").write_text(f"{(8 << 20) - 4096}\n")
    assert job.oom_killed() == "own"


def test_io_throttle_on_more_disks_writes_each_disk_to_the_v2_and_v1_files(tmp_path, monkeypatch):
    """A sized volume's loop device gets the job's --max-iobps too (v2 io.max, v1 blkio):
    one write per disk and file (a cgroup file takes each write as one more line)."""
    jobs = {}
    for v2 in (True, False):
        _, parent = fake_tree(tmp_path / str(v2), "io\n" if v2 else "")
        jobs[v2] = JobCgroup(parent / "job1", v1_base=tmp_path / str(v2) / "v1")
        jobs[v2].create()
    written: list[tuple[str, str]] = []
    monkeypatch.setattr(Path, "write_text", lambda self, text: written.append((self.name, text)))
    for v2, job in jobs.items():
        job.throttle_io(4096, v2, ["7:3", "7:4"])
    assert written == [
        ("io.max", "7:3 rbps=4096 wbps=4096"),
        ("io.max", "7:4 rbps=4096 wbps=4096"),
        ("blkio.throttle.read_bps_device", "7:3 4096"),
        ("blkio.throttle.write_bps_device", "7:3 4096"),
        ("blkio.throttle.read_bps_device", "7:4 4096"),
        ("blkio.throttle.write_bps_device", "7:4 4096"),
    ]


def test_sizes():
    assert parse_size("1GB") == 1024 and parse_size("512mb") == 512 and parse_size("100") == 100
    # as --max-output's sizes: 1.5G was refused there, taken here (usability run)
    assert parse_size("1.5G") == 1536 and parse_size("8.9") == 9 and parse_size("8192K") == 8
    for bad in ("1KB", "big", "-5MB", "1.G", ".5G", "1e3M"):
        with pytest.raises(ValidationError):
            parse_size(bad)


@pytest.mark.parametrize(
    ("text", "mib"),
    [
        ("8388608B", 8),  # bytes: a lone B was read as MB
        ("8388609b", 9),
        ("8388607B", 8),  # a byte short of 8 MiB: rounded up to the minimum
        ("8.5", 9),  # a fraction of a MiB is rounded up: it was cut (`created volume v (8 MB)`)
        ("9000KB", 9),
        ("8.00000000000000001", 9),  # exact, not a float's 8.0
        ("0.1G", 103),
        ("8", 8),  # whole MiB: as they were
        ("8192KiB", 8),
        ("8 MiB", 8),
        ("2g", 2048),
        ("16TB", 16 << 20),
    ],
)
def test_a_volume_is_never_smaller_than_its_size(text, mib):
    assert parse_size(text) == mib


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("8B", "between 8MB and 16TB"),  # 8 bytes, not 8 MB
        ("1048576B", "between 8MB and 16TB"),  # 1 MiB
        ("16.0001TB", "between 8MB and 16TB"),  # rounded up past the maximum
        ("8i", "use e.g. 100MB"),  # an 'i' without its unit means nothing
        ("8ib", "use e.g. 100MB"),
    ],
)
def test_a_size_in_bytes_or_past_the_bounds_is_refused(text, why):
    with pytest.raises(ValidationError, match=f"invalid size '{text}': {why}"):
        parse_size(text)


def test_long_rates_and_sizes_are_refused_unread():
    """Their patterns are quadratic on long text (100 KB took ~25 s): past MAX_TEXT characters
    a rate or size is refused before the pattern sees it, even one the pattern would accept."""
    from joblet.api.limits import MAX_TEXT, parse_bytes

    padded = " " * (MAX_TEXT - len("10mbit"))
    assert parse_rate(padded + "10mbit") == 10_000_000 and parse_bytes(padded[:-4] + "8M") == 8 << 20  # at the cap
    with pytest.raises(ValueError, match="invalid rate"):
        parse_rate(" " + padded + "10mbit")
    with pytest.raises(ValueError, match="invalid size"):
        parse_bytes(" " * MAX_TEXT + "8M")


def test_the_jobs_memory_budget_leaves_the_host_a_tenth(tmp_path):
    from joblet.worker.cgroups import host_memory_mb, jobs_memory_budget, limit_jobs_memory

    assert jobs_memory_budget(0, 24105) == 24105 - 2410  # a tenth kept for the host
    assert jobs_memory_budget(0, 2048) == 2048 - 512  # at least 512 MB kept
    assert jobs_memory_budget(0, 768) == 768 - 384  # a small VM: half kept
    assert jobs_memory_budget(0, 100) == 64  # a tiny host still runs a job
    assert jobs_memory_budget(300, 24105) == 300  # the operator's number as given
    (tmp_path / "meminfo").write_text("MemTotal:       24684420 kB\nMemFree:  1 kB\n")
    assert host_memory_mb(tmp_path / "meminfo") == 24105
    v2, v1 = tmp_path / "v2" / "joblet", tmp_path / "v1"
    v2.mkdir(parents=True)
    (v1 / "memory" / "joblet").mkdir(parents=True)
    (v1 / "memory" / "joblet" / "memory.limit_in_bytes").write_text("9223372036854771712")
    (v1 / "memory" / "joblet" / "memory.kmem.tcp.limit_in_bytes").write_text("9223372036854771712")
    assert limit_jobs_memory(v2, 160, v1) == v1 / "memory" / "joblet" / "memory.limit_in_bytes"  # hybrid
    assert (v1 / "memory" / "joblet" / "memory.limit_in_bytes").read_text() == str(160 << 20)
    assert (v1 / "memory" / "joblet" / "memory.kmem.tcp.limit_in_bytes").read_text() == str(160 << 20)  # apart
    (v2 / "memory.max").write_text("max")
    assert limit_jobs_memory(v2, 200, v1) == v2 / "memory.max"  # the v2 group's, where it has one
    assert (v2 / "memory.max").read_text() == str(200 << 20)


def test_the_jobs_pids_budget_leaves_the_host_a_quarter(tmp_path):
    from joblet.worker.cgroups import host_pid_limit, jobs_pids_budget

    assert jobs_pids_budget(0, 32768) == 24576  # a quarter (8192) kept for the host
    assert jobs_pids_budget(0, 8192) == 4096  # at least 4096 kept
    assert jobs_pids_budget(0, 4194304) == 3145728
    assert jobs_pids_budget(0, 4000) == 2000  # a small VM's threads-max: half kept
    assert jobs_pids_budget(0, 100) == 64  # a tiny host still runs a job
    assert jobs_pids_budget(500, 32768) == 500  # the operator's number as given
    (tmp_path / "pid_max").write_text("4194304\n")
    (tmp_path / "threads-max").write_text("192730\n")
    assert host_pid_limit(tmp_path) == 192730  # the lower of the two
    assert host_pid_limit(tmp_path / "missing") == 32768


def test_jobs_get_no_huge_pages_where_hugetlb_is_in_v2(tmp_path):
    """Each page size's limit and reservation under the jobs' parent read 0; a host whose
    hugetlb is not in v2 says so (False), and the worker warns if the host has a pool."""
    root, parent = tmp_path / "unified", tmp_path / "unified" / "joblet"
    parent.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu hugetlb memory\n")
    (root / "cgroup.subtree_control").write_text("")
    assert refuse_huge_pages(root, parent) is False  # no hugetlb files under the parent
    assert (root / "cgroup.subtree_control").read_text() == "+hugetlb"
    for name in ("hugetlb.2MB.max", "hugetlb.2MB.rsvd.max", "hugetlb.1GB.max", "hugetlb.2MB.current"):
        (parent / name).write_text("max\n")
    assert refuse_huge_pages(root, parent) is True
    got = {p.name: p.read_text() for p in parent.glob("hugetlb.*")}
    limits = {"hugetlb.2MB.max": "0", "hugetlb.2MB.rsvd.max": "0", "hugetlb.1GB.max": "0"}
    assert got == {**limits, "hugetlb.2MB.current": "max\n"}
    (parent / "hugetlb.1GB.rsvd.max").mkdir()  # a write that fails (EBUSY, EROFS): said, not fatal
    assert refuse_huge_pages(root, parent) is False
    vm = tmp_path / "vm"
    vm.mkdir()
    (vm / "nr_hugepages").write_text("8\n")
    assert host_huge_pages(vm) == 8  # nr_overcommit_hugepages missing: 0


def test_disk_rates_are_lifted_only_where_one_may_be_set(tmp_path):
    """A job's teardown kills its group more than once, and most jobs have no rate: their
    throttle files are not read each time. A group found (not made here) is always looked at."""
    v1 = tmp_path / "v1"
    made = JobCgroup(tmp_path / "cg" / "job1", v1_base=v1)
    made.create()
    (made.path / "io.max").write_text("8:0 rbps=4096 wbps=4096 riops=max wiops=max\n")  # as if set by another
    made.lift_io()
    assert (made.path / "io.max").read_text().startswith("8:0 rbps=4096")  # made, no rate given: not read
    found = JobCgroup(made.path, v1_base=v1)  # the control: reconcile's, after a restart
    found.lift_io()
    assert (made.path / "io.max").read_text() == "8:0 rbps=max wbps=max riops=max wiops=max"
    assert found.throttled is False  # once lifted, a later kill reads nothing
