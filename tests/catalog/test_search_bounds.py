"""Search on both backends: prefixes longer than a word's stem, broad terms narrowed to the
title and tags, stop words, and tenant isolation on each of those paths; on SQLite, each
tenant's full-text rows in its own rowid range."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from quartermaster.catalog import search_index
from quartermaster.catalog.search_index import PREFIX, STEMMED, choose_terms, content_terms
from quartermaster.runtime import Runtime
from tests.catalog.publish_support import add_team, manifest, submit
from tests.conftest import TenantHandle


def _ids(client: TestClient, tenant: TenantHandle, q: str) -> list[str]:
    response = client.get("/v1/apps/search", params={"q": q}, headers=tenant.headers)
    assert response.status_code == 200, response.text
    return [hit["app_id"] for hit in response.json()["hits"]]


def _publish(client: TestClient, tenant: TenantHandle, app_id: str, title: str, desc: str) -> None:
    body = manifest(app_id=app_id, title=title, short_description=desc, tags=["ops"])
    assert submit(client, tenant, body)["state"] == "published"


def test_prefix_longer_than_the_stem_finds_the_word(
    client: TestClient, make_tenant: Callable[..., TenantHandle]
) -> None:
    a, b = make_tenant("pa"), make_tenant("pb")
    add_team(client, a)
    _publish(client, a, "incident-summarizer", "Incident Summarizer", "Summaries of incidents")
    _publish(client, a, "lunch-picker", "Lunch Picker", "Picks a place for lunch")
    # porter: incident -> incid, summarizer -> summar; these prefixes run past the stems
    for prefix in ("inciden", "incident", "summariz", "summarize"):
        assert _ids(client, a, prefix) == ["incident-summarizer"], prefix
    assert _ids(client, a, "incidents") == ["incident-summarizer"]  # whole word, stemmed
    assert _ids(client, a, "summaries") == ["incident-summarizer"]
    assert _ids(client, b, "inciden") == []  # tenant B sees none of A's apps


def test_broad_terms_pick_candidates_by_title_and_tags(
    client: TestClient, make_tenant: Callable[..., TenantHandle], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_index, "BROAD", 2)
    a, b = make_tenant("ba"), make_tenant("bb")
    for tenant in (a, b):
        add_team(client, tenant)
    for n in range(4):  # every description says "maintained", one title "maintenance"
        title = "Maintenance Planner" if n == 0 else f"Helper Bot {n}"
        _publish(client, a, f"app-{n}", title, f"Tool {n}, maintained by the ops team")
    # "maint" is in all four descriptions (more than BROAD): candidates come from the titles
    assert _ids(client, a, "maint") == ["app-0"]
    # "bot" is in three titles, more than BROAD there too: it is left out, so the query
    # browses (all four apps), as BM25 would rank a term that is in most documents at ~0
    assert sorted(_ids(client, a, "bot")) == ["app-0", "app-1", "app-2", "app-3"]
    assert _ids(client, a, "planner bot") == ["app-0"]  # the narrow term picks
    assert _ids(client, a, "nothing-like-this") == []
    # B's apps neither show in A's results nor count towards A's broad terms, and vice versa
    _publish(client, b, "b-maintenance", "Maintenance Board", "A board")
    assert _ids(client, b, "maint") == ["b-maintenance"]
    assert _ids(client, b, "bot") == []
    assert "b-maintenance" not in _ids(client, a, "maint")


def test_stop_words_only_count_when_alone(client: TestClient, tenant: TenantHandle) -> None:
    add_team(client, tenant)
    _publish(client, tenant, "the-planner", "The Planner", "Plans the week")
    assert content_terms(["the", "planner"]) == ["planner"]
    assert content_terms(["the"]) == ["the"]
    assert _ids(client, tenant, "the planner") == ["the-planner"]


def test_choose_terms_narrows_then_leaves_out() -> None:
    broad = search_index.BROAD + 1
    counts = {
        (STEMMED, "maint", False): 0,
        (STEMMED, "maint", True): 0,
        (PREFIX, "maint", False): broad,  # broad everywhere ...
        (PREFIX, "maint", True): 5,  # ... but not in titles
        (STEMMED, "app", False): broad,
        (STEMMED, "app", True): broad,  # broad in titles too
        (PREFIX, "app", False): broad,
        (PREFIX, "app", True): broad,
    }
    chosen, left_out = choose_terms(["maint", "app"], counts)
    assert chosen == {PREFIX: [("maint", True)]}
    assert left_out
    chosen, left_out = choose_terms(["maint"], {**counts, (PREFIX, "maint", False): 7})
    assert chosen == {PREFIX: [("maint", False)]}
    assert not left_out


def test_fulltext_rows_sit_in_their_tenants_rowid_range(
    client: TestClient, make_tenant: Callable[..., TenantHandle], runtime: Runtime
) -> None:
    if runtime.engine.dialect.name != "sqlite":
        pytest.skip("the rowid layout of SQLite's FTS5 tables (PostgreSQL: tsvector columns)")
    a, b = make_tenant("ra"), make_tenant("rb")
    for tenant in (a, b):
        add_team(client, tenant)
        _publish(client, tenant, "pager-relay", "Pager relay", "Relays pages to on-call.")
    _publish(client, a, "pager-digest", "Pager digest", "Summarises a week of pages.")

    def rows() -> dict[str, set[tuple[str, int]]]:
        """Per tenant: (table, ordinal << 32 | id) of its documents' full-text rows."""
        with runtime.session_factory() as session:
            docs = session.execute(
                text(
                    "SELECT d.tenant_id, t.ordinal, d.id FROM app_search_docs d "
                    "JOIN app_search_tenants t ON t.tenant_id = d.tenant_id "
                    "WHERE d.tenant_id IN (:a, :b)"
                ),
                {"a": a.tenant_id, "b": b.tenant_id},
            ).all()
            found: dict[str, set[tuple[str, int]]] = {a.tenant_id: set(), b.tenant_id: set()}
            for tenant_id, ordinal, doc_id in docs:
                rowid = search_index.fts_rowid(ordinal, doc_id)
                for table in ("app_search_fts", "app_search_words"):
                    hit = session.scalar(text(f"SELECT rowid FROM {table} WHERE rowid = {rowid}"))
                    if hit is not None:
                        found[tenant_id].add((table, hit))
            return found

    before = rows()
    assert (len(before[a.tenant_id]), len(before[b.tenant_id])) == (4, 2)
    assert _ids(client, b, "pager") == ["pager-relay"]
    deprecated = client.post(
        "/v1/apps/pager-relay/versions/1.0.0/deprecate", json={}, headers=a.headers
    )
    assert deprecated.json()["state"] == "deprecated"
    after = rows()  # a's document left both indexes, b's same-named app stayed
    assert (len(after[a.tenant_id]), after[b.tenant_id]) == (2, before[b.tenant_id])
    assert _ids(client, a, "pager") == ["pager-digest"]
    assert _ids(client, b, "pager") == ["pager-relay"]


def test_fts_rowid_keeps_the_id_in_the_low_32_bits() -> None:
    assert search_index.fts_rowid(3, 7) == (3 << 32) + 7
    assert search_index.fts_rowid(3, 7) & 0xFFFFFFFF == 7
    with pytest.raises(ValueError, match="does not fit"):
        search_index.fts_rowid(1, 1 << 32)


@pytest.mark.parametrize(
    ("name", "allowed", "known"),
    [
        ("pricing_model", "'free', 'subscription', 'usage_by_unit' or 'payg'", "payg"),
        ("capability", "'read', 'write' or 'export'", "export"),
    ],
)
def test_an_unknown_filter_value_is_a_422_listing_the_allowed_ones(
    client: TestClient, tenant: TenantHandle, name: str, allowed: str, known: str
) -> None:
    """An empty 200 read as 'no such apps' when the value could match nothing."""
    response = client.get("/v1/apps/search", params={name: "bogus"}, headers=tenant.headers)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == name
    assert allowed in error["message"]
    found = client.get("/v1/apps/search", params={name: known}, headers=tenant.headers)
    assert found.status_code == 200, found.text
