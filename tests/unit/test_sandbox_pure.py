"""The job's root as bubblewrap arguments, and where a command is found (no root needed)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from joblet.errors import ExecutionError
from joblet.worker.lookup import Unrunnable, resolve
from joblet.worker.sandbox import (
    Host,
    Layout,
    _may_match_under,
    bwrap_args,
    command_argv,
    make_cover,
    survey,
    sys_covers,
    views_of,
)

NOT_FOUND = Unrunnable(127, "command not found")
NO_FILE = "No such file or directory"
HOST = Host(
    etc="/run/j/etc",
    empty_file="/run/j/cover/file",
    empty_dir="/run/j/cover/dir",
    system=(("/bin", "usr/bin"), ("/lib64", None)),
    ro_paths=("/opt/tools",),
    secret_files=("/opt/tools/key.pem",),
    secret_dirs=("/opt/tools/private",),
    proc_files=("/proc/keys",),
    proc_dirs=("/proc/acpi",),
)


def pairs(args: list[str], option: str) -> list[tuple[str, str]]:
    return [(args[i + 1], args[i + 2]) for i, a in enumerate(args) if a == option]


def test_root_binds_read_only_and_covers_secrets():
    args = bwrap_args(
        HOST,
        Layout(
            hostname="j1",
            work_dir="/run/joblet/job/work",
            run_dir="/run/joblet/job",
            sys_dir="/run/joblet/job/sys",
            net_files=("hosts", "resolv.conf"),
        ),
    )
    ro = pairs(args, "--ro-bind")
    assert ("/usr", "/usr") in ro and ("/lib64", "/lib64") in ro and ("/opt/tools", "/opt/tools") in ro
    assert ("usr/bin", "/bin") in pairs(args, "--symlink")
    # /etc is the worker's copy (no secrets in it), the job's own files mounted on it
    assert ("/run/j/etc", "/etc") in ro and ("/etc", "/etc") not in ro
    assert ("/run/joblet/job/hosts", "/etc/hosts") in ro
    assert ("/run/joblet/job/hostname", "/etc/hostname") in ro
    assert args.index("/etc/hosts") > args.index("/etc")
    assert ("/run/j/cover/file", "/opt/tools/key.pem") in ro and ("/run/j/cover/dir", "/opt/tools/private") in ro
    assert ("/run/j/cover/file", "/proc/keys") in ro and ("/run/j/cover/dir", "/proc/acpi") in ro
    assert ("/run/joblet/job/work", "/work") in pairs(args, "--bind")
    # secrets are covered after their path is bound, masks after /proc is mounted; the root ends read-only
    ro_paths = [a for a in args if a == "/opt/tools"]
    assert ro_paths and args.index("/opt/tools/key.pem") > args.index("/opt/tools")
    assert args.index("/proc/keys") > args.index("--proc")
    remounts = [args[i + 1] for i, a in enumerate(args) if a == "--remount-ro"]
    assert remounts == ["/proc", "/"], remounts  # /proc and the root end read-only (/dev is so already)
    last = args.index("--remount-ro")  # /proc's: after what is bound on it
    assert args.index("/proc/keys") < last and "/proc/sys" not in args  # read-only with the rest
    assert ("/run/joblet/job/sys", "/sys") in ro and ("/run/j/cover/dir", "/sys/firmware") in ro
    assert "--unshare-net" not in args  # bwrap starts inside the namespace the worker built
    assert "CAP_SYS_ADMIN" not in args and "CAP_MKNOD" not in args
    # /dev: the job's own (its nodes, its devpts, read-only; made by the worker), bound whole;
    # not bwrap's --dev, which binds the host's nodes
    assert pairs(args, "--dev-bind") == [("/run/joblet/job/dev", "/dev")] and "--dev" not in args


def test_a_binds_parents_are_made_open_to_every_user():
    binds = (("/var/lib/joblet/volumes/a/data", "/volumes/a", False), ("/srv/rt", "/runtime", True))
    args = bwrap_args(HOST, Layout(hostname="h", work_dir="/w", run_dir="/r", binds=binds))
    made = args.index("/volumes")
    assert args[made - 3 : made + 1] == ["--perms", "0755", "--dir", "/volumes"]
    assert made < args.index("/volumes/a") and "/" not in args[made - 3 : made]


def test_cap_net_raw_only_where_the_worker_gives_it_and_never_in_host_mode():
    def caps(**layout: bool) -> list[str]:
        args = bwrap_args(HOST, Layout(hostname="h", work_dir="/w", run_dir="/r", **layout))
        return [a for i, a in enumerate(args) if i and a.startswith("CAP_")]

    assert "CAP_NET_RAW" not in caps() and "CAP_NET_BIND_SERVICE" in caps()  # podman's default
    assert "CAP_NET_RAW" in caps(net_raw=True)  # job_net_raw: Docker's
    assert "CAP_NET_RAW" not in caps(net_raw=True, host_network=True)  # it would sniff the host
    assert "CAP_NET_BIND_SERVICE" in caps(net_raw=True, host_network=True)


def test_without_a_sysfs_of_its_own_the_hosts_sys_is_bound_read_only():
    args = bwrap_args(HOST, Layout(hostname="h", work_dir="/w", run_dir="/r"))
    assert "--unshare-pid" in args and ("/sys", "/sys") in pairs(args, "--ro-bind")


def test_sizes_of_tmp_and_shm():
    args = bwrap_args(HOST, Layout(hostname="h", work_dir="/w", run_dir="/r", tmp_bytes=8 << 20, shm_bytes=1 << 20))
    assert args[args.index("/tmp") - 3 : args.index("/tmp")] == ["--size", str(8 << 20), "--tmpfs"]
    assert args[args.index("/dev/shm") - 3 : args.index("/dev/shm")] == ["--size", str(1 << 20), "--tmpfs"]


def test_another_user_goes_through_setpriv():
    assert command_argv("/usr/bin/id", ("-u",), None) == ["/usr/bin/id", "-u"]
    assert command_argv("/usr/bin/id", (), (1000, 1001))[:4] == [
        "/usr/bin/setpriv",
        "--reuid=1000",
        "--regid=1001",
        "--clear-groups",
    ]


def test_resolve_through_the_jobs_views(tmp_path: Path):
    work = tmp_path / "work"
    (work / "bin").mkdir(parents=True)
    script = work / "bin" / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    (work / "data.txt").write_text("not executable")
    layout = Layout(hostname="h", work_dir=str(work), run_dir="/r")
    views = views_of(HOST, layout)
    assert resolve("sh", "/usr/bin:/bin", views) == "/usr/bin/sh"
    assert resolve("bin/run.sh", "/usr/bin", views) == "/work/bin/run.sh"
    assert resolve("./bin/run.sh", "/usr/bin", views) == "/work/bin/run.sh"
    assert resolve("run.sh", "/usr/bin:/work/bin", views) == "/work/bin/run.sh"
    assert resolve("data.txt", "/usr/bin", views) == Unrunnable(126, "Permission denied")  # not executable
    assert resolve("python-not-here-xyz", "/usr/bin", views) == NOT_FOUND
    assert resolve("/root/.bashrc", "/usr/bin", views) == Unrunnable(127, "No such file or directory")  # not in the job


def test_links_in_a_volume_are_followed_inside_the_job_not_on_the_host(tmp_path: Path):
    hidden = tmp_path / "hidden-tool"  # on the host, where no job sees it
    hidden.write_text("#!/bin/sh\n")
    hidden.chmod(0o755)
    data = tmp_path / "volume"
    (data / "bin").mkdir(parents=True)
    (data / "bin" / "tool").write_text("#!/bin/sh\n")
    (data / "bin" / "tool").chmod(0o755)
    (data / "probe").symlink_to(hidden)  # the host has it; the job does not
    (data / "sh").symlink_to("/usr/bin/sh")  # a job path: the host's /usr is the job's
    (data / "rel").symlink_to("bin/tool")
    (data / "up").symlink_to("../v/bin/tool")  # through the job's /volumes
    (data / "loop").symlink_to("loop")
    layout = Layout(
        hostname="h", work_dir=str(tmp_path / "work"), run_dir="/r", binds=((str(data), "/volumes/v", False),)
    )
    views = views_of(HOST, layout)
    assert resolve("probe", "/volumes/v", views) == NOT_FOUND
    assert resolve("sh", "/volumes/v", views) == "/volumes/v/sh"
    assert resolve("rel", "/volumes/v", views) == "/volumes/v/rel"
    assert resolve("up", "/volumes/v", views) == "/volumes/v/up"
    assert resolve("loop", "/volumes/v", views) == NOT_FOUND
    assert resolve("sh", "/bin", views) == "/bin/sh"  # /bin a link to usr/bin, as on the host
    etc = tmp_path / "etc-copy"  # the worker's copy of /etc: Debian's alternatives are links
    (etc / "alternatives").mkdir(parents=True)
    (etc / "alternatives" / "sh").symlink_to("/usr/bin/sh")
    tools = tmp_path / "srv-tools"  # an operator's read-only path, a link on the host
    tools.mkdir()
    (tools / "tool").write_text("#!/bin/sh\n")
    (tools / "tool").chmod(0o755)
    (tmp_path / "opt-tools").symlink_to(tools)
    host = dataclasses.replace(HOST, etc=str(etc), ro_paths=(str(tmp_path / "opt-tools"),))
    on_host = views_of(host, layout)
    assert resolve("sh", "/etc/alternatives", on_host) == "/etc/alternatives/sh"
    assert resolve("tool", str(tmp_path / "opt-tools"), on_host) == f"{tmp_path}/opt-tools/tool"
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "sub" / "run.sh").write_text("#!/bin/sh\n")
    (work / "sub" / "run.sh").chmod(0o755)
    fd = os.open(work, os.O_RDONLY)
    try:  # the worker reaches /work through a descriptor (the job's own mount namespace)
        by_fd = views_of(HOST, layout, f"/proc/self/fd/{fd}")
        assert resolve("sub/run.sh", "/usr/bin", by_fd) == "/work/sub/run.sh"
    finally:
        os.close(fd)


def test_survey_covers_secrets_under_the_read_only_paths_only(tmp_path):
    tools = tmp_path / "tools"
    (tools / "private").mkdir(parents=True)
    (tools / "app.key").write_text("k")
    (tools / "run").write_text("#!/bin/sh\n")
    host = survey(tmp_path / "cover", (str(tools),), (f"{tools}/*.key", f"{tools}/private", "/etc/shadow*"), "/r/etc")
    assert host.secret_files == (str(tools / "app.key"),) and host.secret_dirs == (str(tools / "private"),)
    assert host.etc == "/r/etc" and host.ro_paths == (str(tools),)
    # a pattern is globbed only where it could match under /usr or a read-only path
    assert _may_match_under("/etc/shadow*", ("/usr",)) is False
    assert _may_match_under(f"{tools}/*.key", ("/usr", str(tools))) and _may_match_under("/opt/*", ("/opt/tools",))


def test_survey_covers_where_a_secret_link_leads(tmp_path):
    """A masked `linked.txt -> target.txt` (and a linked directory) under a read-only path was
    left out of the covers, and a job read the target; so was an /etc secret's target (red-team
    run). Their targets are covered; a target nothing binds (the control) is not listed."""
    ro = tmp_path / "ro"
    (ro / "sub").mkdir(parents=True)
    (ro / "target.txt").write_text("LINKTARGETSECRET")
    (ro / "linked.txt").symlink_to("target.txt")
    (ro / "linkdir").symlink_to("sub")
    (ro / "etc-real.conf").write_text("x")
    outside = tmp_path / "elsewhere.conf"
    outside.write_text("y")
    masked = (f"{ro}/linked.txt", f"{ro}/linkdir")
    host = survey(tmp_path / "cover", (str(ro),), masked, "/r/etc", (str(ro / "etc-real.conf"), str(outside)))
    assert host.secret_files == (str(ro / "etc-real.conf"), str(ro / "target.txt"))
    assert host.secret_dirs == (str(ro / "sub"),)
    # an /etc link through a link a deploy turns (`cur -> v1`, then `-> v2`): where it leads now
    for version in ("v1", "v2"):
        (ro / version).mkdir()
        (ro / version / "key.txt").write_text(version)
    (ro / "cur").symlink_to("v1")
    (tmp_path / "rot.key").symlink_to(ro / "cur" / "key.txt")  # standing for /etc/rot.key

    def covered() -> tuple[str, ...]:
        return survey(tmp_path / "c", (str(ro),), (), "/r/etc", (str(tmp_path / "rot.key"),)).secret_files

    assert str(ro / "v1" / "key.txt") in covered()
    (ro / "cur").unlink()
    (ro / "cur").symlink_to("v2")  # rotated: red-team run read v2 while v1 was covered
    assert str(ro / "v2" / "key.txt") in covered()


def test_a_link_that_changes_during_the_walk_is_not_found(tmp_path, monkeypatch):
    """A job swapping a link for a directory in a shared volume: readlink fails in another
    job's lookup, which says "not found" instead of ending in an internal error."""
    data = tmp_path / "volume"
    data.mkdir()
    (data / "tool").symlink_to("/usr/bin/sh")
    layout = Layout(
        hostname="h", work_dir=str(tmp_path / "work"), run_dir="/r", binds=((str(data), "/volumes/v", False),)
    )
    views = views_of(HOST, layout)
    assert resolve("tool", "/volumes/v", views) == "/volumes/v/tool"  # control

    def gone(path, **_):
        raise OSError(22, "Invalid argument", path)

    monkeypatch.setattr(os, "readlink", gone)
    assert resolve("tool", "/volumes/v", views) == NOT_FOUND


