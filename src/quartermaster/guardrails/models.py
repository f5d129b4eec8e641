"""Guardrail tables: budgets, enforcements, the action log, alerts, quotas, limit ranges,
reservations, rate limits, webhooks and their deliveries.

Quota amounts are integers in base units (millicores, bytes, whole GPUs, counts) so that a
reservation is one atomic conditional UPDATE (`used + n <= hard`) on every backend.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from quartermaster.domain.timeutil import utc_now
from quartermaster.storage.base import Base, BigIntPK, DecimalText, UTCDateTime, new_id


class Budget(Base):
    """A spend limit for one scope per period. `thresholds` are soft (alert) percentages;
    at `hard_percent` of `amount` the `action` applies (notify, throttle or halt)."""

    __tablename__ = "guardrail_budgets"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    scope_kind: Mapped[str] = mapped_column(String(16))  # tenant | cost_center | team | app
    scope: Mapped[str] = mapped_column(String(64), default="")
    period: Mapped[str] = mapped_column(String(16), default="month")  # month | day
    amount: Mapped[Decimal] = mapped_column(DecimalText())
    # The amount's currency (the default price book's when made); NULL: made before budgets
    # had one, read in whatever currency the default price book has.
    amount_currency: Mapped[str | None] = mapped_column(String(3))
    thresholds: Mapped[str] = mapped_column(String(200), default="50,80,100")
    hard_percent: Mapped[int] = mapped_column(Integer, default=100)
    action: Mapped[str] = mapped_column(String(16), default="notify")
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class DefaultCap(Base):
    """A hard cap every app of a kind gets by default — ephemeral apps, or apps outside
    production — unless the app has a budget of its own: at `amount` per `period` the app is
    throttled or halted (`action`), like a budget's hard limit."""

    __tablename__ = "guardrail_default_caps"
    __table_args__ = (UniqueConstraint("tenant_id", "applies_to"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    applies_to: Mapped[str] = mapped_column(String(16))  # ephemeral | non_production
    amount: Mapped[Decimal] = mapped_column(DecimalText())
    amount_currency: Mapped[str | None] = mapped_column(String(3))  # as a budget's
    period: Mapped[str] = mapped_column(String(16), default="month")  # month | day
    action: Mapped[str] = mapped_column(String(16), default="halt")  # throttle | halt
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class Enforcement(Base):
    """A throttle or halt in force on a scope until `ends_at` (the period's end) or until
    lifted. One per budget, period and hard limit, or per default cap, app, period and hard
    limit: the hard crossing's unique key (a budget's rows have no cap, a cap's rows no
    budget). A budget or capped app has at most one in force per period; after a lift,
    another starts only at a hard limit other than the lifted one's (crossings.py). Deleting
    the budget or cap ends it (lifted) and keeps the row as history, its id set to NULL."""

    __tablename__ = "guardrail_enforcements"
    __table_args__ = (
        UniqueConstraint("budget_id", "period_start", "hard_limit"),
        UniqueConstraint("cap_id", "scope", "period_start", "hard_limit"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    budget_id: Mapped[str | None] = mapped_column(
        ForeignKey("guardrail_budgets.id", ondelete="SET NULL"), nullable=True
    )
    cap_id: Mapped[str | None] = mapped_column(
        ForeignKey("guardrail_default_caps.id", ondelete="SET NULL"), nullable=True
    )
    scope_kind: Mapped[str] = mapped_column(String(16))
    scope: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))  # throttle | halt
    period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime())
    reason: Mapped[str] = mapped_column(Text)
    # The spend it started at (a budget's amount x hard_percent, a cap's amount:
    # `budgets.hard_limit_of`), up to 67 characters (an amount under 10^56 at 1000 %). NULL
    # for rows made before migration 0027g.
    hard_limit: Mapped[Decimal | None] = mapped_column(DecimalText(80), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    lifted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lifted_by: Mapped[str | None] = mapped_column(String(200), nullable=True)


class GuardrailAction(Base):
    """Every action a guardrail took, with why: alerts, throttles, halts, lifts, denials."""

    __tablename__ = "guardrail_actions"
    __table_args__ = (Index("ix_guardrail_actions_tenant_id_id", "tenant_id", "id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    action: Mapped[str] = mapped_column(String(16))  # notify | throttle | halt | lift | expire
    scope_kind: Mapped[str] = mapped_column(String(16))
    scope: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(200))  # budget:<name>, quota:<id>, ...
    reason: Mapped[str] = mapped_column(Text)


class Alert(Base):
    """A notification-worthy fact. `dedup_key` makes each one happen once (e.g. a budget's
    threshold in a period), whichever evaluator or process notices it first. `scope_kind`
    and `scope` say what it is about (visibility.alert_scope of its details; None: nothing a
    team owns), so a scope filter or a team-member's view is a WHERE on an index."""

    __tablename__ = "guardrail_alerts"
    __table_args__ = (
        UniqueConstraint("tenant_id", "dedup_key"),
        Index("ix_guardrail_alerts_tenant_id_created_at", "tenant_id", "created_at"),
        Index(
            "ix_guardrail_alerts_tenant_id_scope_kind_scope_created_at",
            "tenant_id",
            "scope_kind",
            "scope",
            "created_at",
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    kind: Mapped[str] = mapped_column(String(32))  # budget_threshold | anomaly | high_cost
    severity: Mapped[str] = mapped_column(String(16))  # info | warning | critical
    dedup_key: Mapped[str] = mapped_column(String(300))
    title: Mapped[str] = mapped_column(String(300))
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[str] = mapped_column(Text, default="{}")  # JSON
    scope_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    scope: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class Quota(Base):
    """ResourceQuota semantics: the `hard` total of `resource` a namespace (the tenant, or
    one team) may hold at once; `used` is what admitted, unreleased work holds."""

    __tablename__ = "guardrail_quotas"
    __table_args__ = (UniqueConstraint("tenant_id", "scope_kind", "scope", "resource"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    scope_kind: Mapped[str] = mapped_column(String(16))  # tenant | team
    scope: Mapped[str] = mapped_column(String(64), default="")
    resource: Mapped[str] = mapped_column(String(16))  # concurrency | cpu | memory | gpu | jobs
    hard: Mapped[int] = mapped_column(BigInteger)
    used: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class LimitRange(Base):
    """LimitRange semantics per namespace and resource: the request used when none is given
    (`default_request`) and the most one request may ask for (`max`)."""

    __tablename__ = "guardrail_limit_ranges"
    __table_args__ = (UniqueConstraint("tenant_id", "scope_kind", "scope", "resource"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    scope_kind: Mapped[str] = mapped_column(String(16))
    scope: Mapped[str] = mapped_column(String(64), default="")
    resource: Mapped[str] = mapped_column(String(16))  # cpu | memory | gpu | concurrency | runtime
    default_request: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    max: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class Reservation(Base):
    """The resources one admitted piece of work holds, from admission to release or expiry."""

    __tablename__ = "guardrail_reservations"
    __table_args__ = (Index("ix_guardrail_reservations_status_expires_at", "status", "expires_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    team: Mapped[str | None] = mapped_column(String(64), nullable=True)
    app: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cpu: Mapped[int] = mapped_column(BigInteger, default=0)
    memory: Mapped[int] = mapped_column(BigInteger, default=0)
    gpu: Mapped[int] = mapped_column(BigInteger, default=0)
    concurrency: Mapped[int] = mapped_column(BigInteger, default=0)
    runtime_seconds: Mapped[int] = mapped_column(BigInteger)
    essential: Mapped[bool] = mapped_column(Boolean, default=False)
    quota_ids: Mapped[str] = mapped_column(Text, default="")  # the quota rows charged
    status: Mapped[str] = mapped_column(String(16), default="active")  # active|released|expired
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class RateLimitRule(Base):
    """`rate` requests per second with bursts of `burst`, per tenant, per app or per user
    (principal). `scope` "*" means each app (or user) separately."""

    __tablename__ = "guardrail_rate_limits"
    __table_args__ = (UniqueConstraint("tenant_id", "scope_kind", "scope"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    scope_kind: Mapped[str] = mapped_column(String(16))  # tenant | app | user
    scope: Mapped[str] = mapped_column(String(64), default="")
    rate: Mapped[Decimal] = mapped_column(DecimalText())
    burst: Mapped[int] = mapped_column(Integer)


class Webhook(Base):
    """Where alerts go. The secret signs each body (HMAC-SHA256); `format` json or slack. The
    URL (Slack's path is itself a credential) and the secret are stored sealed."""

    __tablename__ = "guardrail_webhooks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    # Plaintext of rows made before migration 0019g: sealed at server start, then emptied
    # (""); dropped in a later release. New rows keep only the sealed columns.
    url: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    secret: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # AES-256-GCM with a key derived from the server key (catalog/sealing.py), bound to `id`
    sealed_url: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    sealed_secret: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    format: Mapped[str] = mapped_column(String(16), default="json")
    min_severity: Mapped[str] = mapped_column(String(16), default="info")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class Delivery(Base):
    """One alert to one webhook: pending until delivered, or dead after the last attempt."""

    __tablename__ = "guardrail_deliveries"
    __table_args__ = (
        UniqueConstraint("webhook_id", "alert_id"),
        Index("ix_guardrail_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_guardrail_deliveries_tenant_id_created_at", "tenant_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("guardrail_webhooks.id", ondelete="CASCADE"))
    alert_id: Mapped[str] = mapped_column(ForeignKey("guardrail_alerts.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|delivered|dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class DeliveryAttempt(Base):
    """The delivery log: every attempt, its status code or error and how long it took."""

    __tablename__ = "guardrail_delivery_attempts"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("guardrail_deliveries.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    duration_ms: Mapped[int] = mapped_column(Integer)


class GuardrailSettings(Base):
    """Per-tenant guardrail settings: the app-hour cost at which a preview invoice is made
    (None: no previews after high-cost events)."""

    __tablename__ = "guardrail_settings"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    high_cost_hour_amount: Mapped[Decimal | None] = mapped_column(DecimalText(), nullable=True)
    updated_by: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class CostPreview(Base):
    """A preview invoice made right after a high-cost hour of one app: the app's and its
    team's month to date and forecast, and the events behind the hour. One per app and hour."""

    __tablename__ = "guardrail_cost_previews"
    __table_args__ = (
        UniqueConstraint("tenant_id", "app", "hour_start"),
        Index("ix_guardrail_cost_previews_tenant_id_created_at", "tenant_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    app: Mapped[str] = mapped_column(String(64))
    team: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cost_center: Mapped[str] = mapped_column(String(64))
    hour_start: Mapped[datetime] = mapped_column(UTCDateTime())
    hour_cost: Mapped[Decimal] = mapped_column(DecimalText())
    threshold: Mapped[Decimal] = mapped_column(DecimalText())
    currency: Mapped[str] = mapped_column(String(8))
    body: Mapped[str] = mapped_column(Text)  # JSON: month to date, forecast, top events
    alert_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
