"""`qm policy list` at 80 columns: each policy's name over its package, its latest version
over the versions in force, when over by whom; nothing cut or split mid-word but the package."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from quartermaster.cli import client as cli_client
from quartermaster.cli.catalog_publish import policy_app


def _policy(name: str, version: int, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "package": f"qm.admission.{name.replace('-', '_')}",
        "mode": "enforce",
        "enabled": True,
        "draft": False,
        "source_digest": "ab" * 32,
        "created_by": "admin",
        "created_at": "2026-12-03T11:40:15.663787Z",
        "source": "package x",
        "in_force": [{"version": version, "mode": "enforce"}],
        **fields,
    }


def test_policy_list_reads_at_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    policies = [
        _policy(
            "gpu-needs-exception",
            3,
            in_force=[{"version": 1, "mode": "enforce"}, {"version": 3, "mode": "audit"}],
            mode="audit",
        ),
        _policy("org-scope", 2, enabled=False, draft=True, in_force=[], created_by="ci-bot"),
    ]
    monkeypatch.setattr(
        cli_client,
        "api_client",
        lambda **_: httpx.Client(
            transport=httpx.MockTransport(lambda _r: httpx.Response(200, json=policies)),
            base_url="http://qm",
        ),
    )
    result = CliRunner().invoke(policy_app, ["list"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert all(len(line) <= 80 for line in lines), result.output
    text = result.output
    for whole in (
        "│ gpu-needs-exception ",
        "│ v3 audit (enabled) ",
        "│ 2026-12-03 11:40:15Z │",
        "│ org-scope ",
        "│ v2 enforce (draft) ",
        "in force: none (disabled)",
        "by ci-bot",
    ):
        assert whole in text, (whole, text)
    assert "in force: v1 (enforce)," in " ".join(text.split())


def test_no_policies_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        cli_client,
        "api_client",
        lambda **_: httpx.Client(
            transport=httpx.MockTransport(lambda _r: httpx.Response(200, json=[])),
            base_url="http://qm",
        ),
    )
    result = CliRunner().invoke(policy_app, ["list"], env={"COLUMNS": "80"})
    assert result.output.strip() == "no policies"
