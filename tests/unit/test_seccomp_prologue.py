"""The BPF prologue ahead of libseccomp's program, run by a small interpreter of the four
instructions it uses: which syscall numbers it decides, and that the rest reach libseccomp's
program (the instruction after the prologue). In a job: test_sandbox.py's seccomp test."""

from __future__ import annotations

import errno
import struct

from joblet.worker.seccomp_filter import (
    BPF_JEQ_K,
    BPF_JGE_K,
    BPF_LD_ABS_W,
    BPF_RET_K,
    SECCOMP_RET_ERRNO,
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
