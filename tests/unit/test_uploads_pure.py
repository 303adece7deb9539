"""What `rnx` reads to upload: a workflow's files stay in its directory, an upload directory's
links stay in its tree (an untrusted workflow file or tree shipped no other local file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from joblet.api.workflows import load
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
    assert sorted(u["path"] for u in read_uploads((), str(tree))) == ["alias.sh", "sub/run.sh"]
    (tmp_path / "secret").write_text("TOP SECRET\n")
    (tree / "config.txt").symlink_to(tmp_path / "secret")
    with pytest.raises(ValidationError, match="is a link out of"):
        read_uploads((), str(tree))


def test_an_upload_directory_says_what_it_does_not_send(tmp_path, capsys):
    import os

    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "run.sh").write_text("#!/bin/sh\n")
    os.mkfifo(tree / "pipe")
    (tree / "gone").symlink_to(tree / "nowhere")
    assert [u["path"] for u in read_uploads((), str(tree))] == ["run.sh"]  # the control: the file is sent
    err = capsys.readouterr().err
    assert f"{tree / 'pipe'} is not a file or a directory: not sent" in err
    assert f"{tree / 'gone'} is not a file or a directory: not sent" in err


def test_an_upload_directory_says_a_link_to_a_directory_is_not_walked_and_refuses_one_out(tmp_path, capsys):
    """Links to directories were skipped without a word, inside the tree or out of it."""
    tree = tmp_path / "tree"
    (tree / "lib").mkdir(parents=True)
    (tree / "lib" / "mod.py").write_text("x = 1\n")
    (tree / "alias").symlink_to("lib")  # inside: its files go under their own path
    assert [u["path"] for u in read_uploads((), str(tree))] == ["lib/mod.py"]
    assert f"{tree / 'alias'} is a link to a directory: not sent (its files are)" in capsys.readouterr().err
    (tmp_path / "home").mkdir()
    (tree / "home").symlink_to(tmp_path / "home")
    with pytest.raises(ValidationError, match=f"{tree / 'home'} is a link out of"):
        read_uploads((), str(tree))
