"""Shell completion from live data, through click's completion protocol (the environment
variables bash sets) against a real Redis and worker."""

from __future__ import annotations

import json
import os
import subprocess
import uuid

from tests.conftest import BIN
from tests.integration.helpers import complete, eventually


def test_completion_scripts_for_each_shell(host):
    for shell, marker in (("bash", "complete -o nosort -F"), ("zsh", "compdef"), ("fish", "complete --no-files")):
        out = host.rnx("completion", shell)
        assert out.returncode == 0 and b"_RNX_COMPLETE" in out.stdout and marker.encode() in out.stdout
    assert host.rnx("completion", "tcsh").returncode == 2


def test_job_ids_and_names_complete(host, client):
    name = f"cmp-{uuid.uuid4().hex[:6]}"
    job = json.loads(host.rnx("run", "-d", "--json", "--network=none", f"--name={name}", "sleep", "60").stdout)
    try:
        assert name in complete(host, "status", "cmp-")
        assert job["id"][:12] in complete(host, "stop", job["id"][:4])
        assert complete(host, "log", "zz-no-such") == []  # only what exists
        assert job["id"][:12] in complete(host, "stats", "")
    finally:
        host.rnx("stop", job["id"])
    # ended: still there to read, nothing to stop or sample (every job of the week was offered)
    assert job["id"][:12] in complete(host, "log", job["id"][:4])
    assert complete(host, "stop", job["id"][:4]) == complete(host, "stats", job["id"][:4]) == []
    assert name in complete(host, "list", "--name", name[:5])  # names alone, no ids
    assert complete(host, "list", "--name", job["id"][:4]) == []


def test_what_was_typed_is_not_offered_again_and_files_are_the_shells(host, client):
    """`rnx stop a <TAB>` offered `a` again; after `rnx run` nothing at all was offered, not
    even file names; `--status=running,<TAB>` offered nothing (usability run)."""
    names = [f"cmq-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    for name in names:
        assert host.rnx("run", "-d", "--network=none", f"--name={name}", "sleep", "60").returncode == 0
    try:
        assert set(names) <= set(complete(host, "stop", "cmq-"))  # the control: both offered
        assert names[1] in complete(host, "stop", names[0], "cmq-") and names[0] not in complete(
            host, "stop", names[0], "cmq-"
        )
    finally:
        host.rnx("stop", *names)
    assert complete(host, "run", "", typed=True) == ["file,"]  # bash's own file names
    assert complete(host, "run", "python3", "ap", typed=True) == ["file,ap"]
    assert complete(host, "run", "--upload", "x", typed=True) == ["file,x"]  # the control: click's Path
    offered = complete(host, "list", "--status", "=", "running,")
    assert "running,failed" in offered and "running,running" not in offered
    assert complete(host, "list", "--status", "=", "running,co") == ["running,completed"]


def test_networks_volumes_nodes_and_runtimes_complete(host, client):
    net, vol = f"cn{uuid.uuid4().hex[:6]}", f"cv{uuid.uuid4().hex[:6]}"
    (host.tmp / "runtimes" / "cr-py" / "bin").mkdir(parents=True)
    assert host.rnx("network", "create", net, "--cidr=10.81.0.0/24").returncode == 0
    assert host.rnx("volume", "create", vol).returncode == 0
    try:
        offered = set(complete(host, "run", "--network", ""))
        # host only where a live node allows it: this test's worker does not (the default)
        assert {"bridge", "isolated", "none", net} <= offered and "host" not in offered, offered
        assert complete(host, "network", "inspect", net[:4]) == [net]
        # the guide's `--network=NAME`, which bash hands over split at '=' (usability run)
        assert complete(host, "run", "--network", "=", net[:4]) == [net]
        assert net in complete(host, "run", "--network", "=")  # right after the sign
        assert complete(host, "run", "--volume", "=", vol[:4]) == [vol]
        deletable = complete(host, "network", "delete", "")
        assert net in deletable and "bridge" not in deletable  # built-ins cannot be deleted
        assert complete(host, "run", "--volume", vol[:4]) == [vol]
        assert complete(host, "volume", "delete", vol[:4]) == [vol]
        assert host.name in complete(host, "run", "--node", "")
        assert host.name in complete(host, "list", "--node", "")
        assert host.name in complete(host, "node", "drain", "")  # forget refuses a node that is up:
        assert host.name not in complete(host, "node", "forget", "")  # not offered there
        eventually(lambda: "cr-py" in complete(host, "run", "--runtime", "cr"), "runtime offered")
        assert complete(host, "list", "--status", "ru") == ["running"]
    finally:
        host.rnx("network", "delete", net)
        host.rnx("volume", "delete", vol)


def test_completion_without_redis_offers_nothing_quietly(host):
    assert host.name in complete(host, "run", "--node", "")  # positive control
    assert complete(host, "run", "--node", "", env={"JOBLET_REDIS_URL": "redis://127.0.0.1:1/0"}) == []


def test_completion_against_a_hung_redis_gives_up_within_a_second_or_two(host, tmp_path):
    """A Redis that accepts and never answers (here a socket nobody accepts on) held the
    shell for 30 s, rnx's read timeout; completion waits about a second."""
    import socket

    hung = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    hung.bind(str(tmp_path / "hung.sock"))
    hung.listen(8)
    try:
        env = {"JOBLET_REDIS_URL": f"unix://{tmp_path}/hung.sock"}
        assert complete(host, "stop", "", env=env, timeout=15) == []  # was 30 s: the timeout fired
        assert host.name in complete(host, "run", "--node", "", timeout=15)  # the control
    finally:
        hung.close()


def test_workflows_complete_and_a_request_without_the_shells_words_is_quiet(host, tmp_path):
    """`rnx workflow status <TAB>` offered nothing; `_RNX_COMPLETE=bash_complete rnx` run
    by hand (no COMP_WORDS) printed click's KeyError traceback."""
    path = tmp_path / "cmpwf.yaml"
    path.write_text("jobs:\n  only: {command: 'true', network: none}\n")
    started = host.rnx("workflow", "run", "-d", str(path))
    assert started.returncode == 0, started.stderr
    wf_id = started.stdout.decode().strip()
    assert wf_id[:12] in complete(host, "workflow", "status", wf_id[:4])
    assert "cmpwf" in complete(host, "workflow", "stop", "cmp")
    assert complete(host, "workflow", "status", "zz-no-such") == []  # only what exists
    for shell in ("bash", "zsh", "fish"):  # each reads the shell's words from COMP_WORDS
        bare = subprocess.run(
            [str(BIN / "rnx")],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **host.env, "_RNX_COMPLETE": f"{shell}_complete"},
        )
        assert bare.returncode == 0 and bare.stderr == "" and bare.stdout == "", (shell, bare)


def test_host_networking_is_offered_where_a_live_node_allows_it(redis_sock):
    """The control of the test above: a worker with allow_host_network offers `host`."""
    from tests.conftest import running_host

    for open_host in running_host(redis_sock, "cmphost", allow_host_network="true"):
        assert "host" in complete(open_host, "run", "--network", "h")
