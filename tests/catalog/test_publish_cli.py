"""`qm app validate|publish|search|versions`, `qm policy …`, `qm approvals …` in-process
against a live server over real HTTP."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quartermaster.catalog import checks
from quartermaster.cli.main import _register_groups, app
from tests.catalog.publish_support import EXAMPLES, POLICIES
from tests.conftest import LiveServer, TenantHandle

FAKE_AWS = "AKIA" + "IOSFODNN7EXAMPLE"


def qm(*args: str, expect: int = 0) -> str:
    if not any(group.name == "policy" for group in app.registered_groups):
        _register_groups()
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == expect, (args, result.exit_code, result.output)
    return result.output


def as_admin_of(
    live_server: LiveServer, tenant: TenantHandle, monkeypatch: pytest.MonkeyPatch, *, columns: int
) -> None:
    """The CLI pointed at the live server as the tenant's admin, at `columns` columns."""
    monkeypatch.setenv("QM_URL", live_server.url)
    monkeypatch.setenv("QM_API_KEY", tenant.admin_token)
    monkeypatch.setenv("COLUMNS", str(columns))


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    target = tmp_path / "where2eat"
    shutil.copytree(EXAMPLES / "app", target)
    return target


def test_validate_offline_fails_on_a_secret_and_bad_fields(app_dir: Path) -> None:
    assert "ok: would publish" in qm("app", "validate", str(app_dir))
    (app_dir / "settings.py").write_text(f'aws_access_key_id = "{FAKE_AWS}"\n')
    output = qm("app", "validate", str(app_dir), expect=1)
    assert "secrets" in output
    assert "settings.py" in output
    assert FAKE_AWS not in output
    manifest = json.loads((app_dir / "qm-app.json").read_text())
    manifest["version"] = "v1"
    (app_dir / "qm-app.json").write_text(json.dumps(manifest))
    assert "version" in qm("app", "validate", str(app_dir), expect=1)


