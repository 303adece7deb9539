"""Writing a job's output to the terminal, byte for byte."""

from __future__ import annotations

import sys


def write_chunk(stream: str, data: bytes) -> None:
    out = sys.stdout if stream == "stdout" else sys.stderr
    out.buffer.write(data)
    out.buffer.flush()
