"""The jobs' syscall filter, built with libseccomp (through `pyseccomp`, a ctypes binding of
the system's libseccomp2), exported as BPF once per worker and handed to bubblewrap.

Everything is allowed except what Docker's default profile refuses to a container without
CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_SYS_TIME, CAP_SYS_MODULE, CAP_SYS_BOOT and the like, plus
io_uring and vsock sockets (Docker refuses them too), and memfd_secret (ENOSYS). Stricter
than Docker: sockets of families other than unix, IPv4, IPv6, netlink and packet
(EAFNOSUPPORT), IPv4 and IPv6 sockets of protocols other than TCP, MPTCP, UDP, UDP-Lite,
ping and raw (EPROTONOSUPPORT, or ESOCKTNOSUPPORT for the types only SCTP and DCCP serve),
ptrace (debuggers do not work in a job), io_setup (Linux AIO's budget is the whole host's),
uevent netlink sockets (the host's device events), a socket's classic BPF filter (JIT memory
of one host-wide budget), a packet socket's PACKET_QDISC_BYPASS (the job's egress shaping is
a qdisc) and its mmap rings (kernel memory no cgroup is charged), and file leases and
delegations, fcntl's F_SETLEASE and F_SETDELEG (the worker writes files a job can open), and
a tty's line discipline (TIOCSETD: its modules load on demand); fcntl's commands after the
last one reviewed here get EINVAL, as from a kernel without them.
Other architectures' syscalls (i386 through int 0x80, x32) kill the process: the filter knows
only the native one, and libseccomp treats the rest as a bad architecture.

Syscalls newer than libseccomp's table (this host's 2.5.4 knows up to 454) are numbered alike
on every architecture since 424, and a filter that refuses by name lets them all through: a
short BPF prologue ahead of libseccomp's program refuses open_tree_attr (open_tree's twin,
refused as it is) and gives ENOSYS, as a kernel without them would, to every syscall after
the last one reviewed here (file_setattr, 469); those between (futex2, statmount, listmount,
the LSM attributes, mseal, the *xattrat family, file_getattr) are allowed: each does what an
allowed older call does.
"""

from __future__ import annotations

import errno
import struct
import tempfile
from functools import lru_cache
from itertools import pairwise
from typing import Any

