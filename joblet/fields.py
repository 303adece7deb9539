"""Checks of typed fields for the job models and the settings (pure, standard library only).

The job spec, the job record, the limits and the settings are frozen dataclasses whose
`__post_init__` runs these checks: `rnx` loads them without pydantic (its import and the
models' schemas were ~40 ms of every `rnx run`, docs/PERFORMANCE_LOG.md item 15). A failed check raises
FieldError, a ValidationError whose one-line message names the field by its path
(`invalid job field 'limits.max_cpu': ...`). Types are strict where pydantic's lax mode
was not: a bool is not a number and a number is not a string. As before, a number may be
written as text ("50", a quoted value in a workflow file); in the settings a boolean may be
too (environment variables are text).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from joblet.errors import ValidationError

T = TypeVar("T")
log = logging.getLogger(__name__)
Loc = tuple[str, ...]


class FieldError(ValidationError, ValueError):
    """`what` field `loc` is invalid: `msg`. Also a ValueError, as pydantic's errors were."""

    def __init__(self, loc: str | Loc, msg: str, what: str = "job") -> None:
        self.loc = (loc,) if isinstance(loc, str) else tuple(loc)
        self.msg = msg
        self.what = what
        shown = ".".join(p if len(p) <= 64 else p[:61] + "..." for p in self.loc)  # a user's key may be long
        super().__init__(f"invalid {what} field {single_quoted(shown or what)}: {msg}")

    def under(self, *outer: str) -> FieldError:
        """The same error, its path prefixed (a nested model's field)."""
        return FieldError((*outer, *self.loc), self.msg, self.what)


def single_quoted(text: str) -> str:
    """`text` as repr writes it (one line, escapes), always in single quotes: a field named
    after an env key holding a ' must read like every other field."""
    shown = repr(text)
    return shown if shown.startswith("'") else "'" + shown[1:-1].replace("'", "\\'") + "'"


def no_nul(value: str, what: str) -> str:
    """Text a job's argv or environment can carry: no NUL, and bytes: UTF-8, or the surrogate
    escapes of bytes that were not (rnx's argv); a lone surrogate of another kind (an escaped
    "\\ud800" in JSON) failed its job on the worker with an internal error."""
    if "\x00" in value:
        raise ValueError(f"{what} contains a NUL byte")
    try:
        value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} holds {value[exc.start]!r}, a lone surrogate: not text, not bytes") from None
    return value


