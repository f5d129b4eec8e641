"""Migration 0014: each tenant that already has price books gets its earliest-loaded one as
its default, and the table matches the model."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, text

from quartermaster.storage.base import Base
from quartermaster.storage.migrate import alembic_config, upgrade_database
from quartermaster.storage.models import import_all_models

VERSIONS = [
    # tenant, name, version, recorded_at, created_by
    ("two-books", "internal-platform", 1, "2026-03-01 10:00:00", "alice"),
    ("two-books", "typo-book", 1, "2026-04-01 10:00:00", "bob"),
    ("two-books", "internal-platform", 2, "2026-05-01 10:00:00", "alice"),
    # recorded later, but its first version came first
    ("late-first", "zeta", 1, "2026-02-01 09:00:00", "carol"),
    ("late-first", "alpha", 1, "2026-02-02 09:00:00", "dave"),
    # the same moment: the one stored first
    ("same-moment", "second-stored", 1, "2026-06-01 00:00:00", "erin"),
    ("same-moment", "first-stored", 1, "2026-06-01 00:00:00", "frank"),
]


def test_each_tenant_gets_its_earliest_loaded_book(empty_engine: Engine) -> None:
    command.upgrade(alembic_config(empty_engine), "0003")
    tenants = {tenant for tenant, *_ in VERSIONS} | {"no-books"}
    with empty_engine.begin() as connection:
        for tenant in sorted(tenants):
            connection.execute(
                text(
                    "INSERT INTO tenants (id, name, timezone, created_at)"
                    " VALUES (:t, :t, 'UTC', '2026-01-01 00:00:00')"
                ),
                {"t": tenant},
            )
        for tenant, name, version, recorded_at, created_by in VERSIONS:
            connection.execute(
                text(
                    "INSERT INTO price_book_versions (tenant_id, name, version, currency,"
                    " effective_from, document, content_hash, recorded_at, created_by)"
                    " VALUES (:t, :n, :v, 'USD', '2026-01-01 00:00:00', '{}', 'h', :r, :c)"
                ),
                {"t": tenant, "n": name, "v": version, "r": recorded_at, "c": created_by},
            )
    upgrade_database(empty_engine)
    with empty_engine.connect() as connection:
        rows = connection.execute(
            text("SELECT tenant_id, name, chosen_by FROM price_book_defaults ORDER BY tenant_id")
        ).all()
    assert [tuple(row) for row in rows] == [
        ("late-first", "zeta", "carol"),
        ("same-moment", "second-stored", "erin"),
        ("two-books", "internal-platform", "alice"),
    ]


def test_the_table_matches_the_model(empty_engine: Engine) -> None:
    upgrade_database(empty_engine)
    import_all_models()
    with empty_engine.connect() as connection:
        diffs = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert [d for d in diffs if "price_book" in repr(d)] == []
