"""The decision API's service: may this scope start work needing these resources?

Order of checks: budget throttle and rate limits (429, the caller should come back later),
then budget halt (refuses non-essential work), limit ranges (per-request maxima), the
tenant's admission policies (Rego, admission.py), quotas (reserved at once when everything
else allows). A denial names every reason found.

Renewing running work (`renew_decision`) asks the halt and the admission policies again, with
the resources the work holds: a halt stops non-essential work at its next renewal, and work
admitted under a policy exception cannot renew past the exception. Its quota is held already,
and a throttle (come back later) does not stop work that runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from quartermaster.domain.timeutil import moment_text, utc_now
from quartermaster.errors import ConflictError, InvalidInputError, PermissionDeniedError
from quartermaster.guardrails.admission import (
    AdmissionVerdict,
    admission_input,
    evaluate_admission,
)
from quartermaster.guardrails.budgets import BudgetAction
from quartermaster.guardrails.common import ScopeKind, record_action
from quartermaster.guardrails.enforcement import ActiveEnforcement, GuardrailGate, scopes_of
from quartermaster.guardrails.models import GuardrailAction, Reservation
from quartermaster.guardrails.quantities import LIMIT_RESOURCES, parse_quantity
from quartermaster.guardrails.quotas import (
    apply_limit_ranges,
    get_reservation,
    renew,
    renewal_seconds,
    reserve,
)
from quartermaster.guardrails.visibility import NOT_SHOWN, Figures, member_view, scope_label
from quartermaster.policy.engine import PolicyCache
from quartermaster.policy.service import input_time
from quartermaster.storage.base import Base
from quartermaster.tenancy.models import Role, Team
from quartermaster.tenancy.service import AuthContext

# The action-log entry of essential work admitted through a halt (admin keys only).
ESSENTIAL_PASS = "essential_pass"
ESSENTIAL_NEEDS_ADMIN = "essential: true passes a halt only when an admin key asks"


@dataclass(frozen=True, slots=True)
class WorkRequest:
    app: str | None = None
    team: str | None = None
    resources: dict[str, str | int | float] = field(default_factory=dict)
    essential: bool = False


@dataclass(frozen=True, slots=True)
class Reason:
    kind: str  # budget | limit_range | policy | quota
    message: str


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    decision_id: str | None
    reasons: list[Reason]
    resources: dict[str, int]
    expires_at: datetime | None
    team: str | None
    app: str | None
    audit_only: list[str] = field(default_factory=list)  # audit-mode policies' would-be denials


def _caller_may_act(caller: AuthContext, request: WorkRequest, *, session: Session) -> WorkRequest:
    """An app key decides for its own app; a team-member for its team's work only."""
    if caller.role is Role.APP:
        if request.app not in (None, caller.app_slug):
            raise PermissionDeniedError(
                f"this app key acts for app {caller.app_slug!r}, not {request.app!r}"
            )
        return WorkRequest(caller.app_slug, request.team, request.resources, request.essential)
    return request


def _check_team_member(caller: AuthContext, team: str | None, *, session: Session) -> None:
    if caller.role is not Role.TEAM_MEMBER:
        return
    own = session.get(Team, caller.team_id) if caller.team_id else None
    if own is None or own.slug != team:
        raise PermissionDeniedError(
            f"a team-member may ask only for its own team's work, not {team or 'tenant-wide'!r}"
        )


