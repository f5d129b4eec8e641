"""`qm secret|lease|audit` against a live server over real HTTP, `qm scan` locally, and the
local root-key commands."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from quartermaster.audit.models import AuditRecord
from quartermaster.cli.main import app
from quartermaster.runtime import Runtime
from quartermaster.tenancy.models import Role
from tests.secrets.conftest import World, api_key, register_cli, run_ok

PATH = "apps/billing/db-password"


@pytest.fixture(scope="module")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The CLI only talks HTTP; the API it calls is tested on both backends elsewhere, so
    these run once, on their own SQLite database."""
    from quartermaster.storage import create_db_engine, upgrade_database

    url = f"sqlite:///{tmp_path_factory.mktemp('cli-db') / 'qm.db'}"
    engine = create_db_engine(url)
    try:
        upgrade_database(engine)
    finally:
        engine.dispose()
    return url


def test_secret_commands(qm: CliRunner) -> None:
    assert "wrote apps/billing/db-password version 1" in run_ok(
        qm, "secret", "put", PATH, stdin="from-stdin-value\n"
    )
    run_ok(qm, "secret", "put", PATH, "--value", "second-value", "--cas", "1")
    stale = qm.invoke(app, ["secret", "put", PATH, "--value", "x-value", "--cas", "1"])
    assert stale.exit_code == 1
    assert "check-and-set failed" in stale.output
    assert run_ok(qm, "secret", "get", PATH) == "second-value\n"
    assert run_ok(qm, "secret", "get", PATH, "--version", "1") == "from-stdin-value\n"
    as_json = json.loads(run_ok(qm, "secret", "get", PATH, "--json"))
    assert set(as_json["lease"]) >= {"id", "ttl", "max_ttl"}
    listing = run_ok(qm, "secret", "list", "apps/")
    assert PATH in listing
    assert "second-value" not in listing
    assert "deleted apps/billing/db-password version 2" in run_ok(qm, "secret", "delete", PATH)
    assert "undeleted" in run_ok(qm, "secret", "undelete", PATH, "--version", "2")
    assert "destroyed" in run_ok(qm, "secret", "destroy", PATH, "--version", "1", "--yes")
    rotated = run_ok(qm, "secret", "rotate", PATH)
    assert "rotated apps/billing/db-password to version 3 (generated value)" in rotated
    run_ok(qm, "secret", "delete", PATH, "--version", "2")
    # The version a read gets, of how many, and what became of the others; never a value.
    assert re.search(
        rf"│ {PATH}\s+│ v3 of 3 \(1 deleted, 1 destroyed\)\s+│ \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\dZ",
        run_ok(qm, "secret", "list"),
    )
    # A path whose latest version is deleted reads as deleted, as a read (404) says.
    run_ok(qm, "secret", "delete", PATH)
    assert re.search(
        rf"│ {PATH}\s+│ deleted \(v3 of 3; others: 1 deleted, 1 destroyed\)",
        run_ok(qm, "secret", "list"),
    )
    only = "apps/billing/only-one"
    run_ok(qm, "secret", "put", only, "--value", "soon-deleted")
    run_ok(qm, "secret", "delete", only)
    assert re.search(rf"│ {only}\s+│ deleted \(v1 of 1\)\s+│", run_ok(qm, "secret", "list"))
    # At 80 columns a long path stays whole (teams/payments/stripe/api|-key was split).
    long_path = "teams/payments/stripe/api-key-for-refunds"
    run_ok(qm, "secret", "put", long_path, "--value", "sk-long-value")
    narrow = qm.invoke(app, ["secret", "list"], env={"COLUMNS": "80"})
    assert f"│ {long_path} │" in narrow.output, narrow.output
    assert qm.invoke(app, ["secret", "get", only]).exit_code == 1


def test_revoking_a_key_says_how_many_leases_end_with_it(
    qm: CliRunner, world: World, runtime: Runtime
) -> None:
    run_ok(qm, "secret", "put", PATH, "--value", "leased-value")
    headers = api_key(runtime, world.tenant_id, "billing-svc", Role.APP, app_slug="billing")
    token = headers["Authorization"].removeprefix("Bearer ")
    key_id = token.split("_")[1]
    for _ in range(2):
        read = qm.invoke(app, ["secret", "get", PATH, "--api-key", token])
        assert read.exit_code == 0, read.output
    said = run_ok(qm, "key", "revoke", key_id)
    assert f"revoked key {key_id} at " in said
    assert "2 live leases obtained with it end within seconds (the lease reaper): " in said
    assert f"qm lease list --key {key_id}" in said