def test_a_sysfs_the_worker_covered_is_bound_whole_and_the_covers_are_the_same():
    """The worker binds the /sys covers on the job's own sysfs (mounts.py): bwrap then binds it
    alone; without that (sys_masked False, or the host's /sys) bwrap binds each cover."""
    host = Host(**{**HOST.__dict__, "sys_files": ("/sys/kernel/vmcoreinfo",), "sys_dirs": ("/sys/kernel/slab",)})
    covers = sys_covers(host)
    assert covers == [
        ("/run/j/cover/dir", "/sys/firmware"),
        ("/run/j/cover/file", "/sys/kernel/vmcoreinfo"),
        ("/run/j/cover/dir", "/sys/kernel/slab"),
    ]
    layout = Layout(hostname="h", work_dir="/w", run_dir="/r", sys_dir="/r/sys")
    unmasked = pairs(bwrap_args(host, layout), "--ro-bind")
    masked = pairs(bwrap_args(host, dataclasses.replace(layout, sys_masked=True)), "--ro-bind")
    assert ("/r/sys", "/sys") in unmasked and set(covers) <= set(unmasked)
    assert ("/r/sys", "/sys") in masked and not set(covers) & set(masked)
    host_sys = pairs(bwrap_args(host, dataclasses.replace(layout, sys_dir=None, sys_masked=True)), "--ro-bind")
    assert ("/sys", "/sys") in host_sys and set(covers) <= set(host_sys)  # the host's /sys: bwrap covers it