def decide(
    caller: AuthContext,
    request: WorkRequest,
    *,
    gate: GuardrailGate,
    session: Session,
    now: datetime | None = None,
    policies: PolicyCache | None = None,
) -> Decision:
    request = _caller_may_act(caller, request, session=session)
    scopes = scopes_of(caller.tenant_id, app=request.app, team=request.team, session=session)
    team = next((s for k, s in scopes if k == ScopeKind.TEAM), None)
    _check_team_member(caller, team, session=session)
    view = member_view(caller, session=session)
    gate.check(caller, scopes, what="decision", session=session, view=view)
    requested: dict[str, int | None] = dict.fromkeys(LIMIT_RESOURCES)
    for name, value in request.resources.items():
        if name not in LIMIT_RESOURCES:
            raise InvalidInputError(
                f"resource {name!r} is not one of: {', '.join(LIMIT_RESOURCES)}",
                field=f"resources.{name}",
            )
        requested[name] = parse_quantity(name, value, field=f"resources.{name}")
    # (kind, what it says): a budget's or a quota's amounts as the caller may read them.
    found: list[tuple[str, Figures]] = []
    halt = gate.enforcement_on(caller.tenant_id, scopes, BudgetAction.HALT, session=session)
    passes_halt = halt is not None and request.essential and caller.role is Role.ADMIN
    if halt is not None and not passes_halt:
        found.append(("budget", _halted(halt, essential_refused=request.essential)))
    effective, over = apply_limit_ranges(caller.tenant_id, team, requested, session=session)
    found.extend(("limit_range", Figures(None, text)) for text in over)
    kind, scope = _log_scope(request.app, team)
    verdict = _policies(
        caller, request, scopes, effective, gate, policies, session=session, now=now
    )
    found.extend(("policy", Figures(None, text)) for text in verdict.deny)
    if not found:
        log: list[Base] = list(verdict.decisions)
        if passes_halt and halt is not None:
            log.append(_essential_pass(caller, halt, kind, scope))
        admission = reserve(
            caller,
            team=team,
            app=request.app,
            effective=effective,
            essential=request.essential,
            session=session,
            now=now,
            log=log,
        )
        if admission.reservation is not None:
            res = admission.reservation
            if verdict.decisions:  # the log's admission entries name the decision they allowed
                for row in verdict.decisions:
                    row.decision_id = res.id
                session.commit()
            return Decision(
                True, res.id, [], effective, res.expires_at, team, request.app, verdict.audit_only
            )
        found.extend(("quota", figures) for figures in admission.reasons)
    _log_denial(
        caller, kind, scope, f"decision:{caller.principal_name}", "", found, verdict, session
    )
    reasons = [Reason(name, figures.for_caller(caller, view)) for name, figures in found]
    return Decision(False, None, reasons, effective, None, team, request.app, verdict.audit_only)


def _log_denial(
    caller: AuthContext,
    kind: str,
    scope: str,
    subject: str,
    prefix: str,
    reasons: list[tuple[str, Figures]],
    verdict: AdmissionVerdict,
    session: Session,
) -> None:
    """Commit a refusal: its action-log entry (`deny`, every reason with its amounts) and
    the policies' decisions."""
    session.add_all(verdict.decisions)
    record_action(
        session,
        tenant_id=caller.tenant_id,
        action="deny",
        scope_kind=kind,
        scope=scope,
        subject=subject,
        reason=prefix + "; ".join(figures.for_log(kind) for _, figures in reasons),
    )
    session.commit()


def _log_scope(app: str | None, team: str | None) -> tuple[str, str]:
    """Where a decision is logged: its app, else its team, else the tenant (a team's work
    under its team, which a team-member reads, not its cost center)."""
    if app is not None:
        return ScopeKind.APP, app
    if team is not None:
        return ScopeKind.TEAM, team
    return ScopeKind.TENANT, ""


def _essential_pass(
    caller: AuthContext, halt: ActiveEnforcement, kind: str, scope: str
) -> GuardrailAction:
    """The action-log entry of an admin's essential work admitted through a halt."""
    return GuardrailAction(
        tenant_id=caller.tenant_id,
        at=utc_now(),
        action=ESSENTIAL_PASS,
        scope_kind=kind,
        scope=scope,
        subject=f"decision:{caller.principal_name}",
        reason=(
            f"essential work admitted through halt {halt.id} of "
            f"{scope_label(halt.scope_kind, halt.scope)} by admin {caller.principal_name!r}"
        ),
    )


def _halted(halt: ActiveEnforcement, *, essential_refused: bool = False) -> Figures:
    """A halt's reason: with the spend that crossed the budget, or only whose budget and
    until when. `essential_refused`: the caller asked as essential without an admin key."""
    tail = f"; {ESSENTIAL_NEEDS_ADMIN}" if essential_refused else ""
    return Figures(
        (halt.scope_kind, halt.scope),
        f"halted: {halt.reason}{tail}",
        f"halted: a budget of {scope_label(halt.scope_kind, halt.scope)} is at its hard limit "
        f"until {moment_text(halt.ends_at)} ({NOT_SHOWN}){tail}",
    )


