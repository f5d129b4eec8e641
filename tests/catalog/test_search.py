"""Search over the API on both backends: prefix matching, tags, facets, score components,
incremental index updates (new version replaces, deprecate removes), tenant isolation, and the
usage-signal refresh."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from fastapi.testclient import TestClient

from quartermaster.catalog.search_index import set_signals
from quartermaster.catalog.search_signals import SearchSignalsJob, per_app
from quartermaster.runtime import Runtime
from quartermaster.usage.store import USAGE_SCHEMA, RatedBatch, TableBuilder, UsageTotal
from tests.catalog.publish_support import add_team, manifest, submit
from tests.conftest import TenantHandle


def _search(client: TestClient, tenant: TenantHandle, q: str, **params: str) -> dict:  # type: ignore[type-arg]
    response = client.get("/v1/apps/search", params={"q": q, **params}, headers=tenant.headers)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _catalog(client: TestClient, tenant: TenantHandle) -> None:
    add_team(client, tenant)
    add_team(client, tenant, "finance")
    submit(client, tenant, manifest())
    submit(
        client,
        tenant,
        manifest(
            app_id="invoice-digest",
            title="Invoice Digest",
            short_description="Daily digest of unpaid invoices",
            team="finance",
            tags=["finance", "invoices"],
            capabilities=["read", "export"],
            pricing_template={"model": "subscription", "monthly_fee": "20"},
        ),
    )


def test_prefix_tags_facets_and_components(client: TestClient, tenant: TenantHandle) -> None:
    _catalog(client, tenant)
    found = _search(client, tenant, "recomm")
    assert [h["app_id"] for h in found["hits"]] == ["where2eat"]
    hit = found["hits"][0]
    assert set(hit["components"]) >= {"text", "behaviour", "trust", "invocations_30d"}
    assert hit["components"]["text"] == 1.0
    assert hit["components"]["policy_pass"] == 1.0
    assert _search(client, tenant, "dining")["hits"][0]["app_id"] == "where2eat"  # a tag
    both = _search(client, tenant, "")
    assert both["total"] == 2
    assert both["facets"]["team"] == {"social": 1, "finance": 1}
    assert both["facets"]["pricing_model"] == {"free": 1, "subscription": 1}
    assert both["facets"]["capabilities"] == {"read": 2, "export": 1}
    exports = _search(client, tenant, "", capability="export")
    assert [h["app_id"] for h in exports["hits"]] == ["invoice-digest"]


def test_index_follows_versions_without_stale_entries(
    client: TestClient, tenant: TenantHandle
) -> None:
    _catalog(client, tenant)
    submit(client, tenant, manifest(version="1.1.0", title="Where2Eat - lunch planner"))
    assert _search(client, tenant, "dinner")["hits"] == []  # the old title is gone
    assert _search(client, tenant, "lunch")["hits"][0]["version"] == "1.1.0"
    deprecated = client.post(
        "/v1/apps/where2eat/versions/1.1.0/deprecate", json={}, headers=tenant.headers
    )
    assert deprecated.json()["state"] == "deprecated"
    assert _search(client, tenant, "lunch")["hits"] == []
    assert _search(client, tenant, "")["total"] == 1


def test_search_never_crosses_tenants(
    client: TestClient, make_tenant: Callable[..., TenantHandle]
) -> None:
    a, b = make_tenant("sa"), make_tenant("sb")
    _catalog(client, a)
    assert _search(client, b, "recomm")["hits"] == []
    assert _search(client, b, "")["total"] == 0
    add_team(client, b)
    submit(client, b, manifest(title="Where2Eat for B"))
    assert [h["title"] for h in _search(client, a, "where2eat")["hits"]] == [
        "Where2Eat - group dinner recommender"
    ]


def test_usage_signals_rank_busier_apps_higher(
    client: TestClient, tenant: TenantHandle, runtime: Runtime
) -> None:
    add_team(client, tenant)
    for app_id in ("quiet-recommender", "busy-recommender"):
        submit(client, tenant, manifest(app_id=app_id, title=app_id.replace("-", " ")))
    with runtime.session_factory() as session:
        set_signals(
            tenant.tenant_id,
            {"busy-recommender": (500, 2000, 40, 90)},
            at=datetime.now(UTC),
            session=session,
        )
    hits = _search(client, tenant, "recommender")["hits"]
    assert [h["app_id"] for h in hits] == ["busy-recommender", "quiet-recommender"]
    assert hits[0]["components"]["invocations_30d"] == 2000
    assert hits[1]["components"]["behaviour"] == 0.0


def test_per_app_signals_count_each_event_once() -> None:
    def total(app: str, meter: str, events: int, distinct: int | None) -> UsageTotal:
        return UsageTotal(
            "cc", "t", app, meter, False, events, Decimal(events), None, None, distinct
        )

    totals = [total("a", "tokens", 10, None), total("a", "users", 10, 3), total("b", "x", 4, None)]
    assert per_app(totals) == {"a": (10, 3), "b": (4, 0)}


def test_rename_and_team_change_reindex_in_the_same_update(
    client: TestClient, tenant: TenantHandle
) -> None:
    _catalog(client, tenant)
    renamed = client.patch(
        "/v1/apps/where2eat", json={"title": "Lunch Roulette"}, headers=tenant.headers
    )
    assert renamed.status_code == 200, renamed.text
    hits = _search(client, tenant, "roulette")["hits"]
    assert [(h["app_id"], h["title"]) for h in hits] == [("where2eat", "Lunch Roulette")]
    assert _search(client, tenant, "where2eat")["hits"] == []  # the old title is not indexed
    assert _search(client, tenant, "", team="social")["total"] == 1
    moved = client.patch("/v1/apps/where2eat", json={"team": "finance"}, headers=tenant.headers)
    assert moved.status_code == 200, moved.text
    assert _search(client, tenant, "", team="social")["total"] == 0
    assert [h["app_id"] for h in _search(client, tenant, "roulette", team="finance")["hits"]] == [
        "where2eat"
    ]


def test_publishing_names_the_app_after_its_manifest(
    client: TestClient, tenant: TenantHandle
) -> None:
    _catalog(client, tenant)
    client.patch("/v1/apps/where2eat", json={"title": "Lunch Roulette"}, headers=tenant.headers)
    submit(client, tenant, manifest(version="1.1.0", title="Where2Eat - team lunch picker"))
    app = client.get("/v1/apps/where2eat", headers=tenant.headers).json()
    assert app["title"] == "Where2Eat - team lunch picker"
    assert _search(client, tenant, "roulette")["hits"] == []
    assert _search(client, tenant, "picker")["hits"][0]["title"] == app["title"]


def test_the_signals_job_reads_usage_and_ranks_by_it(
    client: TestClient, tenant: TenantHandle, runtime: Runtime
) -> None:
    add_team(client, tenant)
    for app_id in ("quiet-recommender", "busy-recommender"):
        submit(client, tenant, manifest(app_id=app_id, title=app_id.replace("-", " ")))
    builder = TableBuilder(USAGE_SCHEMA)
    recent = datetime.now(UTC) - timedelta(hours=2)
    for position in range(1, 31):
        builder.append(
            position, tenant.tenant_id, f"e-{position}", "src", "qm.invocation.usage", recent,
            recent, recent, "default", "web", "busy-recommender", "invocations", Decimal(1),
            None, "app_id", False, False, None, "production", "persistent",
        )  # fmt: skip
    runtime.usage_store.write(RatedBatch(stream=None, position=None, usage=builder.to_table()))

    assert SearchSignalsJob(runtime).run_once() is False
    hits = _search(client, tenant, "recommender")["hits"]
    assert [h["app_id"] for h in hits] == ["busy-recommender", "quiet-recommender"]
    assert hits[0]["components"]["invocations_7d"] == 30
    assert hits[0]["components"]["invocations_30d"] == 30
    assert hits[1]["components"]["invocations_7d"] == 0
