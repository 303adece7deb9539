"""Each limit's option in `rnx run`, with its unit after a bound in an error and after a value
in `rnx status` (one table: the errors and the status name what the user types)."""

from __future__ import annotations

from joblet.limit_names import ERROR_UNITS, SHOWN_UNITS, as_flag

LIMIT_FLAGS = {  # field of Limits: (option, unit in an error, unit shown with a value)
    field: (as_flag(field), ERROR_UNITS.get(field, ""), shown) for field, shown in SHOWN_UNITS.items()
}