def test_a_command_that_cannot_run_is_told_as_a_shell_tells_it(tmp_path: Path):
    """A directory, a script whose #! interpreter the job lacks: 126 with the shell's words
    (a missing interpreter was bwrap's own failure, exit 1, like the command's own exit 1)."""
    work = tmp_path / "work"
    (work / "adir").mkdir(parents=True)
    for name, first in (("bad.sh", "#!/nonexistent/interp -x"), ("good.sh", "#!/bin/sh"), ("plain", "echo hi")):
        (work / name).write_text(first + "\n")
        (work / name).chmod(0o755)
    views = views_of(HOST, Layout(hostname="h", work_dir=str(work), run_dir="/r"))
    assert resolve("./adir", "/usr/bin", views) == Unrunnable(126, "Is a directory")
    assert resolve("/tmp", "/usr/bin", views) == Unrunnable(126, "Is a directory")  # the sandbox's own
    assert resolve("/dev/null", "/usr/bin", views) == Unrunnable(126, "Permission denied")
    assert resolve("/nothere", "/usr/bin", views) == Unrunnable(127, "No such file or directory")
    assert resolve("adir", "/usr/bin", views) == NOT_FOUND  # a search skips directories, as a shell's
    bad = Unrunnable(126, "/nonexistent/interp: bad interpreter: No such file or directory")
    assert resolve("bad.sh", "/usr/bin", views) == bad
    assert resolve("good.sh", "/usr/bin", views) == "/work/good.sh"  # the control: /bin/sh is the job's
    assert resolve("plain", "/usr/bin", views) == "/work/plain"  # no #!: the kernel's (or a shell's) affair
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "bad.sh").write_text("#!/nonexistent/interp\n")
    (vol / "bad.sh").chmod(0o755)
    in_volume = views_of(
        HOST, Layout(hostname="h", work_dir=str(work), run_dir="/r", binds=((str(vol), "/volumes/v", False),))
    )
    # a volume's file is not read (a job sharing it could race a link in): it starts and fails as the kernel says
    assert resolve("/volumes/v/bad.sh", "/usr/bin", in_volume) == "/volumes/v/bad.sh"


