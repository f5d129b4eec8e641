"""Migrations against the models, and the event log's dedup-key migration on existing rows."""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
from typing import Any

import orjson
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from quartermaster.bus.embedded import dedup_key
from quartermaster.metering.signing import content_hash, numbers_as_integers
from quartermaster.storage.base import Base
from quartermaster.storage.engine import create_db_engine
from quartermaster.storage.migrate import MIGRATIONS_DIR, alembic_config, upgrade_database
from quartermaster.storage.models import import_all_models
from tests.conftest import create_pg_database


def test_event_log_migrations_give_the_models_tables(empty_engine: Engine) -> None:
    upgrade_database(empty_engine)
    import_all_models()
    dialect = empty_engine.dialect.name

    def declared_here(obj: object, name: str | None, type_: str, *_: object) -> bool:
        # Alembic's comparison ignores Index.ddl_if: the dedup-key index is PostgreSQL's only
        return not (
            type_ == "index" and name == "ix_event_log_dedup_key" and dialect != "postgresql"
        )

    with empty_engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"include_object": declared_here})
        diffs = compare_metadata(context, Base.metadata)
    about_the_log = [d for d in diffs if "event_log" in repr(d) or "event_dedup" in repr(d)]
    assert about_the_log == []
    indexes = [i["name"] for i in inspect(empty_engine).get_indexes("event_log")]
    assert indexes == (["ix_event_log_dedup_key"] if dialect == "postgresql" else [])


def test_dedup_key_migration_fills_existing_rows_and_drops_the_unique_index(
    empty_engine: Engine,
) -> None:
    command.upgrade(alembic_config(empty_engine), "0009")
    rows = [("t1", "//apps/a", "e1"), ("t1", "//apps/a", "e2"), ("t2", "//apps/b", "e1")]
    with empty_engine.begin() as connection:
        for tenant_id, source, event_id in rows:
            connection.execute(
                text(
                    "INSERT INTO event_log (tenant_id, source, event_id, type, event_time,"
                    " recorded_at, content_hash, late, payload) VALUES (:t, :s, :e, 'x',"
                    " '2026-11-01 00:00:00.000000', '2026-11-01 00:00:00.000000', 'h', false,"
                    " '{}')"
                ),
                {"t": tenant_id, "s": source, "e": event_id},
            )
    upgrade_database(empty_engine)
    with empty_engine.connect() as connection:
        stored = connection.execute(
            text("SELECT tenant_id, source, event_id, dedup_key FROM event_log")
        ).all()
    assert sorted(stored) == sorted((*r, dedup_key(*r)) for r in rows)
    inspector = inspect(empty_engine)
    assert inspector.get_unique_constraints("event_log") == []
    indexes = [i["column_names"] for i in inspector.get_indexes("event_log")]
    if empty_engine.dialect.name == "postgresql":
        assert indexes == [["dedup_key"]]
    else:  # the keys are in event_dedup (0012), none in the recent table (0013)
        assert indexes == []
        with empty_engine.connect() as connection:
            merged = connection.execute(text("SELECT dedup_key, position FROM event_dedup")).all()
            recent = connection.execute(text("SELECT count(*) FROM event_dedup_recent")).scalar()
            marks = connection.execute(
                text("SELECT merged_upto, recent_keys, flush_next FROM event_dedup_mark")
            ).one()
        assert sorted(merged) == sorted((dedup_key(*r), p) for p, r in enumerate(rows, 1))
        assert recent == 0
        assert tuple(marks) == (len(rows), 0, None)


def test_the_migration_computes_the_applications_dedup_key() -> None:
    migration = _migration("0011_event_log_dedup_key.py", "migration_0011")
    for key in [("t", "s", "e"), ("tenant-x", "//apps/é", "id with spaces"), ("", "", "")]:
        assert migration._dedup_key(*key) == dedup_key(*key)


def _migration(path_name: str, module_name: str) -> Any:
    spec = importlib.util.spec_from_file_location(
        module_name, MIGRATIONS_DIR / "versions" / path_name
    )
    assert spec is not None
    assert spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    return migration


