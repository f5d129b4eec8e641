"""Command help is the docstring reflowed: paragraphs joined, lists and examples kept."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from quartermaster.cli.help_text import reflow, reflow_command_help


def test_paragraph_lines_are_joined() -> None:
    text = """Summary line.

    A first paragraph wrapped
    at the source's width.

    A second one."""
    assert reflow(text) == (
        "Summary line.\n\nA first paragraph wrapped at the source's width.\n\nA second one."
    )


def test_list_items_keep_their_lines_and_join_their_wrapped_text() -> None:
    text = """Summary.

    - an item that
      wraps
    - another
    1. numbered
    After the list."""
    assert reflow(text) == (
        "Summary.\n\n- an item that wraps\n- another\n1. numbered\nAfter the list."
    )


def test_an_indented_example_keeps_its_lines() -> None:
    text = """Summary.

    Example:

        qm events send usage.jsonl
        qm events tail"""
    assert reflow(text).endswith("Example:\n\n    qm events send usage.jsonl\n    qm events tail")


def test_commands_of_nested_groups_show_their_reflowed_docstring() -> None:
    root = typer.Typer()
    group = typer.Typer()
    root.add_typer(group, name="things")

    @group.command("make")
    def make() -> None:
        """Make a thing.

        This help paragraph is wrapped
        in the source."""

    @group.command("other")
    def other() -> None:
        """Another command."""

    reflow_command_help(root)
    result = CliRunner().invoke(root, ["things", "make", "--help"], terminal_width=120)
    assert result.exit_code == 0
    assert "This help paragraph is wrapped in the source." in result.output