def test_a_path_through_a_file_is_not_a_directory_and_the_sandboxs_own_paths_are_there(tmp_path: Path):
    """As a shell in the job says it: `/bin/echo/` is 126 "Not a directory" (it ran
    /bin/echo); the sandbox's own directories, links and devices are 126, not 127."""
    work = tmp_path / "work"
    (work / "adir").mkdir(parents=True)
    (work / "run.sh").write_text("#!/bin/sh\n")
    (work / "run.sh").chmod(0o755)
    vol = tmp_path / "vol"
    vol.mkdir()
    views = views_of(HOST, Layout(hostname="h", work_dir=str(work), run_dir="/r"))
    not_a_dir = Unrunnable(126, "Not a directory")
    for command in ("/usr/bin/sh/", "/bin/sh/", "/usr/bin/sh/.", "run.sh/", "/work/run.sh/", "/usr/bin/sh/x"):
        assert resolve(command, "/usr/bin", views) == not_a_dir, command
    assert resolve("/usr/bin/sh", "/usr/bin", views) == "/usr/bin/sh"  # the control
    assert resolve("run.sh", "/usr/bin", views) == "/work/run.sh"
    assert resolve("adir/", "/usr/bin", views) == Unrunnable(126, "Is a directory")
    assert resolve("/dev/null/", "/usr/bin", views) == not_a_dir
    assert resolve("/nothere/", "/usr/bin", views) == Unrunnable(127, "No such file or directory")
    is_a_dir = Unrunnable(126, "Is a directory")
    for command in ("/var/tmp", "/var/tmp/", "/proc/sys", "/sys/kernel", "/dev/fd", "/tmp/"):
        assert resolve(command, "/usr/bin", views) == is_a_dir, command
    for command in ("/dev/stdin", "/dev/ptmx"):
        assert resolve(command, "/usr/bin", views) == Unrunnable(126, "Permission denied"), command
    no_file = Unrunnable(127, "No such file or directory")
    assert resolve("/volumes", "/usr/bin", views) == no_file  # no volumes: bwrap makes no /volumes
    with_volume = views_of(
        HOST, Layout(hostname="h", work_dir=str(work), run_dir="/r", binds=((str(vol), "/volumes/v", False),))
    )
    assert resolve("/volumes", "/usr/bin", with_volume) == is_a_dir
    assert resolve("/volumes/", "/usr/bin", with_volume) == is_a_dir
    assert resolve("/volumes/v", "/usr/bin", with_volume) == is_a_dir
    assert resolve("/opt", "/usr/bin", with_volume) == is_a_dir  # holds the read-only path /opt/tools
    # a path through a file of a volume is not told apart from a missing one: another job
    # sharing the volume could swap a directory on the way for a link to a host path
    (vol / "f").write_text("x")
    assert resolve("/volumes/v/f/x", "/usr/bin", with_volume) == no_file
    assert resolve("/work/run.sh/x", "/usr/bin", with_volume) == not_a_dir  # the control: outside volumes