def test_lease_commands(qm: CliRunner) -> None:
    run_ok(qm, "secret", "put", PATH, "--value", "leased-value")
    lease_id = json.loads(run_ok(qm, "secret", "get", PATH, "--json"))["lease"]["id"]
    listed = run_ok(qm, "lease", "list")
    assert re.search(rf"│ {lease_id}\s+│ active, [\d,]+ s left\s+│", listed)
    assert re.search(rf"│ {PATH} v\d+\s+│ expires \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\dZ", listed)
    # The holder by name, as errors and audit records say it; the API keeps its id too.
    assert re.search(r"│ held by principal:admin\s+│", listed), listed
    assert lease_id in run_ok(qm, "lease", "list", "--holder", "principal:admin")
    leases_json = json.loads(run_ok(qm, "lease", "list", "--json"))
    assert [(each["id"], each["state"], each["path"]) for each in leases_json] == [
        (lease_id, "active", PATH)
    ]
    admin_key = leases_json[0]["key_id"]  # the key this CLI calls with
    assert f"ends with key {admin_key}" in listed
    assert lease_id in run_ok(qm, "lease", "list", "--key", admin_key)
    assert "no leases" in run_ok(qm, "lease", "list", "--key", "0" * 16)
    assert "no leases" in run_ok(qm, "lease", "list", "--holder", "app:web")
    lease = json.loads(run_ok(qm, "secret", "get", PATH, "--json"))["lease"]
    assert lease["holder_name"] == "principal:admin"
    assert re.fullmatch(r"principal:[0-9a-f]{32}", lease["holder"])
    run_ok(qm, "lease", "revoke", lease["id"])
    assert f"lease {lease_id} now expires" in run_ok(
        qm, "lease", "renew", lease_id, "--increment", "60"
    )
    assert f"lease {lease_id}: revoked" in run_ok(qm, "lease", "revoke", lease_id)
    assert f"lease {lease_id}: already_ended" in run_ok(qm, "lease", "revoke", lease_id)
    assert re.search(rf"│ {lease_id}\s+│ ended \(revoked\)", run_ok(qm, "lease", "list", "--all"))
    refused = qm.invoke(app, ["lease", "renew", lease_id])
    assert refused.exit_code == 1
    assert "cannot be renewed" in refused.output
    run_ok(qm, "secret", "get", PATH)
    run_ok(qm, "secret", "get", PATH)
    assert "revoked 2 lease(s) under apps/billing" in run_ok(
        qm, "lease", "revoke-prefix", "apps/billing"
    )


def test_audit_verify_names_the_tampered_record(
    qm: CliRunner, world: World, runtime: Runtime, tmp_path: Path
) -> None:
    for index in range(3):
        run_ok(qm, "secret", "put", PATH, "--value", f"audited-{index}")
    assert "ok" in run_ok(qm, "audit", "verify")
    with runtime.session_factory() as session:
        second = session.scalar(
            select(AuditRecord.id).where(
                AuditRecord.tenant_id == world.tenant_id, AuditRecord.seq == 2
            )
        )
        session.execute(
            update(AuditRecord).where(AuditRecord.id == second).values(actor="principal:mallory")
        )
        session.commit()
    broken = qm.invoke(app, ["audit", "verify"])
    assert broken.exit_code == 1
    assert "record seq 2 was edited" in broken.output

    shipped = tmp_path / "audit.jsonl"
    page = qm.invoke(app, ["secret", "list"])  # any call; now build a shipped copy
    assert page.exit_code == 0
    from quartermaster.audit.log import iter_records

    with runtime.session_factory() as session:
        lines = [json.dumps(r.to_json()) for r in iter_records(world.tenant_id, session=session)]
    shipped.write_text("\n".join(lines[:1] + lines[2:]) + "\n")  # drop seq 2
    from_file = qm.invoke(app, ["audit", "verify", "--file", str(shipped)])
    assert from_file.exit_code == 1
    assert "record seq 2 is missing (removed)" in from_file.output


