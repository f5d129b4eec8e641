"""Command help as the terminal shows it: docstring paragraphs reflowed.

Typer's Rich help keeps every line break of a docstring's later paragraphs, so source lines
wrapped at 100 columns came out ragged in a terminal of any other width. The commands' help
is their docstring with each paragraph's lines joined; list items and indented lines
(examples) keep their own lines.
"""

from __future__ import annotations

import inspect
import re

import typer

# A line that starts a list item ("- ", "* ", "1. ") keeps its own line.
_LIST_ITEM = re.compile(r"(?:[-*•]|\d+[.)])\s")


def reflow(text: str) -> str:
    """`text` with the lines of each paragraph joined by spaces, except list items and lines
    indented deeper than the paragraph's first line, which stay on lines of their own."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(_reflow_paragraph(paragraph) for paragraph in paragraphs)


def _reflow_paragraph(paragraph: str) -> str:
    lines = paragraph.split("\n")
    base = _indent(lines[0])
    if base > 0:  # an indented block (an example) keeps its lines
        return paragraph
    item_text_at = _item_text_indent(lines[0])  # where a list item's wrapped lines align
    joined: list[str] = [lines[0]]
    for line in lines[1:]:
        stripped = line.strip()
        indent = _indent(line)
        if stripped and _LIST_ITEM.match(stripped):
            joined.append(line)
            item_text_at = _item_text_indent(line)
        elif stripped and indent == (base if item_text_at is None else item_text_at):
            joined[-1] = f"{joined[-1].rstrip()} {stripped}"
        else:
            joined.append(line)
            item_text_at = None
    return "\n".join(joined)


def _item_text_indent(line: str) -> int | None:
    match = _LIST_ITEM.match(line.strip())
    return _indent(line) + match.end() if match else None


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def reflow_command_help(group: typer.Typer) -> None:
    """Give every command of `group` and of its sub-groups its docstring reflowed as help
    (an explicit `help=` is reflowed the same way)."""
    for command in group.registered_commands:
        source = command.help or (inspect.getdoc(command.callback) if command.callback else None)
        if source:
            command.help = reflow(source)
    for sub_group in group.registered_groups:
        if sub_group.typer_instance is not None:
            reflow_command_help(sub_group.typer_instance)