def test_a_directory_swapped_for_a_link_after_the_walk_tells_nothing_of_the_host(tmp_path, monkeypatch):
    """Another job sharing the volume swaps a directory on the path for a link to a host
    directory between job_realpath's walk and the reads of what it found: those followed the
    link on the host and told whether /root/.bashrc existed (red-team run, by RENAME_EXCHANGE
    in a loop). Read without following links, the swapped path is not found."""
    from joblet.worker import lookup

    secret = tmp_path / "root"  # the host's, no job's
    secret.mkdir()
    (secret / ".bashrc").write_text("x\n")  # not executable: 126 if it were found
    data = tmp_path / "volume"
    (data / "d").mkdir(parents=True)
    (data / "d" / "tool").write_text("#!/bin/sh\n")
    (data / "d" / "tool").chmod(0o755)
    (data / "d" / "notes").write_text("x\n")
    layout = Layout(
        hostname="h", work_dir=str(tmp_path / "work"), run_dir="/r", binds=((str(data), "/volumes/v", False),)
    )
    views = views_of(HOST, layout)
    assert resolve("/volumes/v/d/tool", "/usr/bin", views) == "/volumes/v/d/tool"  # the controls, unswapped
    assert resolve("/volumes/v/d/notes", "/usr/bin", views) == Unrunnable(126, "Permission denied")
    walk = lookup.job_realpath

    def swapped_after_the_walk(path: str, views: list[tuple[str, str]], hops: int = 40, **kw: Any) -> str | None:
        found = walk(path, views, hops, **kw)
        if (data / "d").is_dir() and not (data / "d").is_symlink():
            (data / "d").rename(tmp_path / "d-away")
            (data / "d").symlink_to(secret)
        return found

    (secret / "notes").write_text("x\n")
    monkeypatch.setattr(lookup, "job_realpath", swapped_after_the_walk)
    assert resolve("/volumes/v/d/.bashrc", "/usr/bin", views) == Unrunnable(127, "No such file or directory")


def test_a_directory_swapped_during_the_walk_reads_no_host_link(tmp_path, monkeypatch):
    """The walk itself read links on the host through a directory another job had just swapped
    for a link (review: a double swap told whether a host path was a link, and where it led):
    what is under a volume is read from the volume's directory without following links."""
    from joblet.worker import lookup

    secret = tmp_path / "secret"  # the host's, no job's
    secret.mkdir()
    (secret / "lnk").symlink_to("/usr/bin/env")
    data = tmp_path / "volume"
    (data / "d").mkdir(parents=True)
    (data / "d" / "tool").symlink_to("../run.sh")  # the control: a link of the volume's own
    (data / "run.sh").write_text("#!/bin/sh\n")
    (data / "run.sh").chmod(0o755)
    layout = Layout(
        hostname="h", work_dir=str(tmp_path / "work"), run_dir="/r", binds=((str(data), "/volumes/v", False),)
    )
    views = views_of(HOST, layout)
    assert resolve("/volumes/v/d/tool", "/usr/bin", views) == "/volumes/v/d/tool"
    assert resolve("/volumes/v/d/lnk", "/usr/bin", views) == Unrunnable(127, "No such file or directory")
    real_view = lookup.host_view

    def swapping(job_path: str, views: list[tuple[str, str]]) -> str | None:
        if job_path == "/volumes/v/d/lnk" and not (data / "d").is_symlink():  # after `d` was walked
            (data / "d").rename(tmp_path / "d-away")
            (data / "d").symlink_to(secret)
        return real_view(job_path, views)

    monkeypatch.setattr(lookup, "host_view", swapping)
    assert resolve("/volumes/v/d/lnk", "/usr/bin", views) == Unrunnable(127, "No such file or directory")


def test_a_job_past_bubblewraps_word_count_fails_to_start_saying_why():
    """bwrap stops at 9,000 words (its argv and its --args together): a job past them failed
    as if its command had exited 1, with bwrap's own line on its stderr. Preflight's bounds
    leave room; what a host's many covers add is caught here, before anything is spawned."""
    from joblet.worker.execution import BWRAP_MAX_ARGS, Launch, Sandbox

    def never(fn):
        raise AssertionError("spawned")

    def launch(words: int) -> Launch:  # bwrap's own 8, --clearenv, 3 for A=1, the command: 13
        cgroup = SimpleNamespace(procs_files=[])
        return Launch("j" * 32, cgroup, ["--dir"] * (words - 13), ["true"], {"A": "1"}, never)

    with pytest.raises(ExecutionError, match=r"are 9001 words, more than bubblewrap takes \(9000\)"):
        Sandbox(launch(BWRAP_MAX_ARGS + 1)).start()
    with pytest.raises(AssertionError, match="spawned"):  # the control: exactly 9000 is spawned
        Sandbox(launch(BWRAP_MAX_ARGS)).start()  # (a fake that never spawns: no root needed)


