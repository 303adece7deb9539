"""Zsh and fish completion through rnx's own entry point, with the words each shell's script
hands over and a fake installation instead of Redis. Neither splits a word at '=' or ':'; each
replaces the whole word typed with what is offered."""

from __future__ import annotations

import pytest
from click import shell_completion

from joblet.cli import complete, entry, main
from tests.unit.test_bash_completion import Installation


def offered(monkeypatch, capsys, shell: str, line: str) -> list[str]:
    """The words `shell` may put in place of the last word of `line` (COMP_WORDS and COMP_CWORD
    as `rnx completion zsh` and `rnx completion fish` set them)."""
    monkeypatch.setattr(complete, "_client", Installation)
    monkeypatch.setattr(main, "main", lambda: main.cli(prog_name="rnx"))
    for name in ("bash", "zsh", "fish"):  # rnx registers its own: click's again after the test
        monkeypatch.setitem(shell_completion._available_shells, name, shell_completion._available_shells[name])
    words = line.split(" ")
    cword = str(len(words) - 1) if shell == "zsh" else words[-1]  # zsh: $CURRENT-1; fish: the token
    monkeypatch.setenv("_RNX_COMPLETE", f"{shell}_complete")
    monkeypatch.setenv("COMP_WORDS", line)
    monkeypatch.setenv("COMP_CWORD", cword)
    with pytest.raises(SystemExit):
        entry.main()
    out = capsys.readouterr().out
    if shell == "zsh":  # type, value (':' escaped where it has a help text), help
        rows = out.splitlines()
        return [rows[i + 1].replace(r"\:", ":") for i in range(0, len(rows) - 2, 3) if rows[i] == "plain"]
    return [row.split(",", 1)[1].split("\t")[0] for row in out.splitlines() if row.startswith("plain,")]


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_the_option_value_form_is_offered_whole(monkeypatch, capsys, shell):
    """`--runtime=no<TAB>` made `rnx run node:20` in zsh, the option lost, and offered nothing
    in fish: each replaces the whole word with a value offered for the text after the '='."""
    assert offered(monkeypatch, capsys, shell, "rnx run --runtime no") == ["node:20"]  # the control
    assert offered(monkeypatch, capsys, shell, "rnx run --runtime=no") == ["--runtime=node:20"]
    assert offered(monkeypatch, capsys, shell, "rnx run --runtime=py:") == ["--runtime=py:1", "--runtime=py:2"]
    assert offered(monkeypatch, capsys, shell, "rnx run --runtime py:") == ["py:1", "py:2"]  # no split at ':'
    assert offered(monkeypatch, capsys, shell, "rnx run --network=ne") == ["--network=net1"]
    assert offered(monkeypatch, capsys, shell, "rnx run --netw") == ["--network"]  # an option's name: as it was
