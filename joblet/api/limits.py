"""A job's resource limits (pure): CPU, memory, block I/O, network bandwidth and output bytes."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)(bit|bps|b)?(?:/s)?\s*$", re.IGNORECASE)
_SCALE = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])(?:i?b)?|b)?\s*$", re.IGNORECASE)
_BINARY = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_rate(text: str | int) -> int:
    """A network rate in bits per second: '10mbit', '512kbit', '1gbit', '2mbps' (bytes), 800000.

    As in tc: 'bit' is bits, 'bps' is bytes per second; a bare number is bits per second.
    """
    if isinstance(text, bool) or not isinstance(text, int | str):
        raise ValueError(f"invalid rate {text!r}: use e.g. 10mbit, 512kbit or 1gbit")
    if isinstance(text, int):
        value = text
    else:
        m = _RATE.match(text)
        if not m:
            raise ValueError(f"invalid rate {text!r}: use e.g. 10mbit, 512kbit or 1gbit")
        number, scale, unit = float(m.group(1)), _SCALE[m.group(2).lower()], (m.group(3) or "bit").lower()
        value = int(number * scale * (8 if unit == "bps" else 1))
    if value < 8000:
        raise ValueError(f"rate {text!r} is below 8kbit")
    return value


def parse_bytes(text: str | int) -> int:
    """A size in bytes: 64M, 512K, 1G (also 64MB, 64MiB; binary units, as Docker), or a number."""
    if isinstance(text, bool) or not isinstance(text, int | str):
        raise ValueError(f"invalid size {text!r}: use e.g. 64M, 512K, 1G or a number of bytes")
    if isinstance(text, int):
        value = text
    else:
        m = _SIZE.match(text)
        if not m:
            raise ValueError(f"invalid size {text!r}: use e.g. 64M, 512K, 1G or a number of bytes")
        value = int(float(m.group(1)) * _BINARY[(m.group(2) or "").lower()])
    if value < 0:
        raise ValueError(f"size {text!r} is negative")
    return value


class Limits(BaseModel):
    """Per-job limits; None means unlimited."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_cpu: int | None = Field(None, ge=1, le=100_000, description="percent of one CPU (200 = two)")
    max_memory: int | None = Field(None, ge=4, description="megabytes")
    max_iobps: int | None = Field(None, ge=4096, description="block device bytes/s, read and write")
    max_bandwidth: int | None = Field(None, description="network bits/s, each direction")
    max_bandwidth_in: int | None = Field(None, description="network bits/s into the job")
    max_bandwidth_out: int | None = Field(None, description="network bits/s out of the job")
    max_pids: int | None = Field(None, ge=8, le=1_000_000, description="processes and threads")
    max_disk: int | None = Field(None, ge=1, le=1_048_576, description="megabytes of /work, and of /tmp")
    max_output: int | None = Field(
        None, ge=1024, le=1 << 50, description="bytes of output kept (stdout and stderr), then truncated"
    )

    @field_validator("max_bandwidth", "max_bandwidth_in", "max_bandwidth_out", mode="before")
    @classmethod
    def _rate(cls, value: str | int | None) -> int | None:
        return None if value is None else parse_rate(value)

    @field_validator("max_output", mode="before")
    @classmethod
    def _size(cls, value: str | int | None) -> int | None:
        return None if value is None else parse_bytes(value)

    @property
    def any(self) -> bool:
        return any(v is not None for v in self.model_dump().values())

    def rate_in(self) -> int | None:
        """bits/s into the job: its own setting, else --max-bandwidth, else --max-iobps as bits."""
        return self.max_bandwidth_in or self._shared()

    def rate_out(self) -> int | None:
        return self.max_bandwidth_out or self._shared()

    def _shared(self) -> int | None:
        if self.max_bandwidth is not None:
            return self.max_bandwidth
        return self.max_iobps * 8 if self.max_iobps is not None else None  # the guide's reading
