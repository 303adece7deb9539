"""Settings: from the TOML file, then the environment (text), each checked; a bad one is a
ConfigError of one line naming the setting and its variable."""

from __future__ import annotations

import socket

import pytest

from joblet.config import default, load
from joblet.errors import ConfigError


@pytest.fixture(autouse=True)
def no_outside_settings(monkeypatch, tmp_path):
    import os

    for key in [k for k in os.environ if k.startswith("JOBLET_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("JOBLET_CONFIG", str(tmp_path / "none.toml"))
    (tmp_path / "none.toml").write_text("")


def test_defaults():
    cfg = load()
    assert cfg.concurrency == default("concurrency") == 512 and cfg.overlay is True
    assert cfg.node == default("node") == socket.gethostname()
    assert cfg.foreign_forward == "refuse" and cfg.dns_servers == () and cfg.signing_key is None
    assert "169.254.0.0/16" in cfg.job_blocked_networks  # the cloud metadata services


def test_blocked_networks_can_be_emptied(monkeypatch):
    monkeypatch.setenv("JOBLET_JOB_BLOCKED_NETWORKS", "")
    assert load().job_blocked_networks == ()


def test_environment_text_is_parsed(monkeypatch):
    monkeypatch.setenv("JOBLET_CONCURRENCY", " 64 ")
    monkeypatch.setenv("JOBLET_OVERLAY", "false")
    monkeypatch.setenv("JOBLET_ALLOW_HOST_NETWORK", "yes")
    monkeypatch.setenv("JOBLET_STOP_GRACE", "2.5")
    monkeypatch.setenv("JOBLET_DNS_SERVERS", "192.0.2.53, 2001:db8::1,")
    monkeypatch.setenv("JOBLET_STATE_DIR", "/tmp/state")
    monkeypatch.setenv("JOBLET_OUTPUT_MAX_BYTES", "8M")
    monkeypatch.setenv("JOBLET_NOT_A_SETTING", "x")  # other JOBLET_ variables: a warning, not an error
    cfg = load()
    assert (cfg.concurrency, cfg.overlay, cfg.allow_host_network, cfg.stop_grace) == (64, False, True, 2.5)
    assert cfg.dns_servers == ("192.0.2.53", "2001:db8::1")
    assert str(cfg.state_dir) == "/tmp/state" and cfg.output_max_bytes == 8 << 20


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("JOBLET_RUNDIR", " (did you mean JOBLET_RUN_DIR?)"),
        ("JOBLET_CONCURENCY", " (did you mean JOBLET_CONCURRENCY?)"),
        ("JOBLET_BOGUS", ""),
    ],
)
def test_an_unknown_variable_is_a_warning_naming_the_likely_one(monkeypatch, capsys, key, hint):
    monkeypatch.setenv(key, "/tmp/elsewhere")
    cfg = load()
    assert cfg.run_dir == default("run_dir") and cfg.concurrency == default("concurrency")  # ignored, not refused
    assert capsys.readouterr().err == f"joblet: warning: {key} is not a joblet setting, ignored{hint}\n"


def test_a_tab_completion_prints_no_warning(monkeypatch, capsys):
    """Each Tab loads the settings: a stray variable's warning landed on the command line."""
    monkeypatch.setenv("JOBLET_RUNDIR", "/tmp/elsewhere")
    monkeypatch.setenv("_RNX_COMPLETE", "bash_complete")
    load()
    assert capsys.readouterr().err == ""
    monkeypatch.delenv("_RNX_COMPLETE")
    load()  # the control
    assert "JOBLET_RUNDIR is not a joblet setting" in capsys.readouterr().err


def test_variables_of_the_scripts_tests_and_jobs_are_not_warned_about(monkeypatch, capsys):
    others = ["JOBLET_VENV", "JOBLET_REDIS_PASSWORD", "JOBLET_REDIS_PORT", "JOBLET_JOB_ID", "JOBLET_BENCH_BUSY_HOST"]
    for key in [*others, "JOBLET_FAULT_PAUSE", "JOBLET_FAULT_FILE", "JOBLET_FAULT_MARKER", "JOBLET_RUN_DIR"]:
        monkeypatch.setenv(key, "/tmp/x")
    assert str(load().run_dir) == "/tmp/x"
    assert capsys.readouterr().err == ""


