"""What `rnx` reads to upload: a workflow's files stay in its directory, an upload directory's
links stay in its tree (an untrusted workflow file or tree shipped no other local file)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from joblet.api.workflows import Limits, load
from joblet.cli.run import read_uploads
from joblet.errors import ValidationError


def workflow(tmp_path: Path, files: str) -> Path:
    (tmp_path / "wf").mkdir()
    (tmp_path / "wf" / "app.py").write_text("print(1)\n")
    (tmp_path / "secret").write_text("TOP SECRET\n")
    path = tmp_path / "wf" / "w.yaml"
    path.write_text(f"jobs:\n  a: {{command: python3, args: [app.py], uploads: {{files: {files}}}}}\n")
    return path


def test_a_workflow_uploads_files_of_its_own_directory(tmp_path):
    wf = load(workflow(tmp_path, '["app.py"]'))
    assert [u.path for u in wf.jobs["a"].spec.uploads] == ["app.py"]


@pytest.mark.parametrize("files", ['["../secret"]', "[SECRET]", '["link"]'])
def test_a_workflow_uploads_nothing_from_outside_its_directory(tmp_path, files):
    path = workflow(tmp_path, files.replace("SECRET", str(tmp_path / "secret")))
    (tmp_path / "wf" / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(ValidationError, match="outside the workflow's directory"):
        load(path)


def test_an_upload_directory_sends_no_link_out_of_its_tree(tmp_path):
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "run.sh").write_text("#!/bin/sh\n")
    (tree / "alias.sh").symlink_to("sub/run.sh")  # inside: sent as the file it names
    assert sorted(u["path"] for u in read_uploads((), (str(tree),))) == ["alias.sh", "sub/run.sh"]
    (tmp_path / "secret").write_text("TOP SECRET\n")
    (tree / "config.txt").symlink_to(tmp_path / "secret")
    with pytest.raises(ValidationError, match="is a link out of"):
        read_uploads((), (str(tree),))


def test_an_upload_directory_says_what_it_does_not_send(tmp_path, capsys):
    import os

    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "run.sh").write_text("#!/bin/sh\n")
    os.mkfifo(tree / "pipe")
    (tree / "gone").symlink_to(tree / "nowhere")
    assert [u["path"] for u in read_uploads((), (str(tree),))] == ["run.sh"]  # the control: the file is sent
    err = capsys.readouterr().err
    assert f"{tree / 'pipe'} is not a file or a directory: not sent" in err
    assert f"{tree / 'gone'} is not a file or a directory: not sent" in err


def test_an_upload_directory_says_a_link_to_a_directory_is_not_walked_and_refuses_one_out(tmp_path, capsys):
    """Links to directories were skipped without a word, inside the tree or out of it."""
    tree = tmp_path / "tree"
    (tree / "lib").mkdir(parents=True)
    (tree / "lib" / "mod.py").write_text("x = 1\n")
    (tree / "alias").symlink_to("lib")  # inside: its files go under their own path
    assert [u["path"] for u in read_uploads((), (str(tree),))] == ["lib/mod.py"]
    assert f"{tree / 'alias'} is a link to a directory: not sent (its files are)" in capsys.readouterr().err
    (tmp_path / "home").mkdir()
    (tree / "home").symlink_to(tmp_path / "home")
    with pytest.raises(ValidationError, match=f"{tree / 'home'} is a link out of"):
        read_uploads((), (str(tree),))


def test_uploads_past_the_limit_are_refused_before_they_are_read(tmp_path, monkeypatch):
    """A tree of 1.2 GB was read whole (4.5 GB of memory) before the limit refused it."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.bin").write_bytes(b"a" * 600)
    with (tree / "b.img").open("wb") as big:
        big.truncate(1 << 40)  # sparse: a terabyte on paper, nothing on disk
    reads: list[str] = []
    real_read = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self.name) or real_read(self))
    with pytest.raises(ValidationError, match=r"^invalid --upload-dir: .* 1000 bytes \(upload_max_bytes\) at .*b.img"):
        read_uploads((), (str(tree),), limit=1000)
    assert reads == []  # refused as the tree is walked: nothing read (`--upload-dir=/` walked all of /proc first)
    with pytest.raises(ValidationError, match="^invalid --upload: the files exceed the limit of 100 bytes"):
        read_uploads((str(tree / "a.bin"),), (), limit=100)
    assert [u["path"] for u in read_uploads((str(tree / "a.bin"),), (), limit=600)] == ["a.bin"]  # the control