def _policies(
    caller: AuthContext,
    request: WorkRequest,
    scopes: list[tuple[str, str]],
    effective: dict[str, int],
    gate: GuardrailGate,
    cache: PolicyCache | None,
    *,
    session: Session,
    now: datetime | None,
    renewal: dict[str, str] | None = None,
) -> AdmissionVerdict:
    """The tenant's admission policies on this request (none: nothing to evaluate);
    `renewal` when running work asks to go on (the input's `renewal`)."""
    if cache is None:
        return AdmissionVerdict()
    found = gate.admission_policies(caller.tenant_id, session=session)
    if not found:
        return AdmissionVerdict()
    moment = now or utc_now()
    named = dict(scopes)
    document = admission_input(
        caller,
        app=request.app,
        team=named.get(ScopeKind.TEAM),
        cost_center=named.get(ScopeKind.COST_CENTER),
        resources=effective,
        requested=request.resources,
        essential=request.essential,
        at=moment,
        session=session,
        renewal=renewal,
    )
    subject = request.app or named.get(ScopeKind.TEAM) or "tenant"
    return evaluate_admission(
        caller.tenant_id,
        found,
        document,
        subject=f"decision:{subject}",
        cache=cache,
        at=moment,
        caller=caller,
    )


def renew_decision(
    caller: AuthContext,
    decision_id: str,
    runtime: str | int | None,
    *,
    gate: GuardrailGate,
    session: Session,
    policies: PolicyCache | None = None,
    now: datetime | None = None,
) -> Reservation:
    """Running work goes on for `runtime` more (default: the runtime it was admitted with),
    keeping its quota, unless a halt in force or an admission policy refuses it now: then a
    409 names every reason, the work keeps its current expiry, and the refusal is logged
    (action log `deny`, the policies' decisions)."""
    found = get_reservation(caller, decision_id, session=session)
    # An app's work belongs to the app's team now: the app may have moved since admission.
    scopes = scopes_of(
        caller.tenant_id,
        app=found.app,
        team=None if found.app is not None else found.team,
        session=session,
    )
    team = dict(scopes).get(ScopeKind.TEAM)
    seconds = renewal_seconds(caller, found, runtime, session=session, now=now, team=team)
    refused: list[tuple[str, Figures]] = []
    halt = gate.enforcement_on(caller.tenant_id, scopes, BudgetAction.HALT, session=session)
    essential = found.essential and caller.role is Role.ADMIN
    if halt is not None and not essential:
        refused.append(("budget", _halted(halt, essential_refused=found.essential)))
    held = {
        "cpu": found.cpu,
        "memory": found.memory,
        "gpu": found.gpu,
        "concurrency": found.concurrency,
        "runtime": seconds,
    }
    request = WorkRequest(found.app, team, {"runtime": seconds}, found.essential)
    renewal = {"decision_id": found.id, "admitted_at": input_time(found.created_at)["time"]}
    verdict = _policies(
        caller, request, scopes, held, gate, policies, session=session, now=now, renewal=renewal
    )
    for row in verdict.decisions:
        row.decision_id = found.id
    refused.extend(("policy", Figures(None, text)) for text in verdict.deny)
    if not refused:
        return renew(caller, found.id, seconds, session=session, now=now, log=verdict.decisions)
    kind, scope = _log_scope(found.app, found.team)
    subject = f"decision:{found.id}"
    _log_denial(caller, kind, scope, subject, "renewal refused: ", refused, verdict, session)
    view = member_view(caller, session=session)
    said = "; ".join(f"{name}: {figures.for_caller(caller, view)}" for name, figures in refused)
    raise ConflictError(
        f"decision {found.id} is not renewed ({said}): it ends at "
        f"{moment_text(found.expires_at)} unless released sooner",
        field="decision_id",
    )
