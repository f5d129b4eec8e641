"""GCRA rate limits on both backends (in-process and Redis), and through the API."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from quartermaster.api.app import create_app
from quartermaster.config import ConfigurationError, Settings
from quartermaster.guardrails.ratelimit import (
    MemoryRateLimiter,
    RateLimiter,
    RedisRateLimiter,
    check_rate_limit_backend,
    gcra,
)
from quartermaster.runtime import build_runtime
from tests.conftest import TenantHandle, free_port
from tests.guardrails.support import build_world, ok


def test_gcra_allows_the_burst_then_the_rate() -> None:
    tat = None
    for _ in range(3):
        decision, tat = gcra(tat, 100.0, rate=2.0, burst=3)
        assert decision.allowed
    denied, unchanged = gcra(tat, 100.0, rate=2.0, burst=3)
    assert not denied.allowed
    assert unchanged is None
    assert denied.retry_after == pytest.approx(0.5)
    later, _ = gcra(tat, 100.5, rate=2.0, burst=3)  # one interval later: one more
    assert later.allowed


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def limiter(request: pytest.FixtureRequest) -> Iterator[RateLimiter]:
    backend: RateLimiter
    if request.param == "redis":
        backend = RedisRateLimiter("redis://127.0.0.1:6379/15")
    else:
        backend = MemoryRateLimiter()
    yield backend
    backend.close()


def test_backend_enforces_burst_and_refills(limiter: RateLimiter) -> None:
    key = f"test:{uuid.uuid4().hex}"
    results = [limiter.acquire(key, rate=20.0, burst=5) for _ in range(8)]
    assert [r.allowed for r in results] == [True] * 5 + [False] * 3
    assert results[0].remaining == 4
    assert results[4].remaining == 0
    assert 0 < results[5].retry_after <= 0.05 + 1e-6
    time.sleep(0.12)  # two intervals of 50 ms refilled: two more, then refused again
    again = [limiter.acquire(key, rate=20.0, burst=5).allowed for _ in range(10)]
    assert again[:2] == [True, True]
    assert False in again  # refilled at the rate, not back to the burst
    limiter.reset(key)
    assert limiter.acquire(key, rate=20.0, burst=5).allowed


def test_keys_are_independent(limiter: RateLimiter) -> None:
    a, b = f"a:{uuid.uuid4().hex}", f"b:{uuid.uuid4().hex}"
    assert limiter.acquire(a, rate=1.0, burst=1).allowed
    assert not limiter.acquire(a, rate=1.0, burst=1).allowed
    assert limiter.acquire(b, rate=1.0, burst=1).allowed


def test_api_rate_limit_per_app_answers_429(client: TestClient, tenant: TenantHandle) -> None:
    world = build_world(client, tenant)
    # One token per 30 s: the three calls fit in it however loaded the machine is (at 0.5/s a
    # slow machine refilled a token between them).
    rule = {"scope_kind": "app", "scope": world.app, "rate": "0.033", "burst": 2}
    ok(client.put("/v1/rate-limits", json=rule, headers=world.headers))
    body = {"app": world.app}
    statuses = [
        client.post("/v1/decisions", json=body, headers=world.headers).status_code for _ in range(3)
    ]
    assert statuses == [200, 200, 429]
    last = client.post("/v1/decisions", json=body, headers=world.headers)
    assert 1 <= int(last.headers["Retry-After"]) <= 31
    assert f"rate limit of app {world.app!r} exceeded" in last.json()["error"]["message"]
    other = build_world(client, tenant)  # another app: its own allowance
    assert (
        client.post("/v1/decisions", json={"app": other.app}, headers=world.headers).status_code
        == 200
    )


@pytest.mark.parametrize(
    ("kind", "scope", "applies_to"),
    [("tenant", None, "the tenant"), ("app", "*", "every app"), ("app", "APP", "app 'APP'")],
)
def test_a_rate_limit_is_deleted_by_an_admin_and_logged(
    client: TestClient, tenant: TenantHandle, kind: str, scope: str | None, applies_to: str
) -> None:
    world = build_world(client, tenant)
    h = world.headers
    scope = world.app if scope == "APP" else scope
    rule = ok(
        client.put(
            "/v1/rate-limits",
            json={"scope_kind": kind, "scope": scope, "rate": "0.033", "burst": 1},
            headers=h,
        )
    )
    body = {"app": world.app}
    assert client.post("/v1/decisions", json=body, headers=h).status_code == 200
    assert client.post("/v1/decisions", json=body, headers=h).status_code == 429
    assert client.delete(f"/v1/rate-limits/{rule['id']}", headers=h).status_code == 204
    assert ok(client.get("/v1/rate-limits", headers=h)) == []
    # The gate forgets the deleted rule at once: no more 429.
    assert client.post("/v1/decisions", json=body, headers=h).status_code == 200
    latest = ok(client.get("/v1/guardrail-actions", headers=h))[0]
    assert latest["action"] == "delete"
    assert latest["subject"] == f"rate_limit:{rule['id']}"
    expected = applies_to.replace("APP", world.app)
    assert latest["reason"] == (f"rate limit of {expected} (0.033/s, burst 1) deleted by admin"), (
        latest
    )
    again = client.delete(f"/v1/rate-limits/{rule['id']}", headers=h)
    assert again.status_code == 404
    assert again.json()["error"]["field"] == "rate_limit_id"


@pytest.mark.parametrize("burst", [0, 2**31, 10**25])
def test_a_burst_the_column_cannot_hold_is_a_422_naming_it(
    client: TestClient, tenant: TenantHandle, burst: int
) -> None:
    """The column is 32-bit on PostgreSQL: 10**25 was a 500 on both backends."""
    body = {"scope_kind": "tenant", "rate": "5", "burst": burst}
    response = client.put("/v1/rate-limits", json=body, headers=tenant.headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "burst"
    body["burst"] = 2**31 - 1
    assert client.put("/v1/rate-limits", json=body, headers=tenant.headers).status_code == 200


@pytest.mark.redis
def test_qm_serve_refuses_a_redis_backend_it_cannot_reach(tmp_path: Path) -> None:
    # Unchecked, the server started and every ingest and decision answered 500 once a rate
    # limit existed.
    def settings(url: str) -> Settings:
        return Settings(data_dir=tmp_path, rate_limit_backend="redis", redis_url=url)

    check_rate_limit_backend(settings("redis://127.0.0.1:6379/15"))
    port = free_port()
    with pytest.raises(ConfigurationError) as refused:
        check_rate_limit_backend(settings(f"redis://:s3cret@127.0.0.1:{port}/0"))
    message = str(refused.value)
    assert message.startswith(f"cannot reach Redis at 127.0.0.1:{port} (QM_REDIS_URL)")
    assert "s3cret" not in message
    check_rate_limit_backend(Settings(data_dir=tmp_path, redis_url=f"redis://127.0.0.1:{port}"))
    with pytest.raises(ConfigurationError, match="QM_REDIS_URL is not a Redis URL: Redis URL must"):
        check_rate_limit_backend(settings("127.0.0.1:6379"))  # a traceback before


def test_a_redis_that_goes_away_is_a_503_naming_it(
    settings: Settings, tenant: TenantHandle
) -> None:
    # Reachable at start, gone later: every decision and ingest had answered a bare 500.
    port = free_port()
    unreachable = settings.model_copy(
        update={"rate_limit_backend": "redis", "redis_url": f"redis://:s3cret@127.0.0.1:{port}/0"}
    )
    runtime = build_runtime(unreachable, migrate=False)
    try:
        with TestClient(create_app(unreachable, runtime=runtime)) as client:
            world = build_world(client, tenant)
            rule = {"scope_kind": "app", "scope": world.app, "rate": "5", "burst": 2}
            ok(client.put("/v1/rate-limits", json=rule, headers=world.headers))
            refused = client.post("/v1/decisions", json={"app": world.app}, headers=world.headers)
    finally:
        runtime.close()
    assert refused.status_code == 503
    error = refused.json()["error"]
    assert error["code"] == "service_unavailable"
    assert error["message"].startswith(
        f"rate limits cannot be checked: Redis at 127.0.0.1:{port} (QM_REDIS_URL) cannot be "
    )
    assert "s3cret" not in refused.text
