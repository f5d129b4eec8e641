"""Search over more apps than one page of candidates, on both backends: filters (team, tag,
capability, pricing model) apply to every match, not to the best 100; `total` is the number of
matches; paging reaches every hit; the facets say how many hits they count; a search without
text (ranked from the busiest apps' covering index) answers as it did before."""

from __future__ import annotations

import importlib.util
import json
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, text, update

from quartermaster.catalog import search_index
from quartermaster.catalog.models import App, AppAssignment
from quartermaster.catalog.publish_models import (
    AppSearchDoc,
    AppSearchTag,
    AppVersion,
    VersionState,
)
from quartermaster.catalog.search_index import SearchFilters, SearchResult
from quartermaster.runtime import Runtime
from quartermaster.storage.migrate import MIGRATIONS_DIR
from quartermaster.tenancy.models import CostCenter, Team
from tests.conftest import TenantHandle

APPS, TEAMS = 150, 15  # team-NN has apps NN, NN+15, ...: 10 apps per team


def _app(n: int) -> dict[str, object]:
    return {
        "app_id": f"app-{n:03d}",
        "team": f"team-{n % TEAMS:02d}",
        "tags": ["travel", "ops"] if n % 3 == 0 else ["ops"],  # 50 travel apps
        "capabilities": ["read", "export"] if n % 5 == 0 else ["read"],  # 30 export
        "pricing": "payg" if n % 7 == 0 else "free",  # 22 payg
    }


def _expected(keep: object) -> set[str]:
    return {str(a["app_id"]) for a in map(_app, range(APPS)) if keep(a)}  # type: ignore[operator]


def _load(runtime: Runtime, tenant_id: str) -> None:
    """APPS published apps written as rows and indexed by sync_app, as every publish does
    (publishing 150 versions through the API would take a minute)."""
    now = datetime(2026, 12, 1, tzinfo=UTC)
    decision = json.dumps({"result": "allow", "audit_only": [], "policies": []})
    with runtime.session_factory() as session:
        center = CostCenter(tenant_id=tenant_id, slug="cc", name="CC")
        session.add(center)
        session.flush()
        teams = [
            Team(tenant_id=tenant_id, slug=f"team-{t:02d}", name=f"T{t}", cost_center_id=center.id)
            for t in range(TEAMS)
        ]
        session.add_all(teams)
        session.flush()
        apps = []
        for n in range(APPS):
            spec = _app(n)
            app = App(
                tenant_id=tenant_id,
                app_id=str(spec["app_id"]),
                title=f"Helper {n}",
                owner="someone",
                team_id=teams[n % TEAMS].id,
                cost_center_id=center.id,
                created_by="test",
            )
            session.add(app)
            apps.append((app, spec))
        session.flush()
        for n, (app, spec) in enumerate(apps):
            document = {
                "short_description": f"Helps with chore {n}",
                "tags": spec["tags"],
                "capabilities": spec["capabilities"],
                "pricing_template": {"model": spec["pricing"]},
            }
            session.add(
                AppAssignment(
                    tenant_id=tenant_id,
                    app_pk=app.id,
                    team_id=app.team_id,
                    cost_center_id=center.id,
                    valid_from=now,
                )
            )
            session.add(
                AppVersion(
                    tenant_id=tenant_id,
                    app_pk=app.id,
                    version="1.0.0",
                    state=VersionState.PUBLISHED.value,
                    manifest=json.dumps(document),
                    manifest_digest="test",
                    checks="[]",
                    decision=decision,
                    checked_at=now,
                    published_at=now,
                    created_by="test",
                )
            )
        session.flush()
        for app, _spec in apps:
            search_index.sync_app(tenant_id, app.id, session=session)
        session.commit()


def _search(
    runtime: Runtime,
    tenant_id: str,
    q: str,
    filters: SearchFilters,
    *,
    offset: int = 0,
    now: datetime | None = None,
) -> SearchResult:
    with runtime.read_session_factory() as session:
        return search_index.search(
            tenant_id, q, filters=filters, limit=20, offset=offset, now=now, session=session
        )


def _every_page(runtime: Runtime, tenant_id: str, q: str, filters: SearchFilters) -> list[str]:
    found: list[str] = []
    for offset in range(0, APPS + 20, 20):
        found += [hit.app_id for hit in _search(runtime, tenant_id, q, filters, offset=offset).hits]
    return found


@pytest.fixture
def catalog(runtime: Runtime, tenant: TenantHandle) -> str:
    _load(runtime, tenant.tenant_id)
    return tenant.tenant_id


