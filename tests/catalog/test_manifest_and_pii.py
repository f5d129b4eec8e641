"""The manifest model (errors per field, semver) and the pure PII detectors."""

from __future__ import annotations

import pytest

from quartermaster.catalog.manifest import manifest_json_schema, parse_manifest, version_key
from quartermaster.catalog.pii import find_pii, iban_valid, luhn_valid
from tests.catalog.publish_support import manifest


def test_a_valid_manifest_parses() -> None:
    parsed, errors = parse_manifest(manifest())
    assert errors == []
    assert parsed is not None
    assert parsed.app_id == "where2eat"


def test_every_bad_field_gets_its_own_error() -> None:
    bad = manifest(
        version="1.0",
        capabilities=["read", "delete"],
        data_scopes=[],
        runtime_descriptor={"type": "link"},
        pricing_template={"model": "payg"},
        title=None,
    )
    parsed, errors = parse_manifest(bad)
    assert parsed is None
    fields = {e.field for e in errors}
    assert {"version", "capabilities.1", "data_scopes", "title"} <= fields
    assert any(e.field.startswith("runtime_descriptor") and "url" in e.message for e in errors)
    assert any(e.field.startswith("pricing_template") and "unit" in e.message for e in errors)


def test_control_and_bidi_characters_are_refused_in_title_and_owner() -> None:
    _, errors = parse_manifest(manifest(title="Where2Eat \u202egnip", owner="beck\x00"))
    messages = {e.field: e.message for e in errors}
    assert set(messages) == {"title", "owner"}
    assert "title contains U+202E (RIGHT-TO-LEFT OVERRIDE) at position 11" in messages["title"]
    assert "owner contains U+0000" in messages["owner"]


def test_sample_data_must_be_paths_inside_the_package() -> None:
    for outside in ("../outside.csv", "/etc/hostname", "samples/../../x.csv", ""):
        _, errors = parse_manifest(manifest(sample_data=["samples/ok.csv", outside]))
        assert [(e.field, e.message) for e in errors] == [
            (
                "sample_data",
                f"{outside!r} is not a path inside the package (relative, without '..')",
            )
        ]
    _, errors = parse_manifest(manifest(sample_data=["samples/ok.csv", "data"]))
    assert errors == []


def test_a_bad_tag_is_named_as_written() -> None:
    _, errors = parse_manifest(manifest(tags=["lunch", "Café Menu"]))
    assert [(e.field, e.message) for e in errors] == [
        ("tags", "'Café Menu' must be 1-40 characters of a-z, 0-9 and '-'")
    ]


def test_unknown_fields_and_reserved_ids_are_refused() -> None:
    _, errors = parse_manifest(manifest(colour="blue", app_id="search"))
    assert {e.field for e in errors} == {"colour", "app_id"}


def test_semver_precedence() -> None:
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-beta",
        "1.0.0-rc.1",
        "1.0.0",
        "1.2.0",
        "10.0.0",
    ]
    assert sorted(ordered, key=version_key) == ordered


def test_schema_is_published_with_the_seed_fields() -> None:
    schema = manifest_json_schema()
    for name in (
        "app_id",
        "title",
        "short_description",
        "long_description",
        "owner",
        "team",
        "tags",
        "domain_labels",
        "capabilities",
        "data_scopes",
        "runtime_descriptor",
        "estimated_compute_profile",
        "pricing_template",
        "cost_center",
        "lifecycle",
    ):
        assert name in schema["properties"], name  # fmt: skip
    assert set(schema["required"]) >= {"app_id", "version", "capabilities", "data_scopes"}


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("write to jane.doe@example.com please", "email"),
        ("call +44 20 7946 0958 today", "phone"),
        ("call (555) 123-4567", "phone"),
        ("or 555-123-4567", "phone"),
        ("card 4111 1111 1111 1111 on file", "card"),
        ("IBAN GB82 WEST 1234 5698 7654 32", "iban"),
        ("pay to DE89370400440532013000", "iban"),
        ("ssn 123-45-6789", "national_id"),
        ("NI number AB 12 34 56 C", "national_id"),
    ],
)
def test_pii_kinds_are_found_and_masked(text: str, kind: str) -> None:
    found = find_pii(text, where="x")
    assert [f.kind for f in found] == [kind]
    assert "*" in found[0].sample


@pytest.mark.parametrize(
    "text",
    [
        "order 4111 1111 1111 1112 shipped",  # fails Luhn
        "GB82 WEST 1234 5698 7654 33",  # fails mod-97
        "ssn 000-12-3456",  # invalid area
        "version 1.2.3 released in 2024",
        "the recommender serves 3 restaurants",
    ],
)
def test_look_alikes_are_not_pii(text: str) -> None:
    assert find_pii(text, where="x") == []


def test_checksums() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert iban_valid("GB82WEST12345698765432")
    assert not iban_valid("GB82WEST12345698765433")


def test_published_schema_file_matches_the_model() -> None:
    import json
    from pathlib import Path

    published = Path(__file__).resolve().parents[2] / "docs" / "schemas" / "app-manifest.json"
    assert json.loads(published.read_text()) == json.loads(json.dumps(manifest_json_schema())), (
        "regenerate docs/schemas/app-manifest.json from manifest_json_schema()"
    )