REFUSED = (
    # mounts and namespaces: a job must not rebuild its own view of the host
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "unshare",
    "setns",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    # the kernel itself: modules, kexec, reboot, swap, clocks, BPF, perf, keys
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "query_module",
    "get_kernel_syms",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "clock_settime",
    "clock_adjtime",
    "settimeofday",
    "stime",
    "adjtimex",
    "bpf",
    "perf_event_open",
    "add_key",
    "request_key",
    "keyctl",
    "acct",
    "quotactl",
    "quotactl_fd",
    "syslog",
    "sethostname",
    "setdomainname",
    "iopl",
    "ioperm",
    "vhangup",
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    "nfsservctl",
    "lookup_dcookie",
    # other processes and file handles
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_getfd",
    "name_to_handle_at",
    "open_by_handle_at",
    "userfaultfd",
    "fanotify_init",
    # NUMA placement (CAP_SYS_NICE in Docker's profile) and io_uring (refused since Docker 25)
    "mbind",
    "set_mempolicy",
    "set_mempolicy_home_node",  # a policy's home node: one mbind set (red-team run: it passed)
    "move_pages",
    "migrate_pages",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
)
AF_VSOCK = 40  # sockets to the hypervisor: on a VM, its agents listen there (Docker refuses them)
# the families a job may make sockets of: unix, IPv4, IPv6, netlink, packet. The rest (RDS,
# TIPC, X.25, CAN, Bluetooth, AF_ALG, AF_XDP...) answer EAFNOSUPPORT, as a kernel without
# them: rarely used code, where a socket() alone loads a module on hosts that have it
SOCKET_FAMILIES = (1, 2, 10, 16, 17)
AF_KNOWN = 46  # AF_MAX of Linux 6.18: families from here on are refused too
# IPv4 and IPv6 sockets: the protocols a job may ask for by type (0 is the type's default).
# Stream: TCP, MPTCP; datagram: UDP, ICMP and ICMPv6 echo ("ping" sockets), UDP-Lite; raw:
# any (the kernel's raw sockets take every number, CAP_NET_RAW aside). The rest answer
# EPROTONOSUPPORT, and the types only SCTP and DCCP serve (RDM, SEQPACKET, DCCP) and type 0
# ESOCKTNOSUPPORT, as from a kernel without them: on hosts that have them, such a socket()
# alone loads sctp, dccp, l2tp_ip or smc, much-patched code a job then reaches. The kernel
# answers EINVAL to numbers from IPPROTO_MAX (263) on, upper halves included
INET_FAMILIES = (2, 10)
INET_PROTOCOLS = {1: (0, 6, 262), 2: (0, 1, 17, 58, 136)}
IPPROTO_MAX = 263
SOCK_TYPE_MASK = 0xF  # socket's type argument carries SOCK_NONBLOCK and SOCK_CLOEXEC above it
INET_NO_TYPES = ((0, 0), (4, 10))  # type ranges no inet protocol here serves (11 on: EINVAL)
AF_NETLINK, NETLINK_KOBJECT_UEVENT = 16, 15  # the host's device events reach every namespace
TIOCSETD = 0x5423  # ioctl(2)'s request: set a tty's line discipline (x86, arm; powerpc and mips differ)
F_SETLEASE = 1024  # fcntl(2)'s command: a lease, whose break makes a writer's open wait
F_SETDELEG = 1040  # a delegation (Linux 6.19): a lease that metadata changes break too
F_LAST_REVIEWED = F_SETDELEG  # fcntl's commands after it: EINVAL (F_GETDELEG, 1039, is a query)
SOL_PACKET, PACKET_QDISC_BYPASS = 263, 20  # setsockopt's level and option: frames skip the qdisc
SOL_SOCKET, SO_ATTACH_FILTER, SO_ATTACH_REUSEPORT_CBPF = 1, 26, 51  # a socket's classic BPF program
PACKET_RX_RING, PACKET_TX_RING = 5, 13  # a packet socket's mmap ring: kernel pages no cgroup is charged
# personality(2) values Docker's profile allows: PER_LINUX, PER_LINUX32, UNAME26 with either,
# and the query 0xffffffff; anything else (ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC...) is refused
PERSONALITY_BITS = 0x20008  # the bits those values use
# clone(2) flags that make new namespaces (Docker allows them only with CAP_SYS_ADMIN)
NEW_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
OPEN_TREE_ATTR = 467  # numbers shared by every architecture (alpha aside) since 424
LAST_REVIEWED = 469  # file_setattr (Linux 6.17)
X32_BIT = 0x40000000  # x32's numbers: left to libseccomp's program (a bad architecture: killed)
# classic BPF: load the word at offset k, jumps on >= / == k, return k
BPF_LD_ABS_W, BPF_JGE_K, BPF_JEQ_K, BPF_RET_K = 0x20, 0x35, 0x15, 0x06
SECCOMP_RET_ERRNO = 0x00050000


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)  # struct sock_filter, native byte order


def prologue() -> bytes:
    """What runs before libseccomp's program: for the syscall's number (seccomp_data.nr, at
    offset 0), open_tree_attr gets EPERM, anything after LAST_REVIEWED ENOSYS, the rest (and
    x32's numbers) go on to libseccomp's program, which starts after these six instructions."""
    return b"".join(
        (
            _insn(BPF_LD_ABS_W, 0),
            _insn(BPF_JGE_K, X32_BIT, jt=4),  # on to libseccomp's program
            _insn(BPF_JEQ_K, OPEN_TREE_ATTR, jt=1),
            _insn(BPF_JGE_K, LAST_REVIEWED + 1, jt=1, jf=2),
            _insn(BPF_RET_K, SECCOMP_RET_ERRNO | errno.EPERM),
            _insn(BPF_RET_K, SECCOMP_RET_ERRNO | errno.ENOSYS),
        )
    )


def _known(seccomp: object, name: str) -> bool:
    """Does this architecture have the syscall? (libseccomp numbers others below zero)"""
    try:
        number = seccomp.resolve_syscall(seccomp.Arch.NATIVE, name)  # type: ignore[attr-defined]
    except (ValueError, OSError):
        return False
    return int(number) >= 0


def between(low: int, high: int, bits: int = 32) -> list[tuple[int, int]]:
    """(mask, value) pairs that together match an unsigned `bits`-bit value iff low <= it <=
    high: the range cut into aligned blocks of a power of two, as a CIDR range is into
    prefixes. Masked comparisons read only the low `bits` of a register, as the kernel does for
    an int (a 64-bit GE would refuse a register whose upper half a caller left unset)."""
    full, pairs = (1 << bits) - 1, []
    while low <= high:
        size = low & -low or 1 << bits  # the largest block aligned at `low`...
        while low + size - 1 > high:  # ...that ends by `high`
            size >>= 1
        pairs.append((full & ~(size - 1), low))
        low += size
    return pairs


