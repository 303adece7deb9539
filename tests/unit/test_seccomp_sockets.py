"""The whole exported filter (prologue and libseccomp's program), run by an interpreter of the
classic BPF it is made of, for socket() and socketpair(): which families, types and protocols a
job's sockets may have. This kernel has no SCTP, DCCP or L2TP, so inside a job the answer is
the same with or without the filter (test_sandbox.py checks the job's sockets); here the
filter's own decision is read."""

from __future__ import annotations

import errno
import struct
import sys

import pyseccomp as seccomp
import pytest

from joblet.worker.seccomp_filter import between, gaps, job_filter

ALLOW = 0x7FFF0000
LD_W_ABS, ALU_AND_K, JEQ_K, JGE_K, JGT_K, JSET_K, RET_K = 0x20, 0x54, 0x15, 0x35, 0x25, 0x45, 0x06


def run(program: bytes, nr: int, args: tuple[int, ...]) -> int:
    """The filter's return value for syscall `nr` with `args` (64-bit each) on this host."""
    data = struct.pack("=iIQ6Q", nr, seccomp.system_arch(), 0, *args, *[0] * (6 - len(args)))
    insns = [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == LD_W_ABS:
            (acc,) = struct.unpack_from("=I", data, k)
        elif code == ALU_AND_K:
            acc &= k
        elif code in (JEQ_K, JGE_K, JGT_K, JSET_K):
            taken = {JEQ_K: acc == k, JGE_K: acc >= k, JGT_K: acc > k, JSET_K: bool(acc & k)}[code]
            pc += jt if taken else jf
        elif code == RET_K:
            return k
        else:
            raise AssertionError(f"unexpected instruction {code:#x}")
        pc += 1


def answer(call: str, family: int, kind: int, protocol: int) -> str:
    nr = seccomp.resolve_syscall(seccomp.Arch.NATIVE, call)
    got = run(job_filter(), nr, (family, kind, protocol, 0))
    return "allow" if got == ALLOW else errno.errorcode[got & 0xFFFF]


pytestmark = pytest.mark.skipif(sys.byteorder != "little", reason="the arguments' words are read little-endian")


@pytest.mark.parametrize("call", ["socket", "socketpair"])
@pytest.mark.parametrize("family", [2, 10])
def test_inet_sockets_take_only_the_protocols_jobs_use(call, family):
    allowed = [(1, 0), (1, 6), (1, 262), (2, 0), (2, 17), (2, 136), (2, 1), (2, 58), (3, 0), (3, 132), (3, 255)]
    for kind, protocol in allowed:  # TCP, MPTCP, UDP, UDP-Lite, ping, raw of any number
        assert answer(call, family, kind, protocol) == "allow", (kind, protocol)
    # SOCK_NONBLOCK and SOCK_CLOEXEC ride in the type's upper bits: the same answers
    assert answer(call, family, 1 | 0o4000 | 0o2000000, 6) == "allow"
    assert answer(call, family, 1 | 0o4000, 132) == "EPROTONOSUPPORT"
    # SCTP (stream, seqpacket), DCCP, L2TP over IP, SMC, a protocol whose number is another's
    refused = {(1, 132): "EPROTONOSUPPORT", (5, 132): "ESOCKTNOSUPPORT", (6, 33): "ESOCKTNOSUPPORT"}
    refused |= {(2, 115): "EPROTONOSUPPORT", (1, 256): "EPROTONOSUPPORT", (1, 17): "EPROTONOSUPPORT"}
    refused |= {(4, 0): "ESOCKTNOSUPPORT", (0, 0): "ESOCKTNOSUPPORT", (2, 6): "EPROTONOSUPPORT"}
    for (kind, protocol), code in refused.items():
        assert answer(call, family, kind, protocol) == code, (kind, protocol)
    # from IPPROTO_MAX on, and types from SOCK_MAX on, the kernel answers EINVAL: left to it
    for kind, protocol in ((1, 263), (1, 0xFFFFFFFF), (2, 1 << 20), (11, 0), (15, 6)):
        assert answer(call, family, kind, protocol) == "allow", (kind, protocol)
    # the kernel reads ints: a register's upper half changes nothing
    assert answer(call, family, 1, (1 << 32) | 132) == "EPROTONOSUPPORT"
    assert answer(call, family, (1 << 32) | 1, 6) == "allow"


def test_other_families_keep_their_answers():
    assert answer("socket", 1, 1, 0) == "allow"  # unix
    assert answer("socket", 16, 2, 0) == "allow" and answer("socket", 16, 2, 15) == "EPERM"  # uevents
    assert answer("socket", 17, 3, 0x0300) == "allow"  # packet, any ethertype
    assert answer("socket", 40, 1, 0) == "EPERM" and answer("socket", 38, 5, 0) == "EAFNOSUPPORT"
    assert answer("socket", 1, 5, 132) == "allow"  # unix seqpacket: the number is no protocol there


def test_between_cuts_a_range_into_aligned_blocks():
    for low, high in ((1, 5), (7, 261), (137, 262), (0, 0), (4, 10), (0, 2**32 - 1), (263, 2**32 - 1)):
        pairs = between(low, high)
        for value in {*range(0, 600), low, high, low - 1, high + 1, 2**32 - 1} - {-1, 2**32}:
            assert any(value & m == v for m, v in pairs) == (low <= value <= high), (low, high, value)
    assert len(between(0, 2**32 - 1)) == 1 and between(4, 10, bits=4) == [(0xC, 4), (0xE, 8), (0xF, 10)]


def test_gaps_are_the_numbers_between_the_allowed():
    assert gaps((0, 6, 262), 263) == [(1, 5), (7, 261)]
    assert gaps((0, 1, 17, 58, 136), 263) == [(2, 16), (18, 57), (59, 135), (137, 262)]
    assert gaps((), 4) == [(0, 3)]
