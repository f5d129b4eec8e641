"""The simulated platform's app catalog (pure): a manifest per production app, with the
descriptions and tags its creator would have written, and usage signals for search.

Descriptions are composed from what the app is about (its team's domain word, glossed the way
an internal catalog would describe it) and what it does (its name's suffix), so the same seed
always yields the same catalog. Staging copies and PR previews are deployments of an app, not
catalog entries, and are left out. `AppTopic` is the ground truth a relevance judgment uses."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from quartermaster.sim.model import AppSpec, Platform
from quartermaster.sim.names import TEAM_TEMPLATES

# What each team's domain word covers, as a plural noun phrase a creator would write.
DOMAIN_GLOSSES: dict[str, str] = {
    "invoice": "supplier invoices and payment due dates",
    "expense": "employee expense reports and receipts",
    "vendor-payment": "vendor payments and payment runs",
    "month-close": "month-end close tasks and journal entries",
    "reconciliation": "bank and ledger reconciliations",
    "budget": "department budgets and spend against plan",
    "forecast": "revenue and cost forecasts",
    "variance": "budget-versus-actual variances",
    "headcount-plan": "headcount plans and open positions",
    "scenario": "financial planning scenarios",
    "pto": "paid time off requests (vacation and sick leave)",
    "onboarding": "new hire onboarding checklists",
    "benefits": "employee benefits enrollment and questions",
    "policy": "HR policies and the employee handbook",
    "payroll": "payroll runs and payslips",
    "candidate": "job candidates and their applications",
    "interview": "interview schedules and interviewer feedback",
    "job-post": "job postings and job descriptions",
    "referral": "employee referrals for open roles",
    "offer": "offer letters and compensation approvals",
    "lead": "inbound sales leads",
    "quote": "sales quotes and discounts",
    "deal": "open deals and opportunities",
    "territory": "sales territories and account assignments",
    "account": "customer accounts and contacts",
    "pipeline": "the sales pipeline and stage conversion",
    "prospect": "prospects and outbound email sequences",
    "pricing": "price lists and discount approvals",
    "renewal-quote": "renewal quotes for expiring contracts",
    "call": "sales call notes and recordings",
    "campaign": "marketing campaigns and their performance",
    "seo": "SEO keywords and search rankings of our pages",
    "social-post": "social media posts and their schedule",
    "newsletter": "email newsletters and subscriber lists",
    "brand": "brand guidelines and approved logos and assets",
    "ticket": "customer support tickets",
    "kb": "knowledge base articles and help center docs",
    "refund": "customer refund requests",
    "chat": "live chat conversations with customers",
    "escalation": "escalated support cases",
    "renewal": "contract renewals and renewal dates",
    "health-score": "customer health scores",
    "qbr": "quarterly business reviews (QBR) with customers",
    "churn-risk": "accounts at risk of churning",
    "adoption": "product adoption and feature usage by account",
    "changelog": "release notes and changelogs",
    "incident": "production incidents and postmortems",
    "on-call": "on-call rotations and pages",
    "pr-review": "pull request reviews",
    "deploy": "deployments and release pipelines",
    "churn": "customer churn predictions",
    "ltv": "customer lifetime value (LTV) estimates",
    "anomaly": "anomalies in business metrics",
    "embedding": "text embeddings and similarity search",
    "propensity": "purchase propensity scores",
    "kpi": "company KPIs and targets",
    "sql": "SQL queries against the data warehouse",
    "cohort": "user cohorts and retention curves",
    "funnel": "conversion funnels",
    "metrics": "product metric definitions",
    "laptop": "laptops and device refreshes",
    "access-request": "software and system access requests",
    "asset": "IT assets and hardware inventory",
    "helpdesk": "IT helpdesk requests",
    "license": "software licenses and seat usage",
    "phishing": "reported phishing emails",
    "vuln": "security vulnerabilities and CVEs",
    "access-review": "periodic user access reviews",
    "secret-scan": "leaked credentials found by secret scanning",
    "audit": "security audit evidence and controls",
    "contract": "customer and vendor contracts",
    "nda": "non-disclosure agreements (NDA)",
    "clause": "contract clauses and fallback language",
    "compliance": "regulatory compliance obligations",
    "dpa": "data processing agreements (DPA) under GDPR",
    "rfp": "requests for proposal (RFP) and vendor responses",
    "supplier": "suppliers and supplier onboarding",
    "po": "purchase orders (PO)",
    "spend": "company spend by vendor and category",
    "catalog": "the approved purchasing catalog",
    "feedback": "customer feedback and feature requests",
    "roadmap": "the product roadmap and its priorities",
    "user-research": "user research interviews and insights",
    "mockup": "design mockups and prototypes",
    "copy": "product UI copy and microcopy",
    "shipment": "inbound and outbound shipments",
    "inventory": "inventory levels and stock-outs",
    "demand": "product demand forecasts",
    "warehouse": "warehouse operations and picking",
    "carrier": "freight carriers and shipping rates",
    "route": "field technician routes",
    "site-visit": "customer site visits",
    "work-order": "field service work orders",
    "safety": "safety incidents and inspections",
    "dispatch": "technician dispatch and scheduling",
    "room-booking": "meeting room bookings",
    "visitor": "office visitors and visitor badges",
    "energy": "office energy use",
    "maintenance": "building maintenance requests",
    "desk": "hot desk reservations",
}

# What an app does, by its name's suffix: a sentence with {g} for the domain gloss.
FUNCTION_PHRASES: dict[str, str] = {
    "summarizer": "Summarizes {g} into a short brief.",
    "assistant": "Answers questions about {g}.",
    "copilot": "Helps you work through {g} step by step, suggesting the next action.",
    "drafter": "Drafts first versions of documents about {g} for you to review.",
    "explainer": "Explains {g} in plain language.",
    "qa": "Question answering over {g}, with links to the sources.",
    "dashboard": "Dashboard of {g} with charts and filters.",
    "tracker": "Tracks {g} and their status.",
    "portal": "Self-service portal for {g}.",
    "planner": "Plans and schedules work on {g}.",
    "board": "Kanban board for {g}.",
    "viewer": "Read-only viewer for {g}.",
    "digest": "Sends a daily email digest of {g}.",
    "sync": "Keeps {g} in sync between our systems.",
    "matcher": "Matches related records of {g} and links duplicates.",
    "reconciler": "Reconciles {g} against the system of record and flags mismatches.",
    "exporter": "Exports {g} to CSV and the data warehouse.",
    "checker": "Checks {g} for errors and missing fields.",
    "agent": "Agent that handles routine work on {g} on its own.",
    "triager": "Triages incoming {g} by urgency and assigns an owner.",
    "bot": "Slack bot that answers questions about {g}.",
    "router": "Routes {g} to the right person or queue.",
    "classifier": "Classifies {g} into categories.",
    "recommender": "Recommends the next best action on {g}.",
}

# Tags by what an app does (a creator tags the kind of tool, not only the topic).
FUNCTION_TAGS: dict[str, str] = {
    "summarizer": "summarization",
    "assistant": "assistant",
    "copilot": "assistant",
    "drafter": "writing",
    "explainer": "assistant",
    "qa": "search",
    "dashboard": "reporting",
    "tracker": "tracking",
    "portal": "self-service",
    "planner": "planning",
    "board": "tracking",
    "viewer": "reporting",
    "digest": "notifications",
    "sync": "integration",
    "matcher": "data-quality",
    "reconciler": "data-quality",
    "exporter": "integration",
    "checker": "data-quality",
    "agent": "automation",
    "triager": "automation",
    "bot": "chatbot",
    "router": "automation",
    "classifier": "machine-learning",
    "recommender": "machine-learning",
}

MODEL_GLOSSES: dict[str, str] = {
    "gbm": "gradient-boosted trees (GBM)",
    "llm-rerank": "an LLM that reranks candidates",
    "xgb": "XGBoost",
    "prophet": "Prophet time-series forecasting",
    "bert": "a fine-tuned BERT classifier",
    "rag": "retrieval-augmented generation (RAG) over internal documents",
}

KIND_SENTENCES: dict[str, str] = {
    "assistant": "An AI assistant built on the company's LLM gateway.",
    "web": "A small web app; open it from the catalog.",
    "workflow": "A scheduled workflow that runs nightly.",
    "agent": "An always-on agent.",
    "experiment": "An experiment: results may change without notice.",
}

_AREAS = {t.slug: t.cost_center_name.split(" ", 1)[1] for t in TEAM_TEMPLATES}
_WRITES = frozenset({"copilot", "drafter", "sync", "reconciler", "agent", "triager", "router"})


@dataclass(frozen=True, slots=True)
class AppTopic:
    """What an app is about and what it does, read from how the simulator named it:
    `{domain word}-{suffix}[-n]` or `exp-{domain word}-{model}-v{n}` for experiments."""

    app_id: str
    team: str
    domain_word: str
    function: str  # a FUNCTION_PHRASES key, or the model of an experiment
    experiment: bool


def topic(app: AppSpec) -> AppTopic:
    if app.kind == "experiment":
        rest = app.app_id.removeprefix("exp-").rsplit("-v", 1)[0]
        model = next(m for m in MODEL_GLOSSES if rest.endswith(f"-{m}"))
        return AppTopic(app.app_id, app.team, rest.removesuffix(f"-{model}"), model, True)
    for function in FUNCTION_PHRASES:
        head, sep, tail = app.app_id.partition(f"-{function}")
        if sep and (tail == "" or tail[1:].isdigit()) and head in DOMAIN_GLOSSES:
            return AppTopic(app.app_id, app.team, head, function, False)
    raise ValueError(f"app {app.app_id!r} has no known domain word and function")


def catalog_apps(platform: Platform) -> list[AppSpec]:
    """The apps a catalog lists: persistent production apps and production experiments."""
    return [a for a in platform.apps if a.environment == "production" and a.kind != "preview"]


def _stable(app_id: str, salt: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{salt}/{app_id}".encode()).digest()[:4], "big")


def _base_team(team: str) -> str:
    head, _, tail = team.rpartition("-")
    return head if tail.isdigit() and head in _AREAS else team


def manifest(app: AppSpec, platform: Platform, version: str = "1.0.0") -> dict[str, Any]:
    """The manifest of one catalog app (valid against catalog/manifest.py's schema)."""
    about = topic(app)
    team = next(t for t in platform.teams if t.slug == app.team)
    gloss = DOMAIN_GLOSSES[about.domain_word]
    area = _AREAS[_base_team(team.slug)]
    if about.experiment:
        short = f"Predicts {gloss} with {MODEL_GLOSSES[about.function]}."
        tags = [about.domain_word, about.function, "experiment", "machine-learning"]
        capabilities, scopes = ["read"], ["team"]
    else:
        short = FUNCTION_PHRASES[about.function].format(g=gloss)
        tags = [about.domain_word, FUNCTION_TAGS[about.function], app.kind]
        capabilities = ["read", "write"] if about.function in _WRITES else ["read"]
        if about.function == "exporter":
            capabilities = ["read", "export"]
        scopes = ["user"] if app.kind == "assistant" else ["team"]
    tags.append(area.lower().replace(" ", "-"))
    long = (
        f"{short[0].upper()}{short[1:]} Maintained by {team.name} for the {area} area. "
        f"{KIND_SENTENCES[app.kind]}"
    )
    pick = _stable(app.app_id, "pricing") % 10
    pricing: dict[str, Any] = {"model": "free"}
    if pick >= 8:
        pricing = {"model": "subscription", "monthly_fee": "25"}
    elif pick >= 6:
        pricing = {"model": "usage_by_unit", "unit": "invocation", "price_per_unit": "0.002"}
    body: dict[str, Any] = {
        "app_id": app.app_id,
        "version": version,
        "title": app.title,
        "short_description": short,
        "long_description": long,
        "owner": app.owner,
        "team": app.team,
        "cost_center": app.cost_center,
        "lifecycle": app.lifecycle,
        "tags": list(dict.fromkeys(tags)),
        "capabilities": capabilities,
        "data_scopes": scopes,
        "runtime_descriptor": {"type": "serverless", "handler": "app.handler"},
        "pricing_template": pricing,
    }
    if "team" in scopes:
        body["data_owner"] = team.name
    return body


def usage_signals(platform: Platform) -> dict[str, tuple[int, int, int, int]]:
    """app_id -> (invocations 7d, invocations 30d, users 7d, users 30d), from the simulator's
    usage weights (invocations per hour at full activity, at about 40% mean activity)."""
    signals: dict[str, tuple[int, int, int, int]] = {}
    for app in catalog_apps(platform):
        hourly = platform.invocation_scale * app.weight * 0.4
        users = len(app.actors)
        signals[app.app_id] = (
            round(hourly * 24 * 7),
            round(hourly * 24 * 30),
            max(1, users * 2 // 3),
            users,
        )
    return signals