def test_difflib_is_imported_only_for_an_unknown_variable(tmp_path):
    """rnx's start-up is measured: the look-up for a close name costs nothing without a typo."""
    import os
    import subprocess
    import sys

    probe = "import sys\nfrom joblet.config import load\nload()\nprint('difflib' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBLET_")}
    env["JOBLET_CONFIG"] = str(tmp_path / "none.toml")
    for extra, imported in (({}, "False"), ({"JOBLET_BOGUS": "1"}, "True")):
        out = subprocess.run([sys.executable, "-c", probe], env={**env, **extra}, capture_output=True, text=True)
        assert out.stdout.split() == [imported], out.stderr


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("CONCURRENCY", "0", "must be at least 1"),
        ("CONCURRENCY", "many", "must be an integer, not 'many'"),
        ("OVERLAY", "maybe", "must be true or false"),
        ("FOREIGN_FORWARD", "ignore", "must be one of refuse, insert, warn"),
        ("BRIDGE_CIDR", "10.0.0.0/30", "must be /29 or larger"),
        ("JOB_BLOCKED_ADDRESSES", "10.0.0.1", "is not host:port"),
        ("JOB_BLOCKED_NETWORKS", "169.254.169.254/16", "has host bits set"),
        ("JOB_BLOCKED_NETWORKS", "metadata.internal", "does not appear to be an IPv4 or IPv6 network"),
        ("SANDBOX_RO_PATHS", "relative/path", "is not an absolute path"),
        ("SANDBOX_RO_PATHS", "/opt/tools,/etc/ssl/", "is or holds /etc, which jobs see as a copy"),
        ("SANDBOX_RO_PATHS", "/", "is or holds /etc"),
        ("HEARTBEAT_INTERVAL", "0", "must be greater than 0"),
        ("JOB_OOM_SCORE_ADJ", "2000", "must be at most 1000"),
        ("DNS_SERVERS", "not-an-address", "does not appear to be an IPv4 or IPv6 address"),
        # a user network's bridge prefix: swept at every heartbeat as a bridge no network owns
        ("BRIDGE_NAME", "jbr0", "must not begin with 'jb', 'jx', 'jv', 'ji'"),
        ("BRIDGE_NAME", "jv0", "must not begin with 'jb'"),
        ("BRIDGE_NAME", "a-bridge-too-long", "must be a network interface name: 1 to 15 letters"),
        ("BRIDGE_NAME", "br 0", "letters, digits, '_', '.' or '-'"),
        ("BRIDGE_NAME", 'br"*', "letters, digits, '_', '.' or '-'"),  # the firewall's rules took no such name
        ("BRIDGE_NAME", "", "must have at least 1 character"),
    ],
)
def test_a_bad_value_names_the_setting(monkeypatch, name, value, says):
    monkeypatch.setenv(f"JOBLET_{name}", value)
    with pytest.raises(ConfigError) as caught:
        load()
    message = str(caught.value)
    assert message.startswith(f"invalid setting {name.lower()} (JOBLET_{name}): ") and "\n" not in message
    assert says in message