CASES = [
    ("", SearchFilters(team="team-01"), lambda a: a["team"] == "team-01"),
    ("", SearchFilters(tag="travel"), lambda a: "travel" in a["tags"]),
    ("helper", SearchFilters(team="team-01"), lambda a: a["team"] == "team-01"),
    ("helper", SearchFilters(tag="travel"), lambda a: "travel" in a["tags"]),
    ("help", SearchFilters(capability="export"), lambda a: "export" in a["capabilities"]),
    (
        "helper",
        SearchFilters(tag="travel", pricing_model="payg"),
        lambda a: "travel" in a["tags"] and a["pricing"] == "payg",
    ),
    ("helper", SearchFilters(), lambda a: True),
    ("", SearchFilters(), lambda a: True),
]


def test_filters_total_and_paging_cover_every_match(catalog: str, runtime: Runtime) -> None:
    for q, filters, keep in CASES:
        expected = _expected(keep)
        result = _search(runtime, catalog, q, filters)
        assert result.total == len(expected), (q, filters)
        assert result.facet_hits == len(expected), (q, filters)
        pages = _every_page(runtime, catalog, q, filters)
        assert len(pages) == len(set(pages)), (q, filters, "a hit on two pages")
        assert set(pages) == expected, (q, filters)
    # No filter value matches by accident: a tag's JSON text inside another's, or a separator.
    for tag in ("trav", '", "', "travel,ops", "ops"):
        result = _search(runtime, catalog, "", SearchFilters(tag=tag))
        assert result.total == (APPS if tag == "ops" else 0), tag
    # The facets count every filtered hit.
    travel = _search(runtime, catalog, "helper", SearchFilters(tag="travel"))
    assert travel.facets["tags"] == {"travel": 50, "ops": 50}
    assert sum(travel.facets["team"].values()) == 50


def test_total_is_exact_beyond_the_ranked_window(
    catalog: str, runtime: Runtime, client: TestClient, tenant: TenantHandle
) -> None:
    # With a window of 40 candidates per index, `total` comes from a count of every match.
    search_index_window = 40
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(search_index, "WINDOW", search_index_window)
        for q, filters, keep in CASES:
            result = _search(runtime, catalog, q, filters)
            expected = len(_expected(keep))
            assert result.total == expected, (q, filters)
            assert result.facet_hits == min(expected, search_index_window) or (
                expected > search_index_window and result.facet_hits >= search_index_window
            ), (q, filters, result.facet_hits)
        response = client.get(
            "/v1/apps/search", params={"q": "helper", "team": "team-02"}, headers=tenant.headers
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["total"], body["facet_hits"], len(body["hits"])) == (10, 10, 10)
    assert {hit["team"] for hit in body["hits"]} == {"team-02"}


def _ranked_as_before(
    runtime: Runtime, tenant_id: str, filters: SearchFilters, now: datetime
) -> tuple[int, list[search_index._Ranked], dict[str, dict[str, int]]]:
    """What a search without text answered before browse ranked in SQL: the WINDOW busiest
    apps that pass the filters (invocations_30d, then app_id), ranked by `rank`."""
    with runtime.read_session_factory() as session:
        docs = session.scalars(select(AppSearchDoc).where(AppSearchDoc.tenant_id == tenant_id))
        passing = [
            doc
            for doc in docs
            if filters.team in (None, doc.team)
            and filters.pricing_model in (None, doc.pricing_model)
            and (filters.tag is None or filters.tag in json.loads(doc.tags))
            and (filters.capability is None or filters.capability in json.loads(doc.capabilities))
        ]
    passing.sort(key=lambda doc: (-doc.invocations_30d, doc.app_id))
    columns = "id app_id team pricing_model tags capabilities behaviour trust_base scanned_epoch"
    window = passing[: search_index.WINDOW]
    rows = [(*(getattr(d, c) for c in columns.split()), 0.0) for d in window]
    ranked, facets = search_index.rank(rows, filters, now.timestamp())
    return len(passing), ranked, {k: dict(c.most_common(20)) for k, c in facets.items()}


