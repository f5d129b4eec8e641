"""The price book routes on both database backends."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import select

from quartermaster.domain.timeutil import parse_timestamp, utc_now
from quartermaster.pricing.models import PriceBookVersionRow
from quartermaster.runtime import Runtime
from quartermaster.tenancy.models import Role
from tests.conftest import TenantHandle
from tests.pricing.support import EXAMPLE, create_example_owners, principal_headers

YAML = {"Content-Type": "application/yaml"}
BOOK = "/v1/price-books/internal-platform"


def _upload(client: TestClient, tenant: TenantHandle, text: str) -> dict[str, object]:
    create_example_owners(client, tenant.headers)
    response = client.post("/v1/price-books", content=text, headers={**tenant.headers, **YAML})
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


def _next_version(text: str, version: int, effective_from: str, price: str = "0.0001") -> str:
    text = text.replace("version: 1\n", f"version: {version}\n", 1)
    text = text.replace("effective_from: 2026-01-01T00:00:00Z", f"effective_from: {effective_from}")
    return text.replace("unit_price: 0.0001\n", f"unit_price: {price}\n", 1)


def test_upload_yaml_then_read_it_back(client: TestClient, tenant: TenantHandle) -> None:
    stored = _upload(client, tenant, EXAMPLE.read_text())
    assert stored["name"] == "internal-platform"
    assert stored["version"] == 1
    assert stored["created"] is True
    assert stored["created_by"] == "admin"
    assert stored["back_dated"] is True  # effective 2026-01-01, recorded later
    listed = client.get("/v1/price-books", headers=tenant.headers).json()
    assert [(b["name"], b["latest_version"], b["in_force_version"]) for b in listed] == [
        ("internal-platform", 1, 1)
    ]
    shown = client.get("/v1/price-books/internal-platform", headers=tenant.headers).json()
    assert shown["version"] == 1
    assert shown["document"]["prices"][0] == {
        "meter": "invocations",
        "pool": "app",
        "model": "per_unit",
        "unit_price": "0.0001",
        "free_allowance": "10000",
    }


def test_json_upload_and_idempotent_retry(client: TestClient, tenant: TenantHandle) -> None:
    document = {
        "name": "json-book",
        "currency": "EUR",
        "version": 1,
        "effective_from": "2030-01-01T00:00:00+01:00",
        "prices": [{"meter": "tokens", "model": "per_unit", "unit_price": "0.002"}],
    }
    first = client.post("/v1/price-books", json=document, headers=tenant.headers)
    assert first.status_code == 201
    assert first.json()["effective_from"] == "2029-12-31T23:00:00Z"
    assert first.json()["back_dated"] is False
    again = client.post("/v1/price-books", json=document, headers=tenant.headers)
    assert again.status_code == 200
    assert again.json()["created"] is False
    changed = {**document, "prices": [{"meter": "tokens", "model": "per_unit", "unit_price": 1}]}
    conflict = client.post("/v1/price-books", json=changed, headers=tenant.headers)
    assert conflict.status_code == 409
    assert conflict.json()["error"]["field"] == "version"
    assert "immutable" in conflict.json()["error"]["message"]
    versions = client.get("/v1/price-books/json-book/versions", headers=tenant.headers).json()
    assert len(versions) == 1


def test_new_versions_supersede_and_at_picks_the_one_in_force(
    client: TestClient, tenant: TenantHandle
) -> None:
    base = EXAMPLE.read_text()
    _upload(client, tenant, base)
    _upload(client, tenant, _next_version(base, 2, "2026-03-01T00:00:00Z", "0.0002"))
    headers = tenant.headers

    def in_force(at: str) -> int:
        response = client.get(BOOK, params={"at": at}, headers=headers)
        assert response.status_code == 200, response.text
        version: int = response.json()["version"]
        return version

    assert in_force("2026-02-28T23:59:59Z") == 1
    assert in_force("2026-03-01T00:00:00Z") == 2
    versions = client.get("/v1/price-books/internal-platform/versions", headers=headers).json()
    assert versions[0]["in_force_until"] == "2026-03-01T00:00:00Z"
    assert versions[1]["in_force_until"] is None
    before = client.get(
        "/v1/price-books/internal-platform", params={"at": "2025-12-31T00:00:00Z"}, headers=headers
    )
    assert before.status_code == 404
    assert "no version in force" in before.json()["error"]["message"]
    one = client.get("/v1/price-books/internal-platform/versions/2", headers=headers).json()
    assert one["document"]["prices"][0]["unit_price"] == "0.0002"


def test_back_dated_version_and_as_of(client: TestClient, tenant: TenantHandle) -> None:
    base = EXAMPLE.read_text()
    first = _upload(client, tenant, base)
    recorded_first = first["recorded_at"]
    # Version 2 corrects January from the 15th on, recorded now (after the fact).
    second = _upload(client, tenant, _next_version(base, 2, "2026-01-15T00:00:00Z", "0.0003"))
    assert second["back_dated"] is True
    params = {"at": "2026-01-20T00:00:00Z"}
    now_view = client.get(BOOK, params=params, headers=tenant.headers)
    assert now_view.json()["version"] == 2
    then_view = client.get(
        "/v1/price-books/internal-platform",
        params={**params, "as_of": recorded_first},
        headers=tenant.headers,
    )
    assert then_view.json()["version"] == 1


def test_an_upload_names_the_versions_it_takes_out_of_force(
    client: TestClient, tenant: TenantHandle
) -> None:
    """v3 back-dated before v2's effective_from: v2 was in force from Mar 1 and never will
    be; the answer says so (the upload said only "back-dated")."""
    base = EXAMPLE.read_text()
    first = _upload(client, tenant, base)
    assert first["superseded_versions"] == []
    second = _upload(client, tenant, _next_version(base, 2, "2026-03-01T00:00:00.5Z", "0.0002"))
    assert second["superseded_versions"] == []  # v1 stays in force until Mar 1
    third_text = _next_version(base, 3, "2026-02-01T00:00:00Z", "0.0003")
    third = _upload(client, tenant, third_text)
    assert third["superseded_versions"] == [
        {"version": 2, "effective_from": "2026-03-01T00:00:00.500000Z"}
    ]
    again = client.post("/v1/price-books", content=third_text, headers={**tenant.headers, **YAML})
    assert again.status_code == 200
    assert again.json()["superseded_versions"] == []  # an unchanged re-upload changes nothing
    # A version at the same instant as the one in force replaces it.
    fourth = _upload(client, tenant, _next_version(base, 4, "2026-02-01T00:00:00Z", "0.0004"))
    assert [v["version"] for v in fourth["superseded_versions"]] == [3]


def test_older_version_number_is_refused(client: TestClient, tenant: TenantHandle) -> None:
    base = EXAMPLE.read_text()
    _upload(client, tenant, _next_version(base, 3, "2026-02-01T00:00:00Z"))
    response = client.post("/v1/price-books", content=base, headers={**tenant.headers, **YAML})
    assert response.status_code == 409
    assert "upload version 4" in response.json()["error"]["message"]


def test_currency_cannot_change(client: TestClient, tenant: TenantHandle) -> None:
    base = EXAMPLE.read_text()
    _upload(client, tenant, base)
    other = _next_version(base, 2, "2026-02-01T00:00:00Z").replace("currency: USD", "currency: EUR")
    response = client.post("/v1/price-books", content=other, headers={**tenant.headers, **YAML})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "currency"


@pytest.mark.parametrize(
    ("text", "field", "fragment"),
    [
        (
            "name: b\ncurrency: USD\nversion: 1\neffective_from: 2026-01-01T00:00:00Z\nprices:\n"
            "  - {meter: tokens, model: graduated, tiers: [{up_to: 10, unit_price: 1},"
            " {up_to: 5, unit_price: 1}, {unit_price: 1}]}\n",
            "prices[0].tiers[1].up_to",
            "must be greater than the previous tier (10)",
        ),
        (
            "name: b\ncurrency: USD\nversion: 1\neffective_from: 2026-01-01 00:00:00\nprices:\n"
            "  - {meter: tokens, model: per_unit, unit_price: 1}\n",
            "effective_from",
            "'2026-01-01 00:00:00' is not an RFC 3339 timestamp with a UTC offset",
        ),
        ("name: b\n  bad: [", "(document)", "not valid YAML: line"),
        # Unquoted dates that do not exist: PyYAML's timestamp resolver raised (a 500).
        (
            "name: b\ncurrency: USD\nversion: 1\neffective_from: 2026-13-01T00:00:00Z\n"
            "prices:\n  - {meter: tokens, model: per_unit, unit_price: 1}\n",
            "effective_from",
            "month value is outside expected range of 1-12",
        ),
        (
            "name: b\ncurrency: USD\nversion: 1\neffective_from: 2026-02-30T00:00:00Z\n"
            "prices:\n  - {meter: tokens, model: per_unit, unit_price: 1}\n",
            "effective_from",
            "day value is outside expected range",
        ),
        # A date alone (existing or not) is not a moment: said so, not a 500.
        (
            "name: b\ncurrency: USD\nversion: 1\neffective_from: 2026-02-30\nprices:\n"
            "  - {meter: tokens, model: per_unit, unit_price: 1}\n",
            "effective_from",
            "'2026-02-30' is not an RFC 3339 timestamp with a UTC offset",
        ),
        # Three capitals, no currency: platform costs in it are refused at ingest.
        (
            "name: b\ncurrency: XYZ\nversion: 1\neffective_from: 2026-01-01T00:00:00Z\n"
            "prices:\n  - {meter: tokens, model: per_unit, unit_price: 1}\n",
            "currency",
            "'XYZ' is not an active ISO 4217 currency code (e.g. USD, EUR)",
        ),
    ],
)
def test_invalid_upload_names_the_field(
    client: TestClient, tenant: TenantHandle, text: str, field: str, fragment: str
) -> None:
    response = client.post("/v1/price-books", content=text, headers={**tenant.headers, **YAML})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == field
    assert fragment in error["message"]


def test_unsupported_content_type(client: TestClient, tenant: TenantHandle) -> None:
    response = client.post(
        "/v1/price-books",
        content=b"<xml/>",
        headers={**tenant.headers, "Content-Type": "application/xml"},
    )
    assert response.status_code == 415  # as POST /v1/events answers a wrong type
    assert response.json()["error"]["field"] == "Content-Type"


def test_too_large_upload(client: TestClient, tenant: TenantHandle) -> None:
    body = json.dumps({"description": "x" * (1024 * 1024 + 1)})
    response = client.post(
        "/v1/price-books",
        content=body,
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 413


def test_roles_finance_reads_only(
    client: TestClient, tenant: TenantHandle, runtime: Runtime
) -> None:
    finance = principal_headers(runtime, tenant.tenant_id, Role.FINANCE)
    member = principal_headers(runtime, tenant.tenant_id, Role.TEAM_MEMBER)
    text = EXAMPLE.read_text()
    refused = client.post("/v1/price-books", content=text, headers={**finance, **YAML})
    assert refused.status_code == 403
    _upload(client, tenant, text)
    assert client.get("/v1/price-books", headers=finance).status_code == 200
    assert client.get("/v1/price-books/internal-platform", headers=finance).status_code == 200
    assert client.get("/v1/price-books", headers=member).status_code == 403
    upload = client.post("/v1/price-books", content=text, headers={**member, **YAML})
    assert upload.status_code == 403


def test_tenants_see_only_their_own_price_books(
    client: TestClient, make_tenant: Callable[..., TenantHandle]
) -> None:
    first, second = make_tenant(), make_tenant()
    _upload(client, first, EXAMPLE.read_text())
    assert client.get("/v1/price-books", headers=second.headers).json() == []
    missing = client.get("/v1/price-books/internal-platform", headers=second.headers)
    assert missing.status_code == 404
    # The same name and version in another tenant is independent.
    _upload(client, second, EXAMPLE.read_text().replace("0.0001", "0.0005", 1))


def test_unauthenticated_is_refused(client: TestClient) -> None:
    assert client.get("/v1/price-books").status_code == 401


def test_recorded_at_is_now(client: TestClient, tenant: TenantHandle) -> None:
    stored = _upload(client, tenant, EXAMPLE.read_text())
    recorded = parse_timestamp(str(stored["recorded_at"]))
    assert abs(recorded - utc_now()) < timedelta(minutes=1)


def _numbers_as_str_decimal(data: Any) -> Any:
    """How versions were stored before plain digits: each number as str(Decimal) of what was
    written ("0.0000009" -> "9E-7", "0.50" stays)."""
    if isinstance(data, dict):
        return {
            k: str(Decimal(v)) if k in _NUMBER_FIELDS else _numbers_as_str_decimal(v)
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [_numbers_as_str_decimal(v) for v in data]
    return data


_NUMBER_FIELDS = frozenset(
    {"unit_price", "free_allowance", "up_to", "package_size", "package_price", "fee", "included"}
    | {"percent", "credit", "floor", "share", "weight"}
)


def test_the_same_numbers_spelled_otherwise_are_unchanged_also_for_versions_stored_before(
    client: TestClient, tenant: TenantHandle
) -> None:
    """A version stored with the old canonical form (numbers as written, "9E-7", and a hash of
    that text) is still found unchanged when the same document is sent again, as YAML or as
    JSON with its numbers spelled otherwise (0.5 for 0.50); its document is returned in plain
    digits."""
    text = EXAMPLE.read_text()
    _upload(client, tenant, text)
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with runtime.session_factory() as session:
        row = session.scalars(
            select(PriceBookVersionRow).where(PriceBookVersionRow.tenant_id == tenant.tenant_id)
        ).one()
        old_text = json.dumps(
            _numbers_as_str_decimal(json.loads(row.document)),
            separators=(",", ":"),
            ensure_ascii=False,
        )
        assert "9E-7" in old_text  # the example has 0.0000009
        row.document = old_text
        row.content_hash = hashlib.sha256(old_text.encode()).hexdigest()
        session.commit()
    as_yaml = client.post("/v1/price-books", content=text, headers={**tenant.headers, **YAML})
    assert (as_yaml.status_code, as_yaml.json()["created"]) == (200, False), as_yaml.text
    as_json = json.dumps(yaml.safe_load(text), default=str)  # 0.50 -> 0.5, 150.00 -> 150.0
    assert "0.50" in text
    assert "0.50" not in as_json
    again = client.post("/v1/price-books", content=as_json, headers=tenant.headers)
    assert (again.status_code, again.json()["created"]) == (200, False), again.text
    changed = as_json.replace("9e-07", "8e-07", 1)  # json.dumps writes 0.0000009 so
    assert changed != as_json
    conflict = client.post("/v1/price-books", content=changed, headers=tenant.headers)
    assert conflict.status_code == 409
    shown = client.get(f"{BOOK}/versions/1", headers=tenant.headers)
    document = json.dumps(shown.json()["document"])
    assert "9E-7" not in document
    assert "0.0000009" in document


def test_a_new_version_is_stored_in_plain_digits_as_written(
    client: TestClient, tenant: TenantHandle
) -> None:
    stored = _upload(client, tenant, EXAMPLE.read_text())
    shown = client.get(f"{BOOK}/versions/1", headers=tenant.headers).json()
    assert shown["content_hash"] == stored["content_hash"]
    numbers = json.dumps(shown["document"])
    assert "0.0000009" in numbers
    assert "0.50" in numbers  # as the document wrote it
    assert not re.search(r"\d[eE][-+]?\d", numbers)


def test_a_stored_version_in_an_inactive_currency_is_still_read(
    client: TestClient, tenant: TenantHandle, runtime: Runtime
) -> None:
    """The currency check is an upload's: a version stored before it stays readable."""
    from quartermaster.pricing.loader import validate_document
    from quartermaster.pricing.service import store_price_book

    data = {
        "name": "old",
        "currency": "XYZ",
        "version": 1,
        "effective_from": "2026-01-01T00:00:00Z",
        "prices": [{"meter": "tokens", "model": "per_unit", "unit_price": "1"}],
    }
    with runtime.session_factory() as session:
        store_price_book(
            tenant.tenant_id, validate_document(data), created_by="test", session=session
        )
    read = client.get("/v1/price-books/old", headers=tenant.headers)
    assert read.status_code == 200, read.text
    assert read.json()["currency"] == "XYZ"


def test_qm_pricebook_validate_refuses_an_inactive_currency_as_upload_does() -> None:
    from quartermaster.pricing.loader import PriceBookError, parse_price_book

    text = EXAMPLE.read_text().replace("currency: USD", "currency: XYZ", 1)
    assert "currency: XYZ" in text
    with pytest.raises(PriceBookError) as refused:
        parse_price_book(text, "yaml")
    assert refused.value.issues == [
        ("currency", "'XYZ' is not an active ISO 4217 currency code (e.g. USD, EUR)")
    ]
