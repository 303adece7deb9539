"""A job's resource limits (pure): CPU, memory, block I/O, network bandwidth and output bytes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from joblet.fields import brief, checked, integer, only_known

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(bit|bps|b)?(?:/s)?\s*$", re.IGNORECASE | re.ASCII)
_SCALE = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}  # tc's prefixes (1tbit is the most)
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])(?:i?b)?|b)?\s*$", re.IGNORECASE | re.ASCII)
_BINARY = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
MAX_TEXT = 64  # longer rates and sizes are refused unread


MAX_RATE = 10**12  # bits per second


def parse_rate(text: str | int) -> int:
    """A network rate in bits per second: '10mbit', '512kbit', '1gbit', '2mbps' (bytes), 800000.

    As in tc: 'bit' is bits, 'bps' is bytes per second; a bare number is bits per second.
    '10MB' is refused: it read as 10 megabits where joblet's sizes read it as bytes.
    """
    if isinstance(text, bool) or not isinstance(text, int | str):
        raise ValueError(f"invalid rate {brief(text)}: use e.g. 10mbit, 512kbit or 1gbit")
    if isinstance(text, int):
        value = text
    else:
        m = _RATE.match(text) if len(text) <= MAX_TEXT else None  # the pattern is quadratic on long text
        if not m:
            raise ValueError(f"invalid rate {brief(text)}: use e.g. 10mbit, 512kbit or 1gbit")
        if (m.group(3) or "").lower() == "b":  # bits in tc's words, bytes in a size's (--max-output=10MB)
            raise ValueError(
                f"ambiguous rate {brief(text)}: say {m.group(1)}{m.group(2).lower()}bit for bits "
                f"or {m.group(1)}{m.group(2).lower()}bps for bytes per second"
            )
        number, scale, unit = float(m.group(1)), _SCALE[m.group(2).lower()], (m.group(3) or "bit").lower()
        value = int(number * scale * (8 if unit == "bps" else 1))
    if value < 8000:
        raise ValueError(f"rate {brief(text)} is below 8kbit")
    if value > MAX_RATE:  # tc's bucket (10 ms of the rate) must fit its 32 bits
        raise ValueError(f"rate {brief(text)} is above 1000gbit")
    return value


def parse_bytes(text: str | int) -> int:
    """A size in bytes: 64M, 512K, 1G (also 64MB, 64MiB; binary units, as Docker), or a number."""
    if isinstance(text, bool) or not isinstance(text, int | str):
        raise ValueError(f"invalid size {brief(text)}: use e.g. 64M, 512K, 1G or a number of bytes")
    if isinstance(text, int):
        value = text
    else:
        m = _SIZE.match(text) if len(text) <= MAX_TEXT else None
        if not m:
            raise ValueError(f"invalid size {brief(text)}: use e.g. 64M, 512K, 1G or a number of bytes")
        value = int(float(m.group(1)) * _BINARY[(m.group(2) or "").lower()])
    if value < 0:
        raise ValueError(f"size {brief(text)} is negative")
    return value


@dataclass(frozen=True, slots=True)
class Amount:
    """How a limit is written where users write it, `rnx run`'s option and a workflow's
    `resources` alike: a whole number in the limit's own unit, or with a unit of its kind
    (`1G`, `50%`). A workflow's `max_memory: 1G` was "must be an integer" while
    `--max-memory=1G` was taken (usability run). `scale` turns a size in bytes into the unit
    (MB: 1 MiB; bytes: 1); None: a percent, whose sign alone may follow."""

    unit: str
    what: str
    scale: int | None
    example: str

    def parse(self, value: str | int) -> int:
        """`value` in the unit; a ValueError says which unit it is not. Its bounds are the
        Limits' to check (`-5` is read, then refused as below 4 MB)."""
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        text = str(value).strip()
        if self.scale is None:
            text = text.removesuffix("%").strip()
        if re.fullmatch(r"[+-]?[0-9]{1,20}", text, re.ASCII):
            return int(text)
        count = self._bytes(text)
        if count is not None and self.scale is not None and count % self.scale == 0:
            return count // self.scale
        if count is not None:  # `512K` read as 0 MB, then refused as such (review)
            raise ValueError(f"{brief(value)} is not a whole number of {self.unit}")
        raise ValueError(f"{brief(value)} is not {self.what} (e.g. {self.example})")

    def _bytes(self, text: str) -> int | None:
        """A size's bytes, where the unit is a size's; else None."""
        if self.scale is None:
            return None
        try:
            return parse_bytes(text)
        except ValueError:
            return None


UNITS = {
    amount.unit: amount
    for amount in (
        Amount("percent", "a percent", None, "50 or 50%"),
        Amount("MB", "a number of MB", 1 << 20, "512 or 1G"),
        Amount("bytes", "a number of bytes", 1, "10485760 or 10M"),
    )
}
IN_UNITS = {"max_cpu": "percent", "max_memory": "MB", "max_iobps": "bytes", "max_disk": "MB"}  # field: its unit