def test_validate_offline_fails_on_a_package_the_server_would_refuse(
    app_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = len([p for p in app_dir.rglob("*") if p.is_file()])
    monkeypatch.setattr(checks, "MAX_PACKAGE_FILES", files)
    assert "ok: would publish" in qm("app", "validate", str(app_dir))
    (app_dir / "one-too-many.txt").write_text("x\n")
    output = qm("app", "validate", str(app_dir), expect=1)
    assert re.search(r"FAIL\s+package\s+the server would refuse it", output), output
    assert f"- package has more than {files} files" in output
    assert "blocked: would not publish" in output


def test_publish_policy_and_approvals_over_http(
    live_server: LiveServer,
    tenant: TenantHandle,
    app_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    as_admin_of(live_server, tenant, monkeypatch, columns=250)
    qm("team", "create", "social", "--cost-center", "default")
    qm("policy", "upload", "org-scope", str(POLICIES / "org-scope-approval.rego"))
    assert "org-scope" in qm("policy", "list")
    bad = app_dir / "bad.rego"
    bad.write_text("package x\ndeny contains msg if {\n")
    assert "does not compile" in qm("policy", "upload", "bad", str(bad), expect=1)
    assert "where2eat@1.0.0 is published" in qm("app", "publish", str(app_dir))
    manifest = json.loads((app_dir / "qm-app.json").read_text())
    manifest.update(version="1.1.0", data_scopes=["org"], data_owner="data-governance")
    (app_dir / "qm-app.json").write_text(json.dumps(manifest))
    assert "needs approval" in qm("app", "validate", str(app_dir), "--server")
    assert "pending_approval" in qm("app", "publish", str(app_dir))
    pending = qm("approvals", "list", "--status", "pending")
    approval_id = pending.split("│")[1].strip()  # the id heads its cell, over its version
    assert re.search(
        rf"│ {approval_id}\s+│ pending\s+│ app where2eat declares the org-wide data scope", pending
    )
    assert re.search(r"│ where2eat@1\.1\.0\s+│ expires \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", pending)
    approved = qm("approvals", "approve", approval_id, "--comment", "data flows ok")
    assert "approval approved; where2eat@1.1.0 is published" in approved
    # Decided: who decided it and when, the comment, and where the version ended.
    decided = qm("approvals", "list", "--status", "approved")
    assert re.search(rf"│ {approval_id}\s+│ approved\s+│ app where2eat declares", decided)
    assert re.search(
        r"│ where2eat@1\.1\.0\s+│ by admin \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ\s+"
        r"│ review: data flows ok",
        decided,
    ), decided
    assert re.search(r"│ published\s+│\s+│\s+│", decided)
    assert "expires" not in decided
    assert "published" in qm("app", "versions", "where2eat")
    explained = qm("app", "search", "recomm", "--explain")
    assert re.search(r"│ where2eat\s+│\s+1\.000 │\s+0\.000 │\s+0\.600 │", explained), explained
    assert re.search(r"│ score 0\.760\s+│ relevance [\d.e-]+ │ 0 calls 30d │", explained)
    assert "policies passed" in explained
    nothing = qm("app", "search", "zebra")
    assert "no published app matches: search covers each app's latest published version" in (
        " ".join(nothing.split())
    )
    decisions = qm("policy", "decisions", "--subject", "where2eat@1.1.0")
    assert re.search(r"│ \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ\s+│ where2eat@1\.1\.0\s+│", decisions)
    assert re.search(r"│ by org-scope v1 \(enforce\)\s+│ at publish\s+│", decisions)
    # The policy's reason is in the log's table, beside its result.
    assert "declares the org-wide data scope: a reviewer must approve it" in decisions


def test_policy_exception_grant_list_and_revoke_over_http(
    live_server: LiveServer, tenant: TenantHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_admin_of(live_server, tenant, monkeypatch, columns=100)
    qm("team", "create", "lab", "--cost-center", "default")
    granted = qm(
        "policy", "exception", "grant", "gpu", "--team", "lab", "--days", "14",
        "--reason", "training run",
    )  # fmt: skip
    found = re.search(r"exception (\w+) \(gpu\) until \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", granted)
    assert found, granted
    exception_id = found.group(1)
    listed = qm("policy", "exception", "list")
    assert re.search(r"│ gpu\s+│ team lab\s+│ in force until\s+│ training run\s+│", listed)
    assert exception_id in listed
    revoked = qm("policy", "exception", "revoke", exception_id)
    assert re.search(rf"revoked exception {exception_id} \(gpu\) at \d{{4}}-", revoked)
    assert "no exceptions in force" in qm("policy", "exception", "list")
    assert re.search(
        r"│ gpu\s+│ team lab\s+│ revoked\s+│", qm("policy", "exception", "list", "--all")
    )
    assert "not found" in qm("policy", "exception", "revoke", "nope", expect=1)


def test_policy_test_shows_what_fired_and_exits_1_on_deny(
    live_server: LiveServer,
    tenant: TenantHandle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    as_admin_of(live_server, tenant, monkeypatch, columns=120)
    policy = str(POLICIES / "require-cost-center.rego")
    without = tmp_path / "without.json"
    without.write_text(json.dumps({"manifest": {"app_id": "where2eat"}}))
    denied = qm("policy", "test", policy, "--input", str(without), expect=1)
    assert re.search(r"│ deny\s+│ app where2eat has no cost_center in its manifest", denied)
    assert denied.rstrip().endswith("result: deny")
    with_cc = tmp_path / "with.json"
    with_cc.write_text(json.dumps({"manifest": {"app_id": "where2eat", "cost_center": "cc-1"}}))
    allowed = qm("policy", "test", policy, "--input", str(with_cc))
    assert "no rule fired" in allowed
    assert allowed.rstrip().endswith("result: allow")
    broken = tmp_path / "broken.json"
    broken.write_text("{manifest:")
    refused = qm("policy", "test", policy, "--input", str(broken), expect=1)
    assert f"{broken} is not JSON" in " ".join(refused.split())

    # A stored policy, by its name.
    qm("policy", "upload", "needs-cc", policy)
    stored = qm("policy", "test", "needs-cc", "--input", str(without), expect=1)
    assert re.search(r"needs-cc on without\.json", stored)
    assert re.search(r"│ deny\s+│ app where2eat has no cost_center in its manifest", stored)
    assert "not found" in qm("policy", "test", "nope", "--input", str(without), expect=1)
    missing = qm("policy", "test", "gone.rego", "--input", str(without), expect=1)
    assert "no policy file gone.rego" in missing


def test_policy_disable_and_enable_over_http(
    live_server: LiveServer,
    tenant: TenantHandle,
    app_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    as_admin_of(live_server, tenant, monkeypatch, columns=120)
    qm("team", "create", "social", "--cost-center", "default")
    wrong = app_dir / "wrong.rego"
    wrong.write_text('package qm.publish.wrong\ndeny contains "everything" if { true }\n')
    assert "policy wrong v1 (enforce)" in qm("policy", "upload", "wrong", str(wrong))
    assert "everything" in qm("app", "publish", str(app_dir), expect=1)
    assert "policy wrong v2 (enforce, disabled)" in qm("policy", "disable", "wrong")
    listed = qm("policy", "list")
    assert re.search(r"│ wrong\s+│ v2 enforce \(disabled\)\s+│", listed)
    assert re.search(r"│ qm\.publish\.wrong\s+│ in force: none \(disabled\)\s+│", listed)
    manifest = json.loads((app_dir / "qm-app.json").read_text())
    (app_dir / "qm-app.json").write_text(json.dumps({**manifest, "version": "1.0.1"}))
    assert "where2eat@1.0.1 is published" in qm("app", "publish", str(app_dir))
    assert "policy wrong v3 (enforce)" in qm("policy", "enable", "wrong")
    staged = qm("policy", "upload", "wrong", str(wrong), "--audit", "--disabled")
    assert "policy wrong v4 (audit, draft); in force: v3 (enforce)" in staged
    assert "policy 'nope' not found" in qm("policy", "disable", "nope", expect=1)


def test_validate_on_the_server_fails_where_publishing_would(
    live_server: LiveServer,
    tenant: TenantHandle,
    app_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # docs/catalog.md's walk-through: the example app's team does not exist yet.
    as_admin_of(live_server, tenant, monkeypatch, columns=120)
    refused = qm("app", "validate", str(app_dir), "--server", expect=1)
    assert re.search(
        r"FAIL\s+references\s+publishing would refuse it\n\s+- team: unknown team", refused
    )
    assert refused.rstrip().endswith("blocked: would not publish")
    assert "unknown team 'social'" in qm("app", "publish", str(app_dir), expect=1)
    qm("team", "create", "social", "--cost-center", "default")
    assert "ok: would publish" in qm("app", "validate", str(app_dir), "--server")
    assert "where2eat@1.0.0 is published" in qm("app", "publish", str(app_dir))
    # A changed manifest under the same version: the message names the field itself, so it
    # is not printed twice ("version version 1.0.0 ...").
    manifest = json.loads((app_dir / "qm-app.json").read_text())
    (app_dir / "qm-app.json").write_text(json.dumps({**manifest, "title": "Where2Eat v2"}))
    changed = qm("app", "validate", str(app_dir), "--server", expect=1)
    assert "- version 1.0.0 of 'where2eat' exists with other content" in changed
    assert "version version" not in changed
