"""What keeps `rnx` fast: lazy imports, no Celery on the send path, a quick and honest exit."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from joblet.cli.main import exit_status, flushed


def loaded(code: str) -> list[str]:
    """Which heavy packages a fresh interpreter has imported after running `code`."""
    names = "('pydantic', 'redis', 'celery', 'kombu')"
    probe = f"{code}\nimport sys; print(' '.join(m for m in {names} if m in sys.modules))"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()


def test_help_needs_no_pydantic_redis_or_celery():
    assert loaded("import joblet.cli.main, joblet.api.keys") == []


def test_the_client_and_its_send_path_import_no_celery_or_pydantic():
    found = loaded(
        "import joblet.api.client, joblet.api.batch, joblet.cli.batch, joblet.cli.run\n"
        "from joblet.api import tasks\nfrom joblet.config import load\n"
        "from joblet.api.models import JobRecord, make_spec\n"
        "spec = make_spec('true', (), network='none', limits={'max_bandwidth': '1mbit'})\n"
        "JobRecord.from_dict(JobRecord(id='0' * 32, status='PENDING', spec=spec).to_dict())\n"
        "tasks.run_message(load(), '0' * 32, spec.to_dict(), None)\n"
        "tasks.broker_redis('redis://127.0.0.1:1/0')"
    )
    assert "redis" in found  # positive control: the probe sees imports
    assert "celery" not in found and "kombu" not in found and "pydantic" not in found


def test_workflows_still_load_pydantic():
    """A positive control for the probe above: the workflow models are pydantic's."""
    assert "pydantic" in loaded("import joblet.api.workflows")


def test_rnx_builds_its_models_without_importlib_metadata():
    probe = (
        "import os, sys\nos.environ['PYDANTIC_DISABLE_PLUGINS'] = '__all__'\n"
        "from joblet.cli.main import skip_plugin_discovery\nskip_plugin_discovery()\n"
        "from joblet.api.models import make_spec\nmake_spec('true', (), network='none')\n"
        "print('importlib.metadata' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False"]


def test_pydantic_asks_its_plugin_loader_only_for_get_plugins(monkeypatch):
    """What the stand-in of skip_plugin_discovery must provide: if a pydantic release asks its
    plugin loader for more, this fails before rnx does."""
    import inspect
    import re

    import pydantic
    from pydantic.plugin import _loader, _schema_validator

    root = Path(pydantic.__file__).parent
    users = [p for p in root.rglob("*.py") if "_loader" in p.read_text() and p != Path(_loader.__file__)]
    assert users == [Path(_schema_validator.__file__)]
    assert re.findall(r"from \._loader import (.+)", inspect.getsource(_schema_validator)) == ["get_plugins"]
    monkeypatch.setenv("PYDANTIC_DISABLE_PLUGINS", "__all__")
    assert list(_loader.get_plugins()) == []  # pydantic's own answer, and the stand-in's


def test_exit_status():
    assert exit_status(None) == 0 and exit_status(3) == 3 and exit_status(0) == 0


def test_exit_status_of_a_message(capsys):
    assert exit_status("rnx: broken") == 1
    assert capsys.readouterr().err == "rnx: broken\n"


class Closed(io.StringIO):
    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


@pytest.mark.parametrize(("code", "want"), [(0, 141), (4, 4)])
def test_a_failed_flush_is_not_success(monkeypatch, code, want):
    monkeypatch.setattr(sys, "stdout", Closed())
    assert flushed(code) == want