def with_units(limits: Any) -> Any:
    """Limits as a workflow's `resources` writes them, its text in a unit read as `rnx run`
    reads its option (`max_memory: 1G` is 1024, `max_cpu: 50%` is 50); numbers, other
    fields and what is not a mapping are the Limits' checks' to take or refuse."""
    if not isinstance(limits, dict):
        return limits
    return {
        k: checked(k, UNITS[IN_UNITS[k]].parse, v) if isinstance(v, str) and k in IN_UNITS else v
        for k, v in limits.items()
    }


_DURATION = re.compile(r"(?:([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ms|s|m|h|d))+", re.ASCII)
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ms|s|m|h|d)", re.ASCII)
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: Any) -> float:
    """Seconds: a number (90, 1.5), or numbers with units as Go and Docker write them (90s,
    5m, 1h30m, 2d, 250ms). `--timeout=10s` was refused as "not a valid float" while sizes
    took units, and `1_000` (Python's float) was 1000 (usability run)."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    shown = brief(text)
    if isinstance(text, str) and len(text) <= MAX_TEXT:
        word = text.strip()
        if re.fullmatch(r"[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+", word, re.ASCII):
            return float(word)
        if _DURATION.fullmatch(word):
            return sum(float(n) * _SECONDS[u] for n, u in _DURATION_PART.findall(word))
    raise ValueError(f"invalid duration {shown}: use seconds (90) or units (90s, 5m, 1h30m, 2d)")


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-job limits; None means unlimited. Rates may be given as text ('10mbit'), max_output
    as a size ('8M'); both are kept as numbers."""

    max_cpu: int | None = None  # percent of one CPU (200 = two)
    max_memory: int | None = None  # megabytes
    max_iobps: int | None = None  # block device bytes/s, read and write
    max_bandwidth: int | None = None  # network bits/s, each direction
    max_bandwidth_in: int | None = None  # network bits/s into the job
    max_bandwidth_out: int | None = None  # network bits/s out of the job
    max_pids: int | None = None  # processes and threads
    max_disk: int | None = None  # megabytes of /work, and of /tmp
    max_output: int | None = None  # bytes of output kept (stdout and stderr), then truncated

    def __post_init__(self) -> None:
        for name, (parse, bounds) in _CHECKS.items():
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, checked(name, parse, value, *bounds))

    @classmethod
    def from_dict(cls, data: Any) -> Limits:
        return data if isinstance(data, Limits) else cls(**only_known(data, _CHECKS))

    def to_dict(self) -> dict[str, int | None]:
        return {name: getattr(self, name) for name in _CHECKS}

    def rate_in(self) -> int | None:
        """bits/s into the job: its own setting, else --max-bandwidth, else --max-iobps as bits."""
        return self.max_bandwidth_in or self._shared()

    def rate_out(self) -> int | None:
        return self.max_bandwidth_out or self._shared()

    def _shared(self) -> int | None:
        if self.max_bandwidth is not None:
            return self.max_bandwidth
        return min(self.max_iobps * 8, MAX_RATE) if self.max_iobps is not None else None  # the guide's reading


def above_ceiling(
    limits: Limits, disk_mb: int | None, pids: int | None, output: int | None = None
) -> tuple[str, int, int, str] | None:
    """(field, asked, ceiling, unit) of the first limit above a worker's ceiling (`max_disk`
    in MB, `max_pids`, `max_output` in bytes; a ceiling None is not known), or None: what a
    worker refuses and what placement therefore does not send it. `--max-output` above the
    worker's was capped to it while `rnx status` showed what was asked (red-team run: 99G
    shown, 64 MiB kept): refused now, as a --max-disk above its ceiling is."""
    for field, asked, ceiling, unit in (
        ("max_disk", limits.max_disk, disk_mb, " MB"),
        ("max_pids", limits.max_pids, pids, ""),
        ("max_output", limits.max_output, output, " bytes"),
    ):
        if isinstance(ceiling, int) and asked is not None and asked > ceiling:
            return field, asked, ceiling, unit
    return None


def _size_bytes(value: Any, ge: int, le: int) -> int:
    return integer(parse_bytes(value), ge, le)


_CHECKS: dict[str, tuple[Any, tuple[int | None, ...]]] = {  # field: (check, its bounds)
    "max_cpu": (integer, (1, 100_000)),
    "max_memory": (integer, (4, 1 << 40)),  # MB: beyond, a cgroup reads it as no limit at all
    "max_iobps": (integer, (4096, 1 << 50)),
    "max_bandwidth": (parse_rate, ()),
    "max_bandwidth_in": (parse_rate, ()),
    "max_bandwidth_out": (parse_rate, ()),
    "max_pids": (integer, (8, 1_000_000)),
    "max_disk": (integer, (1, 1_048_576)),
    "max_output": (_size_bytes, (1024, 1 << 50)),
}
