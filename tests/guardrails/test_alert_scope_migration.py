"""Migration 0020g: what an alert is about moves from its JSON details into indexed columns,
for the alerts that existed before as for new ones (`raise_alert`)."""

from __future__ import annotations

import importlib.util
import json
from typing import Any

from alembic import command
from sqlalchemy import Engine, inspect, select, text

from quartermaster.guardrails.alerts import Severity, raise_alert
from quartermaster.guardrails.models import Alert
from quartermaster.guardrails.visibility import alert_scope
from quartermaster.runtime import Runtime
from quartermaster.storage.migrate import MIGRATIONS_DIR, alembic_config, upgrade_database
from tests.conftest import TenantHandle

# (kind, details) of alerts raised before the migration, and the scope each is about.
_BEFORE: list[tuple[str, dict[str, Any], tuple[str, str] | None]] = [
    ("budget_threshold", {"scope_kind": "team", "scope": "web", "spend": "9"}, ("team", "web")),
    ("budget_threshold", {"scope_kind": "tenant", "scope": ""}, ("tenant", "")),
    ("budget_threshold", {"scope_kind": "cost_center", "scope": "rnd"}, ("cost_center", "rnd")),
    ("anomaly", {"scope_kind": "app", "scope": "shop", "rate": "3"}, ("app", "shop")),
    ("default_cap", {"app": "shop", "applies_to": "each_app"}, ("app", "shop")),
    ("high_cost_event", {"app": "shop", "team": "web"}, ("team", "web")),
    ("high_cost_event", {"app": "shop"}, ("app", "shop")),
    ("anomaly", {}, None),
]


def _migration() -> Any:
    path = MIGRATIONS_DIR / "versions" / "0020g_alert_scope_columns.py"
    spec = importlib.util.spec_from_file_location("migration_0020g", path)
    assert spec is not None
    assert spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    return migration


def test_the_migrations_copy_finds_the_applications_scope() -> None:
    migration = _migration()
    for kind, details, expected in _BEFORE:
        assert alert_scope(kind, details) == expected
        assert migration._alert_scope(kind, details) == expected


def test_the_migration_fills_existing_alerts_and_indexes_them(empty_engine: Engine) -> None:
    command.upgrade(alembic_config(empty_engine), "0019g")
    # More rows than one backfill chunk (2,000), so a chunk's seam is crossed.
    copies = 300
    with empty_engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO tenants (id, name, timezone, created_at)"
                " VALUES ('t1', 't1', 'UTC', '2026-11-01 00:00:00.000000')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO guardrail_alerts (id, tenant_id, kind, severity, dedup_key, title,"
                " message, details, created_at) VALUES (:id, 't1', :kind, 'info', :id, 't',"
                " 'm', :details, '2026-11-01 00:00:00.000000')"
            ),
            [
                {"id": f"a{n:03d}-{c:03d}", "kind": kind, "details": json.dumps(details)}
                for c in range(copies)
                for n, (kind, details, _) in enumerate(_BEFORE)
            ],
        )
    upgrade_database(empty_engine)

    with empty_engine.connect() as connection:
        rows = connection.execute(text("SELECT id, scope_kind, scope FROM guardrail_alerts"))
        stored = {alert_id: (kind, scope) for alert_id, kind, scope in rows}
    assert len(stored) == copies * len(_BEFORE)
    for alert_id, about in stored.items():
        expected = _BEFORE[int(alert_id[1:4])][2]
        assert about == (expected if expected is not None else (None, None)), alert_id
    indexes = {
        i["name"]: i["column_names"] for i in inspect(empty_engine).get_indexes("guardrail_alerts")
    }
    assert indexes["ix_guardrail_alerts_tenant_id_scope_kind_scope_created_at"] == [
        "tenant_id",
        "scope_kind",
        "scope",
        "created_at",
    ]
    deliveries = inspect(empty_engine).get_indexes("guardrail_deliveries")
    assert ["tenant_id", "created_at"] in [i["column_names"] for i in deliveries]


def test_a_new_alert_stores_what_it_is_about(runtime: Runtime, tenant: TenantHandle) -> None:
    with runtime.session_factory() as session:
        for n, (kind, details, _) in enumerate(_BEFORE):
            raise_alert(
                session,
                tenant_id=tenant.tenant_id,
                kind=kind,
                severity=Severity.INFO,
                dedup_key=f"new-{n}",
                title="t",
                message="m",
                details=details,
            )
        session.commit()
        rows = session.execute(
            select(Alert.dedup_key, Alert.scope_kind, Alert.scope).where(
                Alert.tenant_id == tenant.tenant_id
            )
        )
        stored = {key: (kind, scope) for key, kind, scope in rows}
    for n, (_, _, expected) in enumerate(_BEFORE):
        assert stored[f"new-{n}"] == (expected if expected is not None else (None, None))
