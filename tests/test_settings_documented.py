"""Every setting is documented in docs/configuration.md, and every documented one exists.

The settings table there has one row per field: | `QM_<NAME>` | `<name>` | default | meaning |.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from quartermaster.config import Settings

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
ROW = re.compile(r"^\|\s*`(QM_[A-Z0-9_]+)`\s*\|\s*`([a-z0-9_]+)`\s*\|([^|]*)\|([^|]*)\|\s*$")


def documented_rows() -> dict[str, tuple[str, str, str]]:
    """Field name -> (environment variable, default cell, meaning cell)."""
    rows = {}
    for line in DOC.read_text().splitlines():
        match = ROW.match(line)
        if match:
            env, key, default, meaning = match.groups()
            rows[key] = (env, default.strip(), meaning.strip())
    return rows


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_setting_is_documented(name: str) -> None:
    rows = documented_rows()
    assert name in rows, (
        f"setting {name!r} is not documented: add a row "
        f"| `QM_{name.upper()}` | `{name}` | default | meaning | to docs/configuration.md"
    )
    env, default, meaning = rows[name]
    assert env == f"QM_{name.upper()}", f"{name}: the variable is QM_{name.upper()}, not {env}"
    assert default, f"{name}: document its default"
    assert len(meaning) >= 10, f"{name}: say what the setting means"


def test_no_documented_setting_is_stale() -> None:
    stale = sorted(set(documented_rows()) - set(Settings.model_fields))
    assert not stale, f"docs/configuration.md documents settings that do not exist: {stale}"


def test_the_table_is_read() -> None:
    # Guards the parser: a format change must not make the checks above pass vacuously.
    rows = documented_rows()
    assert rows["data_dir"][0] == "QM_DATA_DIR"
    assert len(rows) >= 10
