"""HTTP bodies of the guardrails API. Money is exact decimal strings; quantities are
Kubernetes quantities (500m, 1Gi) in requests and base units plus text in responses."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from quartermaster.api.params import one_of
from quartermaster.domain.money import FixedDecimal, WrittenDecimal
from quartermaster.guardrails.alerts import ALERT_KINDS, Severity
from quartermaster.guardrails.budgets import (
    BUDGET_SCOPES,
    BudgetAction,
    BudgetPeriod,
    split_thresholds,
)
from quartermaster.guardrails.quantities import LIMIT_RESOURCES, RESOURCES
from quartermaster.guardrails.quotas import QUOTA_SCOPES
from quartermaster.guardrails.rate_rules import RATE_SCOPES
from quartermaster.guardrails.webhooks import DeliveryStatus, WebhookFormat

# Choices as the spec lists them; the services check them (and word a wrong one's 422).
BudgetScopeKind = Annotated[str, one_of(BUDGET_SCOPES)]
BudgetPeriodName = Annotated[str, one_of(BudgetPeriod)]
BudgetActionName = Annotated[str, one_of(BudgetAction)]
QuotaScopeKind = Annotated[str, one_of(QUOTA_SCOPES)]
RateScopeKind = Annotated[str, one_of(RATE_SCOPES)]
SeverityName = Annotated[str, one_of(Severity)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class BudgetIn(_In):
    name: str
    scope_kind: BudgetScopeKind = Field(
        default="tenant", description="tenant (the default) | cost_center | team | app"
    )
    scope: str | None = Field(default=None, description="The slug; none for tenant.")
    amount: WrittenDecimal = Field(description="The period's budget, in `currency`.")
    currency: str | None = Field(
        default=None,
        description="The amount's currency (ISO 4217); default: the default price book's. "
        "Spend priced in another currency is not compared with it.",
    )
    period: BudgetPeriodName = Field(default="month", description="month | day (tenant time zone)")
    thresholds: list[int] = Field(default=[50, 80, 100], description="Soft alert percentages.")
    hard_percent: int = Field(default=100, description="Percent of amount where action applies.")
    action: BudgetActionName = Field(default="notify", description="notify | throttle | halt")


class BudgetPatch(_In):
    """What to change of a budget; a field left out keeps its value."""

    amount: WrittenDecimal | None = Field(default=None, description="The period's budget.")
    currency: str | None = Field(
        default=None,
        description="The amount's currency (ISO 4217): set it with the amount when the "
        "default price book changes currency.",
    )
    thresholds: list[int] | None = Field(default=None, description="Soft alert percentages.")
    hard_percent: int | None = Field(
        default=None, description="Percent of amount where action applies."
    )
    action: BudgetActionName | None = Field(default=None, description="notify | throttle | halt")


class BudgetOut(_Out):
    id: str
    name: str
    scope_kind: BudgetScopeKind
    scope: str
    period: BudgetPeriodName
    amount: Decimal
    amount_currency: str | None = Field(
        description="The amount's currency; null: a budget made before budgets had one, read "
        "in the default price book's currency."
    )
    thresholds: list[int] = Field(description="Soft alert percentages, ascending.")
    hard_percent: int
    action: BudgetActionName
    created_by: str
    created_at: datetime
    spend: FixedDecimal | None = Field(
        default=None, description="The period's spend so far (with spend=true; else null)."
    )
    percent: Decimal | None = Field(
        default=None,
        description="spend as a percentage of amount, to 0.1 (spend=true); null when spend "
        "is priced in another currency than the amount's (not compared).",
    )
    currency: str | None = Field(default=None, description="spend's currency (spend=true).")
    period_start: datetime | None = Field(
        default=None, description="Start of the period spend covers (spend=true)."
    )
    spend_as_of: datetime | None = Field(
        default=None, description="The moment spend is priced up to (spend=true)."
    )

    @field_validator("thresholds", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        # The row keeps them as "50,80,100"; the API answers them as BudgetIn takes them.
        return split_thresholds(value) if isinstance(value, str) else value


class EvaluationOut(BaseModel):
    alerts: list[str]
    enforcements: list[str]


class EnforcementOut(_Out):
    id: str
    scope_kind: str
    scope: str
    action: str
    period_start: datetime
    ends_at: datetime
    hard_limit: FixedDecimal | None = Field(
        description="The spend it started at (a budget's amount x hard_percent, a default "
        "cap's amount). After a lift the budget or capped app is enforced again only at "
        "another hard limit. Null for an enforcement started before limits were recorded."
    )
    reason: str
    created_at: datetime
    lifted_at: datetime | None
    lifted_by: str | None


class ActionOut(_Out):
    id: int
    at: datetime
    action: str
    scope_kind: str
    scope: str
    subject: str
    reason: str


class AlertOut(BaseModel):
    id: str
    kind: Annotated[str, one_of(ALERT_KINDS)]
    severity: SeverityName
    title: str
    message: str
    details: dict[str, Any]
    created_at: datetime


class QuotaIn(_In):
    scope_kind: QuotaScopeKind = Field(description="tenant | team")
    scope: str | None = None
    resource: Annotated[str, one_of(RESOURCES)] = Field(
        description="concurrency | cpu | memory | gpu | jobs"
    )
    hard: str = Field(description="A quantity: 20, 500m, 50Gi")


class QuotaOut(_Out):
    id: str
    scope_kind: QuotaScopeKind
    scope: str
    resource: Annotated[str, one_of(RESOURCES)]
    hard: int
    used: int
    hard_text: str
    used_text: str


class LimitRangeIn(_In):
    scope_kind: QuotaScopeKind = Field(description="tenant | team")
    scope: str | None = None
    resource: Annotated[str, one_of(LIMIT_RESOURCES)] = Field(
        description="concurrency | cpu | memory | gpu | runtime"
    )
    default_request: str | None = None
    max: str | None = None


class LimitRangeOut(_Out):
    id: str
    scope_kind: QuotaScopeKind
    scope: str
    resource: Annotated[str, one_of(LIMIT_RESOURCES)]
    default_request: int | None
    max: int | None


class RateLimitIn(_In):
    scope_kind: RateScopeKind = Field(description="tenant | app | user")
    scope: str | None = Field(default=None, description="app slug, principal id, or *")
    rate: WrittenDecimal = Field(description="Requests per second.")
    burst: int = Field(description="Requests allowed at once from idle.")


class RateLimitOut(_Out):
    id: str
    scope_kind: RateScopeKind
    scope: str
    rate: Decimal
    burst: int


class DecisionIn(_In):
    app: str | None = Field(default=None, description="The app the work runs as.")
    team: str | None = Field(default=None, description="The team (default: the app's).")
    resources: dict[str, str | int | float] = Field(
        default_factory=dict,
        description="cpu, memory, gpu, concurrency, runtime (seconds or 15m, 2h)",
    )
    essential: bool = Field(default=False, description="Essential work passes a budget halt.")


class DecisionRenewIn(_In):
    runtime: str | int | None = Field(
        default=None,
        description="How long from now the work may still run: seconds or 15m, 2h "
        "(default: the runtime it was admitted with).",
    )


class ReasonOut(BaseModel):
    kind: str
    message: str


class DecisionOut(BaseModel):
    allowed: bool
    id: str | None = Field(description="The decision (reservation) id when allowed.")
    reasons: list[ReasonOut]
    resources: dict[str, int]
    expires_at: datetime | None
    team: str | None
    app: str | None
    audit_only: list[str] = Field(
        default_factory=list,
        description="What audit-mode admission policies would have denied (logged, not enforced).",
    )


class ReservationOut(_Out):
    id: str
    team: str | None
    app: str | None
    cpu: int
    memory: int
    gpu: int
    concurrency: int
    runtime_seconds: int
    essential: bool
    status: str
    created_at: datetime
    expires_at: datetime
    released_at: datetime | None


class WebhookIn(_In):
    url: str = Field(description="http(s) URL the alerts are POSTed to.")
    format: Annotated[str, one_of(WebhookFormat)] = Field(
        default="json", description="json | slack (Slack-compatible message)"
    )
    min_severity: SeverityName = Field(default="info", description="info | warning | critical")
    secret: str | None = Field(
        default=None, description="Signing secret (16-128 chars); generated when omitted."
    )


class WebhookOut(_Out):
    id: str
    url: str
    format: Annotated[str, one_of(WebhookFormat)]
    min_severity: SeverityName
    created_at: datetime


class WebhookCreatedOut(WebhookOut):
    secret: str = Field(description="The HMAC signing secret: shown once, store it now.")


class DeliveryOut(_Out):
    id: str
    webhook_id: str
    alert_id: str
    status: Annotated[str, one_of(DeliveryStatus)]
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None


class DeliveryAttemptOut(_Out):
    attempt: int
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int
