"""Guardrail routes: budgets, enforcements, the action log, alerts, quotas, limit ranges,
rate limits and the decision API. Thin: each calls one service function."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from sqlalchemy.orm import Session

from quartermaster.api.deps import (
    AdminCaller,
    Ingester,
    Reader,
    ReadSessionDep,
    RuntimeDep,
    SessionDep,
)
from quartermaster.api.errors import ErrorBody
from quartermaster.api.params import Int64, one_of
from quartermaster.api.responses import error_responses, paged, set_next_after
from quartermaster.billing.sources import StoreCalculator, pipeline_catch_up
from quartermaster.errors import QMError
from quartermaster.guardrails import budgets, decisions, enforcement, quotas, rate_rules, webhooks
from quartermaster.guardrails.alerts import (
    ALERT_KINDS,
    alert_details,
    list_alerts,
    parse_alert_scope,
)
from quartermaster.guardrails.budget_status import BudgetStatus, budget_statuses
from quartermaster.guardrails.destinations import redact_url
from quartermaster.guardrails.evaluator import evaluate_tenant
from quartermaster.guardrails.gate import guardrail_gate
from quartermaster.guardrails.history import list_actions
from quartermaster.guardrails.models import Alert, Quota, Webhook
from quartermaster.guardrails.quantities import format_quantity
from quartermaster.guardrails.schemas import (
    ActionOut,
    AlertOut,
    BudgetIn,
    BudgetOut,
    BudgetPatch,
    DecisionIn,
    DecisionOut,
    DecisionRenewIn,
    DeliveryAttemptOut,
    DeliveryOut,
    EnforcementOut,
    EvaluationOut,
    LimitRangeIn,
    LimitRangeOut,
    QuotaIn,
    QuotaOut,
    RateLimitIn,
    RateLimitOut,
    ReasonOut,
    ReservationOut,
    WebhookCreatedOut,
    WebhookIn,
    WebhookOut,
)
from quartermaster.guardrails.spend import BillingSpend
from quartermaster.guardrails.visibility import MemberView, member_view
from quartermaster.policy.dependencies import policy_cache
from quartermaster.tenancy.service import AuthContext

router = APIRouter(tags=["guardrails"])


def _view(caller: AuthContext, session: Session) -> MemberView | None:
    """A team-member's reach (its team's and its apps' rows); None for admin and finance."""
    return member_view(caller, session=session)


@router.post(
    "/v1/budgets",
    status_code=201,
    response_model=BudgetOut,
    summary="Create a budget",
    responses=error_responses(409),  # a budget of that name exists
)
def create_budget(body: BudgetIn, caller: AdminCaller, session: SessionDep) -> BudgetOut:
    spec = budgets.BudgetSpec(
        name=body.name,
        scope_kind=body.scope_kind,
        scope=body.scope,
        amount=body.amount,
        period=body.period,
        thresholds=tuple(body.thresholds),
        hard_percent=body.hard_percent,
        action=body.action,
        currency=body.currency,
    )
    return BudgetOut.model_validate(budgets.create_budget(caller, spec, session=session))


@router.get("/v1/budgets", response_model=list[BudgetOut], summary="The tenant's budgets")
def get_budgets(
    caller: Reader,
    runtime: RuntimeDep,
    session: ReadSessionDep,
    spend: Annotated[
        bool,
        Query(
            description="Also each budget's spend so far this period and its percent of the "
            "amount (priced as the evaluator prices it)."
        ),
    ] = False,
) -> list[BudgetOut]:
    view = _view(caller, session)
    rows = budgets.list_budgets(caller.tenant_id, session=session, view=view)
    if not spend:
        return [BudgetOut.model_validate(b) for b in rows]
    # What the store holds now (no settle window): a snapshot, `spend_as_of` says when.
    source = BillingSpend(StoreCalculator(runtime.usage_store, settle=timedelta(0)))
    try:
        found = budget_statuses(caller.tenant_id, rows, spend=source, session=session)
    except QMError:  # not priceable yet (no price book): the budgets without spend
        found = {}
    return [_with_status(BudgetOut.model_validate(b), found.get(b.id)) for b in rows]


def _with_status(out: BudgetOut, status: BudgetStatus | None) -> BudgetOut:
    if status is None:
        return out
    return out.model_copy(
        update={
            "spend": status.spend,
            "percent": status.percent,
            "currency": status.currency,
            "period_start": status.period_start,
            "spend_as_of": status.as_of,
        }
    )


