"""The job sandbox, tried as an attacker would: each forbidden thing beside an allowed one.

Every probe runs as root inside a default job (Docker's capabilities less mknod), so a
refusal comes from the sandbox, not from missing privileges.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import fcntl
import json
import os
import pty
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from joblet.api.client import Client
from joblet.api.models import JobStatus
from joblet.api.uploads import Upload
from joblet.worker import landlock
from joblet.worker.sandbox import SYS_MASKED
from tests.conftest import Host, need, running_host
from tests.integration.helpers import ending, eventually, job_file, listening, output, run, wait_running

PROBE = textwrap.dedent("""
    import ctypes, errno, json, os, socket, sys
    def attempt(fn):
        try:
            r = fn()
            return "ok" if r is None else r
        except OSError as e:
            return errno.errorcode.get(e.errno, str(e.errno))
    def write(path, data="x"):
        with open(path, "w") as fh:
            fh.write(data)
    def read(path):
        with open(path, "rb") as fh:
            return len(fh.read())
    def read_some(path):
        with open(path, "rb") as fh:
            return len(fh.read(16))
    def unix(path):
        s = socket.socket(socket.AF_UNIX); s.settimeout(2); s.connect(path); s.close()
    libc = ctypes.CDLL(None, use_errno=True)
    def syscall(nr, *args):
        if libc.syscall(nr, *args) == -1:
            return errno.errorcode[ctypes.get_errno()]
        return "ok"
    checks = {}
    exec(sys.argv[1])
    print(json.dumps(checks))
