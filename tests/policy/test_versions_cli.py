"""`qm policy upload|versions|rollback|decisions --policy` and `qm app publish` telling the
builder an audit-mode objection, against a live server over real HTTP."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.catalog.publish_support import EXAMPLES
from tests.catalog.test_publish_cli import as_admin_of, qm
from tests.conftest import LiveServer, TenantHandle

HEAD = "package t.publish.tags\nimport rego.v1\n"
ENFORCED = HEAD + 'deny contains "needs tags" if count(input.manifest.tags) == 0\n'
TRIAL = HEAD + 'deny contains "needs four tags" if count(input.manifest.tags) < 4\n'


def test_staging_trying_and_rolling_back_a_policy(
    live_server: LiveServer, tenant: TenantHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_admin_of(live_server, tenant, monkeypatch, columns=200)
    qm("team", "create", "social", "--cost-center", "default")
    enforced, trial = tmp_path / "v1.rego", tmp_path / "v2.rego"
    enforced.write_text(ENFORCED)
    trial.write_text(TRIAL)
    assert "policy tags v1 (enforce); in force: v1 (enforce)" in qm(
        "policy", "upload", "tags", str(enforced)
    )
    assert "policy tags v2 (enforce, draft); in force: v1 (enforce)" in qm(
        "policy", "upload", "tags", str(trial), "--disabled"
    )
    assert "policy tags v3 (audit); in force: v1 (enforce), v3 (audit)" in qm(
        "policy", "upload", "tags", str(trial), "--audit"
    )
    history = qm("policy", "versions", "tags")
    for version, state in (("3", "in_force"), ("2", "superseded"), ("1", "in_force")):
        assert any(
            line.split("│")[1].strip() == version and line.split("│")[2].strip() == state
            for line in history.splitlines()
            if line.count("│") > 3
        ), history

    app_dir = tmp_path / "where2eat"
    shutil.copytree(EXAMPLES / "app", app_dir)
    published = qm("app", "publish", str(app_dir))
    manifest = json.loads((app_dir / "qm-app.json").read_text())
    assert len(manifest["tags"]) < 4
    assert f"{manifest['app_id']}@{manifest['version']} is published" in published
    assert "[audit] tags: needs four tags (audit mode: not enforced)" in published

    assert "policy tags v4 (enforce); in force: v4 (enforce)" in qm(
        "policy", "rollback", "tags", "--to", "1"
    )
    decisions = qm("policy", "decisions", "--policy", "tags", "--point", "publish")
    assert "by tags v3 (audit)" in decisions
    assert "for admin" in decisions
