"""The search relevance set: queries a user of the simulated company would type, judged by
rule against the simulator's ground truth (what each app is about and what it does, see
sim/catalog.py `AppTopic`), and the measures (MRR, nDCG@5).

A judgment names the domain words (D), functions (F) or tags (T) the user means:
- D and F: grade 3 for an app with both, 1 for the right topic but another function;
- D only, F only, or T: grade 2 for a match.
The expected top results of a query are its apps of the highest grade present. No query was
written or judged by looking at a ranking; typos are left out (the engines do no fuzzy
matching)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from quartermaster.sim.catalog import AppTopic


@dataclass(frozen=True, slots=True)
class Query:
    text: str
    kind: str  # prefix | tag | topic | intent
    domains: frozenset[str] = frozenset()
    functions: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()


def _q(text: str, kind: str, d: str = "", f: str = "", t: str = "") -> Query:
    def words(value: str) -> frozenset[str]:
        return frozenset(value.split())

    return Query(text, kind, words(d), words(f), words(t))


QUERIES: tuple[Query, ...] = (
    # prefixes, as typed into a search-as-you-type box
    _q("recomm", "prefix", f="recommender"),
    _q("inciden", "prefix", d="incident"),
    _q("summar", "prefix", f="summarizer"),
    _q("triag", "prefix", f="triager"),
    _q("refun", "prefix", d="refund"),
    _q("complian", "prefix", d="compliance"),
    # prefixes that run past the word's Porter stem (summarizer -> summar, recommender ->
    # recommend, reconciliation -> reconcili, maintenance -> mainten): only the unstemmed
    # index has a word they begin
    _q("summariz", "prefix", f="summarizer"),
    _q("recommende", "prefix", f="recommender"),
    _q("reconcilia", "prefix", d="reconciliation"),
    _q("maintenan", "prefix", d="maintenance"),
    # tags
    _q("machine-learning", "tag", t="machine-learning"),
    _q("finance", "tag", t="finance"),
    _q("legal", "tag", t="legal"),
    _q("chatbot", "tag", t="chatbot"),
    _q("data-quality", "tag", t="data-quality"),
    _q("experiment", "tag", t="experiment"),
    # one topic
    _q("pto", "topic", d="pto"),
    _q("nda", "topic", d="nda"),
    _q("release notes", "topic", d="changelog"),
    _q("pull request review", "topic", d="pr-review"),
    _q("customer lifetime value", "topic", d="ltv"),
    _q("sales leads", "topic", d="lead"),
    _q("conversion funnel", "topic", d="funnel"),
    _q("knowledge base articles", "topic", d="kb"),
    _q("phishing emails", "topic", d="phishing"),
    _q("freight shipments", "topic", d="shipment"),
    _q("employee referrals", "topic", d="referral"),
    _q("purchase orders", "topic", d="po"),
    _q("quarterly business review", "topic", d="qbr"),
    _q("vacation requests", "topic", d="pto"),
    _q("who is on call", "topic", d="on-call"),
    _q("data processing agreement gdpr", "topic", d="dpa"),
    _q("churn prediction", "topic", d="churn churn-risk"),
    _q("user research insights", "topic", d="user-research"),
    # intents: a topic and what the app should do
    _q("summarize support tickets", "intent", d="ticket", f="summarizer"),
    _q("incident postmortem summary", "intent", d="incident", f="summarizer"),
    _q("refund request dashboard", "intent", d="refund", f="dashboard"),
    _q("contract clause drafting", "intent", d="clause contract", f="drafter"),
    _q("interview scheduling", "intent", d="interview", f="planner"),
    _q("export job offers to csv", "intent", d="offer", f="exporter"),
    _q("slack bot for incidents", "intent", d="incident", f="bot"),
    _q("kpi forecasting experiment", "intent", d="kpi", f="prophet"),
    _q("deployment tracker", "intent", d="deploy", f="tracker"),
    _q("technician dispatch summary", "intent", d="dispatch", f="summarizer"),
)


def grade(query: Query, about: AppTopic, tags: Sequence[str]) -> int:
    if query.tags:
        return 2 if query.tags & set(tags) else 0
    topic = about.domain_word in query.domains
    does = about.function in query.functions
    if query.domains and query.functions:
        return 3 if topic and does else (1 if topic else 0)
    return 2 if (topic if query.domains else does) else 0


def reciprocal_rank(ranked: Sequence[str], expected: set[str], depth: int = 10) -> float:
    for position, app_id in enumerate(ranked[:depth], start=1):
        if app_id in expected:
            return 1.0 / position
    return 0.0


def ndcg(ranked: Sequence[str], grades: dict[str, int], k: int = 5) -> float:
    def dcg(gains: Sequence[int]) -> float:
        return float(sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(gains[:k])))

    ideal = dcg(sorted(grades.values(), reverse=True))
    return dcg([grades.get(app_id, 0) for app_id in ranked]) / ideal if ideal else 0.0


@dataclass(frozen=True, slots=True)
class QueryResult:
    query: Query
    expected: set[str]
    ranked: list[str]
    reciprocal_rank: float
    ndcg5: float


def evaluate(
    search: Callable[[str], list[str]],
    topics: dict[str, AppTopic],
    tags: dict[str, list[str]],
) -> list[QueryResult]:
    """Run every query through `search` (app ids, best first) and score it."""
    results = []
    for query in QUERIES:
        grades = {
            app_id: g
            for app_id, about in topics.items()
            if (g := grade(query, about, tags[app_id])) > 0
        }
        assert grades, f"query {query.text!r} has no relevant app in the catalog"
        top = max(grades.values())
        expected = {app_id for app_id, g in grades.items() if g == top}
        ranked = search(query.text)
        results.append(
            QueryResult(
                query,
                expected,
                ranked,
                reciprocal_rank(ranked, expected),
                ndcg(ranked, grades),
            )
        )
    return results


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)
