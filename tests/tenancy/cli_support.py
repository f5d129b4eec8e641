"""Running `qm` in-process against a live server over real HTTP."""

from __future__ import annotations

import pytest
from click.testing import Result
from typer.testing import CliRunner

from quartermaster.cli.main import _register_groups, app
from tests.conftest import LiveServer, TenantHandle


class Qm:
    """`qm` with QM_URL and QM_API_KEY pointing at a live server as one tenant's admin."""

    def __init__(self, runner: CliRunner) -> None:
        self.runner = runner

    def __call__(self, *args: str, expect: int = 0) -> Result:
        result = self.runner.invoke(app, list(args))
        assert result.exit_code == expect, (args, result.exit_code, result.output)
        return result


def make_qm(live_server: LiveServer, tenant: TenantHandle, monkeypatch: pytest.MonkeyPatch) -> Qm:
    # main() registers the feature groups at startup; in-process, do it once.
    if not any(group.name == "team" for group in app.registered_groups):
        _register_groups()
    monkeypatch.setenv("QM_URL", live_server.url)
    monkeypatch.setenv("QM_API_KEY", tenant.admin_token)
    monkeypatch.setenv("COLUMNS", "250")
    return Qm(CliRunner())
