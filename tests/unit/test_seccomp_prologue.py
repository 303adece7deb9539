"""The BPF prologue ahead of libseccomp's program, run by a small interpreter of the four
instructions it uses: which syscall numbers it decides, and that the rest reach libseccomp's
program (the instruction after the prologue); and the masked comparisons that refuse fcntl's
newer commands. In a job: test_sandbox.py's seccomp test."""

from __future__ import annotations

import errno
import struct

from joblet.worker.seccomp_filter import (
    BPF_JEQ_K,
    BPF_JGE_K,
    BPF_LD_ABS_W,
    BPF_RET_K,
    F_LAST_REVIEWED,
    F_SETDELEG,
    SECCOMP_RET_ERRNO,
    at_least,
    prologue,
)


def decide(program: bytes, nr: int) -> int | str:
    """The prologue's return value for syscall `nr`, or 'next' when it falls through."""
    insns = [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    pc, acc = 0, 0
    while pc < len(insns):
        code, jt, jf, k = insns[pc]
        if code == BPF_LD_ABS_W:
            assert k == 0, "only seccomp_data.nr is read"
            acc, pc = nr, pc + 1
        elif code in (BPF_JGE_K, BPF_JEQ_K):
            taken = acc >= k if code == BPF_JGE_K else acc == k
            pc += 1 + (jt if taken else jf)
        elif code == BPF_RET_K:
            return k
        else:
            raise AssertionError(f"unexpected instruction {code:#x}")
    assert pc == len(insns), "a jump past the program's end"
    return "next"


def test_prologue_decides_only_open_tree_attr_and_the_unreviewed():
    program = prologue()
    assert decide(program, 467) == SECCOMP_RET_ERRNO | errno.EPERM  # open_tree_attr
    for nr in (470, 471, 512, 1000, 0x3FFFFFFF):  # after file_setattr: as a kernel without them
        assert decide(program, nr) == SECCOMP_RET_ERRNO | errno.ENOSYS, nr
    # the rest is libseccomp's: the known ones, those reviewed here, x32's (killed there)
    for nr in (0, 39, 425, 454, 455, 457, 458, 462, 466, 468, 469, 0x40000000, 0x40000000 | 467, 0xFFFFFFFF):
        assert decide(program, nr) == "next", nr


def matches(pairs: list[tuple[int, int]], value: int) -> bool:
    """Whether one of libseccomp's masked comparisons (OR-ed rules) matches `value`."""
    return any(value & mask == want for mask, want in pairs)


def test_at_least_matches_exactly_the_values_from_its_bound():
    for low in (F_LAST_REVIEWED + 1, 1, 1024, 0x7FFFFFFF):
        pairs = at_least(low)
        for value in (*range(0, 4200), low - 1, low, low + 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF):
            if value >= 0:
                assert matches(pairs, value) == (value >= low), (low, value)
    # only the low 32 bits count, as the kernel reads an int: a register's upper half is ignored
    pairs = at_least(F_LAST_REVIEWED + 1)
    assert not matches(pairs, (1 << 32) | 1) and matches(pairs, (7 << 32) | 2048)


def test_fcntl_commands_refused():
    # a delegation is refused as a lease is (the number is Linux 6.19's); its query and the
    # commands reviewed before it are left to the kernel; newer ones are refused
    assert F_SETDELEG == 1040 and F_LAST_REVIEWED == F_SETDELEG
    pairs = at_least(F_LAST_REVIEWED + 1)
    assert not any(matches(pairs, c) for c in (0, 1, 2, 3, 4, 36, 37, 38, 1024, 1025, 1030, 1033, 1038, 1039))
    assert all(matches(pairs, c) for c in (1041, 1042, 1100, 2048, 4096, 0xFFFFFFFF))
