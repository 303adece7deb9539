"""Bash completion through rnx's own entry point, with the words bash hands over (split at
'=' and ':', COMP_WORDBREAKS) and a fake installation instead of Redis; the real one is in
tests/integration/test_completion.py."""

from __future__ import annotations

import re
from typing import Any

import pytest
from click import shell_completion

from joblet.cli import complete, entry, main
from joblet.cli.complete import rejoin


class Installation:
    """Runtimes with ':' in their names (the README's `python:3.11-ml`), and a network."""

    class networks:  # noqa: N801 - the client's attribute
        class store:  # noqa: N801
            @staticmethod
            def all() -> list[Any]:
                return [type("Net", (), {"name": "net1", "cidr": "10.1.0.0/24"})()]

    def runtimes(self) -> list[dict[str, Any]]:
        return [{"name": n, "nodes": ["a"]} for n in ("py:1", "py:2", "pypy", "node:20")]

    def live_nodes(self) -> dict[str, Any]:
        return {}


def bash_words(line: str, breaks: str = "=:") -> list[str]:
    """COMP_WORDS as bash splits `line` (runs of COMP_WORDBREAKS characters are words)."""
    words = re.findall(rf"[{breaks}]+|[^\s{breaks}]+", line)
    return [*words, ""] if line[-1].isspace() else words


def tab(monkeypatch, capsys, line: str, breaks: str = "=:") -> list[str]:
    """The lines bash makes of `line` with each completion rnx offers (readline replaces the
    text after the last space or break character), or `file` where bash offers its files."""
    monkeypatch.setattr(complete, "_client", Installation)
    # rnx's command tree as `rnx` runs it, without its start-up tricks (os._exit, a wakeup fd)
    monkeypatch.setattr(main, "main", lambda: main.cli(prog_name="rnx"))
    for name in ("bash", "zsh", "fish"):  # rnx registers its own: click's again after the test
        monkeypatch.setitem(shell_completion._available_shells, name, shell_completion._available_shells[name])
    words = bash_words(line, breaks)
    monkeypatch.setenv("_RNX_COMPLETE", "bash_complete")
    monkeypatch.setenv("COMP_WORDS", "\n".join(words))  # as the script passes them: IFS=$'\n'
    monkeypatch.setenv("COMP_CWORD", str(len(words) - 1))
    with pytest.raises(SystemExit):
        entry.main()
    start = max(line.rfind(c) for c in f" {breaks}") + 1
    offered = [row.split(",", 1) for row in capsys.readouterr().out.splitlines() if row]
    return [line[:start] + value if kind == "plain" else kind for kind, value in offered]


@pytest.mark.parametrize("sign", [" ", "="])
def test_a_value_with_a_colon_completes_after_the_colon(monkeypatch, capsys, sign):
    """`--runtime py:<TAB>` listed the directory's files, and `--runtime=py:<TAB>` too: bash
    had split the word at ':' and click read `py` as the runtime and `:` as the command."""
    line = f"rnx run --runtime{sign}"
    assert tab(monkeypatch, capsys, line + "p") == [line + v for v in ("py:1", "py:2", "pypy")]  # the control
    assert tab(monkeypatch, capsys, line + "py:") == [line + "py:1", line + "py:2"]
    assert tab(monkeypatch, capsys, line + "py:2") == [line + "py:2"]
    assert tab(monkeypatch, capsys, line + "py:9") == []  # only what exists
    assert tab(monkeypatch, capsys, line + "node:") == [line + "node:20"]


def test_a_value_with_a_colon_before_the_word_typed_is_read_whole(monkeypatch, capsys):
    line = "rnx run --runtime=py:1 --network "
    assert tab(monkeypatch, capsys, line + "ne") == [line + "net1"]
    assert tab(monkeypatch, capsys, "rnx run --runtime py:1 --network=ne") == ["rnx run --runtime py:1 --network=net1"]
    assert tab(monkeypatch, capsys, "rnx run --runtime py:1 ") == ["file"]  # the command: bash's files


def test_without_the_colon_in_comp_wordbreaks_the_whole_value_is_offered(monkeypatch, capsys):
    """A shell that took ':' out of COMP_WORDBREAKS (a common fix) hands over `py:` whole:
    readline replaces all of it, so the value is offered whole."""
    assert bash_words("rnx run --runtime py:", breaks="=") == ["rnx", "run", "--runtime", "py:"]
    line = "rnx run --runtime py:"
    assert tab(monkeypatch, capsys, line, breaks="=") == [line + "1", line + "2"]


@pytest.mark.parametrize(
    ("args", "incomplete", "want"),
    [
        (["run", "--runtime", "py"], ":", (["run", "--runtime"], "py:")),  # --runtime py:<TAB>
        (["run", "--runtime", "py", ":"], "1", (["run", "--runtime"], "py:1")),
        (["run", "--runtime", "=", "py"], ":", (["run"], "--runtime=py:")),
        (["run", "--runtime", "=", "a", "::"], "b", (["run"], "--runtime=a::b")),  # a run of signs is one word
        (["run", "--runtime", "=", "py", ":", "1", "--network", "="], "n", (["run", "--runtime=py:1"], "--network=n")),
        # after a space bash's word is empty (right after a sign, it is the sign): a new word
        (["run", "--runtime", "py", ":"], "", (["run", "--runtime", "py:"], "")),
        (["run", "--runtime"], "py", (["run", "--runtime"], "py")),  # no sign: as it was
    ],
)
def test_the_words_bash_split_at_a_colon_are_joined(args, incomplete, want):
    assert rejoin(args, incomplete) == want


@pytest.mark.parametrize(
    ("typed", "replaced", "value", "want"),
    [
        ("--runtime=py:", "", "py:1", "1"),  # readline's word: after the ':'
        ("py:1", "1", "py:1", "1"),
        ("--network=my", "my", "my-net", "my-net"),  # after the '=': click's value, as it was
        ("--runtime=py:", "--runtime=py:", "py:1", "--runtime=py:1"),  # the whole word replaced
        ("py:", "", "other", "other"),  # not a value of the text typed: left alone
    ],
)
def test_a_value_is_offered_as_the_text_the_shell_replaces(typed, replaced, value, want):
    from click.shell_completion import CompletionItem

    assert complete.replacing(typed, replaced, CompletionItem(value)).value == want
