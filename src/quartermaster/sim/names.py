"""Vocabulary of the simulated organisation: teams, cost centers, people and app names.

Chosen to read like a real company's internal micro-app catalog (seed 001's "where2eat",
"expense helper" and friends), so the demo's reports look like something a platform team
would recognise."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TeamTemplate:
    slug: str
    name: str
    cost_center: str
    cost_center_name: str
    domain_words: tuple[str, ...]


# Three pairs share a cost center (finance, people, data), as org charts usually do.
TEAM_TEMPLATES: tuple[TeamTemplate, ...] = (
    TeamTemplate(
        "finance-ops",
        "Finance Operations",
        "cc-1100-finance",
        "1100 Finance",
        ("invoice", "expense", "vendor-payment", "month-close", "reconciliation"),
    ),
    TeamTemplate(
        "fp-and-a",
        "FP&A",
        "cc-1100-finance",
        "1100 Finance",
        ("budget", "forecast", "variance", "headcount-plan", "scenario"),
    ),
    TeamTemplate(
        "people-ops",
        "People Operations",
        "cc-1200-people",
        "1200 People",
        ("pto", "onboarding", "benefits", "policy", "payroll"),
    ),
    TeamTemplate(
        "talent",
        "Talent Acquisition",
        "cc-1200-people",
        "1200 People",
        ("candidate", "interview", "job-post", "referral", "offer"),
    ),
    TeamTemplate(
        "sales-emea",
        "Sales EMEA",
        "cc-2100-sales-emea",
        "2100 Sales EMEA",
        ("lead", "quote", "deal", "territory", "account"),
    ),
    TeamTemplate(
        "sales-na",
        "Sales North America",
        "cc-2200-sales-na",
        "2200 Sales NA",
        ("pipeline", "prospect", "pricing", "renewal-quote", "call"),
    ),
    TeamTemplate(
        "marketing",
        "Marketing",
        "cc-2300-marketing",
        "2300 Marketing",
        ("campaign", "seo", "social-post", "newsletter", "brand"),
    ),
    TeamTemplate(
        "customer-support",
        "Customer Support",
        "cc-3100-support",
        "3100 Support",
        ("ticket", "kb", "refund", "chat", "escalation"),
    ),
    TeamTemplate(
        "customer-success",
        "Customer Success",
        "cc-3200-success",
        "3200 Customer Success",
        ("renewal", "health-score", "qbr", "churn-risk", "adoption"),
    ),
    TeamTemplate(
        "platform-eng",
        "Platform Engineering",
        "cc-4100-platform",
        "4100 Platform",
        ("changelog", "incident", "on-call", "pr-review", "deploy"),
    ),
    TeamTemplate(
        "data-science",
        "Data Science",
        "cc-4200-data",
        "4200 Data",
        ("churn", "ltv", "anomaly", "embedding", "propensity"),
    ),
    TeamTemplate(
        "analytics",
        "Analytics",
        "cc-4200-data",
        "4200 Data",
        ("kpi", "sql", "cohort", "funnel", "metrics"),
    ),
    TeamTemplate(
        "it-ops",
        "IT Operations",
        "cc-4300-it",
        "4300 IT",
        ("laptop", "access-request", "asset", "helpdesk", "license"),
    ),
    TeamTemplate(
        "security",
        "Security",
        "cc-4400-security",
        "4400 Security",
        ("phishing", "vuln", "access-review", "secret-scan", "audit"),
    ),
    TeamTemplate(
        "legal",
        "Legal",
        "cc-5100-legal",
        "5100 Legal",
        ("contract", "nda", "clause", "compliance", "dpa"),
    ),
    TeamTemplate(
        "procurement",
        "Procurement",
        "cc-5200-procurement",
        "5200 Procurement",
        ("rfp", "supplier", "po", "spend", "catalog"),
    ),
    TeamTemplate(
        "product-design",
        "Product Design",
        "cc-6100-product",
        "6100 Product",
        ("feedback", "roadmap", "user-research", "mockup", "copy"),
    ),
    TeamTemplate(
        "supply-chain",
        "Supply Chain",
        "cc-7100-supply-chain",
        "7100 Supply Chain",
        ("shipment", "inventory", "demand", "warehouse", "carrier"),
    ),
    TeamTemplate(
        "field-ops",
        "Field Operations",
        "cc-7200-field-ops",
        "7200 Field Operations",
        ("route", "site-visit", "work-order", "safety", "dispatch"),
    ),
    TeamTemplate(
        "facilities",
        "Facilities",
        "cc-7300-facilities",
        "7300 Facilities",
        ("room-booking", "visitor", "energy", "maintenance", "desk"),
    ),
)

# What a micro-app does, by its runtime kind; combined with a team's domain word.
KIND_SUFFIXES: dict[str, tuple[str, ...]] = {
    "assistant": ("summarizer", "assistant", "copilot", "drafter", "explainer", "qa"),
    "web": ("dashboard", "tracker", "portal", "planner", "board", "viewer"),
    "workflow": ("digest", "sync", "matcher", "reconciler", "exporter", "checker"),
    "agent": ("agent", "triager", "bot", "router", "classifier", "recommender"),
}

EXPERIMENT_MODELS: tuple[str, ...] = ("gbm", "llm-rerank", "xgb", "prophet", "bert", "rag")

ACRONYMS: dict[str, str] = {
    "pto": "PTO",
    "seo": "SEO",
    "kb": "KB",
    "nda": "NDA",
    "qbr": "QBR",
    "kpi": "KPI",
    "sql": "SQL",
    "rfp": "RFP",
    "po": "PO",
    "ltv": "LTV",
    "dpa": "DPA",
    "qa": "Q&A",
    "pr": "PR",
    "llm": "LLM",
    "gbm": "GBM",
    "xgb": "XGB",
    "bert": "BERT",
    "rag": "RAG",
}

FIRST_NAMES: tuple[str, ...] = (
    "maria", "james", "aisha", "chen", "lukas", "sofia", "omar", "priya", "noah", "elena",
    "kenji", "fatima", "lucas", "ingrid", "mateo", "amara", "david", "yuki", "hannah", "ravi",
    "zoe", "tomasz", "leila", "samuel", "ines", "kofi", "mia", "arjun", "clara", "jonas",
)  # fmt: skip

LAST_NAMES: tuple[str, ...] = (
    "garcia", "smith", "khan", "wang", "schmidt", "rossi", "haddad", "patel", "brown",
    "ivanova", "tanaka", "okafor", "silva", "larsen", "lopez", "mensah", "cohen", "sato",
    "muller", "iyer", "martin", "nowak", "rahimi", "adeyemi", "ferreira", "boateng", "novak",
    "kumar", "dubois", "berg",
)  # fmt: skip


def title_from_slug(slug: str) -> str:
    """`pto-planner` -> `PTO Planner`."""
    return " ".join(ACRONYMS.get(word, word.capitalize()) for word in slug.split("-"))