BudgetName = Annotated[str, Path(description="The budget's name.")]


@router.patch(
    "/v1/budgets/{name}",
    response_model=BudgetOut,
    summary="Change a budget's amount, thresholds, hard percent or action (keeps what fired)",
)
def patch_budget(
    name: BudgetName,
    body: BudgetPatch,
    caller: AdminCaller,
    runtime: RuntimeDep,
    session: SessionDep,
) -> BudgetOut:
    change = budgets.BudgetChange(
        amount=body.amount,
        thresholds=None if body.thresholds is None else tuple(body.thresholds),
        hard_percent=body.hard_percent,
        action=body.action,
        currency=body.currency,
    )
    row = budgets.update_budget(caller, name, change, session=session)
    guardrail_gate(runtime).invalidate(caller.tenant_id)  # a changed action, at once
    return BudgetOut.model_validate(row)


@router.delete("/v1/budgets/{name}", status_code=204, summary="Delete a budget")
def delete_budget(
    name: BudgetName, caller: AdminCaller, runtime: RuntimeDep, session: SessionDep
) -> Response:
    budgets.delete_budget(caller, name, session=session)
    guardrail_gate(runtime).invalidate(caller.tenant_id)  # what it ended, at once
    return Response(status_code=204)


@router.post(
    "/v1/budgets/evaluate",
    response_model=EvaluationOut,
    summary="Evaluate the tenant's budgets now (after the pipeline catches up)",
)
def evaluate_budgets(
    caller: AdminCaller, runtime: RuntimeDep, session: SessionDep, reader: ReadSessionDep
) -> EvaluationOut:
    # The pipeline catches up before the unit of work opens: on SQLite every write
    # transaction takes the write lock (BEGIN IMMEDIATE), which the pipeline's pass needs too.
    # Pricing and comparing go through the read-only session; `session` only writes what is
    # new, in short transactions.
    pipeline_catch_up(runtime)()
    # No settle window: the pipeline has caught up with every event accepted before this
    # call (a 2xx means committed), so the usage of the last 5 s (DEFAULT_SETTLE) counts
    # too. An event still being stored now is in the next pass's spend; a pass recomputes
    # the period's spend and each threshold fires once, so nothing is counted twice.
    calculator = StoreCalculator(runtime.usage_store, settle=timedelta(0))
    result = evaluate_tenant(
        caller.tenant_id, spend=BillingSpend(calculator), session=session, reader=reader
    )
    guardrail_gate(runtime).invalidate(caller.tenant_id)
    return EvaluationOut(alerts=result.alerts, enforcements=result.enforcements)


@router.get("/v1/enforcements", response_model=list[EnforcementOut], summary="Throttles, halts")
def get_enforcements(caller: Reader, session: ReadSessionDep) -> list[EnforcementOut]:
    view = _view(caller, session)
    rows = enforcement.list_enforcements(caller.tenant_id, session=session, view=view)
    return [EnforcementOut.model_validate(r) for r in rows]


@router.post(
    "/v1/enforcements/{enforcement_id}/lift",
    response_model=EnforcementOut,
    summary="End a throttle or halt early",
)
def lift_enforcement(
    enforcement_id: str, caller: AdminCaller, runtime: RuntimeDep, session: SessionDep
) -> EnforcementOut:
    row = enforcement.lift_enforcement(caller, enforcement_id, session=session)
    guardrail_gate(runtime).invalidate(caller.tenant_id)
    return EnforcementOut.model_validate(row)


# At most this many rows per page, newest first.
Limit = Annotated[int, Query(ge=1, le=1000, description="At most this many, newest first.")]


@router.get(
    "/v1/guardrail-actions",
    response_model=list[ActionOut],
    summary="Every action, with why, newest first (page with after=X-Next-After)",
    responses=paged("actions"),
)
def get_actions(
    caller: Reader,
    session: ReadSessionDep,
    response: Response,
    after: Annotated[
        Int64 | None,
        Query(
            ge=1,
            description="Actions after this one (the previous page's X-Next-After header).",
        ),
    ] = None,
    limit: Limit = 100,
) -> list[ActionOut]:
    view = _view(caller, session)
    page = list_actions(caller.tenant_id, after=after, limit=limit, session=session, view=view)
    set_next_after(response, page.next_after)
    return [ActionOut.model_validate(r) for r in page.rows]


