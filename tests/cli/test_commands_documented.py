"""Every `qm` command is in the README or docs/, as every setting is in docs/configuration.md
(tests/test_settings_documented.py): a command nobody can find is a command nobody uses."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from typer.main import get_command

from quartermaster.cli.main import _register_groups, app

ROOT = Path(__file__).resolve().parents[2]
WORD = r"[a-z][a-z-]*"
# `qm bill show`, and the tables' alternations: `qm quota limit-range\|limit-ranges`.
MENTION = re.compile(rf"\bqm((?: {WORD})*) ({WORD}(?:\\?\|{WORD})*)")


def commands() -> list[str]:
    if not any(group.name == "bill" for group in app.registered_groups):
        _register_groups()
    found: list[str] = []

    def walk(command: Any, path: str) -> None:
        subcommands = getattr(command, "commands", {})
        if not subcommands:
            found.append(path)
        for name, sub in subcommands.items():
            walk(sub, f"{path} {name}")

    walk(get_command(app), "qm")
    return found


def documented() -> set[str]:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    text = "\n".join(page.read_text() for page in pages)
    mentioned: set[str] = set()
    for match in MENTION.finditer(text):
        head = f"qm{match.group(1)}"
        words = f"{head} {match.group(2)}".split()
        mentioned.update(" ".join(words[:n]) for n in range(2, len(words) + 1))
        mentioned.update(f"{head} {one}" for one in re.split(r"\\?\|", match.group(2)))
    return mentioned


def test_every_command_is_documented() -> None:
    assert [command for command in commands() if command not in documented()] == []


def test_the_check_reads_alternations_and_would_catch_a_missing_command() -> None:
    known = documented()
    assert {"qm quota limit-range", "qm quota limit-ranges", "qm bill show"} <= known
    assert "qm bill shred" not in known
    assert len(commands()) > 100