def test_the_file_then_the_environment(monkeypatch, tmp_path):
    conf = tmp_path / "joblet.toml"
    conf.write_text('concurrency = 32\noverlay = false\ndns_servers = ["192.0.2.1"]\nqueue = "q"\n')
    monkeypatch.setenv("JOBLET_CONFIG", str(conf))
    monkeypatch.setenv("JOBLET_QUEUE", "from-env")
    cfg = load()
    assert (cfg.concurrency, cfg.overlay, cfg.dns_servers, cfg.queue) == (32, False, ("192.0.2.1",), "from-env")
    conf.write_text("concurency = 32\n")  # misspelt: named as the file spells it, with a hint
    with pytest.raises(ConfigError, match=r"\.toml: 'concurency' is not a setting \(did you mean concurrency\?\)$"):
        load()
    for text, says in (
        ("CONCURRENCY = 32\n", r"'CONCURRENCY' is not a setting: keys are the settings' lowercase names \(concurrency"),
        ("JOBLET_QUEUE = 'q'\n", r"'JOBLET_QUEUE' is not a setting: keys are the settings' lowercase names \(queue"),
        ("[worker]\nconcurrency = 32\n", r"\[worker\] is a table: settings are top-level keys"),
    ):
        conf.write_text(text)
        with pytest.raises(ConfigError, match=says):
            load()
    conf.write_text("concurrency = -1\n")  # a bad value the environment overrides is still refused
    monkeypatch.setenv("JOBLET_CONCURRENCY", "8")
    with pytest.raises(ConfigError, match=r"joblet.toml: invalid concurrency: must be at least 1"):
        load()
    monkeypatch.delenv("JOBLET_CONCURRENCY")
    conf.write_text("concurrency = true\n")  # a bool is not a number
    with pytest.raises(ConfigError, match="must be an integer, not bool"):
        load()
    conf.write_text("overlay = 0\nallow_host_network = 1\nconcurrency = 64.0\n")  # as pydantic read them
    cfg = load()
    assert (cfg.overlay, cfg.allow_host_network, cfg.concurrency) == (False, True, 64)
    conf.write_text(f"stop_grace = {10**400}\n")
    with pytest.raises(ConfigError, match=r"joblet.toml: invalid stop_grace: is too large"):
        load()


@pytest.mark.parametrize(("word", "value"), [("t", True), ("Y", True), ("on", True), ("n", False), (" F ", False)])
def test_boolean_words(monkeypatch, word, value):
    monkeypatch.setenv("JOBLET_OVERLAY", word)
    assert load().overlay is value


def test_a_relative_cgroup_root_is_refused_as_such(monkeypatch):
    """`JOBLET_CGROUP_ROOT=joblet` was blamed on `ip netns exec` (operator's run)."""
    monkeypatch.setenv("JOBLET_CGROUP_ROOT", "joblet")
    with pytest.raises(ConfigError, match=r"cgroup_root \(JOBLET_CGROUP_ROOT\): 'joblet' is not an absolute path"):
        load()
    monkeypatch.setenv("JOBLET_CGROUP_ROOT", "/sys/fs/cgroup/unified/joblet")  # the control
    assert str(load().cgroup_root) == "/sys/fs/cgroup/unified/joblet"
    monkeypatch.setenv("JOBLET_CGROUP_ROOT", "")  # `${X:-}` in a unit or compose file: detected
    assert load().cgroup_root is None


def test_a_bridge_name_of_the_hosts_own_is_taken(monkeypatch):
    for name in ("joblet0", "br-jobs", "docker-j0", "a" * 15):  # the control: any other name
        monkeypatch.setenv("JOBLET_BRIDGE_NAME", name)
        assert load().bridge_name == name


def test_a_stop_before_the_start_outlives_the_jobs_message():
    """A client with log_ttl=3600 stopped a queued job whose keys expired in an hour; its
    message, valid for message_ttl (a day), then reached a worker, which made the job anew
    and ran it (review). The stop's keys live the longer of the two."""
    assert load(log_ttl="3600").unstarted_ttl == 86400
    assert load(log_ttl=str(7 * 86400)).unstarted_ttl == 7 * 86400  # the control: the default log_ttl is longer


def test_a_worker_keeps_records_as_long_as_a_message_may_come():
    """A worker whose log_ttl is shorter than message_ttl or visibility_timeout is refused: a
    job ended before it ran (LOST with its node, its workflow ended) or cut short by its
    crash had its record and claim expire, and its message, arriving or delivered again,
    made it anew (reviews)."""
    from joblet.errors import JobletError
    from joblet.worker.check import check_fleet_settings

    with pytest.raises(JobletError, match=r"^log_ttl 3600 s is less than message_ttl \(86400 s\)"):
        check_fleet_settings(load(log_ttl="3600", overlay="false"))
    with pytest.raises(JobletError, match=r"^log_ttl 600 s is less than visibility_timeout \(3600 s\)"):
        check_fleet_settings(load(log_ttl="600", message_ttl="600", overlay="false"))
    check_fleet_settings(load(log_ttl="600", message_ttl="600", visibility_timeout="600", overlay="false"))
    check_fleet_settings(load(overlay="false"))  # the control: the defaults