def test_a_procs_file_that_fails_to_open_leaks_none_opened_before_it(tmp_path):
    """The cgroups' procs files were opened in one list comprehension: one failing after
    others (a v1 twin gone) lost those opened, never closed, not by close() either (review)."""
    from joblet.worker.execution import Launch, Sandbox

    (tmp_path / "cgroup.procs").write_text("")

    def never(fn):
        raise AssertionError("spawned")

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = fds()
    cgroup = SimpleNamespace(procs_files=[str(tmp_path / "cgroup.procs"), str(tmp_path / "gone" / "cgroup.procs")])
    box = Sandbox(Launch("j" * 32, cgroup, [], ["true"], {}, never))  # type: ignore[arg-type]
    with pytest.raises(ExecutionError, match="failed to start the sandbox"):
        box.start()
    box.close()  # as the job's start does after a failure
    assert fds() == before
    cgroup.procs_files = cgroup.procs_files[:1]  # the control: one that opens gets to the spawn
    with pytest.raises(AssertionError, match="spawned"):
        Sandbox(Launch("j" * 32, cgroup, [], ["true"], {}, never)).start()  # type: ignore[arg-type]


def test_loader_variables_of_a_user_job_are_set_after_its_drop():
    """setpriv, root until its drop, got the job's LD_PRELOAD (red-team run): those wait for
    env(1) after it; a path with a '=' (an operand env would read as a variable) goes via sh."""
    from joblet.worker.sandbox import ENV, SETPRIV, SH, command_argv, loader_env

    env = {"PATH": "/usr/bin", "LD_PRELOAD": "/work/p.so", "TMPDIR": "/t"}
    assert loader_env(env, None) == (env, {})  # root: nothing to drop below
    first, later = loader_env(env, (1000, 1000))
    assert first == {"PATH": "/usr/bin"} and later == {"LD_PRELOAD": "/work/p.so", "TMPDIR": "/t"}
    argv = command_argv("/usr/bin/id", ("-u",), (1000, 1000), later)
    assert argv[0] == SETPRIV and argv[argv.index("--") + 1 :] == [
        ENV,
        "LD_PRELOAD=/work/p.so",
        "TMPDIR=/t",
        "/usr/bin/id",
        "-u",
    ]
    odd = command_argv("/work/a=b", (), (1000, 1000), later)
    assert odd[odd.index("--") + 1 :][3:] == [SH, "-c", 'exec "$0" "$@"', "/work/a=b"]
    plain = command_argv("/usr/bin/id", (), (1000, 1000))  # the control: nothing later, no env
    assert plain[plain.index("--") + 1 :] == ["/usr/bin/id"]


def test_a_lookup_through_deep_links_in_a_volume_and_a_long_path_is_bounded(tmp_path, monkeypatch):
    """A volume's chain of links, each to a path 150 folders deep, walked again from the
    volume's root at each part, searched through a PATH of the same entry thousands of
    times: one `rnx run` held a worker's core for hours, past its stop (red-team run). A
    lookup walks at most STEPS parts (then ELOOP, as the kernel would), each directory once."""
    from joblet.worker import lookup

    data = tmp_path / "volume"
    deep = data.joinpath(*["a"] * 150)
    deep.mkdir(parents=True)
    job_deep = "/volumes/v/" + "/".join(["a"] * 150)
    for k in range(30):
        (deep / f"x{k}").symlink_to(f"{job_deep}/x{k + 1}")
    (deep / "x30").write_text("#!/bin/sh\n")
    (deep / "x30").chmod(0o755)
    (data / "start").symlink_to(f"{job_deep}/x0")
    (data / "short").symlink_to(f"{job_deep}/x30")  # the control: one hop that deep
    layout = Layout(hostname="h", work_dir=str(tmp_path / "w"), run_dir="/r", binds=((str(data), "/volumes/v", False),))
    views = views_of(HOST, layout)
    assert resolve("/volumes/v/short", "/usr/bin", views) == "/volumes/v/short"
    assert resolve("/volumes/v/start", "/usr/bin", views) == Unrunnable(126, "Too many levels of symbolic links")
    walked: list[str] = []
    walk = lookup.job_realpath
    monkeypatch.setattr(
        lookup, "job_realpath", lambda path, views, **kw: walked.append(path) or walk(path, views, **kw)
    )
    assert resolve("zzz", ":".join(["/volumes/v/start/.."] * 9000), views) == Unrunnable(
        126, "Too many levels of symbolic links"
    )
    assert walked == ["/volumes/v/start/../zzz"]  # once, not 9,000 times