def test_scan_finds_and_matches_broker_secrets(qm: CliRunner, tmp_path: Path) -> None:
    leaked = "Zx9-broker-held-Pw-4471"
    run_ok(qm, "secret", "put", PATH, "--value", leaked)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "settings.py").write_text(f'DEBUG = True\npassword = "{leaked}"\n')
    (repo / "other.env").write_text('api_key = "unrelated-1234-secret-value"\n')
    result = qm.invoke(app, ["scan", str(repo)])
    assert result.exit_code == 1, result.output
    assert leaked not in result.output
    assert "unrelated-1234-secret-value" not in result.output
    row = next(line for line in result.stdout.splitlines() if "settings.py" in line)
    assert "Secret Keyword" in row
    assert "2" in row
    assert f"{PATH} (v1, current)" in row
    other = next(line for line in result.stdout.splitlines() if "other.env" in line)
    assert PATH not in other
    assert f"qm secret rotate {PATH}" in result.output

    offline = qm.invoke(app, ["scan", "--offline", str(repo)])
    assert offline.exit_code == 1
    assert PATH not in offline.stdout


def test_scan_says_what_comparing_needs_and_names_each_path_once(
    qm: CliRunner, tmp_path: Path, world: World, runtime: Runtime
) -> None:
    old, new = "Zx9-old-leaked-Pw-4471", "Qr7-new-leaked-Pw-9902"
    run_ok(qm, "secret", "put", PATH, "--value", old)
    run_ok(qm, "secret", "put", PATH, "--value", new)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.py").write_text(f'password = "{old}"\n')
    (repo / "b.py").write_text(f'password = "{new}"\n')
    both = qm.invoke(app, ["scan", str(repo)])
    assert f"{PATH} (v1, old version)" in both.stdout
    assert f"{PATH} (v2, current)" in both.stdout
    assert both.output.count(f"qm secret rotate {PATH}") == 1, both.output

    member = api_key(
        runtime, world.tenant_id, "pat", Role.TEAM_MEMBER, team_id=world.payments_team_id
    )["Authorization"].removeprefix("Bearer ")
    for key, expected in ((member, "it needs an admin key (403"), ("qm_bogus", "refused (401")):
        result = qm.invoke(app, ["scan", str(repo), "--api-key", key])
        assert result.exit_code == 1
        said = " ".join(result.output.split())
        assert expected in said, said
        assert "set QM_API_KEY to an admin key of the tenant" in said
    nowhere = qm.invoke(app, ["scan", str(repo), "--url", "http://127.0.0.1:9"])
    said = " ".join(nowhere.output.split())
    assert "cannot reach the server at http://127.0.0.1:9" in said, said
    assert "set QM_URL" in said


def test_scan_of_a_clean_tree_and_of_a_git_repository(tmp_path: Path) -> None:
    register_cli()
    runner = CliRunner()
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "main.py").write_text("print('hello')\n")
    result = runner.invoke(app, ["scan", "--offline", str(clean)])
    assert result.exit_code == 0, result.output
    assert "no secrets found" in result.output

    repo = tmp_path / "git"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text("local.env\n")
    (repo / "local.env").write_text('password = "ignored-by-git-Secret-99"\n')
    (repo / "app.py").write_text('password = "tracked-Secret-Value-77xQ"\n')
    subprocess.run(["git", "-C", str(repo), "add", "app.py", ".gitignore"], check=True)
    found = runner.invoke(app, ["scan", "--offline", str(repo)])
    assert found.exit_code == 1
    assert "app.py" in found.stdout
    assert "local.env" not in found.stdout
    missing = runner.invoke(app, ["scan", str(tmp_path / "nope")])
    assert missing.exit_code == 2


