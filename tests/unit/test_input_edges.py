"""Inputs at the edges of what is accepted: each is refused with one line naming what is
wrong (never a traceback), and the value beside it that is fine still passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from joblet.config import load as load_settings
from joblet.errors import ConfigError

JOB = "a" * 32


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("http://x", "must start with redis://, rediss://, unix://"),
        ("", "must have at least 1 character"),
        ("redis://127.0.0.1:abc/0", "has a port that is not a number"),
        ("redis://u:s3cret@h:99999/0", "'redis://***@h:99999/0' has a port"),
        ("unix://", "names no socket path"),
    ],
)
def test_a_redis_url_is_checked_when_read(monkeypatch, value, says):
    monkeypatch.setenv("JOBLET_REDIS_URL", value)
    with pytest.raises(ConfigError, match="^invalid setting redis_url") as caught:
        load_settings()
    assert says in str(caught.value) and "s3cret" not in str(caught.value)


def test_good_urls_pass(monkeypatch):
    for url in ("redis://127.0.0.1:6379/0", "rediss://:pw@h:6380/1", "unix:///run/r.sock"):
        monkeypatch.setenv("JOBLET_REDIS_URL", url)
        assert load_settings().redis_url == url
    monkeypatch.setenv("JOBLET_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
    assert load_settings().broker_url.startswith("amqp://")
    monkeypatch.setenv("JOBLET_BROKER_URL", "ftp://x")
    with pytest.raises(ConfigError, match="^invalid setting broker_url .* amqp://, amqps://$"):
        load_settings()


@pytest.mark.parametrize(
    ("make", "says"),
    [(lambda p: p.write_bytes(b'queue = "\xff"\n'), "is not UTF-8 text"), (Path.mkdir, "Is a directory")],
)
def test_an_unreadable_config_file_is_one_line(monkeypatch, tmp_path, make, says):
    conf = tmp_path / "joblet.toml"
    make(conf)
    monkeypatch.setenv("JOBLET_CONFIG", str(conf))
    with pytest.raises(ConfigError, match=says):
        load_settings()
