"""How each job limit is named and measured where users see it (pure data, no imports: `rnx
--help` loads it): its `rnx run` option, its unit after a bound in an error (`must be at
least 4 MB`, from `rnx run` or a workflow file alike) and after a value in `rnx status`."""

from __future__ import annotations

ERROR_UNITS = {  # field of Limits: unit after a bound in its error
    "max_cpu": " (percent of one CPU)",
    "max_memory": " MB",
    "max_iobps": " bytes/s",
    "max_disk": " MB",
    "max_output": " bytes",
}
SHOWN_UNITS = {  # field of Limits: unit shown after a value
    "max_cpu": "%",
    "max_memory": " MB",
    "max_iobps": " bytes/s",
    "max_bandwidth": " bit/s",
    "max_bandwidth_in": " bit/s",
    "max_bandwidth_out": " bit/s",
    "max_pids": "",
    "max_disk": " MB",
    "max_output": " bytes",
}


def as_flag(field: str) -> str:
    """A limit as `rnx run` names it: max_cpu -> --max-cpu."""
    return "--" + field.replace("_", "-")
