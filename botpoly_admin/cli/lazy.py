"""Command groups that import a command's module only when the command is used.

Click's lazy-loading pattern (its docs, "Lazily Loading Subcommands"), with the one
thing it lacks: ``--help`` lists every command with its short help *without*
importing any command module, because each ``Lazy`` entry carries the first sentence
of its command's help (tests/test_cli.py checks that the two agree). So
``botpoly-admin --help`` imports Click and this package's ``app``, and
``list-tenants`` imports the tenants commands and what they use, never the
orchestrator or an exchange SDK.

``LazyCommands`` is the group's ``commands`` mapping: its keys are known up front, a
value is imported on first look-up. Click's own ``Group`` code (``get_command``,
``list_commands``, "did you mean" suggestions) works on it unchanged, and so does
anything that walks ``group.commands.items()`` (which imports every command).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, NamedTuple

import click


class Lazy(NamedTuple):
    """Where a command lives (``"package.module:attribute"``) and the first sentence of
    its help, which ``--help`` lists. (A named tuple: a dataclass costs more to define
    than the rest of this module at start-up.)"""

    target: str
    summary: str

    def load(self) -> click.Command:
        """Import the command's module and return the command."""
        module, _, attribute = self.target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.target} is not a Click command")
        return command


class LazyCommands(MutableMapping[str, click.Command]):
    """A group's commands by name: a lazy one is imported when first looked up."""

    def __init__(self, lazy: Mapping[str, Lazy]) -> None:
        self.lazy = dict(lazy)
        self._loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        command = self._loaded.get(name)
        if command is None:
            command = self._loaded[name] = self.lazy[name].load()
        return command

    def __setitem__(self, name: str, command: click.Command) -> None:
        self.lazy.pop(name, None)
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        if self.lazy.pop(name, None) is None and name not in self._loaded:
            raise KeyError(name)
        self._loaded.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*self.lazy, *self._loaded]))

    def __len__(self) -> int:
        return len(self.lazy.keys() | self._loaded.keys())

    def __contains__(self, name: object) -> bool:
        return name in self.lazy or name in self._loaded


class LazyGroup(click.Group):
    """A group whose commands (``lazy``: name → ``Lazy``) load on first use."""

    def __init__(self, *args: Any, lazy: Mapping[str, Lazy] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        commands = LazyCommands(lazy or {})
        for name, command in self.commands.items():
            commands[name] = command
        self.commands = commands

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Click's command list, with each lazy command's short help made from its
        summary, so that listing imports nothing."""
        lazy = self.commands.lazy if isinstance(self.commands, LazyCommands) else {}
        rows = []
        for name in self.list_commands(ctx):
            if name in lazy:
                rows.append((name, click.Command(name, help=lazy[name].summary)))
            else:
                command = self.get_command(ctx, name)
                if command is not None and not command.hidden:
                    rows.append((name, command))
        if rows:
            limit = formatter.width - 6 - max(len(name) for name, _ in rows)
            with formatter.section("Commands"):
                formatter.write_dl([(name, command.get_short_help_str(limit))
                                    for name, command in rows])