def test_the_content_hash_migration_numbers_as_the_application_does() -> None:
    migration = _migration("0028_event_content_hash_numbers.py", "migration_0028")
    for value in [{"a": [2.0, 2.5, -0.0, 1e16, 1e300, "1.0", True, None]}, 3.0, []]:
        assert migration._numbers_as_integers(value) == numbers_as_integers(value)
        assert [type(v) for v in migration._numbers_as_integers([value])] == [
            type(v) for v in numbers_as_integers([value])
        ]


def test_content_hash_migration_rehashes_stored_whole_floats_and_reverts(
    empty_engine: Engine,
) -> None:
    command.upgrade(alembic_config(empty_engine), "0018")
    spelled = {  # event id -> stored payload, as the canonical form wrote it
        "whole": {"data": {"compute_units": 2.0, "n": "v1.0"}, "id": "whole", "qmkeyid": "k1"},
        "integer": {"data": {"compute_units": 2}, "id": "integer"},
        "fraction": {"data": {"compute_units": 2.5, "big": 1e16}, "id": "fraction"},
    }
    old_hashes = {
        event_id: hashlib.sha256(
            orjson.dumps(
                {k: v for k, v in event.items() if k != "qmkeyid"}, option=orjson.OPT_SORT_KEYS
            )
        ).hexdigest()
        for event_id, event in spelled.items()
    }
    with empty_engine.begin() as connection:
        for event_id, event in spelled.items():
            connection.execute(
                text(
                    "INSERT INTO event_log (tenant_id, source, event_id, type, event_time,"
                    " recorded_at, content_hash, late, payload, dedup_key) VALUES ('t', 's', :e,"
                    " 'x', '2026-11-01 00:00:00.000000', '2026-11-01 00:00:00.000000', :h, false,"
                    " :p, 0)"
                ),
                {
                    "e": event_id,
                    "h": old_hashes[event_id],
                    "p": orjson.dumps(event, option=orjson.OPT_SORT_KEYS).decode(),
                },
            )

    def stored_hashes() -> dict[str, str]:
        with empty_engine.connect() as connection:
            rows = connection.execute(text("SELECT event_id, content_hash FROM event_log"))
            return {str(row.event_id): str(row.content_hash) for row in rows}

    upgrade_database(empty_engine)
    assert stored_hashes() == {event_id: content_hash(e) for event_id, e in spelled.items()}
    assert stored_hashes()["whole"] != old_hashes["whole"]
    assert stored_hashes()["whole"] == content_hash(
        {"data": {"compute_units": 2, "n": "v1.0"}, "id": "whole"}
    )
    command.downgrade(alembic_config(empty_engine), "0018")
    assert stored_hashes() == old_hashes


_MIGRATE = (
    "import sys; from quartermaster.storage.engine import create_db_engine; "
    "from quartermaster.storage.migrate import upgrade_database; "
    "upgrade_database(create_db_engine(sys.argv[1]))"
)


@pytest.mark.postgresql
def test_two_processes_migrating_one_new_postgresql_database_both_succeed() -> None:
    # Two servers of a rolling start (or two `qm init`s) on one empty database: the second
    # had failed creating the tables the first was creating (UniqueViolation on pg_type).
    # Processes, not threads: Alembic's `context` is one per process.
    url, drop = create_pg_database()
    engine = create_db_engine(url)
    try:
        migrators = [
            subprocess.Popen([sys.executable, "-c", _MIGRATE, url], stderr=subprocess.PIPE)
            for _ in range(2)
        ]
        errors = [m.communicate(timeout=120)[1].decode() for m in migrators]
        assert [m.returncode for m in migrators] == [0, 0], errors
        with engine.connect() as connection:
            versions = connection.execute(text("SELECT version_num FROM alembic_version"))
            heads = set(versions.scalars())
        assert heads == set(ScriptDirectory.from_config(alembic_config(engine)).get_heads())
    finally:
        engine.dispose()
        drop()
