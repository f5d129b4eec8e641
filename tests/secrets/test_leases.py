"""Leases: renew within max_ttl, revoke (idempotent), revoke under a prefix, the per-app quota,
and the reaper ending expired leases."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from quartermaster.audit.log import list_records
from quartermaster.config import Settings
from quartermaster.domain.timeutil import utc_now
from quartermaster.errors import (
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
)
from quartermaster.runtime import Runtime, build_runtime
from quartermaster.secrets import kv, leases, revocation
from quartermaster.secrets.context import SecretsContext, build_secrets_context
from quartermaster.secrets.reaper import LeaseReaper, reap_once
from quartermaster.tenancy.models import ApiKey, Role
from tests.conftest import make_settings
from tests.secrets.conftest import World, add_team_and_app, api_key

PATH = "apps/billing/api-token"


def _seed(world: World, ctx: SecretsContext, runtime: Runtime, value: str = "token-value") -> None:
    with runtime.session_factory() as session:
        kv.write_secret(world.admin(), PATH, value, ctx=ctx, session=session)


def test_renew_extends_but_never_past_max_ttl(
    world: World, ctx: SecretsContext, runtime: Runtime
) -> None:
    _seed(world, ctx, runtime)
    billing = world.workload("billing")
    with runtime.session_factory() as session:
        lease = kv.read_secret(billing, PATH, ttl_seconds=5, ctx=ctx, session=session).lease
        assert lease.ttl_seconds() <= 5
        renewed = leases.renew_lease(
            billing, lease.id, increment_seconds=600, ctx=ctx, session=session
        )
        assert 590 <= renewed.ttl_seconds() <= 600
        capped = leases.renew_lease(
            billing, lease.id, increment_seconds=10**7, ctx=ctx, session=session
        )
    assert capped.expires_at == capped.max_expires_at


def test_an_absurd_increment_is_capped_at_max_ttl_not_a_500(
    client: TestClient, world: World
) -> None:
    """`qm lease renew ID --increment 99999999999999999999` overflowed timedelta (a 500): any
    increment reaching past the lease's max_ttl is the cap, as documented."""
    admin = world.headers
    put = client.put("/v1/secrets/data/apps/web/token", json={"value": "v-1"}, headers=admin)
    assert put.status_code == 200, put.text
    lease_id = client.get("/v1/secrets/data/apps/web/token", headers=admin).json()["lease"]["id"]
    for increment in (10**20, 10**12, 2**63):
        renewed = client.post(
            f"/v1/leases/{lease_id}/renew", json={"increment_seconds": increment}, headers=admin
        )
        assert renewed.status_code == 200, renewed.text
        lease = renewed.json()
        assert lease["expires_at"] == lease["max_expires_at"]
    refused = client.post(
        f"/v1/leases/{lease_id}/renew", json={"increment_seconds": 0}, headers=admin
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["field"] == "increment_seconds"


def test_leases_are_listed_by_holder(client: TestClient, world: World, runtime: Runtime) -> None:
    """A revoked key's leases live on until they expire (docs/secrets.md): `holder` finds
    them, by the principal's name or id, to revoke them."""
    admin = world.headers
    put = client.put("/v1/secrets/data/apps/web/token", json={"value": "v-1"}, headers=admin)
    assert put.status_code == 200, put.text
    bot = api_key(
        runtime, world.tenant_id, "ci-bot", Role.TEAM_MEMBER, team_id=world.growth_team_id
    )
    mine = client.get("/v1/secrets/data/apps/web/token", headers=admin).json()["lease"]
    bots = client.get("/v1/secrets/data/apps/web/token", headers=bot).json()["lease"]
    for holder in ("principal:ci-bot", bots["holder"]):
        listed = client.get("/v1/leases", params={"holder": holder}, headers=admin)
        assert [lease["id"] for lease in listed.json()["leases"]] == [bots["id"]]
    listed = client.get("/v1/leases", params={"holder": "principal:admin"}, headers=admin)
    assert [lease["id"] for lease in listed.json()["leases"]] == [mine["id"]]
    nobody = client.get("/v1/leases", params={"holder": "app:web"}, headers=admin)
    assert nobody.json()["leases"] == []


def test_leases_are_paged_oldest_first(client: TestClient, world: World) -> None:
    admin = world.headers
    put = client.put("/v1/secrets/data/apps/web/token", json={"value": "v-1"}, headers=admin)
    assert put.status_code == 200, put.text
    issued = [
        client.get("/v1/secrets/data/apps/web/token", headers=admin).json()["lease"]["id"]
        for _ in range(5)
    ]
    seen: list[str] = []
    params: dict[str, object] = {"limit": 2}
    while True:
        page = client.get("/v1/leases", params=params, headers=admin)
        assert page.status_code == 200, page.text
        seen.extend(lease["id"] for lease in page.json()["leases"])
        cursor = page.headers.get("X-Next-After")
        if cursor is None:
            break
        params = {"limit": 2, "after": cursor}
    assert seen == issued
    unknown = client.get("/v1/leases", params={"after": "f" * 32}, headers=admin)
    assert unknown.status_code == 422
    assert unknown.json()["error"]["field"] == "after"


def test_a_lease_is_named_by_a_unique_prefix_of_its_id(
    client: TestClient, world: World, runtime: Runtime
) -> None:
    """`qm lease revoke <prefix>` answered not_found (exit 0) and ended nothing: 8 or more
    characters name the one lease the caller may manage that begins with them."""
    admin = world.headers
    for name in ("web/token", "billing/token"):
        put = client.put(f"/v1/secrets/data/apps/{name}", json={"value": "v-1"}, headers=admin)
        assert put.status_code == 200, put.text
    lease_id = client.get("/v1/secrets/data/apps/web/token", headers=admin).json()["lease"]["id"]
    got = client.get(f"/v1/leases/{lease_id[:12]}", headers=admin)
    assert got.json()["id"] == lease_id
    renewed = client.post(f"/v1/leases/{lease_id[:8]}/renew", json={}, headers=admin)
    assert renewed.json()["id"] == lease_id
    short = client.post(f"/v1/leases/{lease_id[:6]}/revoke", headers=admin)
    assert short.status_code == 422
    assert "too short" in short.json()["error"]["message"]
    # Another team's lease is not found by its prefix, as by its id.
    other = client.get("/v1/secrets/data/apps/billing/token", headers=admin).json()["lease"]
    growth = api_key(runtime, world.tenant_id, "gm", Role.TEAM_MEMBER, team_id=world.growth_team_id)
    hidden = client.post(f"/v1/leases/{other['id'][:12]}/revoke", headers=growth)
    assert hidden.json()["status"] == "not_found"
    revoked = client.post(f"/v1/leases/{lease_id[:12]}/revoke", headers=growth)
    assert revoked.json() == {"lease_id": lease_id, "status": "revoked", "cleanup_pending": False}
    still = client.get(f"/v1/leases/{other['id']}", headers=admin)
    assert still.json()["state"] == "active"


def test_revoke_is_idempotent_and_renewing_a_revoked_lease_is_denied(
    world: World, ctx: SecretsContext, runtime: Runtime
) -> None:
    _seed(world, ctx, runtime)
    billing = world.workload("billing")
    with runtime.session_factory() as session:
        lease = kv.read_secret(billing, PATH, ctx=ctx, session=session).lease
        first = revocation.revoke_lease(billing, lease.id, ctx=ctx, session=session)
        again = revocation.revoke_lease(billing, lease.id, ctx=ctx, session=session)
        unknown = revocation.revoke_lease(billing, "no-such-lease", ctx=ctx, session=session)
        with pytest.raises(
            ConflictError,
            # To the second, as a person reads it: the microseconds of isoformat() were noise.
            match=r"ended at \d{4}-\d\d-\d\d \d\d:\d\d(:\d\d)? UTC \(revoked\) and cannot be",
        ):
            leases.renew_lease(billing, lease.id, increment_seconds=60, ctx=ctx, session=session)
        records = list_records(world.tenant_id, session=session)
    assert (first.status, again.status, unknown.status) == ("revoked", "already_ended", "not_found")
    renew_denials = [s.record for s in records if s.record.action == "renew"]
    assert [(r.outcome, r.lease_id) for r in renew_denials] == [("denied", lease.id)]


def test_an_expired_lease_cannot_be_renewed(
    world: World, ctx: SecretsContext, runtime: Runtime
) -> None:
    _seed(world, ctx, runtime)
    admin = world.admin()
    with runtime.session_factory() as session:
        lease = kv.read_secret(admin, PATH, ttl_seconds=1, ctx=ctx, session=session).lease
    time.sleep(1.1)
    with runtime.session_factory() as session, pytest.raises(ConflictError, match="expired"):
        leases.renew_lease(admin, lease.id, increment_seconds=60, ctx=ctx, session=session)


def test_only_the_holder_admin_or_owning_team_manage_a_lease(
    world: World, ctx: SecretsContext, runtime: Runtime
) -> None:
    _seed(world, ctx, runtime)
    with runtime.session_factory() as session:
        lease = kv.read_secret(world.workload("billing"), PATH, ctx=ctx, session=session).lease
        foreign = revocation.revoke_lease(world.workload("web"), lease.id, ctx=ctx, session=session)
        assert foreign.status == "not_found"  # as for an unknown lease, and nothing ended
        with pytest.raises(NotFoundError, match=f"lease '{lease.id}' not found"):
            leases.renew_lease(
                world.member(world.growth_team_id),
                lease.id,
                increment_seconds=9,
                ctx=ctx,
                session=session,
            )
        owner_team = world.member(world.payments_team_id)
        result = revocation.revoke_lease(owner_team, lease.id, ctx=ctx, session=session)
        records = list_records(world.tenant_id, action="revoke", session=session)
    assert result.status == "revoked"
    # The refusal is audited with its reason (only admins read the chain).
    assert (records[0].record.outcome, records[0].record.detail["reason"]) == (
        "denied",
        f"may not revoke: lease {lease.id} is held by app:billing, not app:web",
    )


def test_another_holders_lease_is_answered_as_unknown_over_the_api(
    client: TestClient, world: World, runtime: Runtime
) -> None:
    """Renew and revoke of a lease the caller may not manage answer exactly as for a lease that
    does not exist (like GET): neither its existence nor its holder is told."""
    admin = world.headers
    put = client.put("/v1/secrets/data/apps/web/token", json={"value": "v-1"}, headers=admin)
    assert put.status_code == 200, put.text
    tm_b = api_key(runtime, world.tenant_id, "tm-b", Role.TEAM_MEMBER, team_id=world.growth_team_id)
    tm_a = api_key(
        runtime, world.tenant_id, "tm-a", Role.TEAM_MEMBER, team_id=world.payments_team_id
    )
    finance = api_key(runtime, world.tenant_id, "fin", Role.FINANCE)
    read = client.get("/v1/secrets/data/apps/web/token", headers=tm_b)
    assert read.status_code == 200, read.text
    lease_id = read.json()["lease"]["id"]
    for lid in (lease_id, "no-such-lease"):
        # Finance may use no lease at all: 403 for every id, which tells nothing either.
        got = client.get(f"/v1/leases/{lid}", headers=finance)
        renew = client.post(f"/v1/leases/{lid}/renew", json={}, headers=finance)
        revoke = client.post(f"/v1/leases/{lid}/revoke", headers=finance)
        assert (got.status_code, renew.status_code, revoke.status_code) == (403, 403, 403)
        assert "tm-b" not in got.text + renew.text + revoke.text
    for lid in (lease_id, "no-such-lease"):
        got = client.get(f"/v1/leases/{lid}", headers=tm_a)
        renew = client.post(f"/v1/leases/{lid}/renew", json={}, headers=tm_a)
        revoke = client.post(f"/v1/leases/{lid}/revoke", headers=tm_a)
        assert (got.status_code, renew.status_code, revoke.status_code) == (404, 404, 200)
        assert renew.json()["error"]["message"] == f"lease {lid!r} not found"
        assert revoke.json()["status"] == "not_found"
        assert "tm-b" not in renew.text + revoke.text
    still = client.get(f"/v1/leases/{lease_id}", headers=tm_b)
    assert still.json()["state"] == "active"


def test_a_team_member_lists_the_leases_it_may_manage(
    client: TestClient, world: World, runtime: Runtime
) -> None:
    """A team member sees its own leases and every lease on its team's paths (its apps'
    workload leases among them, named by holder), the leases it may renew and revoke; the
    other team's stay invisible, as do ones its own app holds on another team's paths."""
    admin = world.headers
    for path in ("apps/billing/token", "apps/web/token", "teams/payments/shared"):
        put = client.put(f"/v1/secrets/data/{path}", json={"value": "v"}, headers=admin)
        assert put.status_code == 200, put.text
    minted = client.post("/v1/identity/token", json={"app_id": "billing"}, headers=admin)
    assert minted.status_code == 200, minted.text
    billing = {"Authorization": f"Bearer {minted.json()['token']}"}
    web_token = client.post("/v1/identity/token", json={"app_id": "web"}, headers=admin)
    web = {"Authorization": f"Bearer {web_token.json()['token']}"}
    tm_a = api_key(
        runtime, world.tenant_id, "tm-a", Role.TEAM_MEMBER, team_id=world.payments_team_id
    )
    tm_b = api_key(runtime, world.tenant_id, "tm-b", Role.TEAM_MEMBER, team_id=world.growth_team_id)

    def lease_of(headers: dict[str, str], path: str) -> str:
        got = client.get(f"/v1/secrets/data/{path}", headers=headers)
        assert got.status_code == 200, got.text
        return str(got.json()["lease"]["id"])

    app_lease = lease_of(billing, "apps/billing/token")
    web_lease = lease_of(web, "apps/web/token")
    admin_on_team = lease_of(admin, "teams/payments/shared")
    own = lease_of(tm_a, "apps/billing/token")
    other_team = lease_of(tm_b, "apps/web/token")

    def listed(headers: dict[str, str], **params: str) -> dict[str, str]:
        got = client.get("/v1/leases", params=params, headers=headers)
        assert got.status_code == 200, got.text
        return {lease["id"]: lease["holder_name"] for lease in got.json()["leases"]}

    assert listed(tm_a) == {
        app_lease: "app:billing",
        admin_on_team: "principal:admin",
        own: "principal:tm-a",
    }
    assert listed(tm_a, prefix="apps/") == {app_lease: "app:billing", own: "principal:tm-a"}
    assert listed(tm_b) == {web_lease: "app:web", other_team: "principal:tm-b"}
    assert listed(billing) == {app_lease: "app:billing"}
    assert set(listed(admin)) == {app_lease, web_lease, admin_on_team, own, other_team}
    # What it lists it may manage; the other team's it may not.
    renewed = client.post(f"/v1/leases/{app_lease}/renew", json={}, headers=tm_a)
    assert renewed.status_code == 200, renewed.text
    foreign = client.post(f"/v1/leases/{web_lease}/renew", json={}, headers=tm_a)
    assert foreign.status_code == 404


def test_revoke_prefix_ends_every_lease_under_it(
    world: World, ctx: SecretsContext, runtime: Runtime
) -> None:
    admin = world.admin()
    with runtime.session_factory() as session:
        for path in (PATH, "apps/billing/db/password", "apps/web/token"):
            kv.write_secret(admin, path, f"value-of-{path}", ctx=ctx, session=session)
            kv.read_secret(admin, path, ctx=ctx, session=session)
            kv.read_secret(admin, path, ctx=ctx, session=session)
        result = revocation.revoke_prefix(admin, "apps/billing", ctx=ctx, session=session)
        again = revocation.revoke_prefix(admin, "apps/billing/", ctx=ctx, session=session)
        remaining = leases.list_leases(admin, session=session)
        with pytest.raises(PermissionDeniedError, match="reaches beyond"):
            revocation.revoke_prefix(
                world.member(world.payments_team_id), "apps/", ctx=ctx, session=session
            )
    assert (result.revoked, again.revoked) == (4, 0)
    assert {info.path for info in remaining} == {"apps/web/token"}


@pytest.fixture
def small_quota_ctx(tmp_path: Path, db_url: str) -> Iterator[tuple[Runtime, SecretsContext]]:
    from quartermaster.secrets.identity import generate_identity_key
    from quartermaster.secrets.keys import generate_root_keyring

    settings: Settings = make_settings(
        tmp_path / "quota", db_url, pipeline_enabled=False, secrets_max_leases_per_app=3
    )
    generate_root_keyring(settings)
    generate_identity_key(settings)
    runtime = build_runtime(settings, migrate=False)
    context = build_secrets_context(runtime)
    yield runtime, context
    context.close()
    runtime.close()


def test_quota_stops_a_looping_workload(
    world: World, small_quota_ctx: tuple[Runtime, SecretsContext]
) -> None:
    runtime, ctx = small_quota_ctx
    _seed(world, ctx, runtime)
    billing = world.workload("billing")
    with runtime.session_factory() as session:
        issued = [kv.read_secret(billing, PATH, ctx=ctx, session=session).lease for _ in range(3)]
        with pytest.raises(RateLimitedError, match="quota") as excinfo:
            kv.read_secret(billing, PATH, ctx=ctx, session=session)
        assert "secrets_max_leases_per_app = 3" in excinfo.value.message
        # Another app is not affected, and revoking one frees a slot.
        add_team_and_app(runtime, world.tenant_id, "ops", "cron")
        kv.write_secret(world.admin(), "apps/cron/k", "cron-value", ctx=ctx, session=session)
        kv.read_secret(world.workload("cron"), "apps/cron/k", ctx=ctx, session=session)
        revocation.revoke_lease(billing, issued[0].id, ctx=ctx, session=session)
        kv.read_secret(billing, PATH, ctx=ctx, session=session)
        records = list_records(world.tenant_id, session=session)
    denied = [s.record for s in records if s.record.outcome == "denied"]
    assert [(d.action, d.actor, d.detail["quota"]) for d in denied] == [("read", "app:billing", 3)]


def test_reaper_ends_expired_leases(world: World, ctx: SecretsContext, runtime: Runtime) -> None:
    _seed(world, ctx, runtime)
    admin = world.admin()
    with runtime.session_factory() as session:
        short = kv.read_secret(admin, PATH, ttl_seconds=1, ctx=ctx, session=session).lease
        long = kv.read_secret(admin, PATH, ttl_seconds=600, ctx=ctx, session=session).lease
    time.sleep(1.1)
    report = reap_once(ctx)
    with runtime.session_factory() as session:
        ended = leases.get_lease(admin, short.id, session=session)
        alive = leases.get_lease(admin, long.id, session=session)
        expiries = [
            s.record
            for s in list_records(world.tenant_id, session=session)
            if s.record.action == "expire"
        ]
    assert report.expired >= 1
    assert (ended.state, ended.end_reason) == ("ended", "expired")
    assert alive.state == "active"
    assert [(r.lease_id, r.actor) for r in expiries] == [(short.id, "system:reaper")]


def test_reaper_runs_as_a_background_service(
    world: World, ctx: SecretsContext, runtime: Runtime
) -> None:
    _seed(world, ctx, runtime)
    admin = world.admin()
    with runtime.session_factory() as session:
        lease = kv.read_secret(admin, PATH, ttl_seconds=1, ctx=ctx, session=session).lease
    reaper = LeaseReaper(ctx, interval_seconds=0.1, owns_context=False)
    reaper.start()
    try:
        deadline = time.monotonic() + 10
        state = "active"
        while time.monotonic() < deadline and state != "ended":
            time.sleep(0.1)
            with runtime.session_factory() as session:
                state = leases.get_lease(admin, lease.id, session=session).state
    finally:
        reaper.stop()
    assert state == "ended"
    assert reaper.status().failures == 0


def test_concurrent_reads_cannot_exceed_the_quota(
    world: World, small_quota_ctx: tuple[Runtime, SecretsContext]
) -> None:
    import threading

    runtime, ctx = small_quota_ctx
    _seed(world, ctx, runtime)
    billing = world.workload("billing")
    outcomes: list[str] = []
    lock = threading.Lock()

    def read() -> None:
        try:
            with runtime.session_factory() as session:
                kv.read_secret(billing, PATH, ctx=ctx, session=session)
            result = "ok"
        except RateLimitedError:
            result = "refused"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["ok"] * 3 + ["refused"] * 5


def _app_keys(client: TestClient, world: World, count: int) -> list[tuple[str, dict[str, str]]]:
    """(key id, headers) of `count` keys of one app principal of billing."""
    made = client.post(
        "/v1/principals",
        json={"name": f"billing-svc-{count}", "role": "app", "app_id": "billing"},
        headers=world.headers,
    )
    assert made.status_code == 201, made.text
    keys = []
    for _ in range(count):
        issued = client.post(
            f"/v1/principals/{made.json()['id']}/keys", json={}, headers=world.headers
        )
        assert issued.status_code == 201, issued.text
        keys.append(
            (issued.json()["key_id"], {"Authorization": f"Bearer {issued.json()['token']}"})
        )
    return keys


def _read_lease(client: TestClient, headers: dict[str, str]) -> dict[str, object]:
    read = client.get(f"/v1/secrets/data/{PATH}", headers=headers)
    assert read.status_code == 200, read.text
    lease: dict[str, object] = read.json()["lease"]
    return lease


def test_revoking_a_key_ends_the_leases_obtained_with_it_and_with_its_tokens(
    client: TestClient, world: World, ctx: SecretsContext, runtime: Runtime
) -> None:
    _seed(world, ctx, runtime)
    (revoked_key, first), (_, second) = _app_keys(client, world, 2)
    with_first = _read_lease(client, first)
    with_second = _read_lease(client, second)
    minted = client.post("/v1/identity/token", json={"app_id": "billing"}, headers=first)
    assert minted.status_code == 200, minted.text
    token = {"Authorization": f"Bearer {minted.json()['token']}"}
    with_token = _read_lease(client, token)
    with runtime.session_factory() as session:
        unbound = kv.read_secret(world.admin(), PATH, ctx=ctx, session=session).lease
    assert reap_once(ctx).key_ended == 0

    bound = client.get("/v1/leases", params={"key_id": revoked_key}, headers=world.headers)
    assert bound.status_code == 200, bound.text
    assert sorted(each["id"] for each in bound.json()["leases"]) == sorted(
        [with_first["id"], with_token["id"]]
    )
    assert {each["key_id"] for each in bound.json()["leases"]} == {revoked_key}
    assert with_first["key_id"] == revoked_key  # as issued
    assert client.delete(f"/v1/keys/{revoked_key}", headers=world.headers).status_code == 200
    report = reap_once(ctx)
    assert report.key_ended == 2
    admin = world.admin()
    with runtime.session_factory() as session:
        states = {
            lease_id: (info.state, info.end_reason)
            for lease_id in (with_first["id"], with_token["id"], with_second["id"], unbound.id)
            for info in [leases.get_lease(admin, str(lease_id), session=session)]
        }
        revocations = [
            s.record
            for s in list_records(world.tenant_id, session=session)
            if s.record.action == "revoke"
        ]
    assert states == {
        with_first["id"]: ("ended", "key_revoked"),
        with_token["id"]: ("ended", "key_revoked"),
        with_second["id"]: ("active", None),  # another key of the same app
        unbound.id: ("active", None),  # obtained in-process, with no key behind it
    }
    assert sorted((r.lease_id, r.actor, r.detail["reason"]) for r in revocations) == sorted(
        (str(lease_id), "system:reaper", "key_revoked")
        for lease_id in (with_first["id"], with_token["id"])
    )
    assert reap_once(ctx).key_ended == 0  # once


def test_a_key_that_expires_ends_its_leases(
    client: TestClient, world: World, ctx: SecretsContext, runtime: Runtime
) -> None:
    _seed(world, ctx, runtime)
    ((key_id, headers),) = _app_keys(client, world, 1)
    lease = _read_lease(client, headers)
    with runtime.session_factory() as session:
        session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id)
            .values(expires_at=utc_now() - timedelta(seconds=1))
        )
        session.commit()
    assert reap_once(ctx).key_ended == 1
    with runtime.session_factory() as session:
        info = leases.get_lease(world.admin(), str(lease["id"]), session=session)
    assert (info.state, info.end_reason) == ("ended", "key_expired")


def test_a_lease_obtained_with_an_identity_token_lives_no_longer_than_the_token(
    client: TestClient, world: World, ctx: SecretsContext, runtime: Runtime
) -> None:
    _seed(world, ctx, runtime)
    ((_, headers),) = _app_keys(client, world, 1)
    minted = client.post(
        "/v1/identity/token", json={"app_id": "billing", "ttl_seconds": 60}, headers=headers
    )
    assert minted.status_code == 200, minted.text
    token_expiry = minted.json()["expires_at"]
    token = {"Authorization": f"Bearer {minted.json()['token']}"}
    read = client.get(f"/v1/secrets/data/{PATH}?ttl_seconds=900", headers=token)
    assert read.status_code == 200, read.text
    lease = read.json()["lease"]
    assert lease["expires_at"] == lease["max_expires_at"] == token_expiry
    assert 55 <= lease["ttl"] <= 60
    renewed = client.post(
        f"/v1/leases/{lease['id']}/renew", json={"increment_seconds": 3600}, headers=headers
    )
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["expires_at"] == token_expiry  # the app key renews it, to the cap
