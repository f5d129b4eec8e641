"""Catalog search: a document per app with a published version, a full-text index beside it,
and ranking that combines text match with behavioural and trust signals.

Full text: SQLite FTS5 with BM25 (embedded default) or PostgreSQL full-text search with
`ts_rank` over weighted tsvectors (GIN indexes). Two indexes per backend: a stemmed one
(porter / `english`) that whole words match, so "policies" finds "policy", and an unstemmed
one (unicode61 with prefix indexes / `simple`) that every term matches as a prefix, so
"recomm" finds "recommender" and "inciden" finds "incident" (its porter stem is "incid", which
"inciden" is no prefix of). Terms are OR-ed; a document's text relevance is the sum of its
two ranks, so a whole word (which matches both) counts above a bare prefix. Common English
stop words are dropped from a query with other terms; PostgreSQL's `english` config drops
them anyway.

Filters first, then bounded ranking: the filters (team, tag, capability, pricing model)
are conditions of the SQL that picks candidates, so they apply to all of the tenant's matches
before any limit (SQLite: the full-text match joined to its document; PostgreSQL: the same
WHERE). Then the engine picks the best WINDOW matches by text in each index (SQLite: ORDER BY
bm25 LIMIT inside FTS5 over the tenant's rowid range, see `fts_rowid`, so the limit applies to
the tenant's matches), and only those are combined with the signals. WINDOW is the deepest hit
paging can reach (MAX_OFFSET + MAX_LIMIT), the same for every page, so pages never disagree;
`total` is the exact number of matches (counted in SQL when the window is full). The
signals are precomputed columns of the document (`behaviour`, `trust_base`, `scanned_epoch`),
so a candidate costs no joins and little Python; the shown columns are read only for the page
of hits returned. Without text (an empty query, or every term too broad) the candidates are
the WINDOW busiest apps that pass the filters, read from a covering index (migration 0019c:
one led by team, one by pricing model, one by neither) that stops at the limit, and only the
page's hits are built (`rank_browse`). With a tag they are read from the tag's rows
(`app_search_tags`, migration 0021c: a row per tag of a document, in the same order), each
joined to its document, so neither the candidates nor the count test every document's tags.

Score (each hit carries its parts, so a ranking can be explained):
  score = 0.70 * text + 0.20 * behaviour + 0.10 * trust, each part in [0, 1]
  text      = the engine's relevance / the best relevance among the candidates
  behaviour = 0.5*s(invocations_30d, 1e6) + 0.2*s(invocations_7d, 1e5) + 0.3*s(users_30d, 1e4)
              with s(x, top) = log(1+x)/log(1+top) capped at 1 (fixed scales: stable scores)
  trust     = 0.4*verified owner + 0.4*policy pass + 0.2*scan freshness (1 up to 30 days
              after the last scan, falling linearly to 0 at 180 days)

The index is kept in step by `sync_app`, called in the same transaction as every change of a
version's state and every change of the app itself (rename, owner, team): it indexes the app's
latest published version under the app's current title, owner and team (and its tag rows), or
removes the app; `set_signals` copies the new browse order to the tag rows."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from itertools import chain
from typing import Any, NamedTuple

from sqlalchemy import Boolean, Row, TextClause, bindparam, delete, insert, select, text
from sqlalchemy.orm import Session

from quartermaster.catalog.manifest import version_key
from quartermaster.catalog.models import App
from quartermaster.catalog.publish_models import (
    AppSearchDoc,
    AppSearchTag,
    AppSearchTenant,
    AppVersion,
    VersionState,
)
from quartermaster.domain.timeutil import utc_now
from quartermaster.storage.base import UTCDateTime
from quartermaster.tenancy.models import Principal, Team

WEIGHTS = {"text": 0.70, "behaviour": 0.20, "trust": 0.10}
# Paging: `limit` up to MAX_LIMIT hits from `offset` up to MAX_OFFSET (the route's bounds).
MAX_LIMIT = 100
MAX_OFFSET = 1000
# Candidates per index re-ranked with the signals: every hit paging can reach, the same for
# every page of a query (a window growing with the offset would rank page 6 differently from
# page 1). Filters apply before this limit, in SQL.
WINDOW = MAX_OFFSET + MAX_LIMIT
_TERM = re.compile(r"\w+", re.UNICODE)
FACETS = ("tags", "team", "capabilities", "pricing_model")
_DAY = 86400.0
# Dropped from a query with other terms: they (and, as prefixes, "then", "there", ...) match
# nearly every document and add work, not ranking (a subset of PostgreSQL's `english` list).
_STOP_WORDS = (
    "a an and are as at be but by for from has have in into is it its of on or that the their "
    "then there these this to was were will with"
)
STOP_WORDS = frozenset(_STOP_WORDS.split())
_FTS_TABLES = ("app_search_fts", "app_search_words")  # stemmed, unstemmed (SQLite)


@dataclass(frozen=True, slots=True)
class SearchFilters:
    tag: str | None = None
    team: str | None = None
    capability: str | None = None
    pricing_model: str | None = None


_NO_FILTERS = SearchFilters()


@dataclass(frozen=True, slots=True)
class Hit:
    app_id: str
    version: str
    title: str
    short_description: str
    tags: list[str]
    team: str
    capabilities: list[str]
    pricing_model: str
    score: float
    components: dict[str, float]


@dataclass(frozen=True, slots=True)
class SearchResult:
    query: str
    total: int  # every match of the query and filters (exact)
    hits: list[Hit]
    facets: dict[str, dict[str, int]] = field(default_factory=dict)
    # The hits the facets count: `total`, unless more than WINDOW match (then the candidates
    # ranked: the best WINDOW of each index by text, or the WINDOW busiest for an empty query).
    facet_hits: int = 0


# --- pure scoring ----------------------------------------------------------------------------


def _scaled(value: int, top: float) -> float:
    return min(1.0, math.log1p(max(value, 0)) / math.log1p(top))


def behaviour_score(inv_7d: int, inv_30d: int, users_30d: int) -> float:
    return 0.5 * _scaled(inv_30d, 1e6) + 0.2 * _scaled(inv_7d, 1e5) + 0.3 * _scaled(users_30d, 1e4)


@lru_cache(maxsize=65536)
def _json_list(value: str) -> tuple[str, ...]:
    """A stored JSON list (tags, capabilities), parsed once per distinct value: a broad query
    reads hundreds of documents, and most share their capabilities and many their tags."""
    return tuple(json.loads(value))


def freshness_at(scanned_epoch: float | None, now_epoch: float) -> float:
    if scanned_epoch is None:
        return 0.0
    age_days = (now_epoch - scanned_epoch) / _DAY
    return 1.0 if age_days <= 30 else max(0.0, 1.0 - (age_days - 30) / 150)


def trust_base(verified: bool, policy_pass: bool) -> float:
    """The trust that does not move with time (the scan's freshness does)."""
    return 0.4 * verified + 0.4 * policy_pass


def query_terms(query: str) -> list[str]:
    return list(dict.fromkeys(t.lower() for t in _TERM.findall(query)))[:16]


def content_terms(terms: list[str]) -> list[str]:
    """The terms matched: stop words go unless nothing else is left."""
    kept = [t for t in terms if t not in STOP_WORDS]
    return kept or terms


_ID_BITS = 32


def tenant_token(tenant_id: str) -> str:
    """The tenant as one token of the SQLite full-text text (hex: one word for any tenant id).
    Never matched (the rowid range picks the tenant), but kept so that BM25's document
    lengths, and so every score, are what they were when the token was matched."""
    return "t" + tenant_id.encode().hex()


def fts_rowid(ordinal: int, doc_id: int) -> int:
    """A document's rowid in the SQLite full-text indexes: its tenant's ordinal
    (`app_search_tenants`) above its own id, so each tenant's documents are one rowid range,
    to which FTS5 restricts a match by seeking (a tenant token AND-ed into every match cost
    about half of a query's time: the merge with its doclist and BM25's count of it)."""
    if not 0 < doc_id < 1 << _ID_BITS:
        raise ValueError(f"search document id {doc_id} does not fit the full-text rowid")
    return ordinal << _ID_BITS | doc_id


ALL_COLUMNS = "title descriptions tags"
NAMING_COLUMNS = "title tags"  # the columns that weigh most (10 and 6 against 2)


def fts5_term(term: str, *, prefix: bool, columns: str = ALL_COLUMNS) -> str:
    """One term as an FTS5 expression: a whole word (for the stemmed index) or a prefix (for
    the unstemmed one) in `columns`. Terms are runs of word characters: quoting is enough."""
    return f'{{{columns}}} : "{term}"{"*" if prefix else ""}'


def fts5_match(parts: list[str]) -> str:
    """Term expressions OR-ed (the query limits them to the tenant's rowid range)."""
    return " OR ".join(parts)


def tsquery_term(term: str, *, prefix: bool, naming_only: bool = False) -> str:
    """One term in PostgreSQL tsquery syntax: a word or a prefix (`:*`), optionally only its
    weight-A (title and tag) occurrences."""
    suffix = ("*" if prefix else "") + ("A" if naming_only else "")
    return f"{term}:{suffix}" if suffix else term


# --- index maintenance -----------------------------------------------------------------------


def _fts_text(doc: AppSearchDoc) -> tuple[str, str, str]:
    tags = " ".join(json.loads(doc.tags))
    return doc.title, f"{doc.short_description}\n{doc.long_description}", tags


def _tenant_ordinal(tenant_id: str, session: Session) -> int:
    """The tenant's ordinal in the SQLite full-text rowids, assigned on its first document."""
    ordinal = session.scalar(
        select(AppSearchTenant.ordinal).where(AppSearchTenant.tenant_id == tenant_id)
    )
    if ordinal is None:
        row = AppSearchTenant(tenant_id=tenant_id)
        session.add(row)
        session.flush()
        ordinal = row.ordinal
    return ordinal


def _write_fulltext(session: Session, doc: AppSearchDoc) -> None:
    title, descriptions, tags = _fts_text(doc)
    params: dict[str, Any] = {"title": title, "descriptions": descriptions, "tags": tags}
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        params["id"] = fts_rowid(_tenant_ordinal(doc.tenant_id, session), doc.id)
        params["tenant"] = tenant_token(doc.tenant_id)
        for table in _FTS_TABLES:
            session.execute(text(f"DELETE FROM {table} WHERE rowid = :id"), {"id": params["id"]})
            session.execute(
                text(
                    f"INSERT INTO {table} (rowid, tenant, title, descriptions, tags) "
                    "VALUES (:id, :tenant, :title, :descriptions, :tags)"
                ),
                params,
            )
    elif dialect == "postgresql":
        params["id"] = doc.id
        session.execute(
            text(
                "UPDATE app_search_docs SET search_vector = "
                "setweight(to_tsvector('english', :title), 'A') || "
                "setweight(to_tsvector('english', :tags), 'A') || "
                "setweight(to_tsvector('english', :descriptions), 'B'), prefix_vector = "
                "setweight(to_tsvector('simple', :title), 'A') || "
                "setweight(to_tsvector('simple', :tags), 'A') || "
                "setweight(to_tsvector('simple', :descriptions), 'B') WHERE id = :id"
            ),
            params,
        )


def _write_tags(session: Session, doc: AppSearchDoc) -> None:
    """The document's tags as rows of app_search_tags, with its browse order."""
    session.execute(delete(AppSearchTag).where(AppSearchTag.doc_id == doc.id))
    rows = [
        {
            "doc_id": doc.id,
            "tag": tag,
            "tenant_id": doc.tenant_id,
            "invocations_30d": doc.invocations_30d or 0,
            "app_id": doc.app_id,
        }
        for tag in dict.fromkeys(json.loads(doc.tags))
    ]
    if rows:
        session.execute(insert(AppSearchTag), rows)


def _remove(session: Session, doc: AppSearchDoc) -> None:
    if session.get_bind().dialect.name == "sqlite":
        rowid = fts_rowid(_tenant_ordinal(doc.tenant_id, session), doc.id)
        for table in _FTS_TABLES:
            session.execute(text(f"DELETE FROM {table} WHERE rowid = :id"), {"id": rowid})
    session.execute(delete(AppSearchTag).where(AppSearchTag.doc_id == doc.id))
    session.execute(delete(AppSearchDoc).where(AppSearchDoc.id == doc.id))


def _derive(doc: AppSearchDoc) -> None:
    """The precomputed score parts, from the document's own columns."""
    doc.behaviour = behaviour_score(  # a new document has no signals until the next refresh
        doc.invocations_7d or 0, doc.invocations_30d or 0, doc.users_30d or 0
    )
    doc.trust_base = trust_base(doc.verified_owner, doc.policy_pass)
    doc.scanned_epoch = doc.scanned_at.timestamp() if doc.scanned_at else None


def sync_app(tenant_id: str, app_pk: str, *, session: Session) -> None:
    """Index the app's latest published version, or drop it when none is published. Runs in
    the caller's transaction, so the index never disagrees with the versions."""
    doc = session.scalar(
        select(AppSearchDoc).where(
            AppSearchDoc.tenant_id == tenant_id, AppSearchDoc.app_pk == app_pk
        )
    )
    published = list(
        session.scalars(
            select(AppVersion).where(
                AppVersion.tenant_id == tenant_id,
                AppVersion.app_pk == app_pk,
                AppVersion.state == VersionState.PUBLISHED.value,
            )
        )
    )
    if not published:
        if doc is not None:
            _remove(session, doc)
        return
    latest = max(published, key=lambda v: version_key(v.version))
    manifest: dict[str, Any] = json.loads(latest.manifest)
    app = session.get_one(App, app_pk)
    team = session.get_one(Team, app.team_id)
    verified = (
        session.scalar(
            select(Principal.id).where(
                Principal.tenant_id == tenant_id, Principal.name == app.owner
            )
        )
        is not None
    )
    decision = json.loads(latest.decision) if latest.decision else {}
    if doc is None:
        doc = AppSearchDoc(tenant_id=tenant_id, app_pk=app_pk)
        session.add(doc)
    doc.app_id = app.app_id
    doc.version = latest.version
    doc.title = app.title  # the app's current name: publish sets it, a rename changes it
    doc.short_description = manifest["short_description"]
    doc.long_description = manifest.get("long_description", "")
    doc.tags = json.dumps(manifest.get("tags", []))
    doc.team = team.slug
    doc.capabilities = json.dumps(manifest["capabilities"])
    doc.pricing_model = manifest.get("pricing_template", {}).get("model", "free")
    doc.verified_owner = verified
    doc.policy_pass = not decision.get("audit_only") and decision.get("result") in (
        "allow",
        "require_approval",  # published after a reviewer approved
    )
    doc.scanned_at = latest.checked_at
    doc.updated_at = utc_now()
    _derive(doc)
    session.flush()
    _write_fulltext(session, doc)
    _write_tags(session, doc)


def set_signals(
    tenant_id: str,
    signals: dict[str, tuple[int, int, int, int]],
    *,
    at: datetime,
    session: Session,
) -> int:
    """Store usage signals per app_id: (invocations 7d, invocations 30d, users 7d, users 30d);
    apps without usage get zeros. Returns the number of documents updated."""
    docs = session.scalars(select(AppSearchDoc).where(AppSearchDoc.tenant_id == tenant_id))
    count = 0
    for doc in docs:
        inv7, inv30, users7, users30 = signals.get(doc.app_id, (0, 0, 0, 0))
        doc.invocations_7d, doc.invocations_30d = inv7, inv30
        doc.users_7d, doc.users_30d = users7, users30
        doc.signals_at = at
        doc.behaviour = behaviour_score(inv7, inv30, users30)
        count += 1
    session.flush()
    session.execute(_text(_TAG_ORDER), {"tenant": tenant_id})
    session.commit()
    return count


# The documents' browse order copied to their tags' rows, where it changed.
_DOC_INVOCATIONS = (
    "(SELECT d.invocations_30d FROM app_search_docs d WHERE d.id = app_search_tags.doc_id)"
)
_TAG_ORDER = (
    f"UPDATE app_search_tags SET invocations_30d = {_DOC_INVOCATIONS} "
    f"WHERE tenant_id = :tenant AND invocations_30d <> {_DOC_INVOCATIONS}"
)


# --- queries ---------------------------------------------------------------------------------

# What ranking, filtering and facets need of a candidate: no text, no dates, no joins.
_RANK_COLUMNS = (
    "d.id, d.app_id, d.team, d.pricing_model, d.tags, d.capabilities, d.behaviour, "
    "d.trust_base, d.scanned_epoch"
)
# What a returned hit shows, read for the page only.
_SHOWN = (
    text(
        "SELECT id, version, title, short_description, verified_owner, policy_pass, scanned_at, "
        "invocations_7d, invocations_30d, users_7d, users_30d FROM app_search_docs "
        "WHERE id IN :ids"
    )
    .bindparams(bindparam("ids", expanding=True))
    .columns(verified_owner=Boolean(), policy_pass=Boolean(), scanned_at=UTCDateTime())
)


# A term matching more of a tenant's documents than this in an index does not pick
# candidates from all columns: ranking a match costs ~1-2 us in FTS5 for a word and 4-5x that
# for a prefix (its words' position lists are merged per document), so "maint" (in every
# "maintained by" line) would cost tens of milliseconds. Such a term picks candidates by its
# title and tag matches, where it is rarer and weighs most; a term broad there too is left
# out, as BM25 itself nearly does (its IDF falls to ~0 once a term is in half the documents).
BROAD = 1000
STEMMED, PREFIX = "stemmed", "prefix"  # the two indexes
_CAP_COUNT = "(SELECT count(*) FROM ({match} LIMIT :cap) c{n})"
# One index's top matches by relevance, ranked inside the engine; the union of both indexes
# sums a document's relevance. SQLite: the MATCH within the tenant's rowid range (`fts_rowid`;
# the subqueries run once, and for a tenant without documents they are NULL: no match);
# BM25 weights the (unmatched) tenant column 0, title 10, descriptions 2, tags 6.
# PostgreSQL: GIN finds the matches, ts_rank ranks them (title and tags weight A,
# descriptions B).
_SQLITE_TENANT = (
    "rowid >= (SELECT ordinal << 32 FROM app_search_tenants WHERE tenant_id = :tenant) "
    "AND rowid <= (SELECT (ordinal << 32) | 4294967295 FROM app_search_tenants "
    "WHERE tenant_id = :tenant)"
)
_SQLITE_MATCH = "SELECT rowid AS id FROM {t} WHERE {t} MATCH :{p} AND " + _SQLITE_TENANT
_SQLITE_PART = (
    "SELECT * FROM (SELECT rowid & 4294967295 AS id, "
    "-bm25({t}, 0.0, 10.0, 2.0, 6.0) AS relevance FROM {t} WHERE {t} MATCH :{p} AND "
    + _SQLITE_TENANT
    + " "
    "ORDER BY relevance DESC, rowid LIMIT :limit)"
)
# With filters: each match joined to its document (by primary key) before the LIMIT.
_SQLITE_FILTERED_TENANT = _SQLITE_TENANT.replace("rowid", "{t}.rowid")
_SQLITE_FILTERED_JOIN = "FROM {t} JOIN app_search_docs d ON d.id = {t}.rowid & 4294967295 "
_SQLITE_FILTERED_MATCH = (
    "SELECT {t}.rowid & 4294967295 AS id "
    + _SQLITE_FILTERED_JOIN
    + "WHERE {t} MATCH :{p} AND "
    + _SQLITE_FILTERED_TENANT
    + "{filters}"
)
_SQLITE_FILTERED_PART = (
    "SELECT * FROM (SELECT {t}.rowid & 4294967295 AS id, "
    "-bm25({t}, 0.0, 10.0, 2.0, 6.0) AS relevance "
    + _SQLITE_FILTERED_JOIN
    + "WHERE {t} MATCH :{p} AND "
    + _SQLITE_FILTERED_TENANT
    + "{filters} ORDER BY relevance DESC, {t}.rowid LIMIT :limit)"
)
_SQLITE_TABLES = {STEMMED: "app_search_fts", PREFIX: "app_search_words"}
_PG_MATCH = (
    "SELECT id FROM app_search_docs d "
    "WHERE tenant_id = :tenant AND {v} @@ to_tsquery('{c}', :{p}){filters}"
)
_PG_PART = (
    "(SELECT id, ts_rank({v}, q) AS relevance FROM app_search_docs d, to_tsquery('{c}', :{p}) q "
    "WHERE tenant_id = :tenant AND {v} @@ q{filters} ORDER BY relevance DESC, id LIMIT :limit)"
)
_PG_VECTORS = {STEMMED: ("search_vector", "english"), PREFIX: ("prefix_vector", "simple")}
_CANDIDATES_SQL = (
    "SELECT {columns}, m.relevance FROM (SELECT id, sum(relevance) AS relevance FROM ({union}) "
    "u GROUP BY id) m JOIN app_search_docs d ON d.id = m.id WHERE d.tenant_id = :tenant"
)
# A range scan of one covering index (ix_app_search_docs_rank, _team_rank or _pricing_rank,
# migration 0019c) that stops at the limit: no table lookups, no sort.
_BROWSE_SQL = (
    f"SELECT {_RANK_COLUMNS} FROM app_search_docs d "
    "WHERE d.tenant_id = :tenant{filters} ORDER BY d.invocations_30d DESC, d.app_id LIMIT :limit"
)
_BROWSE_COUNT = "SELECT count(*) FROM app_search_docs d WHERE d.tenant_id = :tenant{filters}"
# With a tag: a range of ix_app_search_tags_rank (migration 0021c), which holds the same order,
# each row joined to its document by primary key; it stops at the limit, and without other
# filters the count is of the range alone.
_TAG_BROWSE_SQL = (
    f"SELECT {_RANK_COLUMNS} FROM app_search_tags t JOIN app_search_docs d ON d.id = t.doc_id "
    "WHERE t.tenant_id = :tenant AND t.tag = :f_tag{filters} "
    "ORDER BY t.invocations_30d DESC, t.app_id LIMIT :limit"
)
_TAG_BROWSE_COUNT = (
    "SELECT count(*) FROM app_search_tags t{join} WHERE t.tenant_id = :tenant AND t.tag = :f_tag"
    "{filters}"
)
_TAG_JOIN = " JOIN app_search_docs d ON d.id = t.doc_id"
# The tenant's matches in either index (ids, once each), filtered.
_MATCH_COUNT = "SELECT count(*) FROM ({union}) u"
# A stored JSON list (json.dumps of slugs) holds a value: its JSON text is in it, which a
# plain string index finds fast, and the parsed list holds it (exact for any value). Tested
# on the rows a text match already reads (a primary-key lookup in app_search_tags per
# candidate cost more), and for capabilities (three values, most apps hold one) on a browse.
_HOLDS = {
    "sqlite": "instr(d.{c}, :{p}_json) > 0 AND EXISTS (SELECT 1 FROM json_each(d.{c}) "
    "WHERE json_each.value = :{p})",
    "postgresql": "strpos(d.{c}, :{p}_json) > 0 "
    "AND d.{c}::jsonb @> jsonb_build_array(CAST(:{p} AS text))",
}


def filter_sql(
    dialect: str, filters: SearchFilters, params: dict[str, Any], *, tag: bool = True
) -> str:
    """The filters as SQL conditions on the document `d` (each starting with " AND "), their
    values added to `params`; "" without filters. `tag=False`: the tag is left out (its
    value still added, as `f_tag`), for a statement that reads the tag's rows itself."""
    conditions = []
    for column, value in (("team", filters.team), ("pricing_model", filters.pricing_model)):
        if value is not None:
            params[f"f_{column}"] = value
            conditions.append(f"d.{column} = :f_{column}")
    for column, name, value in (
        ("tags", "f_tag", filters.tag),
        ("capabilities", "f_capabilities", filters.capability),
    ):
        if value is not None:
            params[name], params[f"{name}_json"] = value, json.dumps(value)
            if column != "tags" or tag:
                conditions.append(_HOLDS[dialect].format(c=column, p=name))
    return "".join(f" AND {condition}" for condition in conditions)


Probe = tuple[str, str, bool]  # index, term, naming columns only


def choose_terms(
    terms: list[str], counts: dict[Probe, int]
) -> tuple[dict[str, list[tuple[str, bool]]], bool]:
    """Per index, the terms that pick candidates and whether only by their title and tag
    occurrences; and whether a term was left out as too broad (pure)."""
    chosen: dict[str, list[tuple[str, bool]]] = {}
    broad = False
    for index in (STEMMED, PREFIX):
        for term in terms:
            every, naming = counts[(index, term, False)], counts[(index, term, True)]
            if 0 < every <= BROAD:
                chosen.setdefault(index, []).append((term, False))
            elif every > BROAD and 0 < naming <= BROAD:
                chosen.setdefault(index, []).append((term, True))
            elif every > BROAD:
                broad = True
    return chosen, broad


def _expression(dialect: str, tenant_id: str, index: str, terms: list[tuple[str, bool]]) -> str:
    prefix = index == PREFIX
    if dialect == "sqlite":
        columns = {False: ALL_COLUMNS, True: NAMING_COLUMNS}
        parts = [fts5_term(t, prefix=prefix, columns=columns[naming]) for t, naming in terms]
        return fts5_match(parts)
    return " | ".join(tsquery_term(t, prefix=prefix, naming_only=naming) for t, naming in terms)


def _index_sql(dialect: str, index: str, param: str, *, ranked: bool, filters: str = "") -> str:
    if dialect == "sqlite":
        table = _SQLITE_TABLES[index]
        if not filters:  # no join: FTS5 alone
            return (_SQLITE_PART if ranked else _SQLITE_MATCH).format(t=table, p=param)
        sql = _SQLITE_FILTERED_PART if ranked else _SQLITE_FILTERED_MATCH
        return sql.format(t=table, p=param, filters=filters)
    vector, config = _PG_VECTORS[index]
    return (_PG_PART if ranked else _PG_MATCH).format(v=vector, c=config, p=param, filters=filters)


def _count(
    dialect: str, tenant_id: str, probes: list[Probe], params: dict[str, Any], session: Session
) -> dict[Probe, int]:
    """The tenant's matches per probe, each count stopping at BROAD + 1, in one statement."""
    selects, names = [], {}
    for probe in probes:
        index, term, naming = probe
        name = names[probe] = f"c{len(params)}"
        params[name] = _expression(dialect, tenant_id, index, [(term, naming)])
        match = _index_sql(dialect, index, name, ranked=False)
        selects.append(_CAP_COUNT.format(match=match, n=name))
    row = session.execute(_text(f"SELECT {', '.join(selects)}"), params).one()
    return dict(zip(probes, row, strict=True))


@lru_cache(maxsize=512)
def _text(sql: str) -> TextClause:
    """A statement built once per distinct SQL (queries repeat a few shapes: which indexes,
    how many count probes), so SQLAlchemy's compiled cache key is not rebuilt per search."""
    return text(sql)


class Candidates(NamedTuple):
    rows: Sequence[Row[Any]]
    total: int  # every filtered match, not only the rows (which stop at WINDOW per index)
    # No text picked them (an empty or all-broad query): rows of _RANK_COLUMNS alone, in
    # browse order, filters applied; `rank_browse` ranks them.
    browse: bool = False


def _candidates(
    tenant_id: str, terms: list[str], filters: SearchFilters, session: Session
) -> Candidates:
    """The rank columns and text relevance of the tenant's best matches that pass the
    filters, and the number of all such matches.

    First each term's matches per index are counted in all columns (one statement) and, for
    a term broad there, in the title and tags (a second one); `choose_terms` then decides which
    terms pick candidates, so no index ranks more than a bounded number of matches. These
    counts ignore the filters: which terms pick is a property of the text, not of a filter."""
    params: dict[str, Any] = {"tenant": tenant_id, "limit": WINDOW, "cap": BROAD + 1}
    dialect = session.get_bind().dialect.name
    if not terms:
        return _browse(dialect, filters, params, session)
    conditions = filter_sql(dialect, filters, params)
    terms = content_terms(terms)
    every = [(index, term, False) for index in (STEMMED, PREFIX) for term in terms]
    counts = _count(dialect, tenant_id, every, params, session)
    # Title and tag counts only for the terms that are broad in all columns (rarely any).
    naming = [
        (index, term, True) for index, term, _ in every if counts[(index, term, False)] > BROAD
    ]
    counts.update({(index, term, True): 0 for index, term, _ in every})
    if naming:
        counts.update(_count(dialect, tenant_id, naming, params, session))
    chosen, broad = choose_terms(terms, counts)
    if not chosen:
        # Nothing matched; or every term is in most titles too: browse (usage and trust).
        return _browse(dialect, filters, params, session) if broad else Candidates([], 0)
    parts, matches = [], []
    for index, index_terms in chosen.items():
        params[index] = _expression(dialect, tenant_id, index, index_terms)
        parts.append(_index_sql(dialect, index, index, ranked=True, filters=conditions))
        matches.append(_index_sql(dialect, index, index, ranked=False, filters=conditions))
    sql = _CANDIDATES_SQL.format(columns=_RANK_COLUMNS, union=" UNION ALL ".join(parts))
    rows = session.execute(_text(sql), params).all()
    if len(rows) < WINDOW:  # no index reached its LIMIT: these are all the matches
        return Candidates(rows, len(rows))
    count = _MATCH_COUNT.format(union=" UNION ".join(matches))
    return Candidates(rows, session.execute(_text(count), params).scalar_one())


def _browse(
    dialect: str, filters: SearchFilters, params: dict[str, Any], session: Session
) -> Candidates:
    """An empty (or all-broad) query: the WINDOW busiest apps that pass the filters; with a
    tag, read from the tag's rows in the same order."""
    if filters.tag is None:
        conditions = filter_sql(dialect, filters, params)
        sql, count = _BROWSE_SQL, _BROWSE_COUNT.format(filters=conditions)
    else:
        conditions = filter_sql(dialect, filters, params, tag=False)
        join = _TAG_JOIN if conditions else ""
        sql, count = _TAG_BROWSE_SQL, _TAG_BROWSE_COUNT.format(join=join, filters=conditions)
    rows = session.execute(_text(sql.format(filters=conditions)), params).all()
    if len(rows) < WINDOW:
        return Candidates(rows, len(rows), browse=True)
    return Candidates(rows, session.execute(_text(count), params).scalar_one(), browse=True)


class _Ranked(
    NamedTuple
):  # a tuple: built for every candidate, ~10x cheaper than a frozen dataclass
    doc_id: int
    app_id: str
    team: str
    pricing_model: str
    tags: tuple[str, ...]
    capabilities: tuple[str, ...]
    relevance: float
    text: float
    behaviour: float
    trust: float
    score: float


def _passes(r: _Ranked, f: SearchFilters) -> bool:
    return (
        (f.tag is None or f.tag in r.tags)
        and (f.team is None or f.team == r.team)
        and (f.capability is None or f.capability in r.capabilities)
        and (f.pricing_model is None or f.pricing_model == r.pricing_model)
    )


def _hit(r: _Ranked, shown: Any, now: datetime) -> Hit:
    scan_age = (now - shown.scanned_at).total_seconds() / _DAY if shown.scanned_at else -1.0
    return Hit(
        app_id=r.app_id,
        version=shown.version,
        title=shown.title,
        short_description=shown.short_description,
        tags=list(r.tags),
        team=r.team,
        capabilities=list(r.capabilities),
        pricing_model=r.pricing_model,
        score=round(r.score, 6),
        components={
            "text_relevance": round(r.relevance, 6),
            "text": round(r.text, 6),
            "behaviour": round(r.behaviour, 6),
            "trust": round(r.trust, 6),
            # Floats as the response schema says (the route writes this with orjson).
            "invocations_7d": float(shown.invocations_7d),
            "invocations_30d": float(shown.invocations_30d),
            "users_7d": float(shown.users_7d),
            "users_30d": float(shown.users_30d),
            "verified_owner": float(shown.verified_owner),
            "policy_pass": float(shown.policy_pass),
            "scan_age_days": round(scan_age, 3),
        },
    )


def rank(
    rows: Sequence[Sequence[Any]], filters: SearchFilters, now_epoch: float
) -> tuple[list[_Ranked], dict[str, Counter[str]]]:
    """Score candidates (rows of _RANK_COLUMNS and relevance), best first, with the facet
    counts of those that pass the filters. Pure: the part of a search that runs in Python."""
    best = max((float(row[-1]) for row in rows), default=0.0)
    ranked: list[_Ranked] = []
    w_text, w_behaviour, w_trust = WEIGHTS["text"], WEIGHTS["behaviour"], WEIGHTS["trust"]
    filtered = filters != _NO_FILTERS
    for doc_id, app_id, team, pricing, tags, caps, behaviour, base, scanned, relevance in rows:
        relevance = float(relevance)
        text_part = relevance / best if best > 0 else 0.0
        trust = base + 0.2 * freshness_at(scanned, now_epoch)
        candidate = _Ranked(
            doc_id,
            app_id,
            team,
            pricing,
            _json_list(tags),
            _json_list(caps),
            relevance,
            text_part,
            behaviour,
            trust,
            w_text * text_part + w_behaviour * behaviour + w_trust * trust,
        )
        if filtered and not _passes(candidate, filters):
            continue
        ranked.append(candidate)
    # Counted in one pass each, in candidate order (as most_common breaks ties by first seen).
    facets: dict[str, Counter[str]] = {
        "tags": Counter(chain.from_iterable(r.tags for r in ranked)),
        "team": Counter(r.team for r in ranked),
        "capabilities": Counter(chain.from_iterable(r.capabilities for r in ranked)),
        "pricing_model": Counter(r.pricing_model for r in ranked),
    }
    # Sort on the score as a hit shows it (rounded), so equal displayed scores order by app_id.
    ranked.sort(key=lambda r: (-round(r.score, 6), r.app_id))
    return ranked, facets


def _count_lists(lists: Counter[str]) -> Counter[str]:
    """The items of stored JSON lists counted with their lists' multiplicities, keyed in the
    order items are first seen in the lists' order: the same counts and order as counting every
    item of every list in turn (each list first seen where its first item is), in one parse of
    each distinct list."""
    counts: Counter[str] = Counter()
    for value, times in lists.items():
        for item in _json_list(value):
            counts[item] += times
    return counts


def rank_browse(
    rows: Sequence[Sequence[Any]], now_epoch: float, start: int, stop: int
) -> tuple[list[_Ranked], dict[str, Counter[str]]]:
    """The hits start..stop of browse candidates (rows of _RANK_COLUMNS in browse order, the
    filters applied in SQL) and the facets of all of them: the same hits, scores and facets as
    `rank` gives for rows without text relevance, but only the page is built. Pure.

    Without text every relevance is 0, so `rank`'s score is 0.2·behaviour + 0.1·trust (adding
    0.7·0 changes no bit) and its order (-rounded score, app_id)."""
    w_behaviour, w_trust = WEIGHTS["behaviour"], WEIGHTS["trust"]
    keyed = []
    for position, row in enumerate(rows):
        trust = row[7] + 0.2 * freshness_at(row[8], now_epoch)
        score = w_behaviour * row[6] + w_trust * trust
        keyed.append((-round(score, 6), row[1], position, trust, score))
    keyed.sort()
    page = []
    for _, _, position, trust, score in keyed[start:stop]:
        doc_id, app_id, team, pricing, tags, caps, behaviour = rows[position][:7]
        page.append(
            _Ranked(
                doc_id,
                app_id,
                team,
                pricing,
                _json_list(tags),
                _json_list(caps),
                0.0,
                0.0,
                behaviour,
                trust,
                score,
            )
        )
    facets: dict[str, Counter[str]] = {
        "tags": _count_lists(Counter(row[4] for row in rows)),
        "team": Counter(row[2] for row in rows),
        "capabilities": _count_lists(Counter(row[5] for row in rows)),
        "pricing_model": Counter(row[3] for row in rows),
    }
    return page, facets


def search(
    tenant_id: str,
    query: str,
    *,
    filters: SearchFilters | None = None,
    limit: int = 20,
    offset: int = 0,
    now: datetime | None = None,
    session: Session,
) -> SearchResult:
    """Rank the tenant's published apps for `query` (empty: browse by usage and trust)."""
    filters = filters or SearchFilters()
    now = now or utc_now()
    found = _candidates(tenant_id, query_terms(query), filters, session)
    stop = offset + max(1, min(limit, MAX_LIMIT))
    if found.browse:  # only the page is built; the facets count every candidate
        window, facets = rank_browse(found.rows, now.timestamp(), offset, stop)
        facet_hits = len(found.rows)
    else:
        # The filters applied in SQL; `rank` checks them again (cheap, exact by construction).
        ranked, facets = rank(found.rows, filters, now.timestamp())
        window, facet_hits = ranked[offset:stop], len(ranked)
    shown = {}
    if window:
        shown = {s.id: s for s in session.execute(_SHOWN, {"ids": [r.doc_id for r in window]})}
    return SearchResult(
        query=query,
        total=found.total,
        hits=[_hit(r, shown[r.doc_id], now) for r in window],
        facets={name: dict(counter.most_common(20)) for name, counter in facets.items()},
        facet_hits=facet_hits,
    )