def checked(loc: str | Loc, check: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`check(*args)`, its ValueError as the FieldError of `loc`; so are an overflow and a
    recursion too deep (a hostile message's 400-digit number, its list nested 1000 deep)."""
    try:
        return check(*args, **kwargs)
    except FieldError as exc:
        raise exc.under(*((loc,) if isinstance(loc, str) else loc)) from None
    except (ValueError, ArithmeticError, RecursionError) as exc:
        msg = str(exc) if isinstance(exc, ValueError) else f"cannot be read ({type(exc).__name__})"
        raise FieldError(loc, msg) from None


def checked_all(obj: Any, checks: Mapping[str, Callable[[Any], Any]]) -> None:
    """A frozen dataclass's `__post_init__`: each field through its check (`checked`)."""
    for name, check in checks.items():
        object.__setattr__(obj, name, checked(name, check, getattr(obj, name)))


def text(value: Any, min_len: int = 0, max_len: int | None = None) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {type_name(value)}")
    if len(value) < min_len:
        raise ValueError(f"must have at least {min_len} character{'s' * (min_len != 1)}")
    if max_len is not None and len(value) > max_len:
        raise ValueError(f"must have at most {max_len} characters")
    return value


def matching(value: Any, pattern: re.Pattern[str], what: str, hint: str = "") -> str:
    """`value`, a string `pattern` matches, else ValueError 'invalid WHAT 'value'[: hint]'."""
    if not pattern.fullmatch(text(value)):
        raise ValueError(f"invalid {what} {brief(value)}" + (f": {hint}" if hint else ""))
    return str(value)


LAST_TIME = 253402300799  # 9999-12-31 23:59:59 UTC: the last second an ISO time holds (models.iso)


def epoch(value: Any) -> float:
    """A stored time: epoch seconds that an ISO date holds (models.iso)."""
    return number(value, ge=0, le=LAST_TIME)


def is_epoch(value: Any) -> bool:
    """Whether `value` passes `epoch`, as a test rather than an error."""
    real = isinstance(value, int | float) and not isinstance(value, bool)
    return real and 0 <= value <= LAST_TIME


def loaded(raw: str | bytes | None) -> Any:
    """A value read back from Redis as JSON, or None where it is none or does not read
    (written by other means: anyone who can write to Redis could have put anything there)."""
    import json

    try:
        return None if raw is None else json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser
        return None


def optional(check: Callable[..., T], value: Any, *args: Any, **kwargs: Any) -> T | None:
    return None if value is None else check(value, *args, **kwargs)


def integer(value: Any, ge: int | None = None, le: int | None = None) -> int:
    """An int; also a float or text of a whole number ("64", "64.0"), as pydantic's lax mode."""
    if isinstance(value, str):
        value = _parsed(float if "." in value or "e" in value.lower() else int, value, "an integer")
    if isinstance(value, bool) or not isinstance(value, int):
        if not (isinstance(value, float) and value.is_integer() and abs(value) < 2**63):
            raise ValueError(f"must be an integer, not {brief(value)}")
        value = int(value)
    whole: int = bounded(value, ge, le)
    return whole


def number(value: Any, ge: float | None = None, gt: float | None = None, le: float | None = None) -> float:
    if isinstance(value, str):
        value = _parsed(float, value, "a number")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number, not {type_name(value)}")
    if value != value:
        raise ValueError("must be a number, not NaN")
    try:
        found = float(value)
    except OverflowError:
        raise ValueError("is too large a number") from None
    if not math.isfinite(found):
        raise ValueError("must be a finite number")
    if gt is not None and not found > gt:
        raise ValueError(f"must be greater than {gt:g}")
    return float(bounded(found, ge, le))


def bounded(value: Any, ge: Any = None, le: Any = None) -> Any:
    if ge is not None and value < ge:
        raise ValueError(f"must be at least {ge}")
    if le is not None and value > le:
        raise ValueError(f"must be at most {le}")
    return value


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {type_name(value)}")
    return value


def strings(value: Any) -> tuple[str, ...]:
    """A list or tuple of strings, as a tuple."""
    if not isinstance(value, list | tuple):
        raise ValueError(f"must be a list of strings, not {type_name(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise FieldError(str(i), f"must be a string, not {type_name(item)}")
    return tuple(value)


def string_map(value: Any) -> dict[str, str]:
    """A mapping of strings to strings, as a new dict."""
    if not isinstance(value, Mapping):
        raise ValueError(f"must be a mapping of strings, not {type_name(value)}")
    for key, item in value.items():
        if not isinstance(key, str):
            raise ValueError(f"keys must be strings, not {type_name(key)}")
        if not isinstance(item, str):
            raise FieldError(key, f"must be a string, not {type_name(item)}")
    return dict(value)


def only_known(data: Any, known: Any, what: str = "job") -> dict[str, Any]:
    """`data` as a dict of keyword arguments, refusing a field that is not in `known`."""
    if not isinstance(data, Mapping):
        raise FieldError((), f"must be a mapping, not {type_name(data)}", what)
    for key in data:
        if not isinstance(key, str) or key not in known:
            raise FieldError(str(key), "unknown field", what)
    return dict(data)


def required(data: dict[str, Any], name: str) -> dict[str, Any]:
    """`data`, which must hold `name`."""
    if name not in data:
        raise FieldError(name, "is required")
    return data


def _parsed(kind: Callable[[str], Any], value: str, what: str) -> Any:
    """Text of a number: ASCII only (Python's int() also reads other scripts' digits)."""
    try:
        if value.isascii() and len(value) <= 64:
            return kind(value.strip())
    except ValueError:
        pass
    raise ValueError(f"must be {what}, not {value[:40]!r}")


def brief(value: object) -> str:
    """A value as an error shows it: text cut short, a number unless huge, else its type.
    Text as rnx shows names everywhere (text.printable): a byte that was not UTF-8 as `\xff`
    and a newline as `\x0a`; repr() showed them `\udcff` and `\n` (usability run)."""
    if isinstance(value, str):
        from joblet.text import printable

        return f"'{printable(value[:40])}'" + ("…" if len(value) > 40 else "")  # cut short: says so
    if isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool)):
        return "a number too large" if isinstance(value, int) and value.bit_length() > 128 else repr(value)
    return type_name(value)


def stored(cls: type[T], raw: str | bytes, what: str) -> T:
    """A definition read back from Redis (a network's, a volume's), its fields checked by the
    dataclass itself: anyone who can write to Redis could have put anything there, and one
    that did not read broke every job and listing that met it (red-team run). Raises a
    one-line ValidationError naming `what`."""
    import json

    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise ValidationError(f"the stored {what} does not read: not JSON") from None
    if not isinstance(data, Mapping):
        raise ValidationError(f"the stored {what} does not read: a {type_name(data)}, not a mapping")
    try:
        return cls(**known_fields(cls, data))
    except FieldError as exc:
        raise ValidationError(f"the stored {what} does not read: field {'.'.join(exc.loc)!r} {exc.msg}") from None
    except TypeError:  # a required field missing
        raise ValidationError(f"the stored {what} does not read: a field is missing") from None


def stored_named(cls: type[T], raw: str | bytes, kind: str, name: str) -> T:
    """`stored` of the definition a hash holds under `name`, which must be its own name."""
    item = stored(cls, raw, f'definition of {kind} "{name}"')
    named = getattr(item, "name", None)
    if named != name:
        raise ValidationError(f'the stored definition of {kind} "{name}" does not read: it names "{named}"')
    return item


def stored_by_name(cls: type[T], raw: Mapping[bytes, bytes], kind: str) -> dict[str, T]:
    """{name: definition} of a hash of stored definitions that read; one that does not is left
    out with a warning (one entry written by other means failed every listing, heartbeat and
    job that met it)."""
    found = {}
    for key, value in raw.items():
        name = key.decode(errors="replace")
        try:
            found[name] = stored_named(cls, value, kind, name)
        except ValidationError as exc:
            log.warning("%s: left out", exc)
    return found


def known_fields(cls: Any, data: Mapping[str, Any]) -> dict[str, Any]:
    """The items of `data` that are fields of the dataclass `cls`: a stored record keeps what
    this version knows of it, and drops what a newer one added."""
    return {k: v for k, v in data.items() if k in _field_names(cls)}


@functools.cache
def _field_names(cls: Any) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))


def type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__