def test_rnx_exits_with_its_status_and_flushes():
    rnx = [sys.executable, "-c", "from joblet.cli.main import main; main()"]
    done = subprocess.run([*rnx, "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "batch" in done.stdout and done.stdout.endswith("\n")
    bad = subprocess.run([*rnx, "nosuchcommand"], capture_output=True, text=True)
    assert bad.returncode == 2 and "No such command" in bad.stderr


def test_closed_or_full_standard_streams_are_one_line():
    rnx = [sys.executable, "-c", "from joblet.cli.main import main; main()"]
    env = {"JOBLET_REDIS_URL": "redis://127.0.0.1:1/0", "PATH": "/usr/bin:/bin"}
    closed_out = subprocess.run(f"{rnx[0]} -c '{rnx[2]}' list >&-", shell=True, capture_output=True, text=True, env=env)
    assert closed_out.returncode == 2 and closed_out.stderr == (
        "rnx: standard output is closed (redirect it to /dev/null to discard it)\n"
    )
    with open("/dev/full", "w") as full:
        done = subprocess.run([*rnx, "--help"], stdout=full, stderr=subprocess.PIPE, text=True)
    assert done.returncode == 1 and done.stderr == "rnx: cannot write its output: No space left on device\n"
    no_input = subprocess.run(f"{rnx[0]} -c '{rnx[2]}' batch <&-", shell=True, capture_output=True, text=True, env=env)
    assert no_input.returncode == 0 and no_input.stdout == no_input.stderr == ""  # read as empty: nothing queued


@pytest.mark.parametrize(("args", "code", "out"), [("--version", 0, "rnx"), ("list", 1, ""), ("nosuch", 2, "")])
def test_a_closed_stderr_leaves_the_exit_status_alone(args, code, out):
    """`rnx ... 2>&-`: every command exited 1 (its last flush of a stderr Python had left None
    raised), `rnx run` losing its job's own code; what it had to say there is discarded."""
    rnx = f"{sys.executable} -c 'from joblet.cli.main import main; main()'"
    env = {"JOBLET_REDIS_URL": "redis://127.0.0.1:1/0", "PATH": "/usr/bin:/bin"}  # unreachable: exit 1
    done = subprocess.run(f"{rnx} {args} 2>&-", shell=True, capture_output=True, text=True, env=env)
    assert (done.returncode, done.stderr) == (code, "") and out in done.stdout
    shown = subprocess.run(f"{rnx} {args}", shell=True, capture_output=True, text=True, env=env)
    assert shown.returncode == code and (shown.stderr != "") == (code != 0)  # the control: said on stderr


def test_ctrl_c_while_rnx_loads_ends_it_quietly():
    """Ctrl-C during rnx's imports: exit 130 and no traceback (the import is made to raise
    KeyboardInterrupt, as the signal would); loaded, the same entry point runs (the control)."""
    interrupt = (
        "import sys\n"
        "class Stop:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'joblet.cli.main':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Stop())\n"
        "from joblet.cli.entry import main; main()\n"
    )
    stopped = subprocess.run([sys.executable, "-c", interrupt], capture_output=True, text=True)
    assert stopped.returncode == 130 and stopped.stderr == "" and stopped.stdout == ""
    plain = "import sys; sys.argv = ['rnx', '--help']\nfrom joblet.cli.entry import main; main()\n"
    done = subprocess.run([sys.executable, "-c", plain], capture_output=True, text=True)
    assert done.returncode == 0 and "Usage: rnx" in done.stdout


def test_ctrl_c_in_a_command_waiting_on_redis_exits_130_quietly(tmp_path: Path):
    """Ctrl-C while a command waits on a Redis that never answers (a unix socket that only
    accepts): 130 and nothing printed (click said "Aborted!" and exited 1); the control: the
    same rnx reads the socket's silence as a wait, it has not failed on its own before the signal."""
    import os
    import signal
    import socket

    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "redis.sock"))
    sock.listen(8)
    env = {**os.environ, "JOBLET_REDIS_URL": f"unix://{tmp_path / 'redis.sock'}", "JOBLET_CONFIG": "/dev/null"}
    rnx = Path(sys.executable).with_name("rnx")
    try:
        for argv in (["list"], ["network", "list"], ["run", "--network=none", "true"]):
            proc = subprocess.Popen([str(rnx), *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            conn, _ = sock.accept()  # it connected and waits for a reply
            assert proc.poll() is None  # the control: still waiting, not ended by an error
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
            conn.close()
            assert (proc.returncode, out, err) == (130, b"", b""), (argv, err)
    finally:
        sock.close()