def _alert(alert: Alert) -> AlertOut:
    return AlertOut(
        id=alert.id,
        kind=alert.kind,
        severity=alert.severity,
        title=alert.title,
        message=alert.message,
        details=alert_details(alert),
        created_at=alert.created_at,
    )


@router.get(
    "/v1/alerts",
    response_model=list[AlertOut],
    summary="Alerts, newest first (page with after=X-Next-After)",
    responses=paged("alerts"),
)
def get_alerts(
    caller: Reader,
    session: ReadSessionDep,
    response: Response,
    kind: Annotated[
        Annotated[str, one_of(ALERT_KINDS)] | None,
        Query(description="Only alerts of this kind (default: every kind)."),
    ] = None,
    scope: Annotated[
        str | None,
        Query(
            description="Only alerts about this scope: team:NAME, app:NAME, "
            "cost_center:NAME or tenant.",
            max_length=200,
        ),
    ] = None,
    after: Annotated[
        str | None,
        Query(
            description="Alerts after this one (the previous page's X-Next-After header).",
            max_length=64,
        ),
    ] = None,
    limit: Limit = 100,
) -> list[AlertOut]:
    view = _view(caller, session)
    about = parse_alert_scope(scope) if scope is not None else None
    page = list_alerts(
        caller.tenant_id,
        kind=kind,
        scope=about,
        after=after,
        limit=limit,
        session=session,
        view=view,
    )
    set_next_after(response, page.next_after)
    return [_alert(a) for a in page.rows]


def _quota(row: Quota) -> QuotaOut:
    return QuotaOut(
        id=row.id,
        scope_kind=row.scope_kind,
        scope=row.scope,
        resource=row.resource,
        hard=row.hard,
        used=row.used,
        hard_text=format_quantity(row.resource, row.hard),
        used_text=format_quantity(row.resource, row.used),
    )


@router.put("/v1/quotas", response_model=QuotaOut, summary="Create or change a quota")
def put_quota(body: QuotaIn, caller: AdminCaller, session: SessionDep) -> QuotaOut:
    row = quotas.set_quota(
        caller, body.scope_kind, body.scope, body.resource, body.hard, session=session
    )
    return _quota(row)


@router.get("/v1/quotas", response_model=list[QuotaOut], summary="Quotas with current use")
def get_quotas(caller: Reader, session: ReadSessionDep) -> list[QuotaOut]:
    view = _view(caller, session)
    return [_quota(q) for q in quotas.list_quotas(caller.tenant_id, session=session, view=view)]


QuotaId = Annotated[str, Path(description="The quota's id, as `GET /v1/quotas` lists it.")]


@router.delete(
    "/v1/quotas/{quota_id}",
    status_code=204,
    summary="Delete a quota",
    responses=error_responses(404),
)
def delete_quota(quota_id: QuotaId, caller: AdminCaller, session: SessionDep) -> Response:
    quotas.delete_quota(caller, quota_id, session=session)
    return Response(status_code=204)


@router.put("/v1/limit-ranges", response_model=LimitRangeOut, summary="Set a limit range")
def put_limit_range(body: LimitRangeIn, caller: AdminCaller, session: SessionDep) -> LimitRangeOut:
    row = quotas.set_limit_range(
        caller,
        body.scope_kind,
        body.scope,
        body.resource,
        default_request=body.default_request,
        max_value=body.max,
        session=session,
    )
    return LimitRangeOut.model_validate(row)


@router.get("/v1/limit-ranges", response_model=list[LimitRangeOut], summary="Limit ranges")
def get_limit_ranges(caller: Reader, session: ReadSessionDep) -> list[LimitRangeOut]:
    view = _view(caller, session)
    rows = quotas.list_limit_ranges(caller.tenant_id, session=session, view=view)
    return [LimitRangeOut.model_validate(r) for r in rows]


LimitRangeId = Annotated[
    str, Path(description="The limit range's id, as `GET /v1/limit-ranges` lists it.")
]


@router.delete(
    "/v1/limit-ranges/{limit_range_id}",
    status_code=204,
    summary="Delete a limit range",
    responses=error_responses(404),
)
def delete_limit_range(
    limit_range_id: LimitRangeId, caller: AdminCaller, session: SessionDep
) -> Response:
    quotas.delete_limit_range(caller, limit_range_id, session=session)
    return Response(status_code=204)