def test_an_upload_directory_says_which_directories_it_cannot_read(tmp_path, capsys):
    """One it could not list was left out without a word (a FIFO or a broken link is said);
    a link whose stat is refused (into a directory the user cannot enter) raised a traceback
    (usability run)."""
    import os
    import subprocess

    tree = tmp_path / "tree"
    (tree / "open").mkdir(parents=True)
    (tree / "open" / "ok.txt").write_text("ok\n")
    (tree / "shut").mkdir()
    (tree / "shut" / "hidden.txt").write_text("no\n")
    (tree / "peek").symlink_to("shut/hidden.txt")
    os.chmod(tree / "shut", 0)
    os.chmod(tree, 0o755)
    probe = (
        "import sys; from joblet.cli.run import read_uploads; "
        "print([u['path'] for u in read_uploads((), (sys.argv[1],))])"
    )
    # as a user whose permissions count (root reads any directory)
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]
    done = subprocess.run(
        [*(drop if os.geteuid() == 0 else []), sys.executable, "-c", probe, "."],
        cwd=tree,  # its parents are root's own (0700): the tree is reached from inside
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert done.stdout == "['open/ok.txt']\n", done  # the control: the readable one is sent
    said = [
        "rnx: --upload-dir: peek: Permission denied: not sent",
        "rnx: --upload-dir: ./shut: Permission denied: not sent",
    ]
    assert done.stderr.splitlines() == said, done.stderr


def test_a_workflows_uploads_past_the_limit_name_their_job_and_file_unread(tmp_path):
    """A workflow's upload of a terabyte was read whole, then refused by the job's spec size
    with neither file nor job named."""
    path = workflow(tmp_path, '["app.py", "big.img"]')
    with (tmp_path / "wf" / "big.img").open("wb") as big:
        big.truncate(1 << 40)  # sparse: read whole, this test would not end
    with pytest.raises(ValidationError, match=r"job 'a': upload 'big.img': the job's uploads exceed the limit of 100 "):
        load(path, Limits(upload_bytes=100))
    (tmp_path / "wf" / "big.img").write_bytes(b"b" * 91)  # with app.py's 9 bytes: 100, the limit
    assert load(path, Limits(upload_bytes=100)).jobs["a"].spec.upload_bytes == 100
    (tmp_path / "wf" / "big.img").write_bytes(b"b" * 92)  # one byte past it, by the two together
    with pytest.raises(ValidationError, match="upload 'big.img': the job's uploads exceed the limit of 100 bytes"):
        load(path, Limits(upload_bytes=100))


def test_a_workflow_of_more_jobs_than_the_limit_is_refused_before_its_jobs_are_read(tmp_path):
    path = tmp_path / "many.yaml"
    path.write_text("jobs:\n" + "".join(f"  j{i}: {{command: 'true', uploads: {{files: [nope]}}}}\n" for i in range(3)))
    with pytest.raises(ValidationError, match=r"many.yaml: 3 jobs, over the limit of 2 \(workflow_max_jobs"):
        load(path, Limits(max_jobs=2))
    read = load(path, Limits(max_jobs=3))  # the control: at 3, its jobs are read
    assert read.missing_uploads.endswith(": job 'j0': 'nope'; job 'j1': 'nope'; job 'j2': 'nope'")


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("a/" * 200 + "f", r"is 201 names deep \(at most 128\)"),  # 1,500 deep: RecursionError in the worker
        ("d/" + "x" * 256, "has a name longer than 255 bytes"),
        ("é" * 128, "has a name longer than 255 bytes"),  # bytes, not characters
    ],
)
def test_an_upload_path_the_worker_could_not_write_is_refused_as_it_is_made(path, says):
    """Where a spec is made now; a record stored before the bound still reads."""
    from joblet.api.models import JobRecord, JobSpec, JobStatus, make_spec

    upload = {"path": path, "content": ""}
    with pytest.raises(ValueError, match=says):
        make_spec("true", uploads=[upload])
    assert make_spec("true", uploads=[{"path": "a/" * 127 + "x" * 255, "content": ""}])  # the control: at both limits
    stored = JobRecord(
        id="a" * 32, status=JobStatus.COMPLETED, spec=JobSpec.from_dict({"command": "true", "uploads": [upload]})
    )
    assert JobRecord.from_dict(stored.to_dict()).spec.uploads[0].path == path


def test_upload_options_name_themselves_refuse_empty_paths_and_trees_merge(tmp_path, monkeypatch):
    """`--upload=` and `--upload-dir=` read as the current directory; errors named the
    Python API's field; a second --upload-dir silently replaced the first (usability run)."""
    monkeypatch.chdir(tmp_path)
    for files, dirs, says in [
        (("",), (), "invalid --upload: '' is not a readable file"),
        (("nope",), (), "invalid --upload: 'nope' does not exist"),
        (("/dev/zero",), (), "invalid --upload: '/dev/zero' is not a regular file (a device, FIFO or socket: "),
        ((".",), (), "invalid --upload: '.' is a directory (--upload-dir uploads one)"),
        ((), ("",), "invalid --upload-dir: '' is not a directory"),
        ((), ("nope",), "invalid --upload-dir: 'nope' is not a directory"),
    ]:
        with pytest.raises(ValidationError) as caught:
            read_uploads(files, dirs)
        assert str(caught.value).startswith(says), str(caught.value)  # /dev/zero: readable, not a file (usability run)
    for tree, name in (("a", "x"), ("b", "sub/y")):
        (tmp_path / tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / tree / name).write_text(name)
    assert [u["path"] for u in read_uploads((), ("a", "b"))] == ["x", "sub/y"]  # both trees


def test_an_upload_tree_too_deep_is_refused_before_the_walk_goes_down_it(tmp_path):
    """Python 3.11's os.walk recurses: 1,100 folders raised RecursionError in rnx (review).
    200 here: as deep as the refusal needs, not so deep that removing it recurses too."""
    deep = tmp_path / "tree"
    (deep / "/".join(["d"] * 200)).mkdir(parents=True)
    with pytest.raises(ValidationError, match=r"invalid --upload-dir: .* holds files more than 128 names deep"):
        read_uploads((), (str(deep),))
    shallow = tmp_path / "ok" / "/".join(["d"] * 127)
    shallow.mkdir(parents=True)
    (shallow / "f").write_text("x")  # the control: 128 names, the deepest taken
    assert [u["path"].count("/") for u in read_uploads((), (str(tmp_path / "ok"),))] == [127]
