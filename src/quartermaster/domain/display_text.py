"""Display text (pure): what a name shown to others may contain - an app's title and owner,
a tenant's, team's, cost center's or principal's name.

Such text is shown in `qm` tables and the audit trail of whoever reads them, so it may
not carry characters that change how the text around it is shown: control characters (C0,
DEL and C1: a NUL, a newline, an escape sequence) and the bidirectional overrides and
isolates (U+202A-U+202E, U+2066-U+2069), with which `Invoice bot` can be made to read as
another app's name (`U+202E` reverses what follows it).

Nor may it be blank in disguise: format characters (Unicode category Cf: U+200B ZERO WIDTH
SPACE, U+200C, U+200D, U+2060, U+FEFF, ...) show as nothing, and `str.strip()` keeps them,
so a name of only those and whitespace passed a "blank" check and showed as an empty cell."""

from __future__ import annotations

import re
import unicodedata

_HIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def display_text_problem(
    value: str, *, field: str, what: str = "an app's title or owner"
) -> str | None:
    """Why `value` may not be shown as `field` (`what` it is, for the message), or None when
    it may."""
    found = _HIDDEN.search(value)
    if found is None:
        return _invisible_problem(value, field=field)
    char = found.group()
    name = unicodedata.name(char, "a control character")
    return (
        f"{field} contains U+{ord(char):04X} ({name}) at position {found.start() + 1}: "
        "control characters and bidirectional overrides or isolates (U+202A-U+202E, "
        f"U+2066-U+2069) are not allowed in {what}"
    )


def is_invisible(char: str) -> bool:
    """Whether `char` shows as nothing: whitespace, or a format character (category Cf)."""
    return char.isspace() or unicodedata.category(char) == "Cf"


def _invisible_problem(value: str, *, field: str) -> str | None:
    """A name of only whitespace and format characters, at least one of them (a name of only
    whitespace is the caller's to refuse, with its own message), is missing."""
    if not all(is_invisible(char) for char in value):
        return None
    found = next((char for char in value if not char.isspace()), None)
    if found is None:
        return None
    name = unicodedata.name(found, "a format character")
    return (
        f"{field} is missing: it holds only whitespace and invisible format characters "
        f"(U+{ord(found):04X} {name}), which show as nothing"
    )
