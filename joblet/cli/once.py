"""An option given twice is refused, not the last one taken: `rnx network create web
--cidr 10.66.0.0/24 --cidr 10.67.0.0/24` made the second range without a word (usability run),
as click keeps the last value of an option that is not `multiple`. Flags given twice are
harmless and pass; repeatable options (`--env`, `--network`) are counted by their commands."""

from __future__ import annotations

import click


def refuse_repeats(command: click.Command, args: list[str], interspersed: bool = True) -> None:
    """A UsageError naming the first option of `command` that `args` give twice, or a long
    option given with one dash (`-network=none` read as `-n etwork=none`, refused as no
    option '-n'; `-detach` ran as `-d -e ach`, a variable `ach` passed on: usability runs).
    Values are skipped as click reads them (`--cidr X`, `--cidr=X`); the scan ends at `--`,
    and unless `interspersed` at the first argument (`rnx run CMD ARGS...`: the job's own)."""
    options = {name: p for p in command.params if isinstance(p, click.Option) for name in (*p.opts, *p.secondary_opts)}
    seen: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return
        if not arg.startswith("-") or arg == "-":
            if not interspersed:
                return
            i += 1
            continue
        name, eq, _ = arg.partition("=")
        if not name.startswith("--") and len(name) > 2 and "-" + name in options:
            raise click.UsageError(f"'{arg}' reads as short options ({name[:2]} ...). Did you mean '-{arg}'?")
        param = options.get(name)
        takes_value = param is not None and not param.is_flag and not param.count
        if param is not None and takes_value and not param.multiple:
            given = arg if eq or i + 1 >= len(args) else f"{arg} {args[i + 1]}"
            if param.name in seen:
                raise click.UsageError(f"{name} is given twice ({seen[param.name]!r} and {given!r}): give it once")
            seen[str(param.name)] = given
        i += 2 if takes_value and not eq else 1


class OnceCommand(click.Command):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not ctx.resilient_parsing:  # completing a line: offer what fits, refuse nothing
            refuse_repeats(self, args, ctx.allow_interspersed_args)
        return super().parse_args(ctx, args)


class OnceGroup(click.Group):
    """A group whose commands (and groups) refuse an option given twice."""

    command_class = OnceCommand
    group_class = type