def at_least(low: int, bits: int = 32) -> list[tuple[int, int]]:
    """(mask, value) pairs that match an unsigned `bits`-bit value iff it is >= `low`."""
    return between(low, (1 << bits) - 1, bits)


def gaps(allowed: tuple[int, ...], end: int) -> list[tuple[int, int]]:
    """The ranges [low, high] of 0..end-1 outside `allowed` (sorted)."""
    edges = [-1, *allowed, end]
    return [(a + 1, b - 1) for a, b in pairwise(edges) if b - a > 1]


def inet_refusals() -> list[tuple[int, tuple[int, int], tuple[int, int]]]:
    """(errno, (mask, type), (mask, protocol)) comparisons, each one rule for a family: the
    socket types and protocols an IPv4 or IPv6 socket may not be made of."""
    rules = []
    for low, high in INET_NO_TYPES:
        for pair in between(low, high, bits=4):
            rules.append((errno.ESOCKTNOSUPPORT, pair, (0, 0)))
    for kind, allowed in INET_PROTOCOLS.items():
        for low, high in gaps(allowed, IPPROTO_MAX):
            for pair in between(low, high):
                rules.append((errno.EPROTONOSUPPORT, (SOCK_TYPE_MASK, kind), pair))
    return rules


def personality_refusals() -> list[tuple[int, int]]:
    """(mask, value) pairs, one comparison each (libseccomp takes one per argument and rule;
    rules are OR-ed), that together match a 32-bit persona iff it sets a bit outside
    PERSONALITY_BITS and is not the query (all ones): with bit 0 set (outside), some other bit
    clear; with bit 0 clear, some bit outside set. Masks are 32-bit: the kernel reads an int."""
    pairs = [((1 << 0) | (1 << c), 1 << 0) for c in range(1, 32)]
    outside = [b for b in range(1, 32) if not PERSONALITY_BITS & (1 << b)]
    return pairs + [((1 << b) | (1 << 0), 1 << b) for b in outside]


def _socket_rules(seccomp: Any, filt: Any) -> None:
    """socket's and socketpair's rules: the families, IPv4's and IPv6's protocols, uevents."""
    refuse = seccomp.ERRNO(errno.EPERM)
    # socket's family is an int: the kernel reads 32 bits of the register, a filter compares 64
    # (EQ alone let (1 << 32) | AF_VSOCK through)
    for call in ("socket", "socketpair"):  # socketpair makes its sockets first (a module loads)
        filt.add_rule(refuse, call, seccomp.Arg(0, seccomp.MASKED_EQ, 0xFFFFFFFF, AF_VSOCK))
    absent = seccomp.ERRNO(errno.EAFNOSUPPORT)
    others = [(0xFFFFFFFF, f) for f in range(AF_KNOWN) if f not in SOCKET_FAMILIES and f != AF_VSOCK]
    for mask, value in others + at_least(AF_KNOWN):
        for call in ("socket", "socketpair"):  # socketpair makes its sockets first: a module too
            filt.add_rule(absent, call, seccomp.Arg(0, seccomp.MASKED_EQ, mask, value))
    for code, (type_mask, kind), (mask, protocol) in inet_refusals():
        for family in INET_FAMILIES:
            for call in ("socket", "socketpair"):  # socketpair makes its sockets first: a module too
                filt.add_rule(
                    seccomp.ERRNO(code),
                    call,
                    seccomp.Arg(0, seccomp.MASKED_EQ, 0xFFFFFFFF, family),
                    seccomp.Arg(1, seccomp.MASKED_EQ, type_mask, kind),
                    seccomp.Arg(2, seccomp.MASKED_EQ, mask, protocol),
                )
    # a uevent socket hears the host's device events in any network namespace of the initial
    # user namespace (a job's): disks and USB plugged, the loop devices of other jobs' sized
    # volumes (red-team run; Docker lets it through)
    uevents = (
        seccomp.Arg(0, seccomp.MASKED_EQ, 0xFFFFFFFF, AF_NETLINK),
        seccomp.Arg(2, seccomp.MASKED_EQ, 0xFFFFFFFF, NETLINK_KOBJECT_UEVENT),
    )
    filt.add_rule(refuse, "socket", *uevents)


