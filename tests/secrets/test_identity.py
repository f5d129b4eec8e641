"""Workload identity tokens (EdDSA JWTs): issued per app or job, exchanged for secrets by
path rules; expired, forged and wrong-audience tokens are refused and audited."""

from __future__ import annotations

import base64
import json
import os
import stat
import time
from datetime import timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import update

from quartermaster.audit.failed_auth import FailedAuthLimiter
from quartermaster.audit.log import list_records
from quartermaster.catalog.models import App
from quartermaster.config import Settings
from quartermaster.domain.timeutil import utc_now
from quartermaster.runtime import Runtime
from quartermaster.secrets.context import SecretsContext
from quartermaster.secrets.identity import (
    IdentitySigner,
    TokenRejection,
    WorkloadClaims,
    identity_key_path,
    load_identity_key,
)
from quartermaster.tenancy.keys import split_token
from quartermaster.tenancy.models import Role
from quartermaster.tenancy.service import create_principal, issue_api_key
from tests.secrets.conftest import World, api_key

PATH = "apps/billing/db-password"


def _token(client: TestClient, headers: dict[str, str], **body: object) -> str:
    response = client.post("/v1/identity/token", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _seed(client: TestClient, world: World) -> None:
    for path in (PATH, "apps/web/token"):
        response = client.put(
            f"/v1/secrets/data/{path}", json={"value": f"value-of-{path}"}, headers=world.headers
        )
        assert response.status_code == 200, response.text


def test_signing_key_is_private_and_never_defaulted(settings: Settings) -> None:
    path = identity_key_path(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = load_identity_key(settings)
    second = load_identity_key(settings)
    assert first.private_bytes_raw() == second.private_bytes_raw()


def test_key_is_created_at_first_use(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "fresh")  # type: ignore[call-arg]
    assert not identity_key_path(settings).exists()
    load_identity_key(settings)
    assert stat.S_IMODE(os.stat(identity_key_path(settings)).st_mode) == 0o600


def test_tokens_round_trip_and_are_bound_to_audience() -> None:
    signer = IdentitySigner(Ed25519PrivateKey.generate(), issuer="qm-test")
    issued = signer.issue(
        tenant_id="acme",
        app="billing",
        team="payments",
        job="ci-7",
        audience="aud-a",
        ttl=timedelta(minutes=5),
    )
    header = json.loads(base64.urlsafe_b64decode(issued.token.split(".")[0] + "=="))
    assert header["alg"] == "EdDSA"
    claims = signer.verify(issued.token, audience="aud-a")
    assert isinstance(claims, WorkloadClaims)
    assert (claims.subject, claims.app, claims.job, claims.team) == (
        "job:ci-7",
        "billing",
        "ci-7",
        "payments",
    )
    wrong = signer.verify(issued.token, audience="aud-b")
    assert isinstance(wrong, TokenRejection)
    assert wrong.reason == "identity token is not for audience 'aud-b'"
    other = IdentitySigner(Ed25519PrivateKey.generate(), issuer="qm-test")
    forged = other.verify(issued.token, audience="aud-a")
    assert isinstance(forged, TokenRejection)
    assert not forged.signature_valid
    assert forged.tenant_id == "acme"


def test_an_hs256_token_with_the_public_key_is_refused() -> None:
    signer = IdentitySigner(Ed25519PrivateKey.generate(), issuer="qm")
    forged = jwt.encode(
        {
            "sub": "app:billing",
            "aud": "a",
            "iss": "qm",
            "exp": 9999999999,
            "iat": 1,
            "jti": "x",
            "qm_tenant": "acme",
            "qm_app": "billing",
        },
        "not-the-key-at-all-but-long-enough-for-hmac",
        algorithm="HS256",
    )
    assert isinstance(signer.verify(forged, audience="a"), TokenRejection)


def test_app_token_reads_its_own_app_only(
    client: TestClient, world: World, runtime: Runtime
) -> None:
    _seed(client, world)
    token = _token(client, world.headers, app_id="billing")
    read = client.get(f"/v1/secrets/data/{PATH}", headers=_bearer(token))
    assert read.status_code == 200, read.text
    body = read.json()
    assert body["value"] == f"value-of-{PATH}"
    assert set(body["lease"]) >= {"id", "ttl", "max_ttl"}
    assert body["lease"]["holder"] == "app:billing"
    denied = client.get("/v1/secrets/data/apps/web/token", headers=_bearer(token))
    assert denied.status_code == 403
    assert "no access rule lets app:billing read 'apps/web/token'" in denied.text
    write = client.put(
        f"/v1/secrets/data/{PATH}", json={"value": "x-value"}, headers=_bearer(token)
    )
    assert write.status_code == 403


def test_a_lease_bounded_by_its_token_reads_a_ttl_within_its_max_ttl(
    client: TestClient, world: World
) -> None:
    _seed(client, world)
    token = _token(client, world.headers, app_id="billing", ttl_seconds=120)
    lease = client.get(f"/v1/secrets/data/{PATH}", headers=_bearer(token)).json()["lease"]
    # The token expires at a whole second; the lease with it, whatever was asked.
    assert lease["expires_at"] == lease["max_expires_at"]
    assert 119 <= lease["ttl"] <= lease["max_ttl"] <= 120


def test_job_token_and_custom_rules(client: TestClient, world: World) -> None:
    _seed(client, world)
    job = _token(client, world.headers, app_id="web", job_id="build-9")
    assert client.get("/v1/secrets/data/apps/web/token", headers=_bearer(job)).status_code == 200
    rules = {"rules": [{"role": "job:*", "paths": ["apps/billing/*"]}]}
    put = client.put("/v1/secrets/access-rules", json=rules, headers=world.headers)
    assert put.status_code == 200, put.text
    assert client.get("/v1/secrets/data/apps/web/token", headers=_bearer(job)).status_code == 403
    assert client.get(f"/v1/secrets/data/{PATH}", headers=_bearer(job)).status_code == 200
    app_token = _token(client, world.headers, app_id="web")
    # The rules replaced the defaults, which had given app:* its own app.
    assert (
        client.get("/v1/secrets/data/apps/web/token", headers=_bearer(app_token)).status_code == 403
    )
    bad = client.put(
        "/v1/secrets/access-rules",
        json={"rules": [{"role": "robot:x", "paths": ["apps/{app}/*"]}]},
        headers=world.headers,
    )
    assert bad.status_code == 422
    assert "rules[0].role" in bad.json()["error"]["message"]


def test_expired_token_is_denied_and_audited(
    client: TestClient, world: World, runtime: Runtime
) -> None:
    _seed(client, world)
    token = _token(client, world.headers, app_id="billing", ttl_seconds=1)
    time.sleep(2.1)
    response = client.get(f"/v1/secrets/data/{PATH}", headers=_bearer(token))
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "identity token has expired"
    with runtime.session_factory() as session:
        records = list_records(world.tenant_id, action="authenticate", session=session)
    assert [(s.record.outcome, s.record.actor) for s in records] == [("denied", "app:billing")]


def test_forged_and_wrong_audience_tokens_are_denied(
    client: TestClient, world: World, runtime: Runtime
) -> None:
    _seed(client, world)
    intruder = IdentitySigner(Ed25519PrivateKey.generate(), issuer="quartermaster")
    forged = intruder.issue(
        tenant_id=world.tenant_id,
        app="billing",
        team=None,
        job=None,
        audience="quartermaster-secrets",
        ttl=timedelta(minutes=5),
    ).token
    response = client.get(f"/v1/secrets/data/{PATH}", headers=_bearer(forged))
    assert response.status_code == 401
    assert "signature is invalid" in response.json()["error"]["message"]
    elsewhere = _token(client, world.headers, app_id="billing", audience="another-service")
    response = client.get(f"/v1/secrets/data/{PATH}", headers=_bearer(elsewhere))
    assert response.status_code == 401
    assert "not for audience" in response.json()["error"]["message"]
    with runtime.session_factory() as session:
        records = list_records(world.tenant_id, action="authenticate", session=session)
    # The forged token's claims chose no tenant's chain (only the server log has it).
    assert [s.record.actor for s in records] == ["app:billing"]


def test_who_may_mint_tokens(client: TestClient, world: World, runtime: Runtime) -> None:
    billing_key = api_key(runtime, world.tenant_id, "billing-svc", Role.APP, app_slug="billing")
    payments = api_key(
        runtime, world.tenant_id, "pat", Role.TEAM_MEMBER, team_id=world.payments_team_id
    )
    finance = api_key(runtime, world.tenant_id, "fin", Role.FINANCE)
    assert _token(client, billing_key, app_id="billing")
    assert _token(client, payments, app_id="billing")
    for headers, app in ((billing_key, "web"), (payments, "web"), (finance, "billing")):
        response = client.post("/v1/identity/token", json={"app_id": app}, headers=headers)
        assert response.status_code == 403, response.text
    missing = client.post("/v1/identity/token", json={"app_id": "ghost"}, headers=world.headers)
    assert missing.status_code == 404
    too_long = client.post(
        "/v1/identity/token",
        json={"app_id": "billing", "ttl_seconds": 10**6},
        headers=world.headers,
    )
    assert too_long.status_code == 422
    token = _token(client, world.headers, app_id="billing")
    relay = client.post("/v1/identity/token", json={"app_id": "billing"}, headers=_bearer(token))
    assert relay.status_code == 403


def test_jwks_publishes_the_verification_key(client: TestClient, world: World) -> None:
    token = _token(client, world.headers, app_id="billing")
    jwks = client.get("/v1/identity/jwks").json()
    key = jwt.PyJWK(jwks["keys"][0])
    claims = jwt.decode(token, key, algorithms=["EdDSA"], audience="quartermaster-secrets")
    assert claims["sub"] == "app:billing"
    assert claims["qm_tenant"] == world.tenant_id


@pytest.mark.parametrize("header", ["Bearer not.a.jwt", "Bearer qm_bogus"])
def test_garbage_credentials_are_401(client: TestClient, header: str) -> None:
    response = client.get(f"/v1/secrets/data/{PATH}", headers={"Authorization": header})
    assert response.status_code == 401


def _unsigned(claims: dict[str, object], alg: str = "none") -> str:
    def part(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': alg, 'typ': 'JWT'})}.{part(claims)}."


def test_every_refused_token_is_audited(client: TestClient, world: World, runtime: Runtime) -> None:
    """alg "none" (and any alg but EdDSA) is refused like a forged token, in the server log
    only; a token this server signed that lacks qm_app is audited in its tenant."""
    _seed(client, world)
    claims: dict[str, object] = {
        "sub": "app:billing",
        "aud": "quartermaster-secrets",
        "iss": "quartermaster",
        "exp": int(time.time()) + 300,
        "iat": int(time.time()),
        "jti": "x",
        "qm_tenant": world.tenant_id,
        "qm_app": "billing",
    }
    none = client.get(f"/v1/secrets/data/{PATH}", headers=_bearer(_unsigned(claims)))
    assert none.status_code == 401
    assert "alg value is not allowed" in none.json()["error"]["message"]
    hs256 = jwt.encode(claims, "not-the-key-at-all-but-long-enough-for-hmac", algorithm="HS256")
    assert client.get(f"/v1/secrets/data/{PATH}", headers=_bearer(hs256)).status_code == 401
    no_app = {k: v for k, v in claims.items() if k != "qm_app"}
    lacking = jwt.encode(no_app, load_identity_key(runtime.settings), algorithm="EdDSA")
    response = client.get(f"/v1/secrets/data/{PATH}", headers=_bearer(lacking))
    assert response.status_code == 401
    assert "lacks the 'qm_app' claim" in response.json()["error"]["message"]
    with runtime.session_factory() as session:
        records = list_records(world.tenant_id, action="authenticate", session=session)
    assert [(s.record.outcome, s.record.actor) for s in records] == [("denied", "app:billing")]


def _key_id(headers: dict[str, str]) -> str:
    parts = split_token(headers["Authorization"].removeprefix("Bearer "))
    assert parts is not None
    return parts[0]


def test_revoking_the_minting_key_refuses_its_tokens_at_once(
    client: TestClient, world: World, runtime: Runtime
) -> None:
    _seed(client, world)
    app_key = api_key(runtime, world.tenant_id, "billing-svc", Role.APP, app_slug="billing")
    token = _token(client, app_key, app_id="billing")
    by_admin = _token(client, world.headers, app_id="billing")
    # Read once first: the key's state is now cached, and revocation must still win.
    assert client.get(f"/v1/secrets/data/{PATH}", headers=_bearer(token)).status_code == 200
    key_id = _key_id(app_key)
    revoked = client.delete(f"/v1/keys/{key_id}", headers=world.headers)
    assert revoked.status_code == 200, revoked.text
    response = client.get(f"/v1/secrets/data/{PATH}", headers=_bearer(token))
    assert response.status_code == 401
    message = response.json()["error"]["message"]
    assert message.startswith(f"identity token was minted by API key {key_id}, which was revoked")
    assert client.post("/v1/leases/x/renew", json={}, headers=_bearer(token)).status_code == 401
    # Tokens another key minted are unaffected.
    assert client.get(f"/v1/secrets/data/{PATH}", headers=_bearer(by_admin)).status_code == 200
    with runtime.session_factory() as session:
        records = list_records(world.tenant_id, action="authenticate", session=session)
    assert [(s.record.actor, s.record.detail["reason"]) for s in records] == [
        ("app:billing", message)
    ] * 2


def test_a_token_of_an_expired_key_is_refused(
    client: TestClient, world: World, runtime: Runtime
) -> None:
    _seed(client, world)
    with runtime.session_factory() as session:
        principal = create_principal(
            world.tenant_id, "short-lived", role=Role.APP, app_slug="billing", session=session
        )
        issued = issue_api_key(
            principal, expires_at=utc_now() + timedelta(seconds=2), session=session
        )
    token = _token(client, {"Authorization": f"Bearer {issued.token}"}, app_id="billing")
    assert client.get(f"/v1/secrets/data/{PATH}", headers=_bearer(token)).status_code == 200
    time.sleep(2.1)
    response = client.get(f"/v1/secrets/data/{PATH}", headers=_bearer(token))
    assert response.status_code == 401
    assert response.json()["error"]["message"].startswith(
        f"identity token was minted by API key {issued.key_id}, which expired at "
    )


def test_a_token_minted_without_a_key_keeps_working(
    client: TestClient, world: World, runtime: Runtime
) -> None:
    """A token without `qm_key` (minted by the signer itself, not through an API key) is
    bound by its own expiry only."""
    _seed(client, world)
    signer = IdentitySigner(load_identity_key(runtime.settings), issuer="quartermaster")
    token = signer.issue(
        tenant_id=world.tenant_id,
        app="billing",
        team="payments",
        job="ci-1",
        audience="quartermaster-secrets",
        ttl=timedelta(minutes=5),
    ).token
    assert "qm_key" not in jwt.decode(token, options={"verify_signature": False})
    assert client.get(f"/v1/secrets/data/{PATH}", headers=_bearer(token)).status_code == 200


def test_a_flood_of_forged_tokens_writes_nothing_to_the_chain(
    client: TestClient, world: World, runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    claims: dict[str, object] = {
        "sub": "admin\nFAKE RECORD " + "x" * 5000,
        "aud": "quartermaster-secrets",
        "iss": "quartermaster",
        "exp": int(time.time()) + 300,
        "iat": int(time.time()),
        "jti": "x",
        "qm_tenant": world.tenant_id,
        "qm_app": "billing",
    }
    header, payload, _ = _unsigned(claims, alg="EdDSA").split(".")
    zero = base64.urlsafe_b64encode(bytes(64)).rstrip(b"=").decode()
    forged = f"{header}.{payload}.{zero}"
    with caplog.at_level("WARNING", logger="quartermaster.secrets.identity"):
        for _ in range(50):
            response = client.get(f"/v1/secrets/data/{PATH}", headers=_bearer(forged))
            assert response.status_code == 401
    with runtime.session_factory() as session:
        assert list_records(world.tenant_id, action="authenticate", session=session) == []
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 50
    assert "\n" not in lines[0]
    assert "subject admin\\nFAKE RECORD xxx" in lines[0]
    assert len(lines[0]) < 400


def test_refusals_of_signed_tokens_are_recorded_at_most_n_a_minute(
    client: TestClient, world: World, runtime: Runtime
) -> None:
    _seed(client, world)
    elsewhere = _token(client, world.headers, app_id="billing", audience="another-service")
    now = [0.0]
    ctx: SecretsContext = client.app.state.secrets_context  # type: ignore[attr-defined]
    ctx.failed_auth = FailedAuthLimiter(3, clock=lambda: now[0])
    for _ in range(20):
        response = client.get(f"/v1/secrets/data/{PATH}", headers=_bearer(elsewhere))
        assert response.status_code == 401
    now[0] = 61.0
    assert client.get(f"/v1/secrets/data/{PATH}", headers=_bearer(elsewhere)).status_code == 401
    with runtime.session_factory() as session:
        records = list_records(world.tenant_id, action="authenticate", session=session)
    assert [s.record.actor for s in records] == ["app:billing"] * 3 + [
        "system:quartermaster",
        "app:billing",
    ]
    assert (
        records[3]
        .record.detail["reason"]
        .startswith("17 more failed token verifications were not recorded here")
    )


def _claims(token: str) -> dict[str, object]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def test_only_an_admin_may_mint_a_job_token(
    client: TestClient, world: World, runtime: Runtime
) -> None:
    """A `job:<job>` rule is meant for a CI job: an app key (or a team member) minting a token
    with that job_id would read what the rule grants that job, another team's secrets too."""
    response = client.put(
        "/v1/secrets/data/teams/payments/deploy-key",
        json={"value": "the-deploy-key"},
        headers=world.headers,
    )
    assert response.status_code == 200, response.text
    rules = {
        "rules": [
            {"role": "app:*", "paths": ["apps/{app}/*"]},
            {"role": "job:deploy", "paths": ["teams/payments/*"]},
        ]
    }
    put = client.put("/v1/secrets/access-rules", json=rules, headers=world.headers)
    assert put.status_code == 200, put.text
    web_key = api_key(runtime, world.tenant_id, "web-svc", Role.APP, app_slug="web")
    growth = api_key(
        runtime, world.tenant_id, "gus", Role.TEAM_MEMBER, team_id=world.growth_team_id
    )
    for headers, job_id in ((web_key, "deploy"), (growth, "deploy"), (web_key, "!bad id!")):
        minted = client.post(
            "/v1/identity/token", json={"app_id": "web", "job_id": job_id}, headers=headers
        )
        assert minted.status_code == 403, minted.text
        error = minted.json()["error"]
        assert error["field"] == "job_id"
        assert "only an admin may mint a token for a CI job (job_id)" in error["message"]
    with runtime.session_factory() as session:
        records = list_records(world.tenant_id, action="token", session=session)
    assert [(s.record.outcome, s.record.actor, s.record.path) for s in records] == [
        ("denied", "principal:web-svc", "apps/web"),
        ("denied", "principal:gus", "apps/web"),
        ("denied", "principal:web-svc", "apps/web"),
    ]
    assert "job_id" in records[0].record.detail["reason"]
    # What the docs promise still works: app tokens from an app key, job tokens from an admin.
    app_token = _token(client, web_key, app_id="web")
    assert _claims(app_token)["sub"] == "app:web"
    job = _token(client, world.headers, app_id="web", job_id="deploy")
    read = client.get("/v1/secrets/data/teams/payments/deploy-key", headers=_bearer(job))
    assert read.status_code == 200, read.text


def test_a_workload_read_is_audited_with_its_app_and_token_id(
    client: TestClient, world: World, runtime: Runtime
) -> None:
    _seed(client, world)
    job = _token(client, world.headers, app_id="billing", job_id="build-42")
    app_token = _token(client, world.headers, app_id="billing")
    assert client.get(f"/v1/secrets/data/{PATH}", headers=_bearer(job)).status_code == 200
    assert client.get(f"/v1/secrets/data/{PATH}", headers=_bearer(app_token)).status_code == 200
    denied = client.get("/v1/secrets/data/apps/web/token", headers=_bearer(job))
    assert denied.status_code == 403
    assert client.get(f"/v1/secrets/data/{PATH}", headers=world.headers).status_code == 200
    with runtime.session_factory() as session:
        records = list_records(world.tenant_id, action="read", session=session)
    seen = [
        (
            s.record.outcome,
            s.record.actor,
            s.record.detail.get("app"),
            s.record.detail.get("token_id"),
        )
        for s in records
    ]
    assert seen == [
        ("ok", "job:build-42", "billing", _claims(job)["jti"]),
        ("ok", "app:billing", "billing", _claims(app_token)["jti"]),
        ("denied", "job:build-42", "billing", _claims(job)["jti"]),
        ("ok", "principal:admin", None, None),  # an API key's read names its principal
    ]
    # The lease the app token read is renewed and revoked by it: those records name it too.
    lease = client.get(f"/v1/secrets/data/{PATH}", headers=_bearer(app_token)).json()["lease"]
    renewed = client.post(
        f"/v1/leases/{lease['id']}/renew",
        json={"increment_seconds": 60},
        headers=_bearer(app_token),
    )
    assert renewed.status_code == 200, renewed.text
    revoked = client.post(f"/v1/leases/{lease['id']}/revoke", headers=_bearer(app_token))
    assert revoked.status_code == 200, revoked.text
    with runtime.session_factory() as session:
        for action in ("renew", "revoke"):
            [record] = [
                s.record
                for s in list_records(world.tenant_id, action=action, session=session)
                if s.record.lease_id == lease["id"]
            ]
            assert (record.detail.get("app"), record.detail.get("token_id")) == (
                "billing",
                _claims(app_token)["jti"],
            ), action


def test_a_token_follows_its_app_to_another_team(
    client: TestClient, world: World, runtime: Runtime
) -> None:
    """The team a token's rules expand `{team}` with is the app's team now, not the one it
    had when the token was minted (claim `qm_team`)."""
    for path in ("teams/payments/shared", "teams/growth/shared"):
        response = client.put(
            f"/v1/secrets/data/{path}", json={"value": f"value-of-{path}"}, headers=world.headers
        )
        assert response.status_code == 200, response.text
    rules = {"rules": [{"role": "app:*", "paths": ["teams/{team}/*"]}]}
    put = client.put("/v1/secrets/access-rules", json=rules, headers=world.headers)
    assert put.status_code == 200, put.text
    token = _token(client, world.headers, app_id="billing")
    assert _claims(token)["qm_team"] == "payments"
    old_team = "/v1/secrets/data/teams/payments/shared"
    assert client.get(old_team, headers=_bearer(token)).status_code == 200
    # What PATCH /v1/apps/billing {"team": "growth"} changes (the fixture's apps were made
    # through the ORM, without the ownership history the route also moves).
    with runtime.session_factory() as session:
        session.execute(
            update(App)
            .where(App.tenant_id == world.tenant_id, App.app_id == "billing")
            .values(team_id=world.growth_team_id)
        )
        session.commit()
    denied = client.get(old_team, headers=_bearer(token))
    assert denied.status_code == 403, denied.text
    new_team = client.get("/v1/secrets/data/teams/growth/shared", headers=_bearer(token))
    assert new_team.status_code == 200, new_team.text


def test_a_token_for_an_app_not_in_its_tenant_is_refused(
    client: TestClient, world: World, runtime: Runtime
) -> None:
    _seed(client, world)
    signer = IdentitySigner(load_identity_key(runtime.settings), issuer="quartermaster")
    token = signer.issue(
        tenant_id=world.tenant_id,
        app="ghost",
        team="payments",
        job=None,
        audience="quartermaster-secrets",
        ttl=timedelta(minutes=5),
    ).token
    response = client.get("/v1/secrets/data/apps/ghost/x", headers=_bearer(token))
    assert response.status_code == 401
    message = "identity token is for app 'ghost', which is not in its tenant"
    assert response.json()["error"]["message"] == message
    with runtime.session_factory() as session:
        records = list_records(world.tenant_id, action="authenticate", session=session)
    assert [(s.record.actor, s.record.detail["reason"]) for s in records] == [
        ("app:ghost", message)
    ]
