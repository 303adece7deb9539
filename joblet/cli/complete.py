"""Shell completion from live data: click `shell_complete` callbacks for job ids and names,
networks, volumes, runtimes and nodes. A completion never fails loudly: no Redis, no list."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import click
from click.shell_completion import CompletionItem

BUILTIN_NETWORKS = ("bridge", "isolated", "none", "host")
LIVE = ("PENDING", "RUNNING")  # jobs that have not ended (store.LIVE_STATUSES): offered first
ENDED_OFFERED = 200  # then the newest ended ones among this many newest jobs (rnx log, status)


def _client() -> Any:
    from joblet.api import resp
    from joblet.api.client import Client

    # the shell waits for the list: a Redis that hangs gives nothing at once, not in 30 s
    resp.CONNECT_TIMEOUT = resp.READ_TIMEOUT = COMPLETION_WAIT
    return Client()


COMPLETION_WAIT = 1.0


def _items(incomplete: str, found: Callable[[Any], Iterable[tuple[str, str | None]]]) -> list[CompletionItem]:
    try:
        pairs = list(found(_client()))
    except Exception:  # noqa: BLE001 - no Redis, bad settings: complete nothing
        return []
    seen: set[str] = set()
    out = []
    for value, help_text in pairs:
        if value.startswith(incomplete) and value not in seen:
            seen.add(value)
            out.append(CompletionItem(value, help=help_text))
    return out


def local_files(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The shell's own file names (`rnx run ./build.sh`, `rnx run python3 app.py`): nothing at
    all was offered after `rnx run`, not even what bash offers any command."""
    return [CompletionItem(incomplete, type="file")]


def _given(ctx: click.Context, param: click.Parameter) -> set[str]:
    """The values of a repeatable argument already typed (`rnx stop a b <TAB>` offers neither)."""
    value = ctx.params.get(param.name or "") or ()
    return {str(v) for v in value} if isinstance(value, list | tuple) else set()