def test_init_creates_the_broker_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import stat

    register_cli()
    monkeypatch.delenv("QM_DATABASE_URL", raising=False)
    data_dir = tmp_path / "fresh"
    result = CliRunner().invoke(app, ["init", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    for name in ("root-keys.json", "identity-ed25519.pem"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600
    before = (data_dir / "root-keys.json").read_bytes()
    again = CliRunner().invoke(app, ["init", "--data-dir", str(data_dir)])
    assert again.exit_code == 0, again.output
    assert (data_dir / "root-keys.json").read_bytes() == before


def test_a_team_member_lists_its_apps_leases(qm: CliRunner, world: World, runtime: Runtime) -> None:
    """`qm lease list` with a team member's key shows the leases its team's app holds, each
    held by the app; the other team's member does not see them."""
    run_ok(qm, "secret", "put", PATH, "--value", "app-held")

    def key(name: str, role: Role, **kw: str) -> str:
        headers = api_key(runtime, world.tenant_id, name, role, **kw)
        return headers["Authorization"].removeprefix("Bearer ")

    billing = key("billing-app", Role.APP, app_slug="billing")
    lease_id = json.loads(run_ok(qm, "secret", "get", PATH, "--json", "--api-key", billing))[
        "lease"
    ]["id"]
    payments = key("pat", Role.TEAM_MEMBER, team_id=world.payments_team_id)
    growth = key("gus", Role.TEAM_MEMBER, team_id=world.growth_team_id)
    listed = run_ok(qm, "lease", "list", "--api-key", payments)
    assert re.search(rf"│ {lease_id}\s+│ active", listed), listed
    assert re.search(r"│ held by app:billing\s+│", listed), listed
    assert lease_id not in run_ok(qm, "lease", "list", "--api-key", growth)


def test_a_value_that_is_not_utf8_is_refused_naming_its_file(qm: CliRunner, tmp_path: Path) -> None:
    binary = tmp_path / "key.der"
    binary.write_bytes(b"ok\xff\xfe")
    refused = qm.invoke(app, ["secret", "put", PATH, "--from-file", str(binary)])
    assert refused.exit_code == 1
    assert "Traceback" not in refused.output
    message = " ".join(refused.output.split())
    assert f"{binary} is not UTF-8 text (byte 0xff at offset 2)" in message
    assert "secret values are text (UTF-8)" in message
    piped = qm.invoke(app, ["secret", "put", PATH], input=b"\x80abc")
    assert piped.exit_code == 1
    assert "stdin is not UTF-8 text (byte 0x80 at offset 0)" in " ".join(piped.output.split())
    rotated = qm.invoke(app, ["secret", "rotate", PATH, "--from-file", str(binary)])
    assert rotated.exit_code == 1
    assert "is not UTF-8 text" in rotated.output


def test_an_empty_value_is_named_as_empty_not_missing(qm: CliRunner, tmp_path: Path) -> None:
    empty = qm.invoke(app, ["secret", "put", PATH, "--value", ""])
    assert empty.exit_code == 2
    assert "the value from --value is empty" in " ".join(empty.output.split())
    blank = tmp_path / "blank.txt"
    blank.write_text("\n")
    wide = {"COLUMNS": "400"}  # the temporary path on one line
    from_file = qm.invoke(app, ["secret", "put", PATH, "--from-file", str(blank)], env=wide)
    assert from_file.exit_code == 2
    assert f"the value from {blank} is empty" in " ".join(from_file.output.split())


def test_lease_list_pages_and_revoke_takes_a_prefix(
    qm: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    import quartermaster.cli.secrets as cli_secrets

    run_ok(qm, "secret", "put", PATH, "--value", "paged-value")
    ids = [json.loads(run_ok(qm, "secret", "get", PATH, "--json"))["lease"]["id"] for _ in range(3)]
    monkeypatch.setattr(cli_secrets, "LEASE_PAGE", 2)  # stopped at one answer's 500
    listed = run_ok(qm, "lease", "list", "--all")
    assert all(lease_id in listed for lease_id in ids), listed
    assert f"lease {ids[0]}: revoked" in run_ok(qm, "lease", "revoke", ids[0][:12])
    unknown = run_ok(qm, "lease", "revoke", "0" * 12)
    assert "not_found (no lease you may manage has this id or begins with it" in unknown
    short = qm.invoke(app, ["lease", "revoke", ids[1][:5]])
    assert short.exit_code == 1
    assert "too short: give 8 characters or more" in short.output
    run_ok(qm, "lease", "revoke-prefix", PATH)
