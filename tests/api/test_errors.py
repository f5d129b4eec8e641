"""The error model at the edges: inputs past what storage holds, bodies that are not JSON
or not sent as JSON, 405's Allow, and the last-resort 500 — all in the one error body."""

from __future__ import annotations

import gzip
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from quartermaster.api.app import create_app
from quartermaster.config import Settings
from quartermaster.runtime import Runtime
from tests.conftest import TenantHandle

HUGE = 10**25  # past SQLite's and PostgreSQL's 64-bit INTEGER


@pytest.mark.parametrize(
    ("method", "url", "body", "field"),
    [
        ("GET", f"/v1/price-books/default/versions/{HUGE}", None, "version"),
        ("GET", f"/v1/events?after={HUGE}", None, "after"),
        ("GET", f"/v1/audit/records?after={HUGE}", None, "after"),
        ("GET", f"/v1/policies/p?version={HUGE}", None, "version"),
        ("POST", "/v1/billing/runs", {"month": "9999-12"}, "month"),
    ],
)
def test_an_input_past_what_storage_holds_is_a_422_naming_it(
    client: TestClient,
    tenant: TenantHandle,
    method: str,
    url: str,
    body: object,
    field: str,
) -> None:
    response = client.request(method, url, json=body, headers=tenant.headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


def test_an_unexpected_exception_is_a_500_in_the_error_body(app: FastAPI) -> None:
    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("internal detail: dsn=postgresql://u:pw@db")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "internal_error"
    assert "pw@db" not in response.text
    assert "RuntimeError" not in response.text


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            "/v1/apps",
            {"app_id": "ov4", "owner": "x", "team": "{team}", "owned_since": "{early}"},
            "owned_since",
        ),
        (
            "/v1/resources",
            {"resource_id": "ov1", "app_id": "{app}", "valid_from": "{early}"},
            "valid_from",
        ),
        (
            "/v1/resources",
            {"resource_id": "ov2", "app_id": "{app}", "valid_to": "{late}"},
            "valid_to",
        ),
        ("/v1/resources/end", {"resource_id": "ov2", "at": "{late}"}, "at"),
        ("/v1/principals/admin/keys", {"expires_at": "{late}"}, "expires_at"),
        (
            "/v1/resource-leases",
            {"resource_id": "ov3", "app_id": "{app}", "ttl_seconds": 60, "issued_at": "{early}"},
            "issued_at",
        ),
    ],
)
def test_a_moment_outside_the_calendar_in_utc_is_a_422_naming_it(
    app: FastAPI, tenant: TenantHandle, path: str, body: dict[str, object], field: str
) -> None:
    """0001-01-01T00:00:00+01:00 is a valid RFC 3339 moment whose UTC instant is before year
    1: it failed where it was converted, in the database layer, as a 500."""
    values = {
        "team": "t-ov",
        "app": "a-ov",
        "early": "0001-01-01T00:00:00+01:00",
        "late": "9999-12-31T23:59:59-10:00",
    }
    with TestClient(app, raise_server_exceptions=False) as client:
        team = {"slug": "t-ov", "cost_center": "default"}
        client.post("/v1/teams", json=team, headers=tenant.headers)
        made = {"app_id": "a-ov", "owner": "o", "team": "t-ov"}
        client.post("/v1/apps", json=made, headers=tenant.headers)
        sent = {k: v.format(**values) if isinstance(v, str) else v for k, v in body.items()}
        response = client.post(path, json=sent, headers=tenant.headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field
    assert "outside the calendar once converted to UTC (years 1 to 9999)" in error["message"]


def test_another_database_error_is_still_a_500(app: FastAPI) -> None:
    from sqlalchemy.exc import StatementError

    @app.get("/db-boom")
    def db_boom() -> None:
        raise StatementError("boom", "SELECT 1", {}, OverflowError("int too large"))

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/db-boom")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"


def _post_cost_center(
    client: TestClient, tenant: TenantHandle, body: bytes, content_type: str | None
) -> dict[str, object]:
    headers = dict(tenant.headers)
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = client.post("/v1/cost-centers", content=body, headers=headers)
    return {"status": response.status_code, **response.json()["error"]}


def test_malformed_json_is_a_400_saying_where(client: TestClient, tenant: TenantHandle) -> None:
    error = _post_cost_center(client, tenant, b'{"slug":"cc-z","name":"Z",}', "application/json")
    assert error == {
        "status": 400,
        "code": "malformed_body",
        "message": "request body is not valid JSON: trailing comma is not allowed at line 1, "
        "column 26 (byte 25)",
        "field": None,
    }


def test_a_body_that_is_not_utf8_is_a_400_naming_the_byte(
    client: TestClient, tenant: TenantHandle
) -> None:
    """FastAPI itself had answered "There was an error parsing the body" (http_error)."""
    error = _post_cost_center(client, tenant, b'{"slug":"cc-z","name":"Z\xe9"}', "application/json")
    assert error == {
        "status": 400,
        "code": "malformed_body",
        "message": "request body is not valid UTF-8: byte 0xe9 at line 1, column 25 (byte 24)",
        "field": None,
    }


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", None])
def test_a_body_not_sent_as_json_is_a_415_naming_json(
    client: TestClient, tenant: TenantHandle, content_type: str | None
) -> None:
    error = _post_cost_center(client, tenant, b'{"slug":"cc-z","name":"Z"}', content_type)
    assert error["status"] == 415
    assert error["code"] == "unsupported_media_type"
    assert "application/json" in str(error["message"])
    assert str(content_type or "(none)") in str(error["message"])


def test_an_empty_body_says_a_json_object_is_expected(
    client: TestClient, tenant: TenantHandle
) -> None:
    error = _post_cost_center(client, tenant, b"", "application/json")
    assert error["status"] == 422
    assert error["message"] == (
        "request body is missing: send a JSON object (Content-Type: application/json)"
    )


@pytest.mark.parametrize(
    ("body", "kind"), [(b"[1]", "array"), (b"null", "null"), (b'"x"', "string")]
)
def test_a_body_that_is_not_an_object_names_what_it_is(
    client: TestClient, tenant: TenantHandle, body: bytes, kind: str
) -> None:
    error = _post_cost_center(client, tenant, body, "application/json")
    assert (error["status"], error["message"]) == (
        422,
        f"request body must be a JSON object, got a JSON {kind}",
    )


def test_a_field_error_still_names_the_field(client: TestClient, tenant: TenantHandle) -> None:
    error = _post_cost_center(client, tenant, b'{"name":"Z"}', "application/json")
    assert (error["status"], error["field"]) == (422, "slug")


def test_405_says_which_methods_are_allowed(client: TestClient) -> None:
    response = client.delete("/healthz")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert response.headers["allow"] == "GET"


def test_a_body_over_the_limit_is_refused_on_every_route_before_it_is_read(
    settings: Settings, runtime: Runtime, tenant: TenantHandle
) -> None:
    # A JSON route had read a 6 MB body whole (and answered 422), the caller's key unchecked.
    small = settings.model_copy(update={"max_body_bytes": 1000})
    body = b'{"slug": "cc-big", "name": "' + b"x" * 2000 + b'"}'
    headers = {**tenant.headers, "Content-Type": "application/json"}
    with TestClient(create_app(small, runtime=runtime)) as client:
        declared = client.post("/v1/cost-centers", content=body, headers=headers)
        assert declared.status_code == 413
        assert declared.json()["error"] == {
            "code": "payload_too_large",
            "message": f"request body is {len(body):,} bytes; the limit is 1,000 bytes "
            "(QM_MAX_BODY_BYTES)",
            "field": None,
        }
        unauthenticated = client.post("/v1/cost-centers", content=body)
        assert unauthenticated.status_code == 413

        def chunks(payload: bytes) -> Iterator[bytes]:  # no Content-Length: sent chunked
            yield from (payload[i : i + 300] for i in range(0, len(payload), 300))

        chunked = client.post("/v1/cost-centers", content=chunks(body), headers=headers)
        assert chunked.status_code == 413
        assert "more than 1,000 bytes" in chunked.json()["error"]["message"]
        fits = b'{"slug": "cc-small", "name": "Small"}'
        accepted = client.post("/v1/cost-centers", content=chunks(fits), headers=headers)
        assert accepted.status_code == 201, accepted.text


@pytest.mark.parametrize("path", ["/v1/cost-centers", "/v1/events"])
def test_a_compressed_body_is_refused_naming_the_encoding(
    client: TestClient, tenant: TenantHandle, path: str
) -> None:
    body = gzip.compress(b'{"slug": "cc-zip", "name": "Zip"}')
    headers = {**tenant.headers, "Content-Type": "application/json"}
    response = client.post(path, content=body, headers={**headers, "Content-Encoding": "gzip"})
    assert response.status_code == 415, response.text
    assert response.json()["error"] == {
        "code": "unsupported_media_type",
        "message": "Content-Encoding 'gzip' is not accepted: send the body uncompressed",
        "field": None,
    }
    both = [*headers.items(), ("Content-Encoding", "identity"), ("Content-Encoding", "gzip")]
    two_headers = client.post(path, content=body, headers=both)
    assert two_headers.status_code == 415, two_headers.text
    assert "'identity, gzip' is not accepted" in two_headers.json()["error"]["message"]
    plain = {**headers, "Content-Encoding": "identity"}
    sent = client.post("/v1/cost-centers", content=gzip.decompress(body), headers=plain)
    assert sent.status_code == 201, sent.text


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/v1/policy-decisions?subject=%00", "subject"),
        ("/v1/policy-decisions?limit=5&app=a%00b", "app"),
        ("/v1/events?after=1%00", "after"),
        ("/v1/policies/own%00er", None),
        ("/v1/decisions/abcdefgh%00", None),
        ("/v1/apps/shop%00", None),
    ],
)
def test_a_nul_character_in_the_path_or_query_is_a_422_naming_where(
    client: TestClient, tenant: TenantHandle, url: str, field: str | None
) -> None:
    # PostgreSQL text cannot hold NUL: these were 500s there (psycopg.DataError).
    response = client.get(url, headers=tenant.headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["field"] == field
    assert "NUL character" in error["message"]


def test_a_query_without_nul_reaches_the_route(client: TestClient, tenant: TenantHandle) -> None:
    response = client.get("/v1/policy-decisions?subject=a%2500b", headers=tenant.headers)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("url", "body", "field"),
    [
        ("/v1/cost-centers", {"slug": "cc-x", "name": "A\u0000B"}, "name"),
        ("/v1/teams", {"slug": "t-x", "name": "T", "cost_center": "cc\u0000"}, "cost_center"),
        ("/v1/decisions", {"app": "a", "resources": [{"x\u0000": 1}]}, "resources.0.x\\0"),
        ("/v1/apps", {"app_id": "a1", "owner": "ann\u0000@example.com", "team": "t"}, "owner"),
    ],
)
def test_a_nul_character_in_a_json_body_is_a_422_naming_the_field(
    client: TestClient, tenant: TenantHandle, url: str, body: object, field: str
) -> None:
    response = client.post(url, json=body, headers=tenant.headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_input", field)
    assert "NUL character" in error["message"]


def test_an_escaped_backslash_before_u0000_is_not_a_nul(
    client: TestClient, tenant: TenantHandle
) -> None:
    response = client.post(
        "/v1/cost-centers", json={"slug": "cc-y", "name": "a\\u0000"}, headers=tenant.headers
    )
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "a\\u0000"


@pytest.mark.parametrize(
    ("url", "body", "field"),
    [
        ("/v1/cost-centers", b'{"slug": "cc-s", "name": "A\\ud800B"}', "name"),
        ("/v1/cost-centers", b'{"slug": "cc-s", "name": "A\\uDFFF"}', "name"),
        ("/v1/teams", b'{"slug": "t-s", "name": "T", "cost_center": "\\udc00x"}', "cost_center"),
        ("/v1/decisions", b'{"app": "a", "resources": [{"x\\ud83d": 1}]}', "resources.0.x\\ud83d"),
    ],
)
def test_a_lone_surrogate_in_a_json_body_is_a_422_naming_the_field(
    client: TestClient, tenant: TenantHandle, url: str, body: bytes, field: str
) -> None:
    # The parser let a lone "\ud800" through into a string UTF-8 cannot encode: a 500 where
    # it was stored.
    headers = {**tenant.headers, "Content-Type": "application/json"}
    response = client.post(url, content=body, headers=headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_input", field)
    assert "lone surrogate" in error["message"]


def test_a_surrogate_pair_is_one_character_and_is_kept(
    client: TestClient, tenant: TenantHandle
) -> None:
    headers = {**tenant.headers, "Content-Type": "application/json"}
    body = b'{"slug": "cc-e", "name": "ops \\ud83d\\ude00 \\\\ud800"}'
    response = client.post("/v1/cost-centers", content=body, headers=headers)
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "ops \U0001f600 \\ud800"
