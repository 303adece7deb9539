"""Text from users shown to people (pure; clients and workers): a command, a name or an error
comes from whoever submitted the job or wrote the workflow file, and reaches an operator's
terminal, where a control character would act (set the window's title, its colours)."""

from __future__ import annotations


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
