"""`qm pricebook` against a live server over real HTTP."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from quartermaster.cli.main import _register_groups, app
from tests.conftest import LiveServer, TenantHandle
from tests.pricing.support import EXAMPLE, create_example_owners


def _cli() -> None:
    """Register the feature command groups once (main() does it at startup)."""
    if not any(group.name == "pricebook" for group in app.registered_groups):
        _register_groups()


@pytest.fixture
def qm(live_server: LiveServer, tenant: TenantHandle, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    _cli()
    monkeypatch.setenv("QM_URL", live_server.url)
    monkeypatch.setenv("QM_API_KEY", tenant.admin_token)
    monkeypatch.setenv("COLUMNS", "250")
    return CliRunner()


def test_load_list_show_and_versions(
    qm: CliRunner, http: httpx.Client, tenant: TenantHandle, tmp_path: Path
) -> None:
    create_example_owners(http, tenant.headers)
    none = qm.invoke(app, ["pricebook", "list"])
    assert none.exit_code == 0, none.output
    assert "no price books yet: qm pricebook load FILE stores one" in " ".join(none.output.split())
    loaded = qm.invoke(app, ["pricebook", "load", str(EXAMPLE)])
    assert loaded.exit_code == 0, loaded.output
    assert "stored price book internal-platform v1, effective from 2026-01-01 00:00:00Z" in (
        loaded.output
    )
    assert "back-dated" in loaded.output
    assert "`qm bill late` lists the finalized runs it moves" in " ".join(loaded.output.split())

    again = qm.invoke(app, ["pricebook", "load", str(EXAMPLE)])
    assert again.exit_code == 0
    assert "already stored unchanged" in again.output
    assert "qm bill late" not in again.output  # an unchanged book changes no bill

    listed = qm.invoke(app, ["pricebook", "list"])
    assert listed.exit_code == 0, listed.output
    assert "internal-platform" in listed.output
    assert "USD" in listed.output

    at = "2026-01-05T00:00:00Z"
    shown = qm.invoke(app, ["pricebook", "show", "internal-platform", "--at", at])
    assert shown.exit_code == 0, shown.output
    assert (
        "internal-platform v1 (USD), effective from 2026-01-01 00:00:00Z, still in force; "
        "recorded 20"
    ) in shown.output
    # Quantities grouped in thousands, prices as the document wrote them.
    assert "each tier's units at its price: up to 1,000,000: 0.000002" in shown.output
    assert "fee 0.50, 3,600,000 included, overage: 0.0000001 per unit" in shown.output
    # The rule's meter over whom it is for, its model over how usage is pooled.
    assert re.search(r"│ tokens\s+│ volume\s+│", shown.output)
    assert re.search(r"│ team=data-science\s+│ pooled per team\s+│", shown.output)
    assert re.search(r"│ everyone\s+│ pooled per cost center\s+│", shown.output)
    assert "hybrid: 70% proportional to network_bytes" in shown.output
    assert "ephemeral-spot" in shown.output
    assert "compute-commitment-2026" in shown.output

    second = tmp_path / "v2.yml"
    text = EXAMPLE.read_text().replace("version: 1\n", "version: 2\n", 1)
    second.write_text(text.replace("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", 1))
    assert qm.invoke(app, ["pricebook", "load", str(second)]).exit_code == 0
    versions = qm.invoke(app, ["pricebook", "versions", "internal-platform"])
    assert versions.exit_code == 0, versions.output
    rows = [
        [cell.strip() for cell in line.strip("│").split("│")]
        for line in versions.output.splitlines()
        if line.startswith("│")
    ]
    # v1 in force from January until v2 took over in February; v2 since then.
    assert rows[0][:3] == ["1", "from 2026-01-01 00:00:00Z", "2026-01-01 00:00:00Z"]
    assert rows[1][1] == "until 2026-02-01 00:00:00Z"
    assert rows[2][:3] == ["2", "from 2026-02-01 00:00:00Z", "2026-02-01 00:00:00Z"]
    assert rows[3][1] == "still in force"
    assert rows[1][3].startswith("by ")
    assert rows[1][3].endswith(", back-dated")
    pinned = qm.invoke(app, ["pricebook", "show", "internal-platform", "--version", "1"])
    assert "internal-platform v1" in pinned.output


def test_load_reports_the_servers_field_error(
    qm: CliRunner, http: httpx.Client, tenant: TenantHandle, tmp_path: Path
) -> None:
    create_example_owners(http, tenant.headers)
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("package_size: 1000\n", "package_size: 0\n"))
    result = qm.invoke(app, ["pricebook", "load", str(bad)])
    assert result.exit_code == 1
    assert "prices[10].package_size: input should be greater than 0" in result.output


def test_load_names_superseded_versions_and_versions_show_fractions(
    qm: CliRunner, http: httpx.Client, tenant: TenantHandle, tmp_path: Path
) -> None:
    create_example_owners(http, tenant.headers)
    base = EXAMPLE.read_text()
    assert qm.invoke(app, ["pricebook", "load", str(EXAMPLE)]).exit_code == 0
    second = tmp_path / "v2.yaml"
    second.write_text(
        base.replace("version: 1\n", "version: 2\n", 1).replace(
            "effective_from: 2026-01-01T00:00:00Z", "effective_from: 2026-05-15T12:00:00.5Z"
        )
    )
    loaded = qm.invoke(app, ["pricebook", "load", str(second)])
    assert loaded.exit_code == 0, loaded.output
    assert "effective from 2026-05-15 12:00:00.5Z" in loaded.output
    assert "will never be in force" not in loaded.output
    listed = qm.invoke(app, ["pricebook", "versions", "internal-platform"])
    assert listed.exit_code == 0, listed.output
    assert listed.output.count("2026-05-15 12:00:00.5Z") == 3  # v1 until, v2 from, effective
    third = tmp_path / "v3.yaml"
    third.write_text(
        base.replace("version: 1\n", "version: 3\n", 1).replace(
            "effective_from: 2026-01-01T00:00:00Z", "effective_from: 2026-05-01T00:00:00Z"
        )
    )
    loaded = qm.invoke(app, ["pricebook", "load", str(third)])
    assert loaded.exit_code == 0, loaded.output
    text = " ".join(loaded.output.split())
    assert (
        "v2 will never be in force: v3 takes effect at or before its effective_from "
        "(2026-05-15 12:00:00.5Z); to keep its prices from then on, load them again as "
        "version 4"
    ) in text
    listed = qm.invoke(app, ["pricebook", "versions", "internal-platform"])
    assert "never (superseded)" in listed.output


def test_show_unknown_book_fails(qm: CliRunner) -> None:
    result = qm.invoke(app, ["pricebook", "show", "nope"])
    assert result.exit_code == 1
    assert "no price book named 'nope'" in result.output


def test_validate_is_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _cli()
    monkeypatch.setenv("COLUMNS", "250")
    runner = CliRunner()
    good = runner.invoke(app, ["pricebook", "validate", str(EXAMPLE)])
    assert good.exit_code == 0, good.output
    assert "valid price book internal-platform v1 (11 price rules" in good.output
    assert "apps it names are checked against the tenant when it is loaded" in good.output
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x", "currency": "usd", "version": 0, "prices": []}')
    result = runner.invoke(app, ["pricebook", "validate", str(bad)])
    assert result.exit_code == 1
    for expected in (
        "currency: string should match pattern",
        "version: input should be greater than or equal to 1",
        "effective_from: required",
        "prices: list should have at least 1 item",
    ):
        assert expected in result.output
    not_a_date = tmp_path / "bad7.yaml"
    not_a_date.write_text(
        "name: e\ncurrency: USD\nversion: 1\neffective_from: 2026-13-01T00:00:00Z\n"
        "prices:\n  - {meter: tokens, model: per_unit, unit_price: 1}\n"
    )
    result = runner.invoke(app, ["pricebook", "validate", str(not_a_date)])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    said = " ".join(result.output.split())  # the console wraps long lines
    assert "effective_from: '2026-13-01T00:00:00Z' is not an RFC 3339 timestamp" in said
    assert "(month value is outside expected range of 1-12)" in said


def test_use_chooses_the_default_and_list_names_it(qm: CliRunner, tmp_path: Path) -> None:
    for name in ("internal-platform", "typo-book"):
        path = tmp_path / f"{name}.json"
        tokens = {"meter": "tokens", "model": "per_unit", "unit_price": "0.001"}
        document = {"name": name, "currency": "USD", "version": 1, "prices": [tokens]}
        path.write_text(json.dumps({**document, "effective_from": "2026-01-01T00:00:00Z"}))
        assert qm.invoke(app, ["pricebook", "load", str(path)]).exit_code == 0
    listed = qm.invoke(app, ["pricebook", "list"])
    assert listed.exit_code == 0, listed.output
    assert "default: internal-platform (billing, previews and guardrails use it" in listed.output

    used = qm.invoke(app, ["pricebook", "use", "typo-book"])
    assert used.exit_code == 0, used.output
    assert used.output.startswith("default price book: typo-book (chosen 20")
    assert "by admin)" in used.output
    assert "default: typo-book" in qm.invoke(app, ["pricebook", "list"]).output

    unknown = qm.invoke(app, ["pricebook", "use", "nope"])
    assert unknown.exit_code == 1
    assert "no price book named 'nope'" in unknown.output


def test_load_names_the_unknown_names(qm: CliRunner, tmp_path: Path) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text(
        "name: typo-book\ncurrency: USD\nversion: 1\neffective_from: 2026-01-01T00:00:00Z\n"
        "prices:\n  - {meter: tokenz, model: per_unit, unit_price: 0.1}\n"
        "discounts:\n  - {name: d, percent: 10, applies_to: {team: nosuchteam}}\n"
    )
    result = qm.invoke(app, ["pricebook", "load", str(typo)])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "prices[0].meter: unknown meter 'tokenz' (did you mean 'tokens'?)" in text
    assert "discounts[0].applies_to.team: unknown team 'nosuchteam'" in text
    assert "The tenant's meters (qm meter list): bytes_out, compute_units," in text
