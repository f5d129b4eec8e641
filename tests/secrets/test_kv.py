"""The versioned KV store through its service functions, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from quartermaster.audit.log import list_records
from quartermaster.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from quartermaster.runtime import Runtime
from quartermaster.secrets import kv, kv_lifecycle
from quartermaster.secrets.context import SecretsContext
from quartermaster.secrets.leases import list_leases
from tests.secrets.conftest import World

PATH = "apps/billing/db-password"


def test_write_then_read_latest_and_a_version(
    world: World, ctx: SecretsContext, runtime: Runtime
) -> None:
    admin = world.admin()
    with runtime.session_factory() as session:
        first = kv.write_secret(admin, PATH, "s3cret-one", ctx=ctx, session=session)
        second = kv.write_secret(admin, PATH, "s3cret-two", ctx=ctx, session=session)
        latest = kv.read_secret(admin, PATH, ctx=ctx, session=session)
        old = kv.read_secret(admin, PATH, version=1, ctx=ctx, session=session)
    assert (first.version, second.version) == (1, 2)
    assert (latest.version, latest.value) == (2, "s3cret-two")
    assert (old.version, old.value) == (1, "s3cret-one")
    assert latest.lease.id != old.lease.id
    assert latest.lease.ttl_seconds() > 0
    assert latest.lease.max_ttl_seconds == ctx.settings.secrets_lease_max_ttl_seconds


def test_list_and_describe_show_metadata_only(
    world: World, ctx: SecretsContext, runtime: Runtime
) -> None:
    admin = world.admin()
    with runtime.session_factory() as session:
        kv.write_secret(admin, PATH, "value-a", ctx=ctx, session=session)
        kv.write_secret(admin, "apps/billing/api-key", "value-b", ctx=ctx, session=session)
        kv.write_secret(admin, "teams/growth/slack", "value-c", ctx=ctx, session=session)
        under_billing = kv.list_secrets(admin, prefix="apps/billing", session=session)
        everything = kv.list_secrets(admin, session=session)
        meta = kv.describe_secret(admin, PATH, session=session)
    assert [m.path for m in under_billing] == ["apps/billing/api-key", PATH]
    assert len(everything) == 3
    assert meta.current_version == 1
    assert meta.versions[0].size_bytes == len("value-a")
    assert "value-a" not in repr(meta)


def test_prefix_is_matched_by_segment(world: World, ctx: SecretsContext, runtime: Runtime) -> None:
    admin = world.admin()
    with runtime.session_factory() as session:
        kv.write_secret(admin, "apps/billing/db", "v1-value", ctx=ctx, session=session)
        kv.write_secret(admin, "apps/billing/db-old", "v2-value", ctx=ctx, session=session)
        found = kv.list_secrets(admin, prefix="apps/billing/db", session=session)
    assert [m.path for m in found] == ["apps/billing/db"]


def test_check_and_set_names_both_versions(
    world: World, ctx: SecretsContext, runtime: Runtime
) -> None:
    admin = world.admin()
    with runtime.session_factory() as session:
        kv.write_secret(admin, PATH, "first", cas=0, ctx=ctx, session=session)
        with pytest.raises(ConflictError) as excinfo:
            kv.write_secret(admin, PATH, "second", cas=0, ctx=ctx, session=session)
        assert "cas=0" in excinfo.value.message
        assert "current version is 1" in excinfo.value.message
        written = kv.write_secret(admin, PATH, "second", cas=1, ctx=ctx, session=session)
    assert written.version == 2


def test_soft_delete_undelete_destroy(world: World, ctx: SecretsContext, runtime: Runtime) -> None:
    admin = world.admin()
    with runtime.session_factory() as session:
        kv.write_secret(admin, PATH, "one-value", ctx=ctx, session=session)
        kv.write_secret(admin, PATH, "two-value", ctx=ctx, session=session)
        kv_lifecycle.delete_versions(admin, PATH, session=session)  # latest (2)
        with pytest.raises(NotFoundError, match="is deleted"):
            kv.read_secret(admin, PATH, ctx=ctx, session=session)
        assert kv.read_secret(admin, PATH, version=1, ctx=ctx, session=session).value == "one-value"
        kv_lifecycle.undelete_versions(admin, PATH, [2], session=session)
        assert kv.read_secret(admin, PATH, ctx=ctx, session=session).value == "two-value"
        kv_lifecycle.destroy_versions(admin, PATH, [1], ctx=ctx, session=session)
        with pytest.raises(NotFoundError, match="destroyed"):
            kv.read_secret(admin, PATH, version=1, ctx=ctx, session=session)
        with pytest.raises(ConflictError, match="destroyed"):
            kv_lifecycle.undelete_versions(admin, PATH, [1], session=session)
        with pytest.raises(NotFoundError, match="no version 7"):
            kv_lifecycle.delete_versions(admin, PATH, [7], session=session)
        meta = kv.describe_secret(admin, PATH, session=session)
    assert meta.versions[0].destroyed_at is not None
    assert meta.versions[1].deleted_at is None


def test_destroy_erases_ciphertext_and_ends_its_leases(
    world: World, ctx: SecretsContext, runtime: Runtime
) -> None:
    from quartermaster.secrets.models import SecretVersion

    admin = world.admin()
    with runtime.session_factory() as session:
        kv.write_secret(admin, PATH, "short-lived", ctx=ctx, session=session)
        lease = kv.read_secret(admin, PATH, ctx=ctx, session=session).lease
        kv_lifecycle.destroy_versions(admin, PATH, ctx=ctx, session=session)
        row = session.query(SecretVersion).filter_by(tenant_id=world.tenant_id).one()
        live = list_leases(admin, session=session)
    assert row.ciphertext is None
    assert lease.id not in {info.id for info in live}


def test_rotate_writes_a_new_version_and_revokes_leases(
    world: World, ctx: SecretsContext, runtime: Runtime
) -> None:
    admin = world.admin()
    with runtime.session_factory() as session:
        kv.write_secret(admin, PATH, "leaked-value", ctx=ctx, session=session)
        for _ in range(3):
            kv.read_secret(admin, PATH, ctx=ctx, session=session)
        result = kv_lifecycle.rotate_secret(admin, PATH, ctx=ctx, session=session)
        fresh = kv.read_secret(admin, PATH, ctx=ctx, session=session)
        live = list_leases(admin, prefix=PATH, session=session)
    assert result.revoked_leases == 3
    assert result.generated
    assert result.version.version == 2
    assert fresh.value != "leaked-value"
    assert len(fresh.value) >= 40
    assert [info.id for info in live] == [fresh.lease.id]


def test_invalid_paths_and_values_are_named(
    world: World, ctx: SecretsContext, runtime: Runtime
) -> None:
    admin = world.admin()
    with runtime.session_factory() as session:
        with pytest.raises(InvalidInputError, match="must start with apps/<app>/ or teams/"):
            kv.write_secret(admin, "prod/db", "x-value", ctx=ctx, session=session)
        with pytest.raises(InvalidInputError, match="needs a name"):
            kv.write_secret(admin, "apps/billing", "x-value", ctx=ctx, session=session)
        with pytest.raises(InvalidInputError, match="segment 3"):
            kv.write_secret(admin, "apps/billing/../x", "x-value", ctx=ctx, session=session)
        with pytest.raises(InvalidInputError, match="value is empty"):
            kv.write_secret(admin, PATH, "", ctx=ctx, session=session)
        with pytest.raises(NotFoundError, match="no app 'ghost'"):
            kv.write_secret(admin, "apps/ghost/db", "x-value", ctx=ctx, session=session)


def test_team_member_is_confined_to_its_team(
    world: World, ctx: SecretsContext, runtime: Runtime
) -> None:
    payments = world.member(world.payments_team_id)
    with runtime.session_factory() as session:
        kv.write_secret(payments, PATH, "payments-value", ctx=ctx, session=session)
        kv.write_secret(payments, "teams/payments/x", "team-value", ctx=ctx, session=session)
        kv.write_secret(world.admin(), "apps/web/token", "web-value", ctx=ctx, session=session)
        with pytest.raises(PermissionDeniedError, match="does not belong to your team"):
            kv.read_secret(payments, "apps/web/token", ctx=ctx, session=session)
        with pytest.raises(PermissionDeniedError):
            kv.write_secret(payments, "teams/growth/x", "nope-value", ctx=ctx, session=session)
        visible = kv.list_secrets(payments, session=session)
        records = list_records(world.tenant_id, session=session)
    assert sorted(m.path for m in visible) == [PATH, "teams/payments/x"]
    denials = [s.record for s in records if s.record.outcome == "denied"]
    assert [(d.action, d.path) for d in denials] == [
        ("read", "apps/web/token"),
        ("write", "teams/growth/x"),
    ]


def test_workload_reads_only_its_app(world: World, ctx: SecretsContext, runtime: Runtime) -> None:
    with runtime.session_factory() as session:
        kv.write_secret(world.admin(), PATH, "billing-value", ctx=ctx, session=session)
        kv.write_secret(world.admin(), "apps/web/token", "web-value", ctx=ctx, session=session)
        billing = world.workload("billing", team="payments")
        assert kv.read_secret(billing, PATH, ctx=ctx, session=session).value == "billing-value"
        with pytest.raises(PermissionDeniedError, match="no access rule lets app:billing read"):
            kv.read_secret(billing, "apps/web/token", ctx=ctx, session=session)
        with pytest.raises(PermissionDeniedError, match="may only read"):
            kv.write_secret(billing, PATH, "overwrite", ctx=ctx, session=session)
        job = world.workload("billing", job="ci-42")
        assert kv.read_secret(job, PATH, ctx=ctx, session=session).lease.holder == "app:billing"
        assert [m.path for m in kv.list_secrets(billing, session=session)] == [PATH]


def test_other_tenant_sees_nothing(
    make_world: object, world: World, ctx: SecretsContext, runtime: Runtime
) -> None:
    assert callable(make_world)
    other: World = make_world()
    with runtime.session_factory() as session:
        kv.write_secret(world.admin(), PATH, "tenant-a-value", ctx=ctx, session=session)
        with pytest.raises(NotFoundError, match="no secret at"):
            kv.read_secret(other.admin(), PATH, ctx=ctx, session=session)
        assert kv.list_secrets(other.admin(), session=session) == []