@router.put("/v1/rate-limits", response_model=RateLimitOut, summary="Set a rate limit")
def put_rate_limit(
    body: RateLimitIn, caller: AdminCaller, runtime: RuntimeDep, session: SessionDep
) -> RateLimitOut:
    row = rate_rules.set_rate_limit(
        caller, body.scope_kind, body.scope, body.rate, body.burst, session=session
    )
    guardrail_gate(runtime).invalidate(caller.tenant_id)
    return RateLimitOut.model_validate(row)


@router.get("/v1/rate-limits", response_model=list[RateLimitOut], summary="Rate limits")
def get_rate_limits(caller: Reader, session: ReadSessionDep) -> list[RateLimitOut]:
    view = _view(caller, session)
    rows = rate_rules.list_rate_limits(caller.tenant_id, session=session, view=view)
    return [RateLimitOut.model_validate(r) for r in rows]


RateLimitId = Annotated[
    str, Path(description="The rate limit's id, as `GET /v1/rate-limits` lists it.")
]


@router.delete(
    "/v1/rate-limits/{rate_limit_id}",
    status_code=204,
    summary="Delete a rate limit",
    responses=error_responses(404),
)
def delete_rate_limit(
    rate_limit_id: RateLimitId, caller: AdminCaller, runtime: RuntimeDep, session: SessionDep
) -> Response:
    rate_rules.delete_rate_limit(caller, rate_limit_id, session=session)
    guardrail_gate(runtime).invalidate(caller.tenant_id)
    return Response(status_code=204)


@router.post(
    "/v1/decisions",
    response_model=DecisionOut,
    summary="May this scope start work needing these resources?",
    responses={
        429: {
            "model": ErrorBody,
            "description": "The scope is throttled or over a rate limit.",
            "headers": {
                "Retry-After": {
                    "description": "Seconds to wait before asking again.",
                    "schema": {"type": "integer"},
                }
            },
        }
    },
)
def post_decision(
    body: DecisionIn, caller: Ingester, runtime: RuntimeDep, session: SessionDep
) -> DecisionOut:
    request = decisions.WorkRequest(body.app, body.team, body.resources, body.essential)
    result = decisions.decide(
        caller,
        request,
        gate=guardrail_gate(runtime),
        session=session,
        policies=policy_cache(runtime),
    )
    return DecisionOut(
        allowed=result.allowed,
        id=result.decision_id,
        reasons=[ReasonOut(kind=r.kind, message=r.message) for r in result.reasons],
        resources=result.resources,
        expires_at=result.expires_at,
        team=result.team,
        app=result.app,
        audit_only=result.audit_only,
    )


@router.get("/v1/decisions/{decision_id}", response_model=ReservationOut, summary="A decision")
def get_decision(decision_id: str, caller: Ingester, session: ReadSessionDep) -> ReservationOut:
    row = quotas.get_reservation(caller, decision_id, session=session)
    return ReservationOut.model_validate(row)


@router.post(
    "/v1/decisions/{decision_id}/release",
    response_model=ReservationOut,
    summary="The work finished: give its quota back (idempotent)",
)
def release_decision(decision_id: str, caller: Ingester, session: SessionDep) -> ReservationOut:
    return ReservationOut.model_validate(quotas.release(caller, decision_id, session=session))


@router.post(
    "/v1/decisions/{decision_id}/renew",
    response_model=ReservationOut,
    summary="The work still runs: it expires runtime from now, keeping its quota",
    description="A renewal asks a budget halt in force and the admission policies again, with "
    "the resources the work holds (a throttle does not stop running work); the quota is held "
    "already. Refused, the work keeps its current `expires_at`.",
    responses={
        **error_responses(),
        409: {
            "model": ErrorBody,
            "description": "Released or expired already, or refused now by a halt or an "
            "admission policy (the message names each reason).",
        },
    },
)
def renew_decision(
    decision_id: Annotated[
        str, Path(description="The decision's id (or 8+ of its first characters).")
    ],
    caller: Ingester,
    runtime: RuntimeDep,
    session: SessionDep,
    body: DecisionRenewIn | None = None,
) -> ReservationOut:
    renewed = decisions.renew_decision(
        caller,
        decision_id,
        body.runtime if body is not None else None,
        gate=guardrail_gate(runtime),
        session=session,
        policies=policy_cache(runtime),
    )
    return ReservationOut.model_validate(renewed)