""")


def probe(client, checks: str, **fields) -> dict:
    """Run the probe with `checks` (Python filling the dict `checks`); returns that dict."""
    rec, out, err = run(client, "python3", "-c", PROBE, textwrap.dedent(checks), **fields)
    assert rec.status == JobStatus.COMPLETED, (rec, err)
    return json.loads(out)


@pytest.fixture(scope="module")
def host(redis_sock: str) -> Iterator[Host]:
    """The seccomp filter's packet-socket checks need one: a worker that gives root jobs
    CAP_NET_RAW (job_net_raw, Docker's default); open_host below keeps joblet's default."""
    yield from running_host(redis_sock, "hostraw", job_net_raw="true")


@pytest.fixture(scope="module")
def secret():
    """A joblet secret in /etc/joblet as an operator would keep it (the signing key)."""
    need(os.geteuid() == 0, "needs root")
    made = not Path("/etc/joblet").exists()
    path = Path(f"/etc/joblet/sandbox-test-{os.getpid()}.key")
    path.parent.mkdir(exist_ok=True)
    path.write_text("-----BEGIN PRIVATE KEY-----\nnot really\n")
    yield path
    path.unlink()
    if made:
        shutil.rmtree("/etc/joblet", ignore_errors=True)


def test_root_is_read_only_and_private(secret, client, host):
    venv = Path(sys.prefix)  # the worker's virtualenv: a .pth there runs as root on the host
    site = next(venv.glob("lib/python3*/site-packages"))
    got = probe(
        client,
        f"""
        checks["work"] = attempt(lambda: write("/work/ok"))
        checks["tmp"] = attempt(lambda: write("/tmp/ok"))
        checks["shm"] = attempt(lambda: write("/dev/shm/ok"))
        for p in ("/etc/marker", "/usr/marker", "/marker", "/var/marker", "/run/marker", "/dev/marker"):
            checks[p] = attempt(lambda: write(p))
        checks["pth"] = attempt(lambda: write("{site}/evil.pth", "import os"))
        checks["venv"] = os.path.exists("{venv}")
        checks["shadow"] = attempt(lambda: read("/etc/shadow"))
        checks["passwd"] = attempt(lambda: read("/etc/passwd"))
        checks["secret"] = attempt(lambda: read("{secret}"))
        checks["broker"] = attempt(lambda: unix("{host.env["JOBLET_REDIS_URL"][7:]}"))
        checks["state"] = os.path.exists("{host.cfg.state_dir}") or os.path.exists("{host.cfg.run_dir}")
        checks["hosts"] = [os.path.exists(p) for p in ("/root/.bashrc", "/home", "/var/lib/joblet")]
        checks["tmp_files"] = sorted(os.listdir("/tmp"))
    """,
    )
    assert (got["work"], got["tmp"], got["shm"]) == ("ok", "ok", "ok")
    for path in ("/etc/marker", "/usr/marker", "/marker", "/var/marker", "/run/marker", "/dev/marker"):
        assert got[path] == "EROFS", (path, got[path])
        assert not Path(path).exists()
    assert got["pth"] == "ENOENT" and got["venv"] is False and not (site / "evil.pth").exists()
    assert Path("/etc/shadow").stat().st_size > 0 and got["shadow"] == 0 and got["passwd"] > 0
    assert secret.stat().st_size > 0 and got["secret"] == "ENOENT"  # /etc/joblet is empty
    assert Path(host.env["JOBLET_REDIS_URL"][7:]).is_socket() and got["broker"] == "ENOENT"
    assert got["state"] is False and got["hosts"] == [False, False, False]
    assert got["tmp_files"] == ["ok"]  # its own /tmp: nothing of the host's


def test_tmp_and_work_vanish_with_the_job(client, host):
    rec, out, _ = run(client, "sh", "-c", "echo kept > /tmp/t-$JOBLET_JOB_ID; echo $JOBLET_JOB_ID", network="none")
    job_id = out.decode().strip()
    assert rec.status == JobStatus.COMPLETED and job_id == rec.id
    assert not Path(f"/tmp/t-{job_id}").exists()
    # nothing of a job on the host's filesystem: its files and /work were in its mount namespace
    assert list((host.cfg.run_dir / "job").iterdir()) == []
    assert not (host.cfg.run_dir / "jobs").exists() and not (host.cfg.state_dir / "jobs").exists()  # older workers'
    with open("/proc/self/mountinfo") as fh:
        assert job_id not in fh.read()


def mount_namespace_of(host, job_id: str) -> str:
    """`mnt:[inode]` of the job's own mount namespace (its files' tmpfs, /work, sysfs): the
    one bwrap starts in, seen through bwrap's outer process (in the host's pid namespace)."""
    group = Path(host.env["JOBLET_CGROUP_ROOT"]) / job_id / "cgroup.procs"
    for pid in group.read_text().split():
        status = Path(f"/proc/{pid}/status").read_text()
        if next(line for line in status.splitlines() if line.startswith("NSpid:")).count("\t") == 1:
            return os.readlink(f"/proc/{pid}/ns/mnt")
    raise AssertionError(f"no process of {job_id} outside its pid namespace")


def worker_holds(host, namespace: str) -> bool:
    """Does the worker hold `namespace` (a descriptor, or a thread in it)?"""
    base = Path(f"/proc/{host.worker.pid}")
    links = [base / "fd" / fd for fd in os.listdir(base / "fd")]
    links += [base / "task" / tid / "ns" / "mnt" for tid in os.listdir(base / "task")]
    found = []
    for link in links:
        with contextlib.suppress(OSError):
            found.append(os.readlink(link))
    return namespace in found


def test_a_jobs_mount_namespace_goes_with_it(client, host):
    """What a job had mounted (its files, /work, sysfs) lives in a mount namespace of its own,
    held by the worker while the job runs and let go after: nothing of it is left."""
    rec = client.run("sleep", ("60",), network="none")
    eventually(lambda: client.get(rec.id).status == JobStatus.RUNNING, "the job did not start")
    namespace = mount_namespace_of(host, rec.id)
    assert namespace != os.readlink("/proc/self/ns/mnt") and worker_holds(host, namespace)  # control
    client.stop(rec.id)
    assert client.wait(rec.id, timeout=30).status == JobStatus.STOPPED
    eventually(lambda: not worker_holds(host, namespace), f"the worker still holds {namespace}", 10)
    held = []
    for ns in Path("/proc").glob("[0-9]*/ns/mnt"):
        with contextlib.suppress(OSError):
            held += [ns] if os.readlink(ns) == namespace else []
    assert held == []


def test_a_root_job_changes_no_host_file(client):
    """A root job holds CAP_CHOWN and CAP_FOWNER: its stdin was the host's /dev/null, and
    /proc/1/exe (bubblewrap's init) the host's bwrap on its writable root; fchmod and
    fchown through them changed the host's files, and chmod of procfs's own entries
    (/proc/meminfo: one object for every procfs) changed them host-wide (red-team runs). Each is opened here (the
    controls: the open works, and the same calls on a file of its own do too); no call
    changes anything were it let through (the mode it has, no owner)."""
    bwrap, null = shutil.which("bwrap"), os.stat("/dev/null")
    before = os.stat(os.path.realpath(bwrap))
    got = probe(
        client,
        """
        import stat
        st = os.fstat(0)
        checks["stdin"] = [stat.S_ISFIFO(st.st_mode), stat.S_ISCHR(st.st_mode), os.read(0, 16).decode()]
        exe = os.open("/proc/1/exe", os.O_RDONLY)
        checks["exe"] = os.readlink("/proc/1/exe")
        mode = stat.S_IMODE(os.fstat(exe).st_mode)
        checks["exe_chmod"] = attempt(lambda: os.fchmod(exe, mode))
        checks["exe_chown"] = attempt(lambda: os.fchown(exe, -1, -1))
        proc = stat.S_IMODE(os.stat("/proc/execdomains").st_mode)  # one procfs entry for all the host's
        checks["proc_chmod"] = attempt(lambda: os.chmod("/proc/execdomains", proc))
        checks["proc_chown"] = attempt(lambda: os.chown("/proc/meminfo", -1, -1))
        checks["proc_own"] = attempt(lambda: os.chmod(f"/proc/{os.getpid()}/status", 0o444))
        own = os.open("/work/own", os.O_CREAT | os.O_RDONLY, 0o644)
        checks["own"] = [attempt(lambda: os.fchmod(own, 0o600)), attempt(lambda: os.fchown(own, 1, 1))]
        """,
    )
    assert got["stdin"] == [True, False, ""], got  # reads end-of-file, as /dev/null did
    assert got["exe"] == os.path.realpath(bwrap), got  # the open reached the host's file
    assert got["exe_chmod"] == got["exe_chown"] == "EROFS", got
    # procfs's own entries: a chmod there changed them for every procfs of the host
    assert got["proc_chmod"] == got["proc_chown"] == got["proc_own"] == "EROFS", got
    assert got["own"] == ["ok", "ok"], got  # the controls: a root job may do so to its own files
    after = os.stat(os.path.realpath(bwrap))
    assert (after.st_mode, after.st_uid, after.st_ctime_ns) == (before.st_mode, before.st_uid, before.st_ctime_ns)
    now = os.stat("/dev/null")
    assert (now.st_mode, now.st_uid, now.st_ctime_ns) == (null.st_mode, null.st_uid, null.st_ctime_ns)


def test_proc_sys_and_dev_are_like_a_container(client):
    before = os.stat("/dev/full")
    try:
        got = probe(
            client,
            """
        checks["hostname"] = open("/proc/sys/kernel/hostname").read().strip()
        checks["sysctl"] = attempt(lambda: write("/proc/sys/kernel/domainname", "evil"))
        checks["net_sysctl"] = attempt(lambda: write("/proc/sys/net/ipv4/ip_forward", "1"))
        checks["sysrq"] = attempt(lambda: write("/proc/sysrq-trigger", "h"))
        checks["masked"] = {p: attempt(lambda: read(p)) for p in ("/proc/keys", "/proc/timer_list")}
        kernel = ("/proc/kpageflags", "/proc/slabinfo", "/proc/vmallocinfo", "/proc/pagetypeinfo")
        kernel += ("/sys/kernel/vmcoreinfo",)
        checks["kernel"] = {p: attempt(lambda: read(p)) for p in kernel if os.path.exists(p)}
        checks["meminfo"] = read("/proc/meminfo") > 0
        if os.path.exists("/proc/pressure/cpu"):
            checks["psi_read"] = read("/proc/pressure/cpu") > 0
            checks["psi_trigger"] = attempt(lambda: write("/proc/pressure/cpu", "some 500000 2000000\\0"))
        checks["slab"] = os.listdir("/sys/kernel/slab")
        zram = "/sys/class/zram-control"  # listed, never read: a read of hot_add adds a device
        checks["zram"] = os.listdir(zram) if os.path.isdir(zram) else None
        checks["virtual_block"] = os.listdir("/sys/devices/virtual/block")  # loop*/loop/backing_file
        checks["init_env"] = open("/proc/1/environ").read()
        checks["acpi"] = os.listdir("/proc/acpi") if os.path.isdir("/proc/acpi") else []
        checks["sys_write"] = attempt(lambda: write("/sys/kernel/mm/transparent_hugepage/enabled", "never"))
        checks["sys_net"] = sorted(os.listdir("/sys/class/net"))
        checks["dev"] = sorted(os.listdir("/dev"))
        checks["null"] = attempt(lambda: write("/dev/null"))
        checks["urandom"] = read_some("/dev/urandom")
        checks["chmod"] = attempt(lambda: os.chmod("/dev/full", 0o600))
        checks["chown"] = attempt(lambda: os.chown("/dev/full", 65534, 65534))
        checks["full"] = [os.stat("/dev/full").st_mode & 0o777, os.stat("/dev/full").st_uid]
        checks["pty"] = os.ttyname(os.openpty()[1])
        ptys = []
        while len(ptys) < 1000 and attempt(lambda: ptys.append(os.openpty())) == "ok":
            pass
        checks["ptys"] = len(ptys) + 1  # and the one above
        checks["pty_full"] = attempt(os.openpty)
        checks["mknod"] = attempt(lambda: os.mknod("/tmp/sda", 0o600 | 0o60000, os.makedev(8, 0)))
        checks["fifo"] = attempt(lambda: os.mkfifo("/tmp/fifo"))
        checks["pid"] = os.getpid()
    """,
            name="boxed",
        )
        now = os.stat("/dev/full")
    finally:  # had the job changed the host's own node (bwrap binds the host's), put it back
        os.chmod("/dev/full", before.st_mode & 0o7777)
        os.chown("/dev/full", before.st_uid, before.st_gid)
    # a root job's /dev nodes are its own, and read-only: neither they nor the host's change
    assert got["chmod"] == got["chown"] == "EROFS" and got["full"] == [0o666, 0], got
    assert got["pty"].startswith("/dev/pts/"), got["pty"]  # its own devpts: a pty works
    assert got["ptys"] == 64 and got["pty_full"] == "ENOSPC", got  # of the host's shared pool
    os.close(os.openpty()[0])  # the host's own: not the job's pool
    assert (before.st_mode, before.st_uid, before.st_gid) == (now.st_mode, now.st_uid, now.st_gid)
    assert got["hostname"] == "boxed"
    assert got["sysctl"] == got["net_sysctl"] == "EROFS", got
    assert got["sysrq"] == "EROFS" if Path("/proc/sysrq-trigger").exists() else got["sysrq"] == "ENOENT"
    assert os.path.getsize("/proc/timer_list") or Path("/proc/timer_list").read_text()  # host: not empty
    assert got["masked"] == {"/proc/keys": 0, "/proc/timer_list": 0} and got["acpi"] == []
    # root-only kernel layouts read empty (the host's are not: /proc/slabinfo has a header),
    # while ordinary /proc files are read
    assert Path("/proc/slabinfo").read_text() and got["meminfo"], got
    if Path("/proc/pressure/cpu").exists():  # PSI: read, but no trigger (each one's close blocks the exit)
        trigger = os.open("/proc/pressure/cpu", os.O_RDWR | os.O_NONBLOCK)
        try:
            os.write(trigger, b"some 500000 2000000\0")  # the control: the host's root makes one
        finally:
            os.close(trigger)
        assert got["psi_read"] is True and got["psi_trigger"] == "EROFS", got
    assert got["kernel"] and set(got["kernel"].values()) == {0}, got["kernel"]
    assert os.listdir("/sys/kernel/slab") and got["slab"] == []  # the slab caches' counters
    if os.path.isdir("/sys/class/zram-control"):  # zram loaded: its hot_add is the host's, not the job's
        assert "hot_add" in os.listdir("/sys/class/zram-control") and got["zram"] == [], got["zram"]
    # the host's loop devices (each naming its backing file: volumes, other installations'
    # state paths) and zram devices: the job sees neither
    assert os.listdir("/sys/devices/virtual/block") and got["virtual_block"] == [], got["virtual_block"]
    assert got["sys_write"] == "EROFS" and got["sys_net"] == ["eth0", "lo"]
    assert got["dev"] == [
        "core",
        "fd",
        "full",
        "null",
        "ptmx",
        "pts",
        "random",
        "shm",
        "stderr",
        "stdin",
        "stdout",
        "tty",
        "urandom",
        "zero",
    ]
    assert got["null"] == "ok" and got["fifo"] == "ok" and got["mknod"] == "EPERM", got
    assert got["urandom"] == 16
    assert got["pid"] == 2  # its own pid namespace: bwrap's init is 1
    assert got["init_env"] == "PATH=/usr/bin:/bin\0PWD=/\0", got["init_env"]  # not where the worker runs


def test_seccomp_and_capabilities(client):
    got = probe(
        client,
        """
        status = dict(l.split(":\\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\\t" in l)
        checks["seccomp"], checks["nnp"] = status["Seccomp"].strip(), status["NoNewPrivs"].strip()
        checks["caps"] = status["CapEff"].strip()
        checks["getpid"] = syscall(39)
        checks["mount"] = os.system("mount -t tmpfs none /tmp 2>/dev/null") != 0
        checks["unshare_user"] = os.system("unshare -U true 2>/dev/null") != 0
        checks["unshare_net"] = os.system("unshare -n true 2>/dev/null") != 0
        checks["unshare_help"] = os.system("unshare --help >/dev/null")
        checks["vsock"] = attempt(lambda: socket.socket(40, socket.SOCK_STREAM).close())  # AF_VSOCK
        checks["vsock_high"] = syscall(41, ctypes.c_long((1 << 32) | 40), 1, 0)  # the kernel reads 32 bits
        checks["unix"] = attempt(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close())
        # families past unix, IPv4, IPv6, netlink and packet: as a kernel without them (AF_XDP,
        # AF_ALG, RDS, one past AF_MAX, AF_XDP with the register's upper half set); the allowed
        # ones are made, by socket and by socketpair
        checks["families"] = [syscall(41, f, 3, 0) for f in (44, 38, 21, 46, ctypes.c_long((1 << 32) | 44))]
        checks["family_pair"] = syscall(53, 44, 3, 0, ctypes.byref((ctypes.c_int * 2)()))
        checks["vsock_pair"] = syscall(53, 40, 1, 0, ctypes.byref((ctypes.c_int * 2)()))  # as socket's
        made = [socket.socket(f, socket.SOCK_DGRAM) for f in (socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK)]
        checks["allowed_families"] = len(made) + len(socket.socketpair())
        # IPv4's and IPv6's protocols: TCP, MPTCP, UDP, UDP-Lite are made; SCTP (stream and
        # seqpacket) answers as on a kernel without it (tests/unit/test_seccomp_sockets.py
        # reads the filter's own answer: this kernel has no SCTP either)
        checks["inet_made"] = [attempt(lambda f=f, t=t, p=p: socket.socket(f, t, p).close())
                               for f in (2, 10) for t, p in ((1, 6), (1, 262), (2, 17), (2, 136))]
        checks["sctp"] = [syscall(41, 2, 1, 132), syscall(41, 10, 5, 132)]
        # a tty's line discipline loads its module on demand: refused, also on the job's own
        # pty; reading it (TIOCGETD) is not
        import fcntl, pty, struct
        _, tty = pty.openpty()
        checks["tiocsetd"] = attempt(lambda: fcntl.ioctl(tty, 0x5423, struct.pack("i", 0)) and None)
        checks["tiocgetd"] = struct.unpack("i", fcntl.ioctl(tty, 0x5424, struct.pack("i", -1)))[0]
        # the host's device events (uevents) are refused, also with the register's upper half
        # set; other netlink protocols (routing: the job's own namespace) are not
        checks["uevent"] = attempt(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 15).close())
        checks["uevent_high"] = syscall(41, 16, 2, ctypes.c_long((1 << 32) | 15))
        checks["rtnetlink"] = attempt(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0).close())
        # personality (135): Docker's values pass (the query, PER_LINUX32, back to PER_LINUX),
        # ADDR_NO_RANDOMIZE and READ_IMPLIES_EXEC do not
        checks["persona_ok"] = [syscall(135, v) for v in (0xFFFFFFFF, 0x8, 0x0, 0x20008, 0x0)]
        checks["persona_refused"] = [syscall(135, v) for v in (0x0040000, 0x0400000, 0x0040008)]
        aio = ctypes.c_ulong(0)
        checks["io_setup"] = syscall(206, 1, ctypes.byref(aio))  # ENOSYS: as a kernel without AIO
        checks["io_uring_setup"] = syscall(425, 1, 0)
        checks["memfd_secret"] = syscall(447, 0)  # ENOSYS: its pages split the host's direct map
        # a socket's classic BPF program (JIT memory of one host-wide budget): `ret #0xffff`
        import struct
        insns = ctypes.create_string_buffer(struct.pack("HBBI", 6, 0, 0, 0xFFFF))
        prog = struct.pack("HL", 1, ctypes.addressof(insns))
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        checks["attach_filter"] = [attempt(lambda o=o: udp.setsockopt(1, o, prog)) for o in (26, 51)]
        checks["sockopt_other"] = attempt(lambda: udp.setsockopt(1, 2, 1))  # SO_REUSEADDR
        # newer than libseccomp's table: open_tree_attr refused as open_tree is (AT_FDCWD, "/",
        # no clone: an O_PATH descriptor on the host), statmount let through (its NULL: EFAULT)
        checks["open_tree_attr"] = syscall(467, -100, b"/", 0, 0, 0)
        checks["statmount"] = syscall(457, 0, 0, 0, 0)
        # a lease on a file the worker writes (its /etc/hosts) held the worker's writes 45 s each
        # (red-team run); F_GETLEASE and a plain lock stay
        import fcntl
        leased = os.open("/etc/hostname", os.O_RDONLY)
        checks["lease"] = attempt(lambda: fcntl.fcntl(leased, 1024, fcntl.F_RDLCK))  # F_SETLEASE
        checks["lease_query"] = fcntl.fcntl(leased, 1025)  # F_GETLEASE: F_UNLCK (2)
        # a delegation (F_SETDELEG, Linux 6.19) is a lease too: EPERM where an older kernel says
        # EINVAL, also with the register's upper half set (the kernel reads an int); commands
        # after it get a kernel's EINVAL; a Linux-specific one before it (F_GETPIPE_SZ) works
        checks["deleg"] = [syscall(72, leased, c, 0) for c in (1040, ctypes.c_long((1 << 32) | 1040))]
        checks["fcntl_newer"] = [syscall(72, leased, c, 0) for c in (1041, 4096)]
        checks["fcntl_upper_getfd"] = syscall(72, leased, ctypes.c_long((1 << 32) | 1), 0)  # F_GETFD
        checks["pipe_size"] = fcntl.fcntl(os.pipe()[0], 1032)
        checks["lock"] = attempt(lambda: fcntl.lockf(open("/tmp/lock", "w"), fcntl.LOCK_EX))
        packet = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)  # CAP_NET_RAW, as in Docker
        checks["qdisc_bypass"] = attempt(lambda: packet.setsockopt(263, 20, 1))  # past its shaping
        checks["packet_auxdata"] = attempt(lambda: packet.setsockopt(263, 8, 1))  # another option
        import struct
        ring = struct.pack("IIII", 1 << 20, 4, 2048, 4 * (1 << 20) // 2048)  # 4 MiB the cgroup never sees
        checks["packet_rings"] = [attempt(lambda o=o: packet.setsockopt(263, o, ring)) for o in (5, 13)]
        # x86_64 numbers: keyctl, bpf, perf_event_open, ptrace, kexec_load, init_module, reboot, swapon
        for name, nr in (("keyctl", 250), ("bpf", 321), ("perf_event_open", 298), ("ptrace", 101),
                         ("kexec_load", 246), ("init_module", 175), ("reboot", 169), ("swapon", 167),
                         ("clock_settime", 227), ("setns", 308), ("set_mempolicy_home_node", 450)):
            checks[name] = syscall(nr, 0, 0, 0, 0, 0)
    """,
    )
    assert (got["seccomp"], got["nnp"]) == ("2", "1")
    assert int(got["caps"], 16) & (1 << 21) == 0  # no CAP_SYS_ADMIN
    assert int(got["caps"], 16) & (1 << 27) == 0  # no CAP_MKNOD
    assert got["getpid"] == "ok" and got["unshare_help"] == 0
    assert got["mount"] and got["unshare_user"] and got["unshare_net"]
    assert got["vsock"] == got["vsock_high"] == "EPERM" and got["unix"] == "ok", got
    assert got["families"] == ["EAFNOSUPPORT"] * 5 and got["family_pair"] == "EAFNOSUPPORT", got
    assert got["vsock_pair"] == "EPERM", got
    assert got["allowed_families"] == 5, got
    assert got["inet_made"] == ["ok"] * 8 and got["sctp"] == ["EPROTONOSUPPORT", "ESOCKTNOSUPPORT"], got
    assert got["tiocsetd"] == "EPERM" and got["tiocgetd"] == 0, got  # N_TTY, read
    with contextlib.ExitStack() as fds:  # the control: the host sets its pty's discipline (N_TTY again)
        master, tty = pty.openpty()
        fds.callback(os.close, master)
        fds.callback(os.close, tty)
        fcntl.ioctl(tty, 0x5423, struct.pack("i", 0))
    socket.socket(44, socket.SOCK_RAW).close()  # the control: this kernel has AF_XDP, the host makes one
    assert got["uevent"] == got["uevent_high"] == "EPERM" and got["rtnetlink"] == "ok", got
    socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 15).close()  # the control: the host opens one
    assert got["persona_ok"] == ["ok"] * 5 and got["persona_refused"] == ["EPERM"] * 3, got
    assert got["io_setup"] == "ENOSYS" and got["io_uring_setup"] == "EPERM", got
    assert got["memfd_secret"] == "ENOSYS", got
    assert got["attach_filter"] == ["EPERM", "EPERM"] and got["sockopt_other"] == "ok", got
    assert got["open_tree_attr"] == "EPERM" and got["statmount"] == "EFAULT", got
    assert got["qdisc_bypass"] == "EPERM" and got["packet_auxdata"] == "ok", got
    assert got["packet_rings"] == ["EPERM", "EPERM"], got  # RX and TX rings: memory past --max-memory
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as packet:  # the control: the same ring,
        for option in (5, 13):  # outside the filter, is made (and freed with the socket; no traffic)
            packet.setsockopt(263, option, struct.pack("IIII", 1 << 20, 4, 2048, 4 * (1 << 20) // 2048))
    assert got["lease"] == "EPERM" and got["lease_query"] == 2 and got["lock"] == "ok", got
    assert got["deleg"] == ["EPERM"] * 2 and got["fcntl_newer"] == ["EINVAL"] * 2, got
    assert got["fcntl_upper_getfd"] == "ok" and got["pipe_size"] > 0, got
    with tempfile.TemporaryDirectory() as mine:  # the host takes leases (root owns the file, closed)
        Path(mine, "f").write_text("x")
        leased = os.open(Path(mine, "f"), os.O_RDONLY)
        assert fcntl.fcntl(leased, 1024, fcntl.F_RDLCK) == 0 and fcntl.fcntl(leased, 1024, fcntl.F_UNLCK) == 0
        os.close(leased)
    libc, ctx = ctypes.CDLL(None, use_errno=True), ctypes.c_ulong(0)
    assert libc.syscall(206, 1, ctypes.byref(ctx)) == 0 and libc.syscall(207, ctx) == 0  # the host has AIO
    tree = libc.syscall(467, -100, b"/", 0, None, 0)  # and open_tree_attr
    assert tree >= 0, ctypes.get_errno()
    os.close(tree)
    secret = libc.syscall(447, 0)  # and secret memory (a descriptor alone: nothing is mapped)
    assert secret >= 0, ctypes.get_errno()
    os.close(secret)
    insns = ctypes.create_string_buffer(struct.pack("HBBI", 6, 0, 0, 0xFFFF))  # and a socket filter
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.setsockopt(socket.SOL_SOCKET, 26, struct.pack("HL", 1, ctypes.addressof(insns)))
    for name in (
        "keyctl",
        "bpf",
        "perf_event_open",
        "ptrace",
        "kexec_load",
        "init_module",
        "reboot",
        "swapon",
        "clock_settime",
        "setns",
        "set_mempolicy_home_node",
    ):
        assert got[name] == "EPERM", (name, got[name])
    assert libc.syscall(450, 0, 0, 0, 0) == 0  # the control: the host sets none, and may


def test_chroot_escape_finds_no_host(client):
    got = probe(
        client,
        """
        os.makedirs("/tmp/jail", exist_ok=True)
        fd = os.open("/", os.O_RDONLY)
        os.chroot("/tmp/jail"); os.fchdir(fd)
        for _ in range(20):
            os.chdir("..")
        os.chroot(".")
        checks["top"] = sorted(os.listdir("/"))
    """,
        network="none",
    )
    assert "home" not in got["top"] and "root" not in got["top"] and "opt" not in got["top"]


def test_disk_limit_on_work_and_tmp(client):
    for target in ("/work/f", "/tmp/f"):
        ok, _, err_ok = run(
            client, "dd", "if=/dev/zero", f"of={target}", "bs=1M", "count=4", network="none", limits={"max_disk": 8}
        )
        full, _, err_full = run(
            client, "dd", "if=/dev/zero", f"of={target}", "bs=1M", "count=20", network="none", limits={"max_disk": 8}
        )
        assert ok.status == JobStatus.COMPLETED, err_ok
        assert full.status == JobStatus.FAILED and b"No space left" in err_full


def test_fork_bomb_stays_in_its_job(client, host):
    bomb = client.run(
        "bash", ("-c", "b() { b | b & }; b; sleep 60"), network="none", timeout=20, limits={"max_pids": 64}
    )
    deadline = time.monotonic() + 20
    while client.get(bomb.id).status != JobStatus.RUNNING:
        assert time.monotonic() < deadline and not client.get(bomb.id).status.final
        time.sleep(0.05)
    pids = [
        Path(f"/sys/fs/cgroup/pids/{host.cfg.cgroup_root.name}/{bomb.id}/pids.current"),
        host.cfg.cgroup_root / bomb.id / "pids.current",
    ]
    deadline = time.monotonic() + 20
    while not any(p.exists() and int(p.read_text()) >= 60 for p in pids):
        assert time.monotonic() < deadline, "the bomb never reached its limit"
        time.sleep(0.1)
    beat = client.live_nodes()[host.name]["beat"]
    other, out, _ = run(client, "echo", "still-serving", network="none")
    assert other.status == JobStatus.COMPLETED and out == b"still-serving\n"
    # the worker keeps beating while the bomb is at its limit
    eventually(lambda: client.live_nodes().get(host.name, {}).get("beat", 0) > beat, "no heartbeat during the bomb")
    assert client.get(bomb.id).status == JobStatus.RUNNING
    client.stop(bomb.id)
    assert client.wait(bomb.id, timeout=60).status == JobStatus.STOPPED


def test_other_jobs_files_are_out_of_reach(client, host):
    client.networks.create("sbx-net", "10.150.0.0/24")
    victim = client.run("sh", ("-c", "echo secret > /work/mine; sleep 60"), network="sbx-net", name="victim")
    wait_running(client, victim.id)
    try:
        work = host.cfg.run_dir / "job" / "work"  # its path in its mount namespace (not the host's)
        hosts = host.cfg.run_dir / "job" / "hosts"
        deadline = time.monotonic() + 10
        while (mine := job_file(host, victim.id, "/work/mine")) is None:
            assert time.monotonic() < deadline, "the victim's file never appeared"
            time.sleep(0.05)
        got = probe(
            client,
            f"""
            checks["own"] = attempt(lambda: read("/etc/hosts"))
            checks["work"] = attempt(lambda: read("{work}/mine"))
            checks["hosts"] = attempt(lambda: write("{hosts}", "6.6.6.6 victim"))
            checks["etc_hosts"] = attempt(lambda: write("/etc/hosts", "6.6.6.6 victim"))
            checks["victim"] = open("/etc/hosts").read()
        """,
            network="sbx-net",
        )
        assert got["own"] > 0 and mine.read_text() == "secret\n"  # positive control: it is there
        assert not (work / "mine").exists()  # the host's path shows nothing: /work is the job's own mount
        assert got["work"] == "ENOENT" and got["hosts"] == "ENOENT" and got["etc_hosts"] == "EROFS"
        victims_hosts = job_file(host, victim.id, "/etc/hosts")
        assert victims_hosts is not None and "6.6.6.6" not in victims_hosts.read_text() and "victim" in got["victim"]
    finally:
        client.stop(victim.id)
        client.wait(victim.id, timeout=30)
        client.networks.delete("sbx-net")


def test_login_uid_is_the_jobs_own_and_fixed(client):
    """A job's audit login uid is the uid it runs as, and it cannot change it: a process may
    set its own once while unset (a worker's under systemd), so a job named any user it liked
    in the host's audit log (red-team run)."""
    uid = "cat /proc/self/loginuid"
    probe = f"{uid}; echo; echo 1000 >/proc/self/loginuid 2>/dev/null || echo refused; {uid}"
    rec, out, err = run(client, "sh", "-c", probe, network="none")
    assert rec.exit_code == 0 and out == b"0\nrefused\n0", (out, err)
    rec, out, err = run(client, "sh", "-c", probe, network="none", user="1234:1234")
    assert rec.exit_code == 0 and out == b"1234\nrefused\n1234", (out, err)
    # the control: on the host, the write goes through (root may change its own; a process
    # whose login uid is unset may set it)
    done = subprocess.run(["sh", "-c", f"echo 1000 >/proc/self/loginuid && {uid}"], capture_output=True)
    assert done.stdout == b"1000", done


def test_ordinary_workloads_still_work(client):
    script = base64.b64encode(b"#!/bin/sh\necho hello from $(pwd)\n").decode()
    up = [Upload(path="bin/hello.sh", content=script, mode=0o755)]
    rec, out, _ = run(client, "sh", "-c", "./bin/hello.sh && pip --version >/dev/null && echo pip-ok", uploads=up)
    assert rec.status == JobStatus.COMPLETED and out == b"hello from /work\npip-ok\n"
    rec, out, err = run(
        client,
        "sh",
        "-c",
        "id -u; touch /work/a /tmp/b && echo writable; touch /etc/c",
        network="none",
        user="1234:1234",
    )
    assert rec.status == JobStatus.FAILED and out == b"1234\nwritable\n" and b"Read-only" in err
    if os.path.realpath("/usr/bin/awk") != "/usr/bin/awk":  # Debian: through /etc/alternatives
        rec, out, err = run(client, "awk", "BEGIN { print 6 * 7 }", network="none")
        assert rec.exit_code == 0 and out == b"42\n", err
    caps = "grep -E '^Cap(Prm|Eff|Bnd)' /proc/self/status | tr -d '\\t'; id -u"
    rec, out, err = run(client, "sh", "-c", caps, network="none", user="0:0")
    none = b"CapPrm:0000000000000000\nCapEff:0000000000000000\nCapBnd:0000000000000000\n"
    assert rec.exit_code == 0 and out == none + b"0\n", (out, err)  # --user: no capability, even as uid 0
    rec, out, _ = run(client, "sh", "-c", caps, network="none")
    assert b"CapEff:0000000000000000" not in out and out.endswith(b"\n0\n"), out  # control: root keeps some


def test_the_loader_variables_of_a_user_job_reach_no_root_program(client):
    """setpriv runs as root before it drops to --user: with the job's environment, its
    LD_PRELOAD ran the job's code as root with the sandbox's capabilities (red-team run).
    The loader's variables are set after the drop: LD_DEBUG shows the loader at work in the
    command (the control), never in setpriv; the others keep theirs."""
    env = {"LD_DEBUG": "libs", "TMPDIR": "/tmp/mine", "PLAIN": "kept"}
    probe = "echo $TMPDIR $PLAIN"
    rec, out, err = run(client, "sh", "-c", probe, network="none", user="1234:1234", env=env)
    assert rec.exit_code == 0 and out == b"/tmp/mine kept\n", (out, err)
    assert b"transferring control:" in err and b"setpriv" not in err, err
    rec, out, err = run(client, "sh", "-c", probe, network="none", env=env)  # root: as it was
    assert rec.exit_code == 0 and out == b"/tmp/mine kept\n" and b"transferring control:" in err


def test_a_job_of_another_user_can_ping_without_raw_sockets(client):
    """Its namespace allows ICMP echo sockets to every group, as Docker's do (the kernel's
    default range is empty: `ping` failed for a --user job, which has no CAP_NET_RAW)."""
    probe = "cat /proc/sys/net/ipv4/ping_group_range; ping -c 1 -W 2 127.0.0.1 >/dev/null && echo pinged"
    for user in ("1000", None):  # None: root, the control
        rec, out, err = run(client, "sh", "-c", probe, network="none", user=user)
        assert rec.exit_code == 0 and out.split() == [b"0", b"2147483647", b"pinged"], (user, out, err)


def test_http_server_reachable_by_a_peer(client):
    client.networks.create("sbx-web", "10.151.0.0/24")
    server = client.run("python3", ("-m", "http.server", "8000", "--bind", "0.0.0.0"), network="sbx-web", name="web")
    try:
        wait_running(client, server.id)
        fetch = (
            "import urllib.request, time\nfor _ in range(100):\n    try:\n"
            "        print(urllib.request.urlopen('http://web:8000/', timeout=2).status); break\n"
            "    except OSError:\n        time.sleep(0.1)\n"
        )
        rec, out, _ = run(client, "python3", "-c", fetch, network="sbx-web")
        assert rec.status == JobStatus.COMPLETED and out == b"200\n"
    finally:
        client.stop(server.id)
        client.wait(server.id, timeout=30)
        client.networks.delete("sbx-web")


@pytest.fixture(scope="module")
def open_host(redis_sock):
    yield from running_host(redis_sock, "hostopen", allow_host_network="true", job_net_raw="true")


@pytest.fixture(scope="module")
def plain_host(redis_sock):
    """A worker with joblet's defaults: root jobs without CAP_NET_RAW."""
    yield from running_host(redis_sock, "hostplain")


RAW_SOCKETS = """
checks["packet"] = attempt(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close())
checks["raw_ip"] = attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW).close())
checks["ping"] = subprocess.run(["ping", "-c", "1", "-W", "2", "127.0.0.1"], capture_output=True).returncode
"""


def test_root_jobs_get_no_raw_sockets_unless_the_worker_gives_them(plain_host, open_host):
    """A root job's raw socket sent first fragments that filled the host's IPv4 reassembly
    budget, dropping every job's and the host's fragmented traffic, and packet sockets queue
    memory no cgroup is charged (red-team run): no CAP_NET_RAW by default (podman's), `ping`
    works all the same (ICMP echo sockets). The control: a worker with job_net_raw."""
    checks = "import subprocess\n" + RAW_SOCKETS
    got = probe(Client(plain_host.cfg), checks, network="bridge")
    assert got == {"packet": "EPERM", "raw_ip": "EPERM", "ping": 0}, got
    got = probe(Client(open_host.cfg), checks, network="bridge")
    assert got == {"packet": "ok", "raw_ip": "ok", "ping": 0}, got


def test_host_mode_keeps_the_sandbox(open_host):
    client = Client(open_host.cfg)
    cgroup = open_host.cfg.cgroup_root
    got = probe(
        client,
        f"""
        checks["links"] = sorted(os.listdir("/sys/class/net"))
        checks["escape"] = attempt(lambda: write("{cgroup.parent}/cgroup.procs", str(os.getpid())))
        checks["sys"] = attempt(lambda: write("/sys/kernel/mm/transparent_hugepage/enabled", "never"))
        checks["etc"] = attempt(lambda: write("/etc/marker"))
        checks["work"] = attempt(lambda: write("/work/ok"))
        checks["cgroup"] = open("/proc/self/cgroup").read()
        checks["under_sys"] = [l.split()[4] for l in open("/proc/self/mountinfo") if l.split()[4].startswith("/sys/")]
    """,
        network="host",
    )
    assert "lo" in got["links"] and got["work"] == "ok"
    assert got["escape"] in ("EROFS", "ENOENT") and got["sys"] == "EROFS" and got["etc"] == "EROFS"
    # a sysfs of its own: none of what the host mounted under /sys (cgroup hierarchies here;
    # debugfs, tracefs, securityfs elsewhere), only joblet's empty covers
    under_host_sys = [line.split()[4] for line in open("/proc/self/mountinfo") if line.split()[4].startswith("/sys/")]
    covers = {"/sys/firmware", *SYS_MASKED}
    assert under_host_sys and "/sys/firmware" in got["under_sys"], (under_host_sys, got["under_sys"])
    assert set(got["under_sys"]) <= covers, (under_host_sys, got["under_sys"])


ABSTRACT = """
import socket, sys
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1].encode().replace(b"@", b"\\0", 1)); s.listen(8)
print("ready", flush=True)
while True:
    s.accept()[0].close()
"""

RAW_AND_ABSTRACT = """
def connect(name):
    s = socket.socket(socket.AF_UNIX); s.settimeout(2); s.connect(name.replace("@", "\\0", 1)); s.close()
def own():
    s = socket.socket(socket.AF_UNIX); s.bind("\\0joblet-own-{tag}"); s.listen(1); connect("@joblet-own-{tag}")
checks["host_socket"] = attempt(lambda: connect("@{name}"))
checks["own_socket"] = attempt(own)
checks["packet"] = attempt(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close())
checks["udp"] = attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close())
"""


@pytest.fixture()
def host_service(open_host):
    """A service of the host listening on an abstract unix socket, as container shims did."""
    name = f"joblet-test-{os.getpid()}"
    server = subprocess.Popen(
        ["ip", "netns", "exec", open_host.netns, sys.executable, "-c", ABSTRACT, f"@{name}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    with ending(server):
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        yield name


def test_host_mode_job_reaches_no_abstract_socket_of_the_host_and_cannot_sniff(open_host, host_service):
    """Host mode shares the host's abstract unix sockets (they belong to the network namespace)
    and its interfaces: Landlock's scope keeps the job from the host's sockets, and it gets no
    CAP_NET_RAW, even from a worker that gives it (job_net_raw). Beside: the host's own
    processes reach the socket, the job reaches its own, and a job on a bridge of that worker
    opens a packet socket."""
    need(landlock.can_scope(), "this kernel has no Landlock scopes (Linux 6.12+)")
    client = Client(open_host.cfg)
    outside = open_host.in_ns(sys.executable, "-c", PROBE, f'unix("\\0{host_service}"); checks["ok"] = 1')
    assert outside.returncode == 0 and json.loads(outside.stdout) == {"ok": 1}, outside
    checks = RAW_AND_ABSTRACT.format(name=host_service, tag=os.getpid())
    got = probe(client, checks, network="host")
    assert got == {"host_socket": "EPERM", "own_socket": "ok", "packet": "EPERM", "udp": "ok"}, got
    got = probe(client, checks, network="bridge")
    assert got["packet"] == "ok" and got["own_socket"] == "ok", got
    assert got["host_socket"] == "ECONNREFUSED", got  # another namespace: no such socket at all


def test_host_mode_job_reaches_no_metadata_service_on_a_worker_with_a_unix_socket_broker(open_host):
    """With Redis on a unix socket there is no broker address to block, but host-mode jobs
    are still kept from the metadata service (beside: its DNS port answers them, and the
    host's own processes reach its HTTP port)."""
    ns, address = open_host.netns, "169.254.169.254"
    assert open_host.in_ns("ip", "addr", "add", f"{address}/32", "dev", "lo").returncode == 0
    try:
        with ending(listening(ns, address, 80, 53)):
            connect = f'socket.create_connection(("{address}", {{}}), timeout=2).close()'
            http, dns = (f"attempt(lambda: {connect.format(port)})" for port in (80, 53))
            outside = open_host.in_ns(sys.executable, "-c", PROBE, f'checks["http"] = {http}')
            assert json.loads(outside.stdout) == {"http": "ok"}, outside
            got = probe(Client(open_host.cfg), f'checks["http"] = {http}; checks["dns"] = {dns}', network="host")
            assert got["dns"] == "ok" and got["http"] != "ok", got
    finally:
        open_host.in_ns("ip", "addr", "del", f"{address}/32", "dev", "lo")


def test_host_mode_is_off_by_default(client):
    from joblet.errors import JobletError

    try:
        rec = client.run("true", network="host")
    except JobletError as exc:  # refused before queueing
        assert "host" in str(exc)
        return
    final = client.wait(rec.id, timeout=30)
    assert final.status == JobStatus.FAILED and "host networking is disabled" in (final.error or "")


@pytest.fixture(scope="module")
def rotated(redis_sock):
    """A directory under /etc holding a key an operator masked (sandbox_masked_paths) and a
    plain file beside it; and a worker told so."""
    need(os.geteuid() == 0, "needs root")
    folder = Path(f"/etc/joblet-sbx-{os.getpid()}")
    folder.mkdir()
    try:
        (folder / "app.key").write_text("key one\n")
        (folder / "app.conf").write_text("one\n")
        (folder / "real.txt").write_text("LINKTARGETSECRET\n")
        (folder / "link.key").symlink_to("real.txt")  # masked by *.key: where it leads too
        for h in running_host(redis_sock, "hostkeys", sandbox_masked_paths=f"{folder}/*.key"):
            yield folder, Client(h.cfg)
    finally:
        shutil.rmtree(folder)


def test_a_secret_replaced_while_a_job_runs_stays_hidden(rotated):
    """The host replaces a secret by renaming a new file over it, as passwd(1) does with
    /etc/shadow: a mount covering the old file would be unmounted by the kernel then."""
    folder, client = rotated
    script = f"""
        cat {folder}/app.conf; wc -c < {folder}/app.key; echo ready
        while [ "$(cat {folder}/app.conf)" != two ]; do sleep 0.05; done
        wc -c < {folder}/app.key; cat {folder}/app.conf
    """
    job = client.run("sh", ("-c", script), timeout=60)
    wait_running(client, job.id)
    eventually(lambda: b"ready" in output(client, job.id), "the job read both files")
    for name, text in (("app.key", "key two, longer\n"), ("app.conf", "two\n")):
        (folder / f".{name}.new").write_text(text)
        (folder / f".{name}.new").rename(folder / name)
    assert client.wait(job.id, timeout=60).status == JobStatus.COMPLETED
    # the plain file's new content reached the job (positive control); the key never did
    assert output(client, job.id).split() == [b"one", b"0", b"ready", b"0", b"two"]
    assert (folder / "app.key").read_text() == "key two, longer\n"


def test_a_masked_link_hides_where_it_leads(rotated):
    """A masked secret that is a link: its placeholder hid the link, and a job read the target
    at its own path (red-team run). Both read empty; the plain file beside them (the control)
    is read."""
    folder, client = rotated
    script = f"cat {folder}/app.conf; wc -c < {folder}/link.key; wc -c < {folder}/real.txt"
    job = client.run("sh", ("-c", script), timeout=60)
    assert client.wait(job.id, timeout=60).status == JobStatus.COMPLETED
    assert output(client, job.id).split()[1:] == [b"0", b"0"], output(client, job.id)
    assert output(client, job.id).split()[0] in (b"one", b"two")  # the control (the test above rotates it)


@pytest.fixture(scope="module")
def masked_tools(redis_sock):
    """An operator's read-only path holding a masked directory and a masked file (each an
    executable script), an unmasked script beside them; and a worker told so."""
    need(os.geteuid() == 0, "needs root")
    tools = Path(tempfile.mkdtemp(prefix="joblet-ro-"))
    try:
        (tools / "private").mkdir()
        scripts = {
            "private/deploy.sh": "#!/DIR-TOKEN-7f3a\n",
            "app.key": "#!/KEY-TOKEN-91c2\n",
            "tool.sh": "#!/PUBLIC-INTERPRETER\n",
        }
        for name, text in scripts.items():
            (tools / name).write_text(text)
            (tools / name).chmod(0o755)
        (tools / "private" / "id_rsa").write_text("k\n")
        masks = f"{tools}/private,{tools}/*.key"
        for h in running_host(redis_sock, "maskedtools", sandbox_ro_paths=str(tools), sandbox_masked_paths=masks):
            yield tools, Client(h.cfg)
    finally:
        shutil.rmtree(tools)


def test_the_command_lookup_tells_nothing_of_what_is_masked(masked_tools):
    """The worker looked a command up on the host's files, not the job's view: a masked
    directory's names were told apart (`Permission denied` for one that is there, `No such
    file` for one that is not) and a masked script's `#!` word was the job's error (red-team
    run). The unmasked script beside them is still looked into (the control)."""
    tools, client = masked_tools

    def failure(command: str) -> tuple[int | None, str]:
        rec = client.run(command)
        final = client.wait(rec.id, timeout=60)
        assert final.status == JobStatus.FAILED, final
        return final.exit_code, final.error or ""

    assert failure(f"{tools}/tool.sh") == (126, "/PUBLIC-INTERPRETER: bad interpreter: No such file or directory")
    for name in ("deploy.sh", "id_rsa", "nothing-here"):  # the job sees an empty directory
        assert failure(f"{tools}/private/{name}") == (127, "No such file or directory"), name
    assert failure(f"{tools}/app.key") == (126, "Permission denied")  # an empty file, 0444, in the job


@pytest.fixture(scope="module")
def closed_tools(redis_sock):
    """An operator's read-only path (at the root: bwrap keeps its modes) holding a directory
    only root may enter, a script no one but root may read, one all may run; and a worker."""
    need(os.geteuid() == 0, "needs root")
    tools = Path(f"/joblet-ro-{os.getpid()}")
    tools.mkdir()
    nested = Path(f"/joblet-rop-{os.getpid()}/pub")  # its parent is nothing else of the job's root
    nested.mkdir(parents=True)
    (nested / "readme").write_text("for everyone\n")
    try:
        (tools / "closed").mkdir(mode=0o700)
        for name, text, mode in (
            ("closed/s.sh", "#!/CLOSED-TOKEN-4e1b\n", 0o755),
            ("xonly.sh", "#!/XONLY-TOKEN-77d0\n", 0o711),
            ("tool.sh", "#!/PUBLIC-INTERPRETER\n", 0o755),
        ):
            (tools / name).write_text(text)
            (tools / name).chmod(mode)
        for h in running_host(redis_sock, "closedtools", sandbox_ro_paths=f"{tools},{nested}"):
            yield tools, Client(h.cfg)
    finally:
        shutil.rmtree(tools)
        shutil.rmtree(nested.parent)


def test_a_read_only_paths_parents_let_every_user_through(closed_tools):
    """bwrap made the parent of `JOBLET_SANDBOX_RO_PATHS=/opt/tools` 0700 where the job's root
    had no /opt: a --user job could not read the tools it was given (red-team run). A root job
    reads them too (the control)."""
    _, client = closed_tools
    readme = f"/joblet-rop-{os.getpid()}/pub/readme"
    for fields in ({"user": "4242"}, {}):
        job = client.wait(client.run("cat", (readme,), **fields).id, timeout=60)
        assert job.status == JobStatus.COMPLETED, (fields, job)
        assert b"".join(data for _, data in client.logs(job.id)) == b"for everyone\n"


def test_a_user_jobs_command_lookup_tells_nothing_its_user_may_not_read(closed_tools):
    """The worker looked a --user job's command up as root: it told the `#!` word of a script
    the job's user may not read and a name in a directory that user may not enter from one
    not there (red-team run). Now the closed directory is as empty to the lookup as to the
    job, and the unreadable script is left to the job's own exec; a root job still reaches
    both, and the user's script beside them still names its missing interpreter (controls)."""
    tools, client = closed_tools

    def ended(command: str, **fields) -> tuple[int | None, str]:
        final = client.wait(client.run(command, **fields).id, timeout=60)
        assert final.status == JobStatus.FAILED, final
        return final.exit_code, final.error or ""

    user = {"user": "4242"}
    assert ended(f"{tools}/tool.sh", **user) == (126, "/PUBLIC-INTERPRETER: bad interpreter: No such file or directory")
    assert "CLOSED-TOKEN" in ended(f"{tools}/closed/s.sh")[1]  # root's job sees it
    for name in ("s.sh", "nothing"):
        assert ended(f"{tools}/closed/{name}", **user) == (127, "No such file or directory"), name
    code, error = ended(f"{tools}/xonly.sh", **user)
    assert "XONLY-TOKEN" not in error and code != 0, (code, error)


def test_jobs_are_the_oom_killers_first_choice(client, host):
    got = probe(
        client,
        """
        checks["adj"] = open("/proc/self/oom_score_adj").read().strip()
        checks["lower"] = attempt(lambda: write("/proc/self/oom_score_adj", "0"))
        checks["raise"] = attempt(lambda: write("/proc/self/oom_score_adj", "600"))
        checks["after"] = open("/proc/self/oom_score_adj").read().strip()
    """,
        network="none",
    )
    worker = Path(f"/proc/{host.worker.pid}/oom_score_adj").read_text().strip()
    assert got["adj"] == "500" and worker != "500"  # the setting's default, not inherited from the worker
    # its /proc is read-only (sandbox._proc): it can neither lower nor raise it
    assert got["lower"] == got["raise"] == "EROFS" and got["after"] == "500", got


def test_a_jobs_open_files_are_a_containers_not_the_workers(client, host):
    """The worker raises its own open files' soft limit to its hard one (1,048,576 under its
    unit); a job had them too. It gets 1024 soft and at most 524288 hard (Docker 25+), may
    raise its soft limit up to that, not its hard one (no CAP_SYS_RESOURCE)."""
    got = probe(
        client,
        """
        import resource
        FILES = resource.RLIMIT_NOFILE
        checks["soft"], checks["hard"] = soft, hard = resource.getrlimit(FILES)
        def limit(pair):  # Python says EPERM as a ValueError
            try:
                return attempt(lambda: resource.setrlimit(FILES, pair))
            except ValueError as e:
                return str(e)
        checks["raise_hard"] = limit((soft, hard + 1))
        checks["raise_soft"] = limit((hard, hard))
    """,
        network="none",
    )
    limits = Path(f"/proc/{host.worker.pid}/limits").read_text().splitlines()
    worker_soft, worker_hard = (int(v) for v in next(x for x in limits if x.startswith("Max open files")).split()[3:5])
    assert worker_soft > 1024  # the control: not what a job inherits
    assert (got["soft"], got["hard"]) == (1024, min(worker_hard, 524288)), got
    assert got["raise_soft"] == "ok" and got["raise_hard"] == "not allowed to raise maximum limit", got


def test_a_jobs_cores_spare_the_hosts_core_handler_unless_it_asks(client, host):
    """A soft core limit of 1 byte: no core file, and no `core_pattern` program run as the
    host's root at each crash where cores go to one (worker/rlimits.py); the job may raise
    it up to its hard limit, as one that wants its cores does."""
    got = probe(
        client,
        """
        import resource
        CORE = resource.RLIMIT_CORE
        checks["soft"], hard = resource.getrlimit(CORE)
        checks["raise"] = attempt(lambda: resource.setrlimit(CORE, (hard, hard)))
        checks["raised"] = resource.getrlimit(CORE)[0] == hard
    """,
        network="none",
    )
    assert got == {"soft": 1, "raise": "ok", "raised": True}, got
