"""Reading an app directory's manifest file: YAML as creators write it."""

from __future__ import annotations

from pathlib import Path

import pytest

from quartermaster.catalog.manifest import parse_manifest, read_manifest_file
from quartermaster.errors import InvalidInputError

YAML_MANIFEST = """\
app_id: where2eat
version: 1.0.0
title: Where2Eat
short_description: group dinner recommender
owner: {owner}
team: social
capabilities: [read]
data_scopes: [user]
runtime_descriptor: {{type: serverless, handler: app.invoke}}
estimated_compute_profile: {{cpu: 0.5}}
"""


def _write(tmp_path: Path, text: str, name: str = "qm-app.yaml") -> Path:
    (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


def test_a_yaml_manifest_reads_as_json_data(tmp_path: Path) -> None:
    document = read_manifest_file(_write(tmp_path, YAML_MANIFEST.format(owner="user:beckayu")))
    manifest, errors = parse_manifest(document)
    assert errors == []
    assert manifest is not None
    assert manifest.estimated_compute_profile.cpu == 0.5


@pytest.mark.parametrize("written", ["2026-02-28", "2026-02-30", "2026-13-01 25:00:00"])
def test_an_unquoted_date_stays_the_string_written(tmp_path: Path, written: str) -> None:
    """PyYAML made `2026-02-28` a date (which the CLI could not send as JSON) and raised a
    bare ValueError for `2026-02-30`; both are the text written, and the field is judged."""
    document = read_manifest_file(_write(tmp_path, YAML_MANIFEST.format(owner=written)))
    assert document["owner"] == written
    manifest, errors = parse_manifest(document)
    assert errors == []
    assert manifest is not None
    assert manifest.owner == written


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("owner: !!int twelve\n", "not a JSON-like document"),
        (
            "owner: !!set {a, b}\n",
            "not a JSON-like document: a set (!!set): write a list, [a, b] is not a JSON value",
        ),
        ("owner: [unclosed\n", "not valid yaml"),
    ],
)
def test_yaml_that_is_no_json_document_names_the_file(
    tmp_path: Path, text: str, expected: str
) -> None:
    directory = _write(tmp_path, text)
    with pytest.raises(InvalidInputError) as caught:
        read_manifest_file(directory)
    assert str(directory / "qm-app.yaml") in caught.value.message
    assert expected in caught.value.message


def test_a_directory_without_a_manifest_names_the_files_looked_for(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"qm-app\.json, qm-app\.yaml, qm-app\.yml"):
        read_manifest_file(tmp_path)


@pytest.mark.parametrize(
    ("field", "written", "got"),
    [("version", "1.0", "1.0 (a number)"), ("short_description", "no", "false (a boolean)")],
)
def test_a_yaml_number_or_boolean_where_text_goes_says_to_quote_it(
    tmp_path: Path, field: str, written: str, got: str
) -> None:
    text = YAML_MANIFEST.format(owner="ann").replace(
        f"{field}: ", f"{field}: {written}\n_old_{field}: ", 1
    )
    document = read_manifest_file(_write(tmp_path, text))
    document.pop(f"_old_{field}")
    _, errors = parse_manifest(document)
    assert [(e.field, e.message) for e in errors] == [
        (field, f"Input should be a valid string, got {got}: quote it to make it text")
    ]
