"""Search quality on the simulator's catalog (210 apps), on both backends: every app published
through the API with the manifest sim/catalog.py derives, usage signals from the simulator's
weights, the relevance set of tests/catalog/relevance.py run over HTTP.

The floors sit a little below the figures measured when the set was built (docs/catalog.md,
"Relevance"), so a change that makes ranking worse fails here."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.testclient import TestClient

from quartermaster.catalog.search_index import set_signals
from quartermaster.runtime import Runtime
from quartermaster.sim.catalog import catalog_apps, manifest, topic, usage_signals
from quartermaster.sim.model import SimConfig
from quartermaster.sim.platform import build_platform
from tests.catalog.publish_support import submit
from tests.catalog.relevance import QUERIES, evaluate, mean
from tests.conftest import TenantHandle

# (MRR, nDCG@5); measured 0.968, 0.966 on SQLite and 0.919, 0.914 on PostgreSQL
FLOORS = {"sqlite": (0.95, 0.95), "postgresql": (0.90, 0.90)}


def test_relevance_set_is_large_and_varied() -> None:
    assert len(QUERIES) >= 30
    assert {q.kind for q in QUERIES} == {"prefix", "tag", "topic", "intent"}


def test_search_quality_on_the_simulated_catalog(
    client: TestClient, tenant: TenantHandle, runtime: Runtime
) -> None:
    platform = build_platform(SimConfig(start=datetime(2026, 1, 1, tzinfo=UTC)))
    apps = catalog_apps(platform)
    for cost_center in platform.cost_centers:
        body = {"slug": cost_center.slug, "name": cost_center.name}
        assert client.post("/v1/cost-centers", json=body, headers=tenant.headers).is_success
    for team in platform.teams:
        body = {"slug": team.slug, "name": team.name, "cost_center": team.cost_center}
        assert client.post("/v1/teams", json=body, headers=tenant.headers).is_success
    manifests = {app.app_id: manifest(app, platform) for app in apps}
    for body in manifests.values():
        assert submit(client, tenant, body)["state"] == "published"
    with runtime.session_factory() as session:
        now = datetime.now(UTC)
        set_signals(tenant.tenant_id, usage_signals(platform), at=now, session=session)

    def search(text: str) -> list[str]:
        response = client.get(
            "/v1/apps/search", params={"q": text, "limit": 10}, headers=tenant.headers
        )
        assert response.status_code == 200, response.text
        return [hit["app_id"] for hit in response.json()["hits"]]

    results = evaluate(
        search,
        {app.app_id: topic(app) for app in apps},
        {app_id: body["tags"] for app_id, body in manifests.items()},
    )
    mrr = mean([r.reciprocal_rank for r in results])
    ndcg5 = mean([r.ndcg5 for r in results])
    backend = runtime.engine.dialect.name
    print(f"\n{backend}: MRR {mrr:.3f}  nDCG@5 {ndcg5:.3f} over {len(results)} queries")
    for kind in ("prefix", "tag", "topic", "intent"):
        part = [r for r in results if r.query.kind == kind]
        print(
            f"  {kind:7} n={len(part):2} MRR {mean([r.reciprocal_rank for r in part]):.3f} "
            f"nDCG@5 {mean([r.ndcg5 for r in part]):.3f}"
        )
    for r in results:
        if r.reciprocal_rank < 1:
            print(f"  {r.query.text!r}: RR {r.reciprocal_rank:.2f} top {r.ranked[:3]}")
    mrr_floor, ndcg_floor = FLOORS[backend]
    assert mrr >= mrr_floor, f"{backend} MRR {mrr:.3f} fell below {mrr_floor}"
    assert ndcg5 >= ndcg_floor, f"{backend} nDCG@5 {ndcg5:.3f} fell below {ndcg_floor}"
