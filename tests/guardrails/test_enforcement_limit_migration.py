"""Migration 0027g: enforcements record their hard limit, and a budget may have a second
enforcement in a period at another limit; the rows made before keep none. Going back keeps
the period's first enforcement of each budget."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from quartermaster.storage.migrate import alembic_config

_TIME = "2026-12-01 00:00:00.000000"
_INSERT = (
    "INSERT INTO guardrail_enforcements (id, tenant_id, budget_id, scope_kind, scope, action,"
    " period_start, ends_at, reason, created_at{extra}) VALUES (:id, 't1', 'b1', 'app', 'shop',"
    " 'throttle', :start, :end, 'r', :created{values})"
)


def _enforcement(engine: Engine, enforcement_id: str, created: str, limit: str | None) -> None:
    extra, values = ("", "") if limit is None else (", hard_limit", ", :limit")
    with engine.begin() as connection:
        connection.execute(
            text(_INSERT.format(extra=extra, values=values)),
            {
                "id": enforcement_id,
                "start": _TIME,
                "end": "2027-01-01 00:00:00.000000",
                "created": created,
                "limit": limit,
            },
        )


def _ids(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id FROM guardrail_enforcements ORDER BY id"))
        return [row[0] for row in rows]


def test_hard_limits_are_recorded_from_0027g_and_dropped_going_back(empty_engine: Engine) -> None:
    config = alembic_config(empty_engine)
    command.upgrade(config, "0026g")
    with empty_engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO tenants (id, name, timezone, created_at)"
                f" VALUES ('t1', 't1', 'UTC', '{_TIME}')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO guardrail_budgets (id, tenant_id, name, scope_kind, scope, period,"
                " amount, thresholds, hard_percent, action, created_by, created_at) VALUES"
                f" ('b1', 't1', 'shop', 'app', 'shop', 'month', '10', '50,80,100', 100,"
                f" 'throttle', 'admin', '{_TIME}')"
            )
        )
    _enforcement(empty_engine, "e1", _TIME, None)
    command.upgrade(config, "0027g")
    with empty_engine.connect() as connection:
        assert connection.execute(text("SELECT hard_limit FROM guardrail_enforcements")).all() == [
            (None,)
        ]
    # A second enforcement of the period, at a limit; one limit once.
    _enforcement(empty_engine, "e2", "2026-12-02 00:00:00.000000", "30")
    with pytest.raises(IntegrityError):
        _enforcement(empty_engine, "e3", "2026-12-03 00:00:00.000000", "30")
    assert _ids(empty_engine) == ["e1", "e2"]
    command.downgrade(config, "0026g")
    assert _ids(empty_engine) == ["e1"]
    with pytest.raises(IntegrityError):  # one per budget and period again
        _enforcement(empty_engine, "e4", "2026-12-04 00:00:00.000000", None)
