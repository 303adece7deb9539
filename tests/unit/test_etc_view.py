"""The jobs' copy of /etc (etc_view.py), on a tree of the test's own standing for /etc."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from joblet.worker import etc_view
from joblet.worker.etc_view import EtcView, Secrets, sync
from joblet.worker.sandbox import SECRETS


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path, Secrets]:
    src, dst = tmp_path / "etc", tmp_path / "copy"
    (src / "ssl" / "private").mkdir(parents=True)
    (src / "ssl" / "private" / "key.pem").write_text("KEY")
    (src / "ssh").mkdir()
    (src / "ssh" / "ssh_host_rsa_key").write_text("HOSTKEY")
    (src / "ssh" / "sshd_config").write_text("Port 22\n")
    (src / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (src / "shadow").write_text("root:$6$hash:::\n")
    (src / "tool.conf").write_text("a=1\n")
    (src / "tool.conf").chmod(0o640)
    (src / "alternatives").mkdir(mode=0o750)
    (src / "alternatives" / "editor").symlink_to("/usr/bin/vi")
    (src / "mtab").symlink_to("../proc/self/mounts")
    (src / "hosts").write_text("127.0.0.1 localhost\n")
    os.mkfifo(src / "initctl")
    secrets = Secrets((f"{src}/shadow", f"{src}/ssl/private", f"{src}/ssh/ssh_host_*"))
    return src, dst, secrets


def test_a_copy_without_secrets(tree):
    src, dst, secrets = tree
    assert sync(str(src), str(dst), secrets) > 0
    assert (dst / "passwd").read_text() == (src / "passwd").read_text()
    assert stat.S_IMODE((dst / "tool.conf").stat().st_mode) == 0o640
    assert (dst / "tool.conf").stat().st_mtime_ns == (src / "tool.conf").stat().st_mtime_ns
    assert stat.S_IMODE((dst / "alternatives").stat().st_mode) == 0o750
    assert os.readlink(dst / "alternatives" / "editor") == "/usr/bin/vi"
    assert os.readlink(dst / "mtab") == "../proc/self/mounts"  # as the job resolves it, in its root
    assert (dst / "ssh" / "sshd_config").read_text() == "Port 22\n"
    assert not (dst / "initctl").exists()  # a FIFO is no part of it
    # secrets: empty and read-only, of the same kind, whatever the host holds
    for path, kind, mode in (("shadow", stat.S_ISREG, 0o444), ("ssh/ssh_host_rsa_key", stat.S_ISREG, 0o444)):
        st = (dst / path).lstat()
        assert kind(st.st_mode) and stat.S_IMODE(st.st_mode) == mode and st.st_size == 0
    assert (dst / "ssl" / "private").is_dir() and os.listdir(dst / "ssl" / "private") == []
    assert stat.S_IMODE((dst / "ssl" / "private").stat().st_mode) == 0o555
    assert sync(str(src), str(dst), secrets) == 0  # in step: nothing written


def test_a_replaced_file_is_renamed_over_and_a_replaced_secret_stays_empty(tree):
    src, dst, secrets = tree
    sync(str(src), str(dst), secrets)
    before = (dst / "passwd").stat().st_ino
    for name, text in (("passwd", "root:x:0:0::/root:/bin/bash\n"), ("shadow", "root:$6$new:::\n")):
        (src / f"n{name}").write_text(text)
        (src / f"n{name}").rename(src / name)  # as passwd(1) does
    (src / "ssh" / "ssh_host_ed25519_key").write_text("NEWKEY")  # a key made later
    assert sync(str(src), str(dst), secrets) == 2
    assert (dst / "passwd").read_text().endswith("/bin/bash\n") and (dst / "passwd").stat().st_ino != before
    assert (dst / "shadow").read_text() == "" and (dst / "ssh" / "ssh_host_ed25519_key").read_text() == ""
    assert not [p for p in dst.rglob("*") if p.name.startswith(etc_view.TEMP_PREFIX)]


def test_the_job_files_are_written_in_place_and_always_there(tree, tmp_path):
    src, dst, secrets = tree
    (tmp_path / "stub-resolv.conf").write_text("nameserver 127.0.0.53\n")
    (src / "resolv.conf").symlink_to(tmp_path / "stub-resolv.conf")
    sync(str(src), str(dst), secrets)
    inode = (dst / "hosts").stat().st_ino
    (src / "hosts").write_text("127.0.0.1 localhost\n10.0.0.1 db\n")
    sync(str(src), str(dst), secrets)
    # bwrap mounts each job's own on these: a rename would unmount it, so they change in place
    assert (dst / "hosts").stat().st_ino == inode and (dst / "hosts").read_text().endswith("db\n")
    assert (dst / "resolv.conf").is_file() and not (dst / "resolv.conf").is_symlink()
    assert (dst / "resolv.conf").read_text() == "nameserver 127.0.0.53\n"  # a host-mode job reads it
    assert (dst / "hostname").read_text() == ""  # the host has none: still there to mount on


def test_what_goes_or_changes_kind_follows(tree):
    src, dst, secrets = tree
    sync(str(src), str(dst), secrets)
    (src / "passwd").unlink()
    (src / "tool.conf").unlink()
    (src / "tool.conf").mkdir()
    (src / "tool.conf" / "inner").write_text("x")
    for p in (src / "alternatives" / "editor", src / "alternatives"):
        p.unlink() if p.is_symlink() else p.rmdir()
    (src / "alternatives").write_text("now a file\n")
    (dst / f"{etc_view.TEMP_PREFIX}passwd").write_text("left by a sync that died")
    sync(str(src), str(dst), secrets)
    assert not (dst / "passwd").exists() and (dst / "tool.conf" / "inner").read_text() == "x"
    assert (dst / "alternatives").read_text() == "now a file\n"
    assert not (dst / f"{etc_view.TEMP_PREFIX}passwd").exists()
    assert sorted(p.name for p in dst.iterdir()) == sorted(
        [p.name for p in src.iterdir() if p.name != "initctl"] + ["resolv.conf", "hostname"]
    )


def until(check, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return False


def test_the_view_follows_the_host_as_it_changes(tree):
    src, dst, secrets = tree
    view = EtcView(str(dst), secrets, source=str(src))
    view.start()
    try:
        assert (dst / "passwd").exists()
        (src / "new.d").mkdir()
        assert until(lambda: (dst / "new.d").is_dir())
        (src / "new.d" / "made-later.conf").write_text("1\n")  # in a directory watched since
        assert until(lambda: (dst / "new.d" / "made-later.conf").exists())
        with open(src / "tool.conf", "a") as fh:  # changed in place
            fh.write("b=2\n")
        assert until(lambda: (dst / "tool.conf").read_text() == "a=1\nb=2\n")
        (src / "shadow").write_text("changed\n")
        assert until(lambda: (dst / "passwd").exists() and view.syncs >= 4)
        assert (dst / "shadow").read_text() == ""
    finally:
        view.close()


def test_without_inotify_the_view_is_brought_in_step_at_intervals(tree, monkeypatch):
    src, dst, secrets = tree

    class NoInotify:
        def inotify_init1(self, flags: int) -> int:
            return -1

    monkeypatch.setattr(etc_view, "_libc", NoInotify())
    monkeypatch.setattr(etc_view, "FALLBACK_INTERVAL", 0.05)
    view = EtcView(str(dst), secrets, source=str(src))
    view.start()
    try:
        (src / "late.conf").write_text("1\n")
        assert until(lambda: (dst / "late.conf").exists())
    finally:
        view.close()


def test_the_copy_cannot_be_inside_what_it_copies(tree):
    src, _, secrets = tree
    with pytest.raises(ValueError, match="cannot be inside"):
        EtcView(str(src / "copy"), secrets, source=str(src))


def test_the_secrets_include_the_copies_tools_write_before_renaming():
    secrets = Secrets(SECRETS)
    # passwd(1) and friends write the new file beside the old, then rename it over
    for path in ("/etc/shadow", "/etc/shadow+", "/etc/shadow-", "/etc/nshadow", "/etc/gshadow+", "/etc/sudoers.tmp"):
        assert path in secrets, path
    for path in ("/etc/ssh/ssh_host_ed25519_key", "/etc/sudoers.d/admins", "/etc/ssl/private"):
        assert path in secrets, path
    assert "/etc/passwd" not in secrets and "/etc/npasswd" not in secrets and "/etc/ssh/sshd_config" not in secrets
