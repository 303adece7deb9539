"""What users typed, shown back: controls escaped, and the names a typo may have meant."""

from __future__ import annotations

from joblet.text import alike, did_you_mean, printable


def test_printable_escapes_what_a_terminal_acts_on():
    assert printable("plain name") == "plain name"
    assert printable("\x1b[31mred") == "\\x1b[31mred"
    assert printable("no\udcffsuch") == "no\\xffsuch"  # a byte that was not UTF-8, as that byte
    assert printable("a\u202eb") == "a\\u202eb"  # a bidi override


def test_alike_prefers_the_same_name_in_another_case_then_close_spellings():
    names = ["uxapp", "backend", "UXAPP2", "frontend"]
    assert alike("UXAPP", names) == ["uxapp"]
    assert alike("backnd", names) == ["backend"]
    assert alike("frontent", names) == ["frontend"]
    assert alike("zzz", names) == [] and alike("x", []) == []
    assert did_you_mean("Backend", names) == "did you mean 'backend'?"
    assert did_you_mean("zzz", names) == ""
    assert did_you_mean("a" * 100_000, names) == ""  # a long key: no hint, and no wait


def test_alike_keeps_every_spelling_of_a_close_name():
    """Networks and volumes are named with case: `myapp` and `MYAPP` may both exist, and the
    hint for `myapp2` named only the one written last (usability run)."""
    assert alike("myapp2", ["myapp", "MYAPP", "other"]) == ["myapp", "MYAPP"]


def test_a_long_name_is_cut_where_an_error_repeats_it():
    from joblet.text import shown

    assert shown("a" * 100_000) == "a" * 64 + "…" and shown("web\x1b") == "web\\x1b" and shown("x" * 64) == "x" * 64
