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
from functools import lru_cache
from typing import Any

from sqlalchemy import Boolean, delete, select, text
from sqlalchemy.orm import Session

from quartermaster.catalog.manifest import version_key
from quartermaster.catalog.models import App
from quartermaster.catalog.publish_models import AppSearchDoc, AppVersion, VersionState
from quartermaster.domain.timeutil import utc_now
from quartermaster.storage.base import UTCDateTime
from quartermaster.tenancy.models import Principal, Team

WEIGHTS = {"text": 0.70, "behaviour": 0.20, "trust": 0.10}
# Re-ranked in Python: the best matches by text (ties: the busier app first). Each candidate
# costs ~40 us of Python, so 300 keeps a broad prefix ("maint", matching every document) at a
# few milliseconds; facets count these candidates.
MAX_CANDIDATES = 300
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


@lru_cache(maxsize=65536)
def behaviour_score(inv_7d: int, inv_30d: int, users_30d: int) -> float:
    return 0.5 * _scaled(inv_30d, 1e6) + 0.2 * _scaled(inv_7d, 1e5) + 0.3 * _scaled(users_30d, 1e4)


@lru_cache(maxsize=65536)
def _json_list(value: str) -> tuple[str, ...]:
    """A stored JSON list (tags, capabilities), parsed once per distinct value: a broad query
    reads hundreds of documents, and most share their capabilities and many their tags."""
    return tuple(json.loads(value))


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

# What ranking, filtering, facets and a hit need: the long description is left in the table.
_CANDIDATE_COLUMNS = (
    "d.app_id, d.version, d.title, d.short_description, d.tags, d.team, d.capabilities, "
    "d.pricing_model, d.verified_owner, d.policy_pass, d.scanned_at, d.invocations_7d, "
    "d.invocations_30d, d.users_7d, d.users_30d"
)


@dataclass(frozen=True, slots=True)
class _Candidate:
    row: Any  # the _CANDIDATE_COLUMNS of one document
    relevance: float
    tags: tuple[str, ...]
    capabilities: tuple[str, ...]
    text: float
    behaviour: float
    trust: float
    score: float


def _text_matches(tenant_id: str, terms: list[str], session: Session) -> list[tuple[Any, float]]:
    """(document columns, text relevance) of the best MAX_CANDIDATES matches, in one query
    that reads plain rows (no ORM objects: a broad prefix matches hundreds of documents)."""
    params: dict[str, Any] = {"tenant": tenant_id, "limit": MAX_CANDIDATES}
    if not terms:
        sql = (
            f"SELECT {_CANDIDATE_COLUMNS}, 0.0 AS relevance FROM app_search_docs d "
            "WHERE d.tenant_id = :tenant ORDER BY d.invocations_30d DESC, d.app_id LIMIT :limit"
        )
    elif session.get_bind().dialect.name == "sqlite":
        params["match"] = " OR ".join(f'"{t}"*' for t in terms)
        sql = (
            f"SELECT {_CANDIDATE_COLUMNS}, -bm25(app_search_fts, 10.0, 2.0, 6.0) AS relevance "
            "FROM app_search_fts f JOIN app_search_docs d ON d.id = f.rowid "
            "WHERE app_search_fts MATCH :match AND d.tenant_id = :tenant "
            "ORDER BY relevance DESC, d.invocations_30d DESC, d.app_id LIMIT :limit"
        )
    else:
        params["match"] = " | ".join(f"{t}:*" for t in terms)
        sql = (
            f"SELECT {_CANDIDATE_COLUMNS}, ts_rank(d.search_vector, q) AS relevance "
            "FROM app_search_docs d, to_tsquery('english', :match) q "
            "WHERE d.tenant_id = :tenant AND d.search_vector @@ q "
            "ORDER BY relevance DESC, d.invocations_30d DESC, d.app_id LIMIT :limit"
        )
    typed = text(sql).columns(
        verified_owner=Boolean(), policy_pass=Boolean(), scanned_at=UTCDateTime()
    )
    return [(row, float(row.relevance)) for row in session.execute(typed, params)]


def _passes(row: Any, tags: tuple[str, ...], caps: tuple[str, ...], f: SearchFilters) -> bool:
    return (
        (f.tag is None or f.tag in tags)
        and (f.team is None or f.team == row.team)
        and (f.capability is None or f.capability in caps)
        and (f.pricing_model is None or f.pricing_model == row.pricing_model)
    )


def _hit(c: _Candidate, now: datetime) -> Hit:
    row = c.row
    scan_age = (now - row.scanned_at).total_seconds() / 86400 if row.scanned_at else -1.0
    return Hit(
        app_id=row.app_id,
        version=row.version,
        title=row.title,
        short_description=row.short_description,
        tags=list(c.tags),
        team=row.team,
        capabilities=list(c.capabilities),
        pricing_model=row.pricing_model,
        score=round(c.score, 6),
        components={
            "text_relevance": round(c.relevance, 6),
            "text": round(c.text, 6),
            "behaviour": round(c.behaviour, 6),
            "trust": round(c.trust, 6),
            "invocations_7d": row.invocations_7d,
            "invocations_30d": row.invocations_30d,
            "users_7d": row.users_7d,
            "users_30d": row.users_30d,
            "verified_owner": float(row.verified_owner),
            "policy_pass": float(row.policy_pass),
            "scan_age_days": round(scan_age, 3),
        },
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
    scored: list[_Candidate] = []
    for row, relevance in matches:
        tags, caps = _json_list(row.tags), _json_list(row.capabilities)
        if not _passes(row, tags, caps, filters):
            continue
        facets["tags"].update(tags)
        facets["team"][row.team] += 1
        facets["capabilities"].update(caps)
        facets["pricing_model"][row.pricing_model] += 1
        text_part = relevance / best if best > 0 else 0.0
        behaviour = behaviour_score(row.invocations_7d, row.invocations_30d, row.users_30d)
        trust = trust_score(row.verified_owner, row.policy_pass, row.scanned_at, now)
        score = (
            WEIGHTS["text"] * text_part
            + WEIGHTS["behaviour"] * behaviour
            + WEIGHTS["trust"] * trust
        )
        scored.append(_Candidate(row, relevance, tags, caps, text_part, behaviour, trust, score))
    # Sort on the score as a hit shows it (rounded), so equal displayed scores order by app_id.
    scored.sort(key=lambda c: (-round(c.score, 6), c.row.app_id))
    window = scored[offset : offset + max(1, min(limit, 100))]
    return SearchResult(
        query=query,
        total=len(scored),
        hits=[_hit(c, now) for c in window],
        facets={name: dict(counter.most_common(20)) for name, counter in facets.items()},
    )