@lru_cache(maxsize=1)
def job_filter() -> bytes:
    """The BPF program (bytes) for bubblewrap's --seccomp."""
    import pyseccomp as seccomp

    refuse = seccomp.ERRNO(errno.EPERM)
    filt = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for name in REFUSED:
        if _known(seccomp, name):
            filt.add_rule(refuse, name)
    for flag in NEW_NAMESPACE_FLAGS:
        filt.add_rule(refuse, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    _socket_rules(seccomp, filt)
    for mask, value in personality_refusals():
        filt.add_rule(refuse, "personality", seccomp.Arg(0, seccomp.MASKED_EQ, mask, value))
    # clone3 passes its flags in memory a filter cannot read: ENOSYS makes libc use clone
    filt.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    # Linux AIO contexts draw on one budget for the whole host (fs.aio-max-nr): a job took it
    # all in 16 calls, and the host's databases got EAGAIN (red-team run). ENOSYS, as on a
    # kernel built without AIO, to which libaio's users fall back (threads, io_submit never
    # reached); io_uring is refused above, as Docker does
    filt.add_rule(seccomp.ERRNO(errno.ENOSYS), "io_setup")
    # secret memory is taken out of the kernel's direct map, splitting its huge pages for good:
    # one job (48 processes, 8 MB each) left 2 GB of the host's map in 4k pages after it
    # ended, every program's TLB misses up until a reboot (red-team run). ENOSYS, as on a
    # kernel without secretmem (its default before 6.5)
    if _known(seccomp, "memfd_secret"):
        filt.add_rule(seccomp.ERRNO(errno.ENOSYS), "memfd_secret")
    # a socket's classic BPF program is JIT-compiled into kernel memory no cgroup is charged,
    # counted against net.core.bpf_jit_limit, one budget for every unprivileged program on
    # the host: spent, no process could load a filter, bwrap's seccomp for every new job
    # included (red-team run). The programs that attach one (tcpdump, DHCP clients) want raw
    # or packet sockets, which jobs lack unless job_net_raw; libpcap then filters in user space.
    on_socket = seccomp.Arg(1, seccomp.MASKED_EQ, 0xFFFFFFFF, SOL_SOCKET)
    for option in (SO_ATTACH_FILTER, SO_ATTACH_REUSEPORT_CBPF):
        filt.add_rule(refuse, "setsockopt", on_socket, seccomp.Arg(2, seccomp.MASKED_EQ, 0xFFFFFFFF, option))
    # a packet socket's frames past the qdisc of the job's own interface, where its
    # --max-bandwidth holds what it sends: 495 mbit/s left a job held to 10 (red-team run)
    # and its mmap rings, up to ~4 GB of kernel pages a call that --max-memory never sees
    # (a job held to 16 MB took 1 GB of the host's memory with one; red-team run)
    level = seccomp.Arg(1, seccomp.MASKED_EQ, 0xFFFFFFFF, SOL_PACKET)
    for option in (PACKET_QDISC_BYPASS, PACKET_RX_RING, PACKET_TX_RING):
        filt.add_rule(refuse, "setsockopt", level, seccomp.Arg(2, seccomp.MASKED_EQ, 0xFFFFFFFF, option))
    # a file lease: the worker's open of a job's /etc/hosts (or of its /etc copy's files) to
    # write it waited out the lease's 45 s break time, holding locks that stopped other jobs,
    # the heartbeat and stops (red-team run). A delegation (F_SETDELEG) is a lease by another
    # name. fcntl's command is an int; those newer than F_SETDELEG do what no one here has
    # read: EINVAL, as from a kernel without them
    for command in (F_SETLEASE, F_SETDELEG):
        filt.add_rule(refuse, "fcntl", seccomp.Arg(1, seccomp.MASKED_EQ, 0xFFFFFFFF, command))
    for mask, value in at_least(F_LAST_REVIEWED + 1):
        filt.add_rule(seccomp.ERRNO(errno.EINVAL), "fcntl", seccomp.Arg(1, seccomp.MASKED_EQ, mask, value))
    # a tty's line discipline: the kernel loads `tty-ldisc-N` for one it has not (n_hdlc,
    # n_gsm: code with a history of CVEs) where dev.tty.ldisc_autoload=1, the default, for
    # any process that holds a tty, its own pty included (red-team run). EPERM, as with
    # autoload off; no job has a serial line to give one (TIOCGETD still reads it)
    filt.add_rule(refuse, "ioctl", seccomp.Arg(1, seccomp.MASKED_EQ, 0xFFFFFFFF, TIOCSETD))
    with tempfile.TemporaryFile() as out:  # libseccomp writes to a real descriptor
        filt.export_bpf(out)
        out.seek(0)
        return prologue() + out.read()
