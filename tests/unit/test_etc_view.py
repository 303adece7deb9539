"""The jobs' copy of /etc (etc_view.py), on a tree of the test's own standing for /etc."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from joblet.worker import etc_view
from joblet.worker.etc_view import Copier, EtcView, Secrets
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
    (src / "tool.conf").chmod(0o604)
    (src / "NetworkManager").mkdir()
    (src / "NetworkManager" / "wifi.nmconnection").write_text("psk=hunter2\n")
    (src / "NetworkManager" / "wifi.nmconnection").chmod(0o600)  # private, by its mode only
    (src / "krb5").mkdir(mode=0o750)  # others may not enter it
    (src / "krb5" / "keytab").write_text("KEYTAB")
    (src / "alternatives").mkdir(mode=0o751)
    (src / "alternatives" / "editor").symlink_to("/usr/bin/vi")
    (src / "mtab").symlink_to("../proc/self/mounts")
    (src / "hosts").write_text("127.0.0.1 localhost\n")
    os.mkfifo(src / "initctl")
    secrets = Secrets((f"{src}/shadow*", f"{src}/nshadow", f"{src}/ssl/private/", f"{src}/ssh/ssh_host_*"))
    return src, dst, secrets


def test_a_copy_without_secrets(tree):
    src, dst, secrets = tree
    copier = Copier(secrets)
    assert copier.sync(str(src), str(dst)) > 0 and copier.errors == []
    assert (dst / "passwd").read_text() == (src / "passwd").read_text()
    assert stat.S_IMODE((dst / "tool.conf").stat().st_mode) == 0o604
    assert (dst / "tool.conf").stat().st_mtime_ns == (src / "tool.conf").stat().st_mtime_ns
    assert stat.S_IMODE((dst / "alternatives").stat().st_mode) == 0o751
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
    # what the host lets only owner and group read is empty too: a job is root, modes do not stop it
    assert (dst / "NetworkManager" / "wifi.nmconnection").read_text() == ""
    assert (dst / "krb5").is_dir() and os.listdir(dst / "krb5") == []
    assert copier.sync(str(src), str(dst)) == 0  # in step: nothing written


def test_a_replaced_file_is_renamed_over_and_a_replaced_secret_stays_empty(tree):
    src, dst, secrets = tree
    copier = Copier(secrets)
    copier.sync(str(src), str(dst))
    before = (dst / "passwd").stat().st_ino
    for name, text in (("passwd", "root:x:0:0::/root:/bin/bash\n"), ("shadow", "root:$6$new:::\n")):
        (src / f"n{name}").write_text(text)
        copier.sync(str(src), str(dst))  # a sync between the write and the rename (pam_unix's nshadow)
        (src / f"n{name}").rename(src / name)  # as passwd(1) does
    (src / ".#shadowAb12Cd").write_text("root:$6$sysusers:::\n")  # systemd-sysusers' new copy
    (src / "ssh" / "ssh_host_ed25519_key").write_text("NEWKEY")  # a key made later
    copier.sync(str(src), str(dst))
    assert (dst / "passwd").read_text().endswith("/bin/bash\n") and (dst / "passwd").stat().st_ino != before
    assert (dst / "shadow").read_text() == "" and (dst / "ssh" / "ssh_host_ed25519_key").read_text() == ""
    leaked = [p for p in dst.rglob("*") if p.is_file() and b"$6$" in p.read_bytes()]
    assert leaked == [] and (dst / ".#shadowAb12Cd").stat().st_size == 0
    assert not [p for p in dst.rglob("*") if p.name.startswith(etc_view.TEMP_PREFIX)]


def test_a_rewrite_that_keeps_size_and_mtime_is_copied(tree):
    src, dst, secrets = tree
    copier = Copier(secrets)
    copier.sync(str(src), str(dst))
    st = (src / "tool.conf").stat()
    (src / "tool.conf").write_text("a=2\n")  # same size
    os.utime(src / "tool.conf", ns=(st.st_atime_ns, st.st_mtime_ns))  # as cp -p or dpkg keep it
    assert copier.sync(str(src), str(dst)) == 1 and (dst / "tool.conf").read_text() == "a=2\n"


def test_a_copy_is_never_readable_by_others_while_it_is_written(tree, monkeypatch):
    src, dst, secrets = tree
    modes = {}
    real = etc_view._copy_content

    def spy(source: int, target: int) -> None:
        modes[os.readlink(f"/proc/self/fd/{source}")] = stat.S_IMODE(os.fstat(target).st_mode)
        real(source, target)

    monkeypatch.setattr(etc_view, "_copy_content", spy)
    Copier(secrets).sync(str(src), str(dst))
    assert modes[str(src / "passwd")] == 0o600 and modes[str(src / "tool.conf")] == 0o600
    assert stat.S_IMODE((dst / "passwd").stat().st_mode) == stat.S_IMODE((src / "passwd").stat().st_mode)


def test_an_entry_that_fails_is_skipped_and_noted(tree, monkeypatch):
    src, dst, secrets = tree
    real = etc_view._copy_file

    def failing(source: str, target: str, st: os.stat_result) -> None:
        if source.endswith("/passwd"):
            raise PermissionError(13, "Permission denied")
        real(source, target, st)

    monkeypatch.setattr(etc_view, "_copy_file", failing)
    copier = Copier(secrets)
    copier.sync(str(src), str(dst))
    assert copier.errors == [f"{src}/passwd: Permission denied"]
    assert (dst / "tool.conf").exists() and (dst / "ssh" / "sshd_config").exists()  # the rest is there


def test_the_job_files_are_written_in_place_and_always_there(tree, tmp_path):
    src, dst, secrets = tree
    (tmp_path / "stub-resolv.conf").write_text("nameserver 127.0.0.53\n")
    (src / "resolv.conf").symlink_to(tmp_path / "stub-resolv.conf")
    (src / "hostname").symlink_to("shadow")  # a net file leading to a secret: nothing of it
    copier = Copier(secrets)
    copier.sync(str(src), str(dst))
    inode = (dst / "hosts").stat().st_ino
    (src / "hosts").write_text("127.0.0.1 localhost\n10.0.0.1 db\n")
    copier.sync(str(src), str(dst))
    # bwrap mounts each job's own on these: a rename would unmount it, so they change in place
    assert (dst / "hosts").stat().st_ino == inode and (dst / "hosts").read_text().endswith("db\n")
    assert (dst / "resolv.conf").is_file() and not (dst / "resolv.conf").is_symlink()
    assert (dst / "resolv.conf").read_text() == "nameserver 127.0.0.53\n"  # a host-mode job reads it
    assert (dst / "hostname").read_text() == "" and (dst / "hostname").is_file()


def test_what_goes_or_changes_kind_follows(tree, tmp_path):
    src, dst, secrets = tree
    outside = tmp_path / "outside"  # a host directory a link in /etc points to
    outside.mkdir(mode=0o755)
    (src / "alternatives" / "jre").symlink_to(outside)
    copier = Copier(secrets)
    copier.sync(str(src), str(dst))
    (src / "passwd").unlink()
    (src / "tool.conf").unlink()
    (src / "tool.conf").mkdir()
    (src / "tool.conf" / "inner").write_text("x")
    for p in (src / "alternatives" / "editor", src / "alternatives" / "jre", src / "alternatives"):
        p.unlink() if p.is_symlink() else p.rmdir()
    (src / "alternatives").write_text("now a file\n")
    (dst / f"{etc_view.TEMP_PREFIX}passwd").write_text("left by a sync that died")
    copier.sync(str(src), str(dst))
    assert not (dst / "passwd").exists() and (dst / "tool.conf" / "inner").read_text() == "x"
    assert (dst / "alternatives").read_text() == "now a file\n"
    assert not (dst / f"{etc_view.TEMP_PREFIX}passwd").exists()
    assert sorted(p.name for p in dst.iterdir()) == sorted(
        [p.name for p in src.iterdir() if p.name != "initctl"] + ["resolv.conf", "hostname"]
    )
    assert stat.S_IMODE(outside.stat().st_mode) == 0o755 and outside.exists()  # the link's target untouched


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
        (src / "sentinel").write_text("after the secret\n")
        assert until(lambda: (dst / "sentinel").exists())  # a sync after the secret's change
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
    # systemd-sysusers', editors' and pam_unix's copies
    for path in ("/etc/.#shadowAb12Cd", "/etc/.#gshadowX1", "/etc/.shadow.swp", "/etc/security/nopasswd"):
        assert path in secrets, path
    for path in ("/etc/ssh/ssh_host_ed25519_key", "/etc/sudoers.d/admins", "/etc/ssl/private"):
        assert path in secrets, path
    assert "/etc/passwd" not in secrets and "/etc/npasswd" not in secrets and "/etc/ssh/sshd_config" not in secrets


def test_patterns_are_normalised():
    assert "/etc/ssl/private" in Secrets(("/etc/ssl/private/",)) and "/etc/a" in Secrets(("/etc//./a",))
    assert "/etc/x.key" in Secrets(("/etc/*.key",)) and "/etc/x.keys" not in Secrets(("/etc/*.key",))
    assert "/etc/x.key.new" in Secrets(("/etc/*.key",))  # the copy a tool writes before renaming


def test_a_pattern_through_a_link_is_resolved_too(tmp_path):
    real = tmp_path / "usr" / "lib" / "ssl"
    (real / "private").mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "ssl").symlink_to(real)  # as Debian's /etc/ssl -> /usr/lib/ssl would be
    patterns = Secrets((f"{tmp_path}/etc/ssl/private/*.pem",)).patterns
    assert patterns == (f"{tmp_path}/etc/ssl/private/*.pem", f"{real}/private/*.pem")


def test_a_secret_that_is_a_link_names_where_it_leads(tmp_path: Path):
    """`/etc/app.conf -> /srv/ro/real.conf` masked: the copy's placeholder hid the link, and a
    job read the target at its own path (red-team run). The copy names its secret links (the
    sandbox covers where they lead); a link that is not a secret (the control) is not named."""
    src, dst, ro = tmp_path / "etc", tmp_path / "copy", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    (ro / "real.conf").write_text("redis_url = 'redis://:TOPSECRET@h/0'\n")
    (ro / "open.conf").write_text("a=1\n")
    (src / "app.conf").symlink_to(ro / "real.conf")
    (src / "other.conf").symlink_to(ro / "open.conf")
    copier = Copier(Secrets((f"{src}/app.conf",)))
    copier.sync(str(src), str(dst))
    assert (dst / "app.conf").read_text() == "" and os.readlink(dst / "other.conf") == str(ro / "open.conf")
    assert copier.secret_links == (str(src / "app.conf"),)


def test_a_secret_reached_through_a_link_in_its_pattern_is_hidden(tmp_path: Path):
    """`/etc/app*/conf/secret.key` where `app1/conf` is a link to `../shared/conf`, and a
    directory swapped for a link after the worker started: the walk met the file only at
    its real path, which no pattern named, and copied it in the clear (red-team run). What
    a pattern reaches through links is hidden at its real path; a file beside it (the
    control) is copied."""
    src, dst = tmp_path / "etc", tmp_path / "copy"
    (src / "shared" / "conf").mkdir(parents=True)
    (src / "shared" / "conf" / "secret.key").write_text("S1")
    (src / "shared" / "conf" / "plain.txt").write_text("p")
    (src / "app1").mkdir()
    (src / "app1" / "conf").symlink_to("../shared/conf")
    (src / "swap.real").mkdir()
    (src / "swap.real" / "a.key").write_text("S2")
    copier = Copier(Secrets((f"{src}/app*/conf/secret.key", f"{src}/swap/*.key")))
    (src / "swap").symlink_to("swap.real")  # after the patterns were read (the worker's start)
    copier.sync(str(src), str(dst))
    assert (dst / "shared" / "conf" / "secret.key").read_text() == ""
    assert (dst / "swap.real" / "a.key").read_text() == ""
    assert (dst / "shared" / "conf" / "plain.txt").read_text() == "p"
