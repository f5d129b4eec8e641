"""The in-process cache of verified API keys: what it answers, and every rule of the key check
(secret, revocation, expiry, role) holding with it warm."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from quartermaster.api.app import create_app
from quartermaster.runtime import Runtime, build_runtime
from quartermaster.tenancy import auth_cache
from quartermaster.tenancy.auth_cache import AuthCache
from quartermaster.tenancy.models import ApiKey, Role
from quartermaster.tenancy.service import (
    AuthContext,
    KeyState,
    bootstrap_tenant,
    minting_key_refusal,
)
from tests.conftest import TenantHandle, make_settings
from tests.tenancy.support import bearer, create_principal, issue_key, ok

CONTEXT = AuthContext("t1", "p1", "admin", Role.ADMIN, None, None)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_lives_for_the_ttl() -> None:
    clock = Clock()
    cache = AuthCache(10, clock=clock)
    assert cache.get("qm_k1_s") is None
    cache.put("qm_k1_s", CONTEXT, key_id="k1", expires_at=None, generation=cache.generation)
    assert cache.get("qm_k1_s") == CONTEXT
    assert cache.get("qm_k1_other-secret") is None  # keyed by the whole token
    clock.now += 9.9
    assert cache.get("qm_k1_s") == CONTEXT
    clock.now += 0.2
    assert cache.get("qm_k1_s") is None
    assert len(cache) == 0


def test_an_entry_ends_when_its_key_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = AuthCache(3600)
    expires = datetime.now(UTC) + timedelta(minutes=5)
    cache.put("qm_k1_s", CONTEXT, key_id="k1", expires_at=expires, generation=cache.generation)
    assert cache.get("qm_k1_s") == CONTEXT
    monkeypatch.setattr(auth_cache, "utc_now", lambda: expires)
    assert cache.get("qm_k1_s") is None


def test_invalidation_drops_the_key_and_wins_over_a_check_in_flight() -> None:
    cache = AuthCache(60)
    for token in ("qm_k1_a", "qm_k2_b"):
        key_id = token.split("_")[1]
        cache.put(token, CONTEXT, key_id=key_id, expires_at=None, generation=cache.generation)
    in_flight = cache.generation  # a check read the key before the revocation committed
    cache.invalidate_key("k1")
    assert cache.get("qm_k1_a") is None
    assert cache.get("qm_k2_b") == CONTEXT
    cache.put("qm_k1_a", CONTEXT, key_id="k1", expires_at=None, generation=in_flight)
    assert cache.get("qm_k1_a") is None  # its stale result was not stored


def test_the_cache_is_bounded_and_can_be_turned_off() -> None:
    cache = AuthCache(60, max_entries=3)
    for n in range(5):
        cache.put(f"qm_k{n}_s", CONTEXT, key_id=f"k{n}", expires_at=None, generation=0)
    assert len(cache) == 3
    assert cache.get("qm_k0_s") is None
    assert cache.get("qm_k4_s") == CONTEXT
    off = AuthCache(0)
    off.put("qm_k1_s", CONTEXT, key_id="k1", expires_at=None, generation=0)
    assert off.get("qm_k1_s") is None


def _revoke_behind_the_server(runtime: Runtime, token: str) -> None:
    """As another process (a second server) would: straight in the database."""
    with runtime.session_factory() as session:
        key_id = token.split("_")[1]
        stamp = datetime.now(UTC)
        session.execute(update(ApiKey).where(ApiKey.id == key_id).values(revoked_at=stamp))
        session.commit()


def test_rules_hold_with_the_cache_warm(
    client: TestClient, tenant: TenantHandle, runtime: Runtime
) -> None:
    assert runtime.auth_cache.enabled
    member = create_principal(client, tenant, role="finance")
    token = issue_key(client, tenant, member["id"])
    assert ok(client.get("/v1/tenant", headers=bearer(token)))["tenant_id"] == tenant.tenant_id
    assert runtime.auth_cache.get(token) is not None  # warm
    # A wrong secret for the cached key id is checked, and refused.
    forged = token.rsplit("_", 1)[0] + "_not-the-secret"
    assert client.get("/v1/tenant", headers=bearer(forged)).status_code == 401
    # Roles still apply to a cached caller: finance may not register apps.
    refused = client.post("/v1/apps", json={"app_id": "x", "title": "X"}, headers=bearer(token))
    assert refused.status_code == 403
    # Revoked through this server: refused at once.
    key_id = token.split("_")[1]
    ok(client.delete(f"/v1/keys/{key_id}", headers=tenant.headers))
    assert client.get("/v1/tenant", headers=bearer(token)).status_code == 401


def test_a_revocation_elsewhere_applies_within_the_ttl(
    client: TestClient, tenant: TenantHandle, runtime: Runtime
) -> None:
    member = create_principal(client, tenant, role="finance")
    token = issue_key(client, tenant, member["id"])
    assert client.get("/v1/tenant", headers=bearer(token)).status_code == 200
    _revoke_behind_the_server(runtime, token)
    # Still answered from this process's cache: the documented TTL trade-off ...
    assert client.get("/v1/tenant", headers=bearer(token)).status_code == 200
    runtime.auth_cache.ttl_seconds = 1e-9  # ... until the entry is older than the TTL
    assert client.get("/v1/tenant", headers=bearer(token)).status_code == 401


def test_with_the_cache_off_every_request_checks_the_database(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path / "qm", db_url, pipeline_enabled=False, auth_cache_seconds=0)
    runtime = build_runtime(settings, migrate=False)
    tenant_id = f"cache-off-{uuid.uuid4().hex[:8]}"
    try:
        with runtime.session_factory() as session:
            token = bootstrap_tenant(tenant_id, session=session).token
        with TestClient(create_app(settings, runtime=runtime)) as client:
            tenant = TenantHandle(tenant_id, token)
            member = create_principal(client, tenant, role="finance")
            member_token = issue_key(client, tenant, member["id"])
            assert client.get("/v1/tenant", headers=bearer(member_token)).status_code == 200
            _revoke_behind_the_server(runtime, member_token)
            assert client.get("/v1/tenant", headers=bearer(member_token)).status_code == 401
        assert len(runtime.auth_cache) == 0
    finally:
        runtime.close()


def test_key_states_are_kept_for_the_ttl_and_dropped_by_a_revocation() -> None:
    now = [0.0]
    cache = AuthCache(10, clock=lambda: now[0])
    state = KeyState(key_id="k1", tenant_id="acme", revoked_at=None, expires_at=None)
    cache.put_key_state(state, generation=cache.generation)
    assert cache.key_state("k1") == state
    stale = cache.generation
    cache.invalidate_key("k1")
    assert cache.key_state("k1") is None
    cache.put_key_state(state, generation=stale)  # read before the revocation: not kept
    assert cache.key_state("k1") is None
    cache.put_key_state(state, generation=cache.generation)
    now[0] = 10.0
    assert cache.key_state("k1") is None


def test_minting_key_refusal_names_the_key_and_why() -> None:
    moment = datetime(2026, 12, 3, 20, 59, 53, tzinfo=UTC)
    live = KeyState(key_id="k1", tenant_id="acme", revoked_at=None, expires_at=None)
    assert minting_key_refusal("k1", live, tenant_id="acme", now=moment) is None
    revoked = KeyState(key_id="k1", tenant_id="acme", revoked_at=moment, expires_at=None)
    assert minting_key_refusal("k1", revoked, tenant_id="acme", now=moment) == (
        "identity token was minted by API key k1, which was revoked at 2026-12-03 20:59:53 UTC"
    )
    expired = KeyState(key_id="k1", tenant_id="acme", revoked_at=None, expires_at=moment)
    assert minting_key_refusal("k1", expired, tenant_id="acme", now=moment) == (
        "identity token was minted by API key k1, which expired at 2026-12-03 20:59:53 UTC"
    )
    assert "no longer exists" in str(minting_key_refusal("k1", live, tenant_id="x", now=moment))
