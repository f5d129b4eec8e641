"""Every file a command reads as text: one that is not UTF-8 (an editor's UTF-16 or Latin-1)
ends the command with one line naming the file and the byte, never a traceback; a UTF-8
byte-order mark is read past."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quartermaster.cli.main import _register_groups, app
from tests.catalog.publish_support import EXAMPLES, POLICIES

NOT_UTF8 = b"\xff\xfe{\x00}\x00"  # UTF-16 as an editor writes it


def _qm(*args: str) -> tuple[int, str]:
    if not any(group.name == "policy" for group in app.registered_groups):
        _register_groups()
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, " ".join(result.output.split())


@pytest.fixture(autouse=True)
def _nowhere(monkeypatch: pytest.MonkeyPatch) -> None:
    # The files are read before any request: no server is needed, or reached.
    monkeypatch.setenv("QM_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("QM_API_KEY", "qm_0000000000000000_unused")
    monkeypatch.setenv("COLUMNS", "400")  # a long temporary path on one line


@pytest.mark.parametrize(
    "command",
    [
        ("policy", "upload", "p", "{bad}"),
        ("policy", "test", "{bad}", "--input", "{good_json}"),
        ("policy", "test", "{good_rego}", "--input", "{bad}"),
        ("pricebook", "load", "{bad}"),
        ("app", "import", "{bad}"),
        ("audit", "verify", "--file", "{bad}"),
    ],
    ids=lambda command: " ".join(part for part in command if not part.startswith("{")),
)
def test_a_file_that_is_not_utf8_is_a_one_line_error(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(NOT_UTF8)
    good_json = tmp_path / "input.json"
    good_json.write_text("{}")
    files = {"bad": bad, "good_json": good_json, "good_rego": POLICIES / "require-cost-center.rego"}
    args = [part.format(**files) if part.startswith("{") else part for part in command]
    status, output = _qm(*args)
    assert status == 1, output
    assert f"{bad}" in output
    assert "is not UTF-8 text (byte 0xff at offset 0)" in output
    assert "Traceback" not in output


def test_an_app_manifest_that_is_not_utf8_is_named_and_one_with_a_bom_is_read(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "where2eat"
    shutil.copytree(EXAMPLES / "app", directory)
    manifest = directory / "qm-app.json"
    document = json.loads(manifest.read_text())
    manifest.write_bytes(b"\xef\xbb\xbf" + json.dumps(document).encode())
    status, output = _qm("app", "validate", str(directory))
    assert status == 0, output
    assert "ok: would publish" in output
    manifest.write_bytes(NOT_UTF8)
    status, output = _qm("app", "validate", str(directory))
    assert status == 1, output
    assert f"{manifest}: not UTF-8 text (byte 0xff at offset 0): save it as UTF-8" in output
