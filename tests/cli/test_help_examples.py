"""Every example in a command's help is a command `qm` takes: its group, command, options and
arguments exist and parse (a renamed option would leave the help teaching a dead command)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from typing import Any

import pytest
from typer.main import get_command

from quartermaster.cli.main import _register_groups, app

# An example is an indented line of a command's help that starts with `qm `.
_EXAMPLE = re.compile(r"^\s+(qm .+)$", re.MULTILINE)


def _commands(command: Any, path: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    # Typer 0.29 vendors click: its groups are no click.Group, so they are told by `commands`.
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))
    elif command.help:
        yield " ".join(path), command.help


def _examples() -> list[tuple[str, str]]:
    _register_groups()
    found: list[tuple[str, str]] = []
    for where, help_text in _commands(get_command(app), ("qm",)):
        for line in _EXAMPLE.findall(help_text):
            # `a && b`, `$(qm …)`: each qm command of the line.
            for part in re.split(r"&&|\$\(|\)", line):
                if part.strip().startswith("qm "):
                    found.append((where, part.strip()))
    return found


EXAMPLES = _examples()


def test_commands_have_examples() -> None:
    shown = {where for where, _ in EXAMPLES}
    for command in ("qm usage show", "qm principal create", "qm pricebook load"):
        assert command in shown


@pytest.mark.parametrize(("where", "example"), EXAMPLES)
def test_an_example_parses(where: str, example: str) -> None:
    args = shlex.split(example)[1:]
    command: Any = get_command(app)
    context = command.make_context("qm", [], resilient_parsing=True)
    while hasattr(command, "commands"):
        assert args, f"{where}: {example!r} names no command"
        sub = command.get_command(context, args[0])
        assert sub is not None, f"{where}: {example!r}: no command {args[0]!r}"
        command, name, args = sub, args[0], args[1:]
        context = command.make_context(name, [], parent=context, resilient_parsing=True)
    try:
        command.make_context(name, list(args), parent=context.parent)
    except Exception as exc:  # click's, vendored by typer: UsageError, BadParameter
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        # A file the example names need not exist here; anything else is wrong.
        if "does not exist" not in message:
            raise AssertionError(f"{where}: {example!r}: {message}") from None