def test_a_search_without_text_ranks_pages_and_counts_as_before(
    catalog: str, runtime: Runtime
) -> None:
    now = datetime(2026, 12, 4, tzinfo=UTC)
    # Usage in 9 levels (ties in the browse order), scans fresh or 60 or 120 days old and a
    # few seconds apart: apps of one level and age differ in score by less than the rounding,
    # so app_id orders them (the later app scanned later: its unrounded score is higher).
    signals = {f"app-{n:03d}": ((n % 9) * 5, (n % 9) * 1000, 0, (n % 9) * 10) for n in range(APPS)}
    with runtime.session_factory() as session:
        search_index.set_signals(catalog, signals, at=now, session=session)
        for n in range(APPS):
            scanned = now.timestamp() - (n % 3) * 60 * 86400 + n
            session.execute(
                update(AppSearchDoc)
                .where(AppSearchDoc.tenant_id == catalog, AppSearchDoc.app_id == f"app-{n:03d}")
                .values(scanned_epoch=scanned)
            )
        session.commit()
    cases = [
        SearchFilters(),
        SearchFilters(team="team-01"),
        SearchFilters(tag="travel"),
        SearchFilters(capability="export"),
        SearchFilters(pricing_model="payg"),
        SearchFilters(tag="travel", pricing_model="free"),
    ]
    for window in (search_index.WINDOW, 40):  # all candidates, then a window that cuts
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(search_index, "WINDOW", window)
            for filters in cases:
                total, ranked, facets = _ranked_as_before(runtime, catalog, filters, now)
                for offset in (0, 20, 40):
                    result = _search(runtime, catalog, "", filters, offset=offset, now=now)
                    expected = ranked[offset : offset + 20]
                    where = (window, filters, offset)
                    assert result.total == total, where
                    assert result.facet_hits == len(ranked), where
                    assert result.facets == facets, where
                    assert list(result.facets["tags"]) == list(facets["tags"]), where
                    assert [h.app_id for h in result.hits] == [r.app_id for r in expected], where
                    assert [h.score for h in result.hits] == [round(r.score, 6) for r in expected]
                    assert [h.components["trust"] for h in result.hits] == [
                        round(r.trust, 6) for r in expected
                    ], where


def _tag_rows(runtime: Runtime, tenant_id: str) -> set[tuple[str, str, int]]:
    with runtime.read_session_factory() as session:
        rows = session.execute(
            select(AppSearchTag.app_id, AppSearchTag.tag, AppSearchTag.invocations_30d).where(
                AppSearchTag.tenant_id == tenant_id
            )
        ).all()
    return {(app_id, tag, invocations) for app_id, tag, invocations in rows}


def _doc_tags(runtime: Runtime, tenant_id: str) -> set[tuple[str, str, int]]:
    """What the tag rows must hold: each tag of each document, with its browse order."""
    with runtime.read_session_factory() as session:
        docs = session.scalars(select(AppSearchDoc).where(AppSearchDoc.tenant_id == tenant_id))
        return {(d.app_id, t, d.invocations_30d) for d in docs for t in json.loads(d.tags)}


TAG_CASES = [
    SearchFilters(tag="travel", team="team-03"),
    SearchFilters(tag="travel", capability="export"),
    SearchFilters(tag="travel", pricing_model="payg"),
    SearchFilters(tag="ops", team="team-00", capability="export"),
    SearchFilters(tag="travel", team="team-00", capability="export", pricing_model="free"),
    SearchFilters(tag="ops"),  # every app has it, beside "travel" on a third of them
    SearchFilters(tag="nobody-has-this"),
    SearchFilters(tag="nobody-has-this", team="team-01"),
    SearchFilters(tag="travel", team="team-01"),  # team-01's apps are 1, 16, ...: none is travel
]


def _keep(filters: SearchFilters) -> object:
    return lambda a: (
        filters.tag in a["tags"]
        and filters.team in (None, a["team"])
        and (filters.capability is None or filters.capability in a["capabilities"])
        and filters.pricing_model in (None, a["pricing"])
    )