def test_a_lookups_dot_dot_parts_are_charged(tmp_path):
    """`..` parts cost no step: a volume link of 1,360 `..`s back to itself, searched through
    a PATH of 1,000 such entries, took 1.9 s of CPU a lookup, far past STEPS' ~20 ms (review).
    Each `..` is a step now; one hop of them (the control) still resolves."""
    from joblet.worker import lookup

    data = tmp_path / "volume"
    data.mkdir()
    (data / "tool").write_text("#!/bin/sh\n")
    (data / "tool").chmod(0o755)
    (data / "up").symlink_to("../" * 40 + "volumes/v/tool")  # the control: 40 of them, once
    (data / "l").symlink_to("../" * 1360 + "volumes/v/l")
    layout = Layout(hostname="h", work_dir=str(tmp_path / "w"), run_dir="/r", binds=((str(data), "/volumes/v", False),))
    views = views_of(HOST, layout)
    assert resolve("/volumes/v/up", "/usr/bin", views) == "/volumes/v/up"
    steps = lookup.Steps()
    assert lookup.job_realpath("/volumes/v/l", views, steps=steps) is None
    assert steps.left < 0  # out of steps, not of hops (40 of those would take 54,400 `..`s)


def test_a_scripts_interpreter_in_a_volume_is_looked_at_without_following_a_swapped_link(tmp_path, monkeypatch):
    """`#!/volumes/v/d/creds.txt` in an uploaded script, while another job swaps `d` for a link
    to a host directory: the interpreter's plain lstat followed it and told whether the host
    (another tenant's volume) had such a file: the job started, or "bad interpreter" (red-team run)."""
    from joblet.worker import lookup

    secret = tmp_path / "other-tenant"
    secret.mkdir()
    (secret / "creds.txt").write_text("x\n")
    data = tmp_path / "volume"
    (data / "d").mkdir(parents=True)
    (data / "d" / "tool").write_text("x\n")  # the control: an interpreter in the volume, unswapped
    (data / "d" / "creds.txt").mkdir()  # the walk finds it (a directory: no interpreter) before the swap
    work = tmp_path / "w"
    work.mkdir()
    for name, interpreter in (("ok.sh", "/volumes/v/d/tool"), ("c.sh", "/volumes/v/d/creds.txt")):
        (work / name).write_text(f"#!{interpreter}\n")
        (work / name).chmod(0o755)
    layout = Layout(hostname="h", work_dir=str(work), run_dir="/r", binds=((str(data), "/volumes/v", False),))
    views = views_of(HOST, layout, str(work))
    assert resolve("./ok.sh", "/usr/bin", views) == "/work/ok.sh"
    walk = lookup.job_realpath

    def swapped_after_the_walk(path: str, views: list[tuple[str, str]], **kw: Any) -> str | None:
        found = walk(path, views, **kw)
        if path.startswith("/volumes/") and not (data / "d").is_symlink():
            (data / "d").rename(tmp_path / "d-away")
            (data / "d").symlink_to(secret)
        return found

    monkeypatch.setattr(lookup, "job_realpath", swapped_after_the_walk)
    bad = Unrunnable(126, "/volumes/v/d/creds.txt: bad interpreter: No such file or directory")
    assert resolve("./c.sh", "/usr/bin", views) == bad


def test_an_etc_secret_links_target_is_covered_only_where_the_copy_has_it(tmp_path):
    """certbot's layout masked (`live/*/privkey.pem` links into `archive/`, mode 0700): the
    copy holds an empty placeholder for `archive`, the cover's mount point did not exist in
    the read-only copy, and bwrap failed every job's start (review). A target the copy hides
    with its directory gets no cover; one the copy has (the control) does."""
    from joblet.worker.sandbox import _seen_targets

    etc = tmp_path / "copy"
    (etc / "letsencrypt" / "archive").mkdir(parents=True)  # the placeholder: empty
    (etc / "app").mkdir()
    (etc / "app" / "real.conf").write_text("")
    targets = ("/etc/letsencrypt/archive/x/privkey1.pem", "/etc/app/real.conf", "/root/elsewhere")
    assert _seen_targets(targets, str(etc), ("/usr",)) == {"/etc/app/real.conf"}


def test_the_lookup_sees_the_covers_where_the_job_does(tmp_path):
    """A masked directory is empty in the job and a masked file an empty one: the worker's
    command lookup read the host's real files under them, and its error told a job's author
    which names a masked directory held ("Permission denied" or "No such file") and the first
    word of a masked script's `#!` line (red-team run). An unmasked script beside them is
    still read (the control)."""
    tools = tmp_path / "tools"
    (tools / "private").mkdir(parents=True)
    for path, line in ((tools / "private" / "deploy.sh", "#!/DIR-TOKEN\n"), (tools / "app.key", "#!/KEY-TOKEN\n")):
        path.write_text(line)
        path.chmod(0o755)
    (tools / "private" / "id_rsa").write_text("k")
    (tools / "tool.sh").write_text("#!/PUBLIC-INTERPRETER\n")
    (tools / "tool.sh").chmod(0o755)
    cover = tmp_path / "cover"
    make_cover(tmp_path)
    host = dataclasses.replace(
        HOST,
        ro_paths=(str(tools),),
        secret_files=(str(tools / "app.key"),),
        secret_dirs=(str(tools / "private"),),
        empty_file=str(cover / "file"),
        empty_dir=str(cover / "dir"),
    )
    views = views_of(host, Layout(hostname="h", work_dir=str(tmp_path / "work"), run_dir="/r"))
    public = resolve(f"{tools}/tool.sh", "/usr/bin", views)
    assert public == Unrunnable(126, "/PUBLIC-INTERPRETER: bad interpreter: No such file or directory")
    for name in ("deploy.sh", "id_rsa", "nothing"):  # as the job sees them: not there
        assert resolve(f"{tools}/private/{name}", "/usr/bin", views) == Unrunnable(127, "No such file or directory")
    assert resolve(f"{tools}/app.key", "/usr/bin", views) == Unrunnable(126, "Permission denied")  # empty, 0444
    # the worker reaches the covers through the job's files (`covers`), not at their paths
    moved = tmp_path / "moved"
    cover.rename(moved)
    by_fd = views_of(host, Layout(hostname="h", work_dir=str(tmp_path / "work"), run_dir="/r"), covers=str(moved))
    assert resolve(f"{tools}/app.key", "/usr/bin", by_fd) == Unrunnable(126, "Permission denied")
    assert resolve(f"{tools}/private/deploy.sh", "/usr/bin", by_fd) == Unrunnable(127, "No such file or directory")