@router.post(
    "/v1/webhooks",
    status_code=201,
    response_model=WebhookCreatedOut,
    summary="Add a webhook (its signing secret is shown once)",
)
def create_webhook(
    body: WebhookIn, caller: AdminCaller, runtime: RuntimeDep, session: SessionDep
) -> WebhookCreatedOut:
    made = webhooks.create_webhook(
        caller,
        body.url,
        fmt=body.format,
        min_severity=body.min_severity,
        secret=body.secret,
        allow_private=runtime.settings.webhook_allow_private,
        server_key=runtime.server_key,
        session=session,
    )
    return WebhookCreatedOut(**_webhook_fields(made.hook, made.url), secret=made.secret)


def _webhook_fields(hook: Webhook, url: str) -> dict[str, object]:
    return {
        "id": hook.id,
        "url": url,
        "format": hook.format,
        "min_severity": hook.min_severity,
        "created_at": hook.created_at,
    }


# Admin only: a webhook URL (e.g. Slack's) is itself a credential; lists show it up to the
# host, one webhook asked by its id shows it whole.
@router.get("/v1/webhooks", response_model=list[WebhookOut], summary="Webhooks")
def get_webhooks(
    caller: AdminCaller, runtime: RuntimeDep, session: ReadSessionDep
) -> list[WebhookOut]:
    rows = webhooks.list_webhooks(caller.tenant_id, session=session)
    opened = [webhooks.open_webhook(r, server_key=runtime.server_key) for r in rows]
    return [WebhookOut(**_webhook_fields(o.hook, redact_url(o.url))) for o in opened]


@router.get(
    "/v1/webhooks/{webhook_id}",
    response_model=WebhookOut,
    summary="One webhook, with its whole URL (admin)",
)
def get_webhook(
    webhook_id: str, caller: AdminCaller, runtime: RuntimeDep, session: ReadSessionDep
) -> WebhookOut:
    made = webhooks.get_webhook(
        caller.tenant_id, webhook_id, server_key=runtime.server_key, session=session
    )
    return WebhookOut(**_webhook_fields(made.hook, made.url))


@router.delete("/v1/webhooks/{webhook_id}", status_code=204, summary="Delete a webhook")
def delete_webhook(webhook_id: str, caller: AdminCaller, session: SessionDep) -> Response:
    webhooks.delete_webhook(caller.tenant_id, webhook_id, session=session)
    return Response(status_code=204)


@router.get(
    "/v1/webhook-deliveries",
    response_model=list[DeliveryOut],
    summary="Deliveries, newest first (status=dead: the dead-letter list; page with "
    "after=X-Next-After)",
    responses=paged("deliveries"),
)
def get_deliveries(
    caller: AdminCaller,
    session: ReadSessionDep,
    response: Response,
    status: Annotated[
        Annotated[str, one_of(webhooks.DeliveryStatus)] | None,
        Query(description="Only deliveries in this state; dead: the dead-letter list."),
    ] = None,
    webhook_id: Annotated[
        str | None, Query(description="Only deliveries to this webhook (its id).")
    ] = None,
    after: Annotated[
        str | None,
        Query(
            description="Deliveries after this one (the previous page's X-Next-After header).",
            max_length=64,
        ),
    ] = None,
    limit: Limit = 100,
) -> list[DeliveryOut]:
    page = webhooks.list_deliveries(
        caller.tenant_id,
        status=status,
        webhook_id=webhook_id,
        after=after,
        limit=limit,
        session=session,
    )
    set_next_after(response, page.next_after)
    return [DeliveryOut.model_validate(r) for r in page.rows]


@router.get(
    "/v1/webhook-deliveries/{delivery_id}/attempts",
    response_model=list[DeliveryAttemptOut],
    summary="The delivery log of one delivery",
)
def get_delivery_attempts(
    delivery_id: str, caller: AdminCaller, session: ReadSessionDep
) -> list[DeliveryAttemptOut]:
    rows = webhooks.delivery_attempts(caller.tenant_id, delivery_id, session=session)
    return [DeliveryAttemptOut.model_validate(r) for r in rows]


@router.post(
    "/v1/webhook-deliveries/{delivery_id}/retry",
    response_model=DeliveryOut,
    summary="Take a dead delivery off the dead-letter list and send it again",
)
def retry_delivery(delivery_id: str, caller: AdminCaller, session: SessionDep) -> DeliveryOut:
    return DeliveryOut.model_validate(webhooks.retry_delivery(caller, delivery_id, session=session))