def test_tag_filters_with_other_filters_match_every_app_and_rank_as_before(
    catalog: str, runtime: Runtime
) -> None:
    """A tag alone, with each other filter and with all of them, a tag every app has, a tag
    no app has: the same apps, total, facets and order as testing each document's tags (the
    reference below), with text and without, whole and cut by a small window."""
    now = datetime(2026, 12, 4, tzinfo=UTC)
    signals = {f"app-{n:03d}": (n % 4, (n % 9) * 1000, 0, n % 5) for n in range(APPS)}
    with runtime.session_factory() as session:
        search_index.set_signals(catalog, signals, at=now, session=session)
    assert _tag_rows(runtime, catalog) == _doc_tags(runtime, catalog)
    for filters in TAG_CASES:
        expected = _expected(_keep(filters))
        for q in ("", "helper", "chore"):
            result = _search(runtime, catalog, q, filters, now=now)
            assert result.total == len(expected), (q, filters)
            pages = _every_page(runtime, catalog, q, filters)
            assert sorted(pages) == sorted(expected), (q, filters)
            if not expected:
                assert result.hits == [], (q, filters)
                assert result.facet_hits == 0, (q, filters)
                assert result.facets == {name: {} for name in search_index.FACETS}
            else:
                assert result.facets["tags"][str(filters.tag)] == len(expected), (q, filters)
        for window in (search_index.WINDOW, 7):
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(search_index, "WINDOW", window)
                total, ranked, facets = _ranked_as_before(runtime, catalog, filters, now)
                for offset in (0, 20):
                    result = _search(runtime, catalog, "", filters, offset=offset, now=now)
                    where = (window, filters, offset)
                    assert result.total == total == len(expected), where
                    assert result.facets == facets, where
                    assert [h.app_id for h in result.hits] == [
                        r.app_id for r in ranked[offset : offset + 20]
                    ], where


def test_tag_rows_follow_versions_signals_and_removal(
    catalog: str, runtime: Runtime, client: TestClient, tenant: TenantHandle
) -> None:
    """The tag rows a filter reads hold each document's tags and its browse order after every
    change: a new version with other tags, a signal refresh, an app no longer published."""
    now = datetime(2026, 12, 4, tzinfo=UTC)
    with runtime.session_factory() as session:
        app = session.scalars(
            select(App).where(App.tenant_id == catalog, App.app_id == "app-003")
        ).one()
        version = session.scalars(select(AppVersion).where(AppVersion.app_pk == app.id)).one()
        document = json.loads(version.manifest)
        document["tags"] = ["ops", "billing", "finance-ops"]  # travel gone, two more
        session.add(
            AppVersion(
                tenant_id=catalog,
                app_pk=app.id,
                version="1.1.0",
                state=VersionState.PUBLISHED.value,
                manifest=json.dumps(document),
                manifest_digest="test",
                checks="[]",
                decision=version.decision,
                checked_at=now,
                published_at=now,
                created_by="test",
            )
        )
        session.flush()
        search_index.sync_app(catalog, app.id, session=session)
        session.commit()
    for tag, total in (("travel", 49), ("billing", 1), ("finance-ops", 1), ("ops", APPS)):
        assert _search(runtime, catalog, "", SearchFilters(tag=tag)).total == total, tag
    billing = _search(runtime, catalog, "helper", SearchFilters(tag="billing", team="team-03"))
    assert [h.app_id for h in billing.hits] == ["app-003"]
    assert billing.hits[0].tags == ["ops", "billing", "finance-ops"]
    # A refresh reorders the tag's rows as the documents.
    with runtime.session_factory() as session:
        search_index.set_signals(catalog, {"app-147": (1, 99, 1, 1)}, at=now, session=session)
    assert _tag_rows(runtime, catalog) == _doc_tags(runtime, catalog)
    travel = _search(runtime, catalog, "", SearchFilters(tag="travel"), now=now)
    assert travel.hits[0].app_id == "app-147"
    # 1.1.0 deprecated: 1.0.0's tags are back; 1.0.0 too: its tags go with its document.
    for version, travel_total in (("1.1.0", 50), ("1.0.0", 49)):
        deprecated = client.post(
            f"/v1/apps/app-003/versions/{version}/deprecate", json={}, headers=tenant.headers
        )
        assert deprecated.status_code == 200, deprecated.text
        assert _search(runtime, catalog, "", SearchFilters(tag="billing")).total == 0
        assert _search(runtime, catalog, "", SearchFilters(tag="travel")).total == travel_total
        assert _tag_rows(runtime, catalog) == _doc_tags(runtime, catalog)
    assert not any(app_id == "app-003" for app_id, _, _ in _tag_rows(runtime, catalog))


def test_the_migration_fills_the_tag_rows_from_the_documents(
    catalog: str, runtime: Runtime
) -> None:
    path = MIGRATIONS_DIR / "versions" / "0021c_search_tags.py"
    spec = importlib.util.spec_from_file_location("migration_0021c", path)
    assert spec is not None
    assert spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    expected = _tag_rows(runtime, catalog)
    assert len(expected) == APPS + 50
    with runtime.session_factory() as session:
        session.execute(delete(AppSearchTag))
        dialect = session.get_bind().dialect.name
        session.execute(text(migration._FILL.format(elements=migration._ELEMENTS[dialect])))
        session.commit()
    assert _tag_rows(runtime, catalog) == expected
