"""Text from users shown to people (pure; clients and workers): a command, a name or an error
comes from whoever submitted the job or wrote the workflow file, and reaches an operator's
terminal, where a control character would act (set the window's title, its colours)."""

from __future__ import annotations

from collections.abc import Iterable


def printable(text: str) -> str:
    """`text` with what a terminal would act on shown as escapes (ESC, other controls, bidi
    overrides): a command, a name or an error comes from whoever submitted the job or wrote
    the workflow file, and must not set the operator's window title or colours."""
    if text.isprintable():
        return text
    return "".join(_escaped(c) for c in text)


def _escaped(c: str) -> str:
    """A character as printable() shows it; a surrogate escape (a byte that was not UTF-8 in
    rnx's argv) as that byte: `no such job: \\xff`, not `\\udcff`."""
    if c.isprintable():
        return c
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 256 else f"\\u{code:04x}"


def sized(count: int) -> str:
    """A number of bytes as people read it: `64 MiB` where it is a whole number of a binary
    unit, else `N bytes` (a ceiling of 67108864 bytes named no unit anyone types)."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if count >= 1 << shift and count % (1 << shift) == 0:
            return f"{count >> shift} {unit}"
    return f"{count} bytes"


def shown(name: str, most: int = 64) -> str:
    """A name from the user as an error repeats it: at most `most` characters, the cut said
    (`rnx status` of a 100,000-character id printed it whole), and printable."""
    return printable(name[:most]) + ("…" if len(name) > most else "")


def alike(name: str, choices: Iterable[str]) -> list[str]:
    """The choices a mistyped name may have meant: those equal to it but for case, else at most
    three close in spelling (case ignored)."""
    import difflib

    known = [str(c) for c in choices]
    same = [c for c in known if c.lower() == name.lower()]
    if same:
        return same
    by_lower: dict[str, list[str]] = {}  # every spelling: `myapp` and `MYAPP` may both exist
    for c in known:
        by_lower.setdefault(c.lower(), []).append(c)
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.75)
    return [c for m in close for c in by_lower[m]]


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`did you mean 'x'?` for what `alike` finds, else ''."""
    found = alike(name, choices)
    return f"did you mean {' or '.join(repr(c) for c in found)}?" if found else ""


def hinted(name: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for what `alike` finds, else ''."""
    found = did_you_mean(name, choices)
    return f" ({found})" if found else ""


def listed(items: list[str], most: int = 5) -> str:
    """`a, b, c, d, e, ...`: the first `most`, and whether there are more (a count beside five
    ids read as if the five were all)."""
    return ", ".join(items[:most]) + (", ..." if len(items) > most else "")
