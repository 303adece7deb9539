"""Network and volume definitions read back from Redis are checked field by field: anyone who
can write there could put anything, and one that did not read failed every job, listing and
heartbeat that met it (red-team run)."""

from __future__ import annotations

import json

import pytest

from joblet.api.networks import NetworkDef
from joblet.api.volumes import VolumeDef
from joblet.errors import ValidationError

GOOD_NET = {"name": "web", "cidr": "10.30.0.0/24", "internal": False, "dns": ["10.30.0.53"], "mtu": 1400, "vni": 5000}
GOOD_VOL = {"name": "data", "size_mb": 64, "created": 1.5}


def test_good_definitions_read_and_unknown_fields_are_ignored():
    net = NetworkDef.from_json(json.dumps({**GOOD_NET, "added_later": 1}), "web")
    assert (net.cidr, net.dns, net.mtu, net.vni) == ("10.30.0.0/24", ("10.30.0.53",), 1400, 5000)
    assert net.created is None  # written before networks kept their create time
    assert NetworkDef.from_json(json.dumps({**GOOD_NET, "created": 1.5e9}), "web").created == 1.5e9
    assert VolumeDef.from_json(json.dumps(GOOD_VOL), "data") == VolumeDef("data", 64, 1.5)
    assert VolumeDef.from_json(json.dumps({"name": "plain"})).size_mb is None


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"cidr": "10.30.0.1/24"}, "field 'cidr' is not an IPv4 network"),
        ({"cidr": "fd00::/64"}, "field 'cidr' is not an IPv4 network"),
        ({"cidr": 7}, "field 'cidr' must be a string"),
        ({"internal": "no"}, "field 'internal' must be true or false"),
        ({"dns": "10.0.0.1"}, "field 'dns' must be a list of strings"),
        ({"dns": ["resolver"]}, "field 'dns'"),
        ({"mtu": 10}, "field 'mtu' must be at least 576"),
        ({"vni": -1}, "field 'vni' must be at least"),
        ({"created": "yesterday"}, "field 'created' must be a number"),
        ({"created": -1}, "field 'created' must be at least 0"),
        ({"created": 1e18}, "field 'created' must be at most"),  # no date holds it: iso() failed every listing
        ({"name": "../x"}, "field 'name' invalid network name"),
    ],
)
def test_a_network_definition_that_does_not_read_says_which_field(change, why):
    with pytest.raises(ValidationError, match=r'^the stored definition of network "web" does not read: ' + why):
        NetworkDef.from_json(json.dumps({**GOOD_NET, **change}), "web")


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("notjson", "not JSON"),
        ("[1, 2]", "a list, not a mapping"),
        ('{"name": "web"}', "a field is missing"),
        ("[" * 5000 + "]" * 5000, "not JSON"),
    ],
)
def test_what_is_no_definition_at_all(raw, why):
    with pytest.raises(ValidationError, match=f"does not read: {why}"):
        NetworkDef.from_json(raw, "web")


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"size_mb": "x"}, "field 'size_mb' must be an integer"),
        ({"size_mb": 0}, "field 'size_mb' must be at least 1"),
        ({"created": "soon"}, "field 'created' must be a number"),
        ({"name": "a/b"}, "field 'name' invalid volume name"),
    ],
)
def test_a_volume_definition_that_does_not_read_says_which_field(change, why):
    with pytest.raises(ValidationError, match=r'^the stored definition of volume "data" does not read: ' + why):
        VolumeDef.from_json(json.dumps({**GOOD_VOL, **change}), "data")


def test_a_deletes_announcement_redis_missed_is_not_the_deletes_failure(caplog):
    """The volume was deleted, then the event's publish met Redis gone: the user read a failure,
    and the retry "no such volume" (review). It is logged; the workers' sweeps act on it."""
    from redis.exceptions import ConnectionError as RedisGone

    from joblet.api.store import Store
    from joblet.errors import BackendUnavailable

    class Gone:
        def register_script(self, script: str) -> None:
            return None

        def publish(self, channel: str, message: str) -> None:
            raise RedisGone("Error 2 connecting to unix socket: /x. No such file or directory.")

    store = Store("unix:///x", client=Gone())
    with pytest.raises(BackendUnavailable):  # the control: the publish itself fails
        store.publish_event("volume-deleted", name="data")
    store.announce("volume-deleted", name="data")
    assert "the workers learn it at their next heartbeat" in caplog.text


def test_a_time_no_date_holds_reads_as_unknown():
    """A record's time written past rnx (1e18, -1e18, inf) failed iso(), and with it every
    listing that showed it; the last second of year 9999 still reads (the control)."""
    from joblet.api.models import iso
    from joblet.fields import LAST_TIME

    assert iso(LAST_TIME) == "9999-12-31T23:59:59.000+00:00"
    assert iso(1e18) is iso(-1e18) is iso(float("inf")) is None