def test_a_user_jobs_lookup_reads_only_what_its_user_may(tmp_path):
    """The worker looks a command up as root: for a --user job it read a script its user may
    not read (0711, or in a directory of 0700) and told its `#!` word, and told a name in a
    directory its user may not search from one not there (red-team run). As the user: the
    unreadable script is left to the kernel in the job, the closed directory is as empty; a
    root job still reads both, and the user's own readable script is still looked into (the
    controls)."""
    tools = tmp_path / "tools"
    (tools / "closed").mkdir(parents=True)
    (tools / "closed").chmod(0o700)
    for name, line, mode in (
        ("closed/s.sh", "#!/CLOSED-TOKEN\n", 0o755),
        ("xonly.sh", "#!/XONLY-TOKEN\n", 0o711),
        ("tool.sh", "#!/PUBLIC-INTERPRETER\n", 0o755),
        ("noexec.sh", "#!/bin/sh\n", 0o744),
    ):
        (tools / name).write_text(line)
        (tools / name).chmod(mode)
    host = dataclasses.replace(HOST, ro_paths=(str(tools),), secret_files=(), secret_dirs=())
    views = views_of(host, Layout(hostname="h", work_dir=str(tmp_path / "work"), run_dir="/r"))
    user = (4242, 4242)

    def bad(word: str) -> Unrunnable:
        return Unrunnable(126, f"/{word}: bad interpreter: No such file or directory")

    assert resolve(f"{tools}/tool.sh", "/usr/bin", views, user) == bad("PUBLIC-INTERPRETER")
    assert resolve(f"{tools}/closed/s.sh", "/usr/bin", views) == bad("CLOSED-TOKEN")  # root's view
    assert resolve(f"{tools}/xonly.sh", "/usr/bin", views) == bad("XONLY-TOKEN")
    for name in ("s.sh", "nothing"):
        assert resolve(f"{tools}/closed/{name}", "/usr/bin", views, user) == Unrunnable(127, NO_FILE)
    assert resolve(f"{tools}/xonly.sh", "/usr/bin", views, user) == f"{tools}/xonly.sh"  # the kernel's to say
    assert resolve(f"{tools}/noexec.sh", "/usr/bin", views, user) == Unrunnable(126, "Permission denied")
    assert resolve(f"{tools}/noexec.sh", "/usr/bin", views) == f"{tools}/noexec.sh"


def test_a_user_jobs_command_in_its_volume_is_found(tmp_path):
    """The lookup as a --user job's user read /volumes (a directory bwrap makes, 0755, with no
    host side) as a volume path, found nothing and said no user may search it: the job's own
    script in its volume was `No such file or directory` (127) before it ran, a root job's
    ran (the control), and `sh /volumes/v/s.sh` as that user ran too."""
    volume = tmp_path / "v"
    volume.mkdir()
    (volume / "s.sh").write_text("#!/bin/sh\n")
    (volume / "s.sh").chmod(0o755)
    (volume / "closed").mkdir(mode=0o700)
    (volume / "closed" / "t.sh").write_text("#!/bin/sh\n")
    (volume / "closed" / "t.sh").chmod(0o755)
    host = dataclasses.replace(HOST, secret_files=(), secret_dirs=())
    layout = Layout(
        hostname="h", work_dir=str(tmp_path / "work"), run_dir="/r", binds=[(str(volume), "/volumes/v", False)]
    )
    views = views_of(host, layout)
    user = (4242, 4242)
    assert resolve("/volumes/v/s.sh", "/usr/bin", views) == "/volumes/v/s.sh"  # the control: root
    assert resolve("/volumes/v/s.sh", "/usr/bin", views, user) == "/volumes/v/s.sh"
    assert resolve("s.sh", "/volumes/v:/usr/bin", views, user) == "/volumes/v/s.sh"
    assert resolve("/volumes/v/closed/t.sh", "/usr/bin", views, user) == Unrunnable(127, NO_FILE)  # still its modes
