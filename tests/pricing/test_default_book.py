"""The tenant's default price book: what billing, previews and guardrails price with when no
price book is named, so that a second price book never stops them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from quartermaster.billing.sources import StoreCalculator
from quartermaster.domain.timeutil import utc_now
from quartermaster.errors import InvalidInputError, NotFoundError
from quartermaster.pricing.models import PriceBookVersionRow
from quartermaster.pricing.service import (
    default_price_book,
    list_price_books,
    resolve_price_book_name,
    set_default_price_book,
    store_price_book,
)
from quartermaster.runtime import Runtime
from quartermaster.tenancy.models import Role
from tests.conftest import TenantHandle
from tests.pricing.support import book, principal_headers

TOKENS = {"meter": "tokens", "model": "per_unit", "unit_price": "0.001"}


def _data(name: str, version: int = 1) -> dict[str, Any]:
    return {
        "name": name,
        "currency": "USD",
        "version": version,
        "effective_from": "2026-01-01T00:00:00Z",
        "prices": [TOKENS],
    }


def _store(runtime: Runtime, tenant_id: str, name: str, version: int = 1) -> None:
    """Stored a minute ago: billing counts only what was recorded a few seconds before."""
    document = book(TOKENS, version=version).model_copy(update={"name": name})
    with runtime.session_factory() as session:
        store_price_book(
            tenant_id,
            document,
            created_by="admin",
            session=session,
            now=utc_now() - timedelta(minutes=1),
        )


def _resolve(runtime: Runtime, tenant_id: str, name: str | None = None) -> str:
    with runtime.session_factory() as session:
        return resolve_price_book_name(tenant_id, name, session=session)


def test_the_first_book_is_the_default_and_a_second_one_changes_nothing(
    runtime: Runtime, tenant: TenantHandle
) -> None:
    _store(runtime, tenant.tenant_id, "internal-platform")
    _store(runtime, tenant.tenant_id, "typo-book")
    _store(runtime, tenant.tenant_id, "typo-book", version=2)
    assert _resolve(runtime, tenant.tenant_id) == "internal-platform"
    assert _resolve(runtime, tenant.tenant_id, "typo-book") == "typo-book"
    with runtime.session_factory() as session:
        chosen = default_price_book(tenant.tenant_id, session=session)
        assert chosen is not None
        assert (chosen.name, chosen.chosen_by) == ("internal-platform", "admin")
        summaries = list_price_books(tenant.tenant_id, session=session)
    assert [(s.name, s.is_default) for s in summaries] == [
        ("internal-platform", True),
        ("typo-book", False),
    ]


def test_choosing_the_default(runtime: Runtime, tenant: TenantHandle) -> None:
    _store(runtime, tenant.tenant_id, "internal-platform")
    _store(runtime, tenant.tenant_id, "other")
    with runtime.session_factory() as session:
        chosen = set_default_price_book(
            tenant.tenant_id, "other", chosen_by="finance-lead", session=session
        )
        assert (chosen.name, chosen.chosen_by) == ("other", "finance-lead")
        again = set_default_price_book(
            tenant.tenant_id, "other", chosen_by="someone-else", session=session
        )
        assert again.chosen_by == "finance-lead"  # the same choice: nothing changed
        with pytest.raises(NotFoundError, match="no price book named 'nope'"):
            set_default_price_book(tenant.tenant_id, "nope", chosen_by="x", session=session)
    assert _resolve(runtime, tenant.tenant_id) == "other"


def test_resolution_errors(runtime: Runtime, make_tenant: Callable[..., TenantHandle]) -> None:
    empty = make_tenant()
    with pytest.raises(NotFoundError, match="the tenant has no price book: upload one first"):
        _resolve(runtime, empty.tenant_id)
    with pytest.raises(NotFoundError, match="no price book named 'typo'") as caught:
        _resolve(runtime, empty.tenant_id, "typo")
    assert caught.value.field == "price_book"
    other = make_tenant()
    _store(runtime, other.tenant_id, "theirs")
    # Another tenant's book is neither a default nor a name this tenant can give.
    with pytest.raises(NotFoundError, match="no price book named 'theirs'"):
        _resolve(runtime, empty.tenant_id, "theirs")
    with pytest.raises(NotFoundError, match="the tenant has no price book"):
        _resolve(runtime, empty.tenant_id)


def test_versions_stored_around_the_service_ask_for_a_choice(
    runtime: Runtime, tenant: TenantHandle
) -> None:
    with runtime.session_factory() as session:
        session.add(
            PriceBookVersionRow(
                tenant_id=tenant.tenant_id,
                name="raw",
                version=1,
                currency="USD",
                effective_from=utc_now(),
                document="{}",
                content_hash="0" * 64,
                recorded_at=utc_now(),
                created_by="import",
            )
        )
        session.commit()
    with pytest.raises(InvalidInputError, match="no default price book among raw: choose one"):
        _resolve(runtime, tenant.tenant_id)


def test_billing_previews_and_budgets_price_with_the_default(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    """The reported failure: after a second price book, `qm budget evaluate` answered 422
    "the tenant has several price books" and the preview needed --price-book."""
    h = tenant.headers
    _store(runtime, tenant.tenant_id, "internal-platform")
    _store(runtime, tenant.tenant_id, "typo-book")
    assert client.post("/v1/teams", json={"slug": "web"}, headers=h).status_code == 201
    budget = {"name": "web-monthly", "scope_kind": "team", "scope": "web", "amount": "100"}
    assert client.post("/v1/budgets", json=budget, headers=h).status_code == 201

    evaluated = client.post("/v1/budgets/evaluate", headers=h)
    assert evaluated.status_code == 200, evaluated.text
    preview = client.get("/v1/billing/preview", headers=h)
    assert preview.status_code == 200, preview.text
    assert preview.json()["price_book"] == "internal-platform"
    with runtime.session_factory() as session:
        context = StoreCalculator(runtime.usage_store).context(
            tenant.tenant_id, price_book=None, session=session
        )
    assert context.history.name == "internal-platform"

    chosen = client.put("/v1/price-books/default", json={"name": "typo-book"}, headers=h)
    assert chosen.status_code == 200, chosen.text
    assert client.get("/v1/billing/preview", headers=h).json()["price_book"] == "typo-book"
    named = client.get("/v1/billing/preview", params={"price_book": "internal-platform"}, headers=h)
    assert named.json()["price_book"] == "internal-platform"


def test_default_routes(client: TestClient, runtime: Runtime, tenant: TenantHandle) -> None:
    h = tenant.headers
    assert client.post("/v1/price-books", json=_data("first"), headers=h).status_code == 201
    assert client.post("/v1/price-books", json=_data("second"), headers=h).status_code == 201
    listed = client.get("/v1/price-books", headers=h).json()
    assert [(b["name"], b["default"]) for b in listed] == [("first", True), ("second", False)]

    chosen = client.put("/v1/price-books/default", json={"name": "second"}, headers=h)
    assert chosen.status_code == 200, chosen.text
    assert chosen.json()["name"] == "second"
    assert chosen.json()["chosen_by"] == "admin"
    listed = client.get("/v1/price-books", headers=h).json()
    assert [(b["name"], b["default"]) for b in listed] == [("first", False), ("second", True)]
    # Loading a new version of the other book leaves the choice alone.
    assert client.post("/v1/price-books", json=_data("first", 2), headers=h).status_code == 201
    listed = client.get("/v1/price-books", headers=h).json()
    assert [b["name"] for b in listed if b["default"]] == ["second"]

    unknown = client.put("/v1/price-books/default", json={"name": "typo"}, headers=h)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"] == "no price book named 'typo'"
    assert client.put("/v1/price-books/default", json={}, headers=h).status_code == 422

    finance = principal_headers(runtime, tenant.tenant_id, Role.FINANCE)
    refused = client.put("/v1/price-books/default", json={"name": "first"}, headers=finance)
    assert refused.status_code == 403
    assert [b["default"] for b in client.get("/v1/price-books", headers=finance).json()] == [
        False,
        True,
    ]
