"""`qm team|cost-center|principal|key` against a live server over real HTTP."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quartermaster.cli.main import app
from tests.conftest import LiveServer, TenantHandle
from tests.tenancy.cli_support import Qm, make_qm


@pytest.fixture
def qm(live_server: LiveServer, tenant: TenantHandle, monkeypatch: pytest.MonkeyPatch) -> Qm:
    return make_qm(live_server, tenant, monkeypatch)


def test_directory_principals_and_keys_from_the_command_line(qm: Qm) -> None:
    assert qm("team", "list").output.strip() == "no teams"  # a line, not an empty frame
    assert "created cost center marketing" in qm("cost-center", "create", "marketing").output
    centers = qm("cost-center", "list").output
    assert "marketing" in centers
    assert re.search(r"default\s+.*yes", centers)

    created = qm("team", "create", "web", "--name", "Web shop", "--cost-center", "marketing")
    assert "created team web (default cost center marketing)" in created.output
    teams = qm("team", "list").output
    assert re.search(r"web\s+.*Web shop\s+.*marketing", teams)

    duplicate = qm("team", "create", "web", expect=1)
    assert "error 409: team 'web' already exists" in duplicate.output
    unknown = qm("team", "create", "ops", "--cost-center", "nowhere", expect=1)
    assert "error 422: unknown cost center 'nowhere'" in unknown.output
    # names and messages are shown as they are, not read as Rich markup
    qm("team", "create", "beta", "--name", "Ops [beta] x[/y]", "--cost-center", "marketing")
    assert "Ops [beta] x[/y]" in qm("team", "list").output
    odd = qm("team", "create", "ops", "--cost-center", "x[/y]", expect=1)
    assert "error 422: unknown cost center 'x[/y]'" in odd.output
    no_team = qm("principal", "create", "mia", "--role", "team-member", expect=1)
    assert "a team-member principal needs a team" in no_team.output

    principal = qm(
        "principal", "create", "ci-bot", "--role", "finance", "--kind", "service-account"
    )
    match = re.search(r"created principal ci-bot \(finance\) id (\w+)", principal.output)
    assert match is not None, principal.output
    principal_id = match.group(1)
    long_name = "platform-reporting-service@finance.example.com"
    wide = qm("principal", "create", long_name, "--role", "finance").output
    # one line at 80 columns, so that the id is copied whole from the terminal
    assert re.search(rf"^created principal {long_name} \(finance\) id \w{{16,}}$", wide, re.M)
    listed = qm("principal", "list").output
    # The name over the id, the role over the kind.
    assert re.search(r"│ ci-bot\s+│ finance\s+│", listed)
    assert re.search(rf"│ {principal_id}\s+│ service-account\s+│", listed)

    issued = qm("key", "create", principal_id, "--expires-at", "2999-01-01T00:00:00Z")
    token = issued.stdout.strip()
    assert token.startswith("qm_")
    assert "shown once" in issued.stderr
    key_id = token.split("_")[1]
    assert f"created key {key_id}" in issued.stderr

    # The new key works (finance reads teams) and is listed without its secret.
    assert "web" in qm("team", "list", "--api-key", token).output
    by_name = qm("key", "create", "ci-bot").stdout.strip()  # the name people remember
    assert "web" in qm("team", "list", "--api-key", by_name).output
    nobody = qm("key", "create", "nobody", expect=1)
    assert "error 404: principal 'nobody' not found" in nobody.output
    keys = qm("key", "list").output
    assert re.search(rf"{key_id}\s+.*ci-bot\s+.*active, expires 2999-01-01 00:00:00Z", keys)
    assert token.split("_", 2)[2] not in keys

    revoked = qm("key", "revoke", key_id).output.strip()
    assert re.fullmatch(rf"revoked key {key_id} at \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\dZ", revoked)
    refused = qm("team", "list", "--api-key", token, expect=1)
    assert f"error 401: API key {key_id} was revoked" in refused.output
    assert re.search(rf"{key_id}\s+.*revoked \d{{4}}-\d\d-\d\d", qm("key", "list").output)


def test_without_an_api_key_the_cli_says_how_to_give_one(
    qm: Qm, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QM_API_KEY")
    result = qm("team", "list", expect=2)
    assert "no API key: set QM_API_KEY or pass --api-key" in result.output


def test_tenant_commands_show_names_and_errors_as_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rich would read "[beta]" as a style and fail on "[/y]", a tag never opened."""
    monkeypatch.delenv("QM_DATABASE_URL", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    data_dir = ["--data-dir", str(tmp_path / "qm")]
    runner = CliRunner()
    assert runner.invoke(app, ["init", *data_dir]).exit_code == 0
    made = runner.invoke(
        app, ["tenant", "create", "acme", "--name", "Acme [beta] x[/y]", *data_dir]
    )
    assert made.exit_code == 0, made.output
    assert "Acme [beta] x[/y]" in runner.invoke(app, ["tenant", "list", *data_dir]).output
    refused = runner.invoke(app, ["tenant", "create", "x[/y]", *data_dir])
    assert refused.exit_code == 1, refused.output
    assert "x[/y]" in refused.output


def test_tenant_time_zone_at_creation_and_by_update(
    qm: Qm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    updated = qm("tenant", "update", "--timezone", "Europe/Berlin").output
    assert "time zone Europe/Berlin" in updated
    refused = qm("tenant", "update", "--timezone", "Mars/Olympus", expect=1).output
    assert "tenant time zone 'Mars/Olympus' is not a known IANA zone" in refused
    monkeypatch.delenv("QM_DATABASE_URL", raising=False)
    data_dir = ["--data-dir", str(tmp_path / "local")]
    assert qm("init", *data_dir).exit_code == 0
    made = qm("tenant", "create", "tz", "--timezone", "Asia/Tokyo", *data_dir).output
    assert "created tenant tz (time zone Asia/Tokyo)" in made
    assert re.search(r"tz\s.*Asia/Tokyo", qm("tenant", "list", *data_dir).output)
    bad = qm("tenant", "create", "tz2", "--timezone", "Nowhere/Land", *data_dir, expect=1)
    assert "tenant time zone 'Nowhere/Land' is not a known IANA zone" in bad.output


def test_a_team_member_gives_its_app_a_key_from_the_command_line(
    qm: Qm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/tenancy.md, 'Giving an app its own key', with a team-member's key."""
    for team in ("web", "data"):
        qm("team", "create", team, "--cost-center", "default")
    qm("app", "create", "shop", "--owner", "ann@acme.com", "--team", "web")
    qm("app", "create", "etl", "--owner", "bo@acme.com", "--team", "data")
    qm("principal", "create", "bea@acme.com", "--role", "team-member", "--team", "web")
    monkeypatch.setenv("QM_API_KEY", qm("key", "create", "bea@acme.com").stdout.strip())

    made = qm(
        "principal", "create", "shop-bot", "--role", "app", "--app", "shop",
        "--kind", "service-account",
    )  # fmt: skip
    assert "created principal shop-bot (app) id" in made.output
    issued = qm("key", "create", "shop-bot")
    key_id = issued.stdout.strip().split("_")[1]
    # No --expires-at: the 90 days a team-member's key may live at most.
    assert re.search(rf"created key {key_id} \(expires: \d{{4}}-\d\d-\d\d ", issued.stderr)
    listed = qm("key", "list").output
    assert re.search(rf"{key_id}\s+.*shop-bot\s+.*active, expires", listed)
    assert "bea@acme.com" not in listed
    assert "admin" not in listed
    assert "shop-bot" in qm("principal", "list").output

    other = qm("principal", "create", "etl-bot", "--role", "app", "--app", "etl", expect=1)
    assert "error 403: role 'team-member' may not create a principal for app 'etl'" in (
        other.output
    )
    role = qm("principal", "create", "eve", "--role", "finance", expect=1)
    assert "may not create a principal of role 'finance'" in role.output
    long = qm("key", "create", "shop-bot", "--expires-at", "2999-01-01T00:00:00Z", expect=1)
    assert "error 403: role 'team-member' may issue keys expiring within 90 days" in long.output
    revoked = qm("key", "revoke", key_id).output
    assert f"revoked key {key_id}" in revoked
