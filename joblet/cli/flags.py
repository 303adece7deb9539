"""Each limit's option in `rnx run`, with its unit after a bound in an error and after a value
in `rnx status` (one table: the errors and the status name what the user types)."""

from __future__ import annotations

LIMIT_FLAGS = {  # field of Limits: (option, unit in an error, unit shown with a value)
    "max_cpu": ("--max-cpu", " (percent of one CPU)", "%"),
    "max_memory": ("--max-memory", " MB", " MB"),
    "max_iobps": ("--max-iobps", " bytes/s", " bytes/s"),
    "max_bandwidth": ("--max-bandwidth", "", " bit/s"),
    "max_bandwidth_in": ("--max-bandwidth-in", "", " bit/s"),
    "max_bandwidth_out": ("--max-bandwidth-out", "", " bit/s"),
    "max_pids": ("--max-pids", "", ""),
    "max_disk": ("--max-disk", " MB", " MB"),
    "max_output": ("--max-output", " bytes", " bytes"),
}