def jobs(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Short ids and names: the jobs that have not ended, then the ended ones among the newest
    ENDED_OFFERED (not every kept record: 4 s at 21,500)."""
    return _jobs(incomplete, ended=True, given=_given(_ctx, _param))


def live_jobs(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Those of jobs that have not ended (`rnx stop`, `rnx stats`: an ended one has nothing to
    stop or sample; every job of the last days was offered)."""
    return _jobs(incomplete, ended=False, given=_given(_ctx, _param))


def job_names(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The names of the jobs `jobs` offers (`rnx list --name`)."""
    return _jobs(incomplete, ended=True, given=set(), names_only=True)


def _jobs(incomplete: str, ended: bool, given: set[str], names_only: bool = False) -> list[CompletionItem]:
    def found(client: Any) -> Iterable[tuple[str, str | None]]:
        live = client.list(status=LIVE)  # from their index
        done = [r for r in client.recent(ENDED_OFFERED)[0] if r.status.final] if ended else []
        for r in sorted(live, key=lambda r: -(r.created or 0)) + done[::-1]:
            if given & {r.short_id, r.name}:
                continue
            what = f"{r.status.value} {' '.join([r.spec.command, *r.spec.args])[:40]}"
            if not names_only:
                yield r.short_id, what
            if r.name:
                yield r.name, what

    return _items(incomplete, found)


def networks(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    def found(client: Any) -> Iterable[tuple[str, str | None]]:
        # host only where a live node allows it (no job could run there otherwise)
        hosting = any(info.get("host_network") for info in client.live_nodes().values())
        yield from ((n, "built in") for n in BUILTIN_NETWORKS if n != "host" or hosting)
        yield from ((n.name, n.cidr) for n in client.networks.store.all())

    return _items(incomplete, found)


def user_networks(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    def found(client: Any) -> Iterable[tuple[str, str | None]]:
        return ((n.name, n.cidr) for n in client.networks.store.all())

    return _items(incomplete, found)


def volumes(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    def found(client: Any) -> Iterable[tuple[str, str | None]]:
        return ((v.name, f"{v.size_mb} MB" if v.size_mb else "directory") for v in client.volumes.store.all())

    return _items(incomplete, found)


def runtimes(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    def found(client: Any) -> Iterable[tuple[str, str | None]]:
        return ((r["name"], ", ".join(r["nodes"])) for r in client.runtimes())

    return _items(incomplete, found)


def nodes(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Every node the fleet has seen, with its state: a down node is undrained, listed and
    pinned to by name too (live nodes only were offered)."""

    def found(client: Any) -> Iterable[tuple[str, str | None]]:
        rows = client.nodes()
        return ((r["name"], r["state"] + (f", {r['jobs']} jobs" if r["jobs"] is not None else "")) for r in rows)

    return _items(incomplete, found)


def down_nodes(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The nodes that are down (`rnx node forget` refuses the others)."""

    def found(client: Any) -> Iterable[tuple[str, str | None]]:
        return ((r["name"], "down") for r in client.nodes() if r["state"] == "down")

    return _items(incomplete, found)


def workflows(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Short ids and names of the workflows kept, the newest first."""

    def found(client: Any) -> Iterable[tuple[str, str | None]]:
        for row in reversed(client.workflows.list()):
            what = f"{row['status']} {row['name']}"
            yield row["id"][:12], what
            yield row["name"], what

    return _items(incomplete, found)


def statuses(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    from joblet.api.models import JobStatus

    # after a comma, the next of a list (`--status=running,<TAB>`: nothing was offered)
    before, _, last = incomplete.rpartition(",")
    listed = {s.strip().lower() for s in before.split(",")}
    head = f"{before}," if before else ""
    names = (s.value.lower() for s in JobStatus)
    return [CompletionItem(head + n) for n in names if n.startswith(last.lower()) and n not in listed]


def _split_off(word: str) -> bool:
    """A word bash made of the break characters alone (`=`, `:`, `=:`): it split the text typed
    there (COMP_WORDBREAKS; a quoted one it leaves alone)."""
    return bool(word) and not word.strip("=:")


def rejoin(args: list[str], incomplete: str) -> tuple[list[str], str]:
    """The words of `rnx run --network=my<TAB>` as typed: bash splits them at '=' and ':' (both
    in COMP_WORDBREAKS) into `--network`, `=`, `my`, which click read as the option's value `=`
    and a command `my`, offering nothing in the guide's own form; `--runtime py:<TAB>` was the
    runtime `py` and a command `:`, offered the directory's files. Returns the words before the
    one typed and the one typed (`--network=my`, `py:`; bash's current word is the `=` or `:`
    right after the sign). COMP_WORDS keeps no spaces: `py : x` reads as `py:x`."""
    joined: list[str] = []
    for word in args:  # a lone '=' or ':' joins its neighbours: bash split `--env A=B` as the option
        if len(joined) >= 2 and _split_off(joined[-1]):
            joined[-2:] = [joined[-2] + joined[-1] + word]
        else:
            joined.append(word)
    if _split_off(incomplete) and joined:
        return joined[:-1], joined[-1] + incomplete
    if len(joined) >= 2 and _split_off(joined[-1]):
        word = joined[-2] + joined[-1] + incomplete
        # an empty word follows a space (right after a sign bash's word is the sign): `py: <TAB>`
        return (joined[:-2], word) if incomplete else ([*joined[:-2], word], "")
    return joined, incomplete


def replacing(typed: str, replaced: str, item: CompletionItem) -> CompletionItem:
    """The item as the text that goes in place of `replaced`, the end of the word typed the
    shell replaces: in bash the text after the last '=' or ':' (`--runtime=py:<TAB>` offered
    `py:1`, which made `--runtime=py:py:1`; now `1`, as bash-completion's
    __ltrim_colon_completions). Click offers values of the text it completes (after an
    option's '='); anything else is left as it is."""
    value = typed.partition("=")[2] if typed.startswith("-") and "=" in typed else typed
    if item.type != "plain" or not item.value.startswith(value):
        return item
    text = (typed[: len(typed) - len(value)] + item.value)[len(typed) - len(replaced) :]
    return CompletionItem(text, type=item.type, help=item.help)


def use_shell_words() -> None:
    """Click's completion for each shell, each value offered as the text that goes in place of
    the shell's word (`replacing`): bash's words joined again (`rejoin`), its word the text after
    the last '=' or ':'; zsh and fish replace the whole word, so `--runtime=no<TAB>` offers
    `--runtime=node:20` (zsh made `rnx run node:20` of it, the option lost; fish offered nothing)."""
    from click.shell_completion import BashComplete, FishComplete, ZshComplete, add_completion_class

    class Bash(BashComplete):
        def complete(self) -> str:
            args, bash_word = self.get_completion_args()
            args, typed = rejoin(args, bash_word)
            return _offered(self, args, typed, "" if _split_off(bash_word) else bash_word)

    class Zsh(ZshComplete):
        def complete(self) -> str:
            args, typed = self.get_completion_args()
            return _offered(self, args, typed, typed)

    class Fish(FishComplete):
        def complete(self) -> str:
            args, typed = self.get_completion_args()
            return _offered(self, args, typed, typed)

    for shell in (Bash, Zsh, Fish):
        add_completion_class(shell)


def _offered(shell: Any, args: list[str], typed: str, replaced: str) -> str:
    """What `shell` prints for the word `typed`, of which it replaces the end `replaced`."""
    items = shell.get_completions(args, typed)
    return "\n".join(shell.format_completion(replacing(typed, replaced, item)) for item in items)


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script (bash, zsh or fish).

    Enable it with eval "$(rnx completion bash)" (README: zsh and fish)."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None
    click.echo(cls(ctx.find_root().command, {}, "rnx", "_RNX_COMPLETE").source())
