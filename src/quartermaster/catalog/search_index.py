"""Catalog search: a document per app with a published version, a full-text index beside it,
and ranking that combines text match with behavioural and trust signals.

Full text: SQLite FTS5 with BM25 (embedded default; porter stemming, prefix indexes) or
PostgreSQL full-text search with `ts_rank` over a weighted tsvector (GIN index). Every query
term is a prefix ("recomm" finds "recommender"); terms are OR-ed and ranked.

Score (each hit carries its parts, so a ranking can be explained):
  score = 0.70 * text + 0.20 * behaviour + 0.10 * trust, each part in [0, 1]
  text      = the engine's relevance / the best relevance among the matches
  behaviour = 0.5*s(invocations_30d, 1e6) + 0.2*s(invocations_7d, 1e5) + 0.3*s(users_30d, 1e4)
              with s(x, top) = log(1+x)/log(1+top) capped at 1 (fixed scales: stable scores)
  trust     = 0.4*verified owner + 0.4*policy pass + 0.2*scan freshness (1 up to 30 days
              after the last scan, falling linearly to 0 at 180 days)

The index is kept in step by `sync_app`, called in the same transaction as every change of a
version's state and every change of the app itself (rename, owner, team): it indexes the app's
latest published version under the app's current title, owner and team, or removes the app."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from quartermaster.catalog.manifest import version_key
from quartermaster.catalog.models import App
from quartermaster.catalog.publish_models import AppSearchDoc, AppVersion, VersionState
from quartermaster.domain.timeutil import utc_now
from quartermaster.tenancy.models import Principal, Team

WEIGHTS = {"text": 0.70, "behaviour": 0.20, "trust": 0.10}
MAX_CANDIDATES = 1000
_TERM = re.compile(r"\w+", re.UNICODE)
FACETS = ("tags", "team", "capabilities", "pricing_model")


@dataclass(frozen=True, slots=True)
class SearchFilters:
    tag: str | None = None
    team: str | None = None
    capability: str | None = None
    pricing_model: str | None = None


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
    total: int
    hits: list[Hit]
    facets: dict[str, dict[str, int]] = field(default_factory=dict)


# --- pure scoring ----------------------------------------------------------------------------


def _scaled(value: int, top: float) -> float:
    return min(1.0, math.log1p(max(value, 0)) / math.log1p(top))


def behaviour_score(inv_7d: int, inv_30d: int, users_30d: int) -> float:
    return 0.5 * _scaled(inv_30d, 1e6) + 0.2 * _scaled(inv_7d, 1e5) + 0.3 * _scaled(users_30d, 1e4)


def freshness(scanned_at: datetime | None, now: datetime) -> float:
    if scanned_at is None:
        return 0.0
    age_days = (now - scanned_at).total_seconds() / 86400
    return 1.0 if age_days <= 30 else max(0.0, 1.0 - (age_days - 30) / 150)


def trust_score(
    verified: bool, policy_pass: bool, scanned_at: datetime | None, now: datetime
) -> float:
    return 0.4 * verified + 0.4 * policy_pass + 0.2 * freshness(scanned_at, now)


def query_terms(query: str) -> list[str]:
    return list(dict.fromkeys(t.lower() for t in _TERM.findall(query)))[:16]


# --- index maintenance -----------------------------------------------------------------------


def _fts_text(doc: AppSearchDoc) -> tuple[str, str, str]:
    tags = " ".join(json.loads(doc.tags))
    return doc.title, f"{doc.short_description}\n{doc.long_description}", tags


def _write_fulltext(session: Session, doc: AppSearchDoc) -> None:
    title, descriptions, tags = _fts_text(doc)
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        session.execute(text("DELETE FROM app_search_fts WHERE rowid = :id"), {"id": doc.id})
        session.execute(
            text(
                "INSERT INTO app_search_fts (rowid, title, descriptions, tags) "
                "VALUES (:id, :title, :descriptions, :tags)"
            ),
            {"id": doc.id, "title": title, "descriptions": descriptions, "tags": tags},
        )
    elif dialect == "postgresql":
        session.execute(
            text(
                "UPDATE app_search_docs SET search_vector = "
                "setweight(to_tsvector('english', :title), 'A') || "
                "setweight(to_tsvector('english', :tags), 'A') || "
                "setweight(to_tsvector('english', :descriptions), 'B') WHERE id = :id"
            ),
            {"id": doc.id, "title": title, "descriptions": descriptions, "tags": tags},
        )


def _remove(session: Session, doc: AppSearchDoc) -> None:
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("DELETE FROM app_search_fts WHERE rowid = :id"), {"id": doc.id})
    session.execute(delete(AppSearchDoc).where(AppSearchDoc.id == doc.id))


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
    session.flush()
    _write_fulltext(session, doc)


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
        count += 1
    session.commit()
    return count


# --- queries ---------------------------------------------------------------------------------


def _text_matches(
    tenant_id: str, terms: list[str], session: Session
) -> list[tuple[AppSearchDoc, float]]:
    dialect = session.get_bind().dialect.name
    if not terms:
        browse = session.scalars(
            select(AppSearchDoc)
            .where(AppSearchDoc.tenant_id == tenant_id)
            .order_by(AppSearchDoc.app_id)
            .limit(MAX_CANDIDATES)
        )
        return [(doc, 0.0) for doc in browse]
    if dialect == "sqlite":
        match = " OR ".join(f'"{t}"*' for t in terms)
        sql = text(
            "SELECT f.rowid, -bm25(app_search_fts, 10.0, 2.0, 6.0) AS relevance "
            "FROM app_search_fts f JOIN app_search_docs d ON d.id = f.rowid "
            "WHERE app_search_fts MATCH :match AND d.tenant_id = :tenant "
            "ORDER BY relevance DESC LIMIT :limit"
        )
        params: dict[str, Any] = {"match": match, "tenant": tenant_id, "limit": MAX_CANDIDATES}
    else:
        sql = text(
            "SELECT d.id, ts_rank(d.search_vector, q) AS relevance "
            "FROM app_search_docs d, to_tsquery('english', :match) q "
            "WHERE d.tenant_id = :tenant AND d.search_vector @@ q "
            "ORDER BY relevance DESC LIMIT :limit"
        )
        match = " | ".join(f"{t}:*" for t in terms)
        params = {"match": match, "tenant": tenant_id, "limit": MAX_CANDIDATES}
    rows = [(int(r[0]), float(r[1])) for r in session.execute(sql, params)]
    if not rows:
        return []
    docs = {
        d.id: d
        for d in session.scalars(
            select(AppSearchDoc).where(
                AppSearchDoc.tenant_id == tenant_id,
                AppSearchDoc.id.in_([r[0] for r in rows]),
            )
        )
    }
    return [(docs[i], relevance) for i, relevance in rows if i in docs]


def _passes(doc: AppSearchDoc, tags: list[str], caps: list[str], f: SearchFilters) -> bool:
    return (
        (f.tag is None or f.tag in tags)
        and (f.team is None or f.team == doc.team)
        and (f.capability is None or f.capability in caps)
        and (f.pricing_model is None or f.pricing_model == doc.pricing_model)
    )


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
    matches = _text_matches(tenant_id, query_terms(query), session)
    best = max((relevance for _, relevance in matches), default=0.0)
    facets: dict[str, Counter[str]] = {name: Counter() for name in FACETS}
    scored: list[Hit] = []
    for doc, relevance in matches:
        tags, caps = json.loads(doc.tags), json.loads(doc.capabilities)
        if not _passes(doc, tags, caps, filters):
            continue
        facets["tags"].update(tags)
        facets["team"][doc.team] += 1
        facets["capabilities"].update(caps)
        facets["pricing_model"][doc.pricing_model] += 1
        text_part = relevance / best if best > 0 else 0.0
        behaviour = behaviour_score(doc.invocations_7d, doc.invocations_30d, doc.users_30d)
        trust = trust_score(doc.verified_owner, doc.policy_pass, doc.scanned_at, now)
        score = (
            WEIGHTS["text"] * text_part
            + WEIGHTS["behaviour"] * behaviour
            + WEIGHTS["trust"] * trust
        )
        scan_age = (now - doc.scanned_at).total_seconds() / 86400 if doc.scanned_at else -1.0
        scored.append(
            Hit(
                app_id=doc.app_id,
                version=doc.version,
                title=doc.title,
                short_description=doc.short_description,
                tags=tags,
                team=doc.team,
                capabilities=caps,
                pricing_model=doc.pricing_model,
                score=round(score, 6),
                components={
                    "text_relevance": round(relevance, 6),
                    "text": round(text_part, 6),
                    "behaviour": round(behaviour, 6),
                    "trust": round(trust, 6),
                    "invocations_7d": doc.invocations_7d,
                    "invocations_30d": doc.invocations_30d,
                    "users_7d": doc.users_7d,
                    "users_30d": doc.users_30d,
                    "verified_owner": float(doc.verified_owner),
                    "policy_pass": float(doc.policy_pass),
                    "scan_age_days": round(scan_age, 3),
                },
            )
        )
    scored.sort(key=lambda h: (-h.score, h.app_id))
    window = scored[offset : offset + max(1, min(limit, 100))]
    return SearchResult(
        query=query,
        total=len(scored),
        hits=window,
        facets={name: dict(counter.most_common(20)) for name, counter in facets.items()},
    )
