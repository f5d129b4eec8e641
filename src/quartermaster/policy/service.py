"""Policies per tenant (versioned Rego), their evaluation at an admission point with a logged
decision per policy, and exceptions with an expiry.

Upload compiles the source first, so a policy that does not parse is refused with the parser's
message and never stored. Each upload of a name is its next version (the same source in the
same mode as the latest version is that version again: a retry stores nothing). Which versions
of a name are evaluated is `in_force`: the newest that is no draft, and when that one is in
audit mode (a trial) the newest enforced one before it too, so trying a change does not stop
enforcing the rule in force. A policy in audit mode is evaluated and logged like the others,
but its deny and approval results are not enforced."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, not_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from quartermaster.audit.log import append_audit
from quartermaster.domain.timeutil import utc_now
from quartermaster.errors import ConflictError, InvalidInputError, NotFoundError
from quartermaster.guardrails.visibility import member_view
from quartermaster.policy.checks import trial_evaluation
from quartermaster.policy.engine import (
    CompiledPolicy,
    PolicyCache,
    PolicyRuntimeError,
    Verdict,
    input_digest,
)
from quartermaster.policy.models import Policy, PolicyDecision, PolicyException, PolicyMode
from quartermaster.storage.ids import by_id_or_prefix
from quartermaster.storage.paging import Order, position_of, read_page
from quartermaster.tenancy.models import Team
from quartermaster.tenancy.service import AuthContext

NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
ADMISSION_PACKAGE = "qm.admission"  # policies the decision API asks, and only it
MAX_EXCEPTION_DAYS = 366


@dataclass(frozen=True, slots=True)
class InForce:
    """A version evaluated now: an enforced one decides, an audit one (a trial) only logs."""

    version: int
    mode: PolicyMode


@dataclass(frozen=True, slots=True)
class PolicyView:
    name: str
    version: int
    package: str
    mode: PolicyMode
    enabled: bool
    draft: bool
    source_digest: str
    created_by: str
    created_at: datetime
    source: str
    in_force: list[InForce]  # the name's versions evaluated now (empty: the policy is off)


@dataclass(frozen=True, slots=True)
class VersionRow:
    """What deciding which versions are in force reads of a version."""

    version: int
    mode: str
    enabled: bool
    draft: bool
    id: str = ""


def in_force(versions: Sequence[VersionRow]) -> list[VersionRow]:
    """The versions of one policy evaluated now, oldest first. Pure.

    Drafts (uploaded disabled) wait and are skipped. The newest other version decides: when
    it is disabled (`qm policy disable`) nothing is in force; when it is enforced it alone;
    when it is in audit mode (a trial) it, beside the newest enforced version before it
    (unless the policy was disabled in between), which goes on deciding. Older audit versions
    are trials superseded by the newer one."""
    chosen: list[VersionRow] = []
    for row in sorted(versions, key=lambda v: v.version, reverse=True):
        if row.draft:
            continue
        if not row.enabled:
            break
        if row.mode == PolicyMode.ENFORCE.value:
            chosen.append(row)
            break
        if not chosen:
            chosen.append(row)
    return sorted(chosen, key=lambda v: v.version)


def version_state(row: VersionRow, versions: Sequence[VersionRow]) -> str:
    """How a version of a policy (`versions`: all of them) stands: in_force, draft (the
    newest version, waiting: `qm policy enable` promotes it), off (the newest version that is
    no draft, and it disabled the policy) or superseded. Pure."""
    if row in in_force(versions):
        return "in_force"
    if row.draft:
        return "draft" if row.version == max(v.version for v in versions) else "superseded"
    newest_decider = max(v.version for v in versions if not v.draft)
    return "off" if not row.enabled and row.version == newest_decider else "superseded"


@dataclass(frozen=True, slots=True)
class DecisionView:
    id: str
    point: str
    subject: str
    policy_name: str
    policy_version: int
    mode: str
    input_digest: str
    result: str
    reasons: list[str]
    enforced: bool
    decided_at: datetime
    caller_id: str | None
    caller_name: str | None
    decision_id: str | None


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Every policy's decision on one input, and what is enforced of them."""

    decisions: list[DecisionView]
    deny: list[str]  # enforced denials
    require_approval: list[str]  # enforced approval requirements
    audit_only: list[str]  # what audit-mode policies would have done
    input_digest: str
    # The enforced messages, each after its policy's name ("owner: …"): what a builder reads
    # in a version's state_reason. A failure already names its policy ("policy x v1 failed").
    named_deny: list[str] = field(default_factory=list)
    named_approval: list[str] = field(default_factory=list)

    @property
    def result(self) -> str:
        return "deny" if self.deny else "require_approval" if self.require_approval else "allow"


@dataclass(frozen=True, slots=True)
class ExceptionView:
    id: str
    key: str
    team: str | None
    app_id: str | None
    reason: str
    granted_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None
    active: bool


def _version_rows(
    tenant_id: str, name: str | None, session: Session
) -> dict[str, list[VersionRow]]:
    """Every version of the tenant's policies (or of one), by name: light columns only."""
    query = select(
        Policy.name, Policy.version, Policy.mode, Policy.enabled, Policy.draft, Policy.id
    ).where(Policy.tenant_id == tenant_id)
    if name is not None:
        query = query.where(Policy.name == name)
    found: dict[str, list[VersionRow]] = {}
    for row_name, version, mode, enabled, draft, row_id in session.execute(query):
        found.setdefault(row_name, []).append(VersionRow(version, mode, enabled, draft, row_id))
    return found


def _in_force_of(tenant_id: str, name: str, session: Session) -> list[InForce]:
    rows = _version_rows(tenant_id, name, session).get(name, [])
    return [InForce(v.version, PolicyMode(v.mode)) for v in in_force(rows)]


def _policy_view(row: Policy, chosen: list[InForce]) -> PolicyView:
    return PolicyView(
        name=row.name,
        version=row.version,
        package=row.package,
        mode=PolicyMode(row.mode),
        enabled=row.enabled,
        draft=row.draft,
        source_digest=row.source_digest,
        created_by=row.created_by,
        created_at=row.created_at,
        source=row.source,
        in_force=chosen,
    )


def upload_policy(
    caller: AuthContext,
    name: str,
    source: str,
    *,
    mode: PolicyMode = PolicyMode.ENFORCE,
    enabled: bool = True,
    session: Session,
) -> PolicyView:
    if not NAME.match(name):
        raise InvalidInputError(
            f"policy name {name!r} must be 1-64 characters of a-z, 0-9 and '-'", field="name"
        )
    return upload_version(caller, name, source, mode=mode, enabled=enabled, session=session).view


@dataclass(frozen=True, slots=True)
class Uploaded:
    view: PolicyView
    created: bool  # False: the latest version was this source in this mode already (a retry)


def upload_version(
    caller: AuthContext,
    name: str,
    source: str,
    *,
    mode: PolicyMode = PolicyMode.ENFORCE,
    enabled: bool = True,
    session: Session,
    cache: PolicyCache | None = None,
) -> Uploaded:
    """Store `source` as the policy's next version: enabled it is in force at once (an audit
    one as a trial beside the enforced version, see `in_force`), disabled it is a draft that
    waits for `qm policy enable`. The same source, mode and enabled as the latest version is
    that version, answered again (no new version)."""
    if not NAME.match(name):
        raise InvalidInputError(
            f"policy name {name!r} must be 1-64 characters of a-z, 0-9 and '-'", field="name"
        )
    compiled = CompiledPolicy(source, name=name)  # refuses a bad policy with the parser's words
    if cache is not None:  # the router's: in the sandbox, within the evaluation budget
        # What fails on no input fails on any; it waits for a worker of the tenant's share.
        trial_evaluation(source, name=name, tenant_id=caller.tenant_id, cache=cache)
    latest = _latest_row(caller.tenant_id, name, session)
    row = Policy(
        tenant_id=caller.tenant_id,
        name=name,
        version=(latest.version if latest else 0) + 1,
        package=compiled.package,
        source=source,
        source_digest=hashlib.sha256(source.encode()).hexdigest(),
        mode=mode.value,
        enabled=enabled,
        draft=not enabled,
        created_by=caller.principal_name,
    )
    if latest is not None and _same_upload(latest, row):
        return Uploaded(_policy_view(latest, _in_force_of(caller.tenant_id, name, session)), False)
    return _add_version(row, session)


def _same_upload(stored: Policy, new: Policy) -> bool:
    return (stored.source_digest, stored.mode, stored.enabled, stored.draft) == (
        new.source_digest,
        new.mode,
        new.enabled,
        new.draft,
    )


def _latest_row(tenant_id: str, name: str, session: Session) -> Policy | None:
    return session.scalar(
        select(Policy)
        .where(Policy.tenant_id == tenant_id, Policy.name == name)
        .order_by(Policy.version.desc())
        .limit(1)
    )


def _add_version(row: Policy, session: Session) -> Uploaded:
    """Store a policy's next version; two writers of the same name and version: one wins (the
    other's answer is the winner's version when both stored the same, else a conflict)."""
    tenant_id, name, version = row.tenant_id, row.name, row.version
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        winner = session.scalar(
            select(Policy).where(
                Policy.tenant_id == tenant_id, Policy.name == name, Policy.version == version
            )
        )
        if winner is not None and _same_upload(winner, row):
            return Uploaded(_policy_view(winner, _in_force_of(tenant_id, name, session)), False)
        raise ConflictError(f"policy {name!r} changed concurrently; retry", field="name") from None
    return Uploaded(_policy_view(row, _in_force_of(tenant_id, name, session)), True)


def set_policy_enabled(
    caller: AuthContext, name: str, *, enabled: bool, session: Session
) -> PolicyView:
    """Disable a policy (none of its versions is evaluated anywhere) or enable it: a version
    as it is becomes the next version with `enabled` set, so the history says who turned it
    off or on and when, and a decision's version still names the source it ran.

    Disabling copies the version that decides (the enforced one in force, else the audit
    one). Enabling promotes the newest version when it is a draft (an enforced draft then
    decides, an audit one runs as a trial beside the enforced version), else copies the
    version that disabled the policy. Read and written in one transaction: an upload in
    between makes this a conflict instead of being undone. A policy already so (and without
    a draft to promote) is left as it is (no new version)."""
    latest = _latest_row(caller.tenant_id, name, session)
    if latest is None:
        raise NotFoundError(f"policy {name!r} not found", field="name")
    rows = _version_rows(caller.tenant_id, name, session)[name]
    chosen = in_force(rows)
    if enabled and latest.draft:
        source = latest
    elif enabled == bool(chosen):  # already on (nothing to promote), or already off
        return _policy_view(latest, [InForce(v.version, PolicyMode(v.mode)) for v in chosen])
    elif enabled:  # the newest non-draft version turned the policy off: that one again
        off = max((v for v in rows if not v.draft), key=lambda v: v.version)
        source = session.get_one(Policy, off.id)
    else:
        decider = next(
            (v for v in reversed(chosen) if v.mode == PolicyMode.ENFORCE.value), chosen[-1]
        )
        source = session.get_one(Policy, decider.id)
    row = Policy(
        tenant_id=caller.tenant_id,
        name=name,
        version=latest.version + 1,
        package=source.package,
        source=source.source,
        source_digest=source.source_digest,
        mode=source.mode,
        enabled=enabled,
        draft=False,
        created_by=caller.principal_name,
    )
    return _add_version(row, session).view


def in_package(package: str) -> Any:
    """A policy whose Rego package is `package` or below it."""
    return or_(Policy.package == package, Policy.package.startswith(f"{package}."))


def _latest_versions(tenant_id: str) -> Any:
    latest = (
        select(Policy.name, func.max(Policy.version).label("version"))
        .where(Policy.tenant_id == tenant_id)
        .group_by(Policy.name)
        .subquery()
    )
    return (
        select(Policy)
        .join(latest, (Policy.name == latest.c.name) & (Policy.version == latest.c.version))
        .where(Policy.tenant_id == tenant_id)
        .order_by(Policy.name)
    )


def in_force_query(tenant_id: str, *, session: Session) -> Select[Any]:
    """The tenant's versions in force (`in_force`), by name then version: one query for the
    versions' light columns, and this one for the chosen rows."""
    ids = [
        v.id for rows in _version_rows(tenant_id, None, session).values() for v in in_force(rows)
    ]
    return (
        select(Policy)
        .where(Policy.tenant_id == tenant_id, Policy.id.in_(ids))
        .order_by(Policy.name, Policy.version)
    )


def list_policies(caller: AuthContext, *, session: Session) -> list[PolicyView]:
    """The latest version of each policy, with the versions in force."""
    versions = _version_rows(caller.tenant_id, None, session)
    return [
        _policy_view(
            row, [InForce(v.version, PolicyMode(v.mode)) for v in in_force(versions[row.name])]
        )
        for row in session.scalars(_latest_versions(caller.tenant_id))
    ]


@dataclass(frozen=True, slots=True)
class VersionSummary:
    version: int
    package: str
    mode: PolicyMode
    enabled: bool
    draft: bool
    state: str  # in_force | draft | off | superseded (version_state)
    source_digest: str
    created_by: str
    created_at: datetime


def list_versions(caller: AuthContext, name: str, *, session: Session) -> list[VersionSummary]:
    """A policy's history, newest first, with how each version stands now."""
    rows = list(
        session.scalars(
            select(Policy)
            .where(Policy.tenant_id == caller.tenant_id, Policy.name == name)
            .order_by(Policy.version.desc())
        )
    )
    if not rows:
        raise NotFoundError(f"policy {name!r} not found", field="name")
    light = [VersionRow(r.version, r.mode, r.enabled, r.draft, r.id) for r in rows]
    return [
        VersionSummary(
            version=r.version,
            package=r.package,
            mode=PolicyMode(r.mode),
            enabled=r.enabled,
            draft=r.draft,
            state=version_state(v, light),
            source_digest=r.source_digest,
            created_by=r.created_by,
            created_at=r.created_at,
        )
        for r, v in zip(rows, light, strict=True)
    ]


def rollback_policy(
    caller: AuthContext,
    name: str,
    *,
    to: int,
    session: Session,
    cache: PolicyCache | None = None,
) -> Uploaded:
    """Version `to`'s source and mode uploaded again as the next version, enabled (the
    latest version already so: that one, no new version). With `cache` (the router's), the
    source goes through the same trial evaluation as an upload: a stored version that fails
    on an empty input (it was stored before that check, or a built-in changed) is refused."""
    old = get_policy(caller, name, version=to, session=session)
    return upload_version(
        caller, name, old.source, mode=old.mode, enabled=True, session=session, cache=cache
    )


def get_policy(
    caller: AuthContext, name: str, *, version: int | None = None, session: Session
) -> PolicyView:
    query = select(Policy).where(Policy.tenant_id == caller.tenant_id, Policy.name == name)
    query = (
        query.where(Policy.version == version)
        if version is not None
        else query.order_by(Policy.version.desc()).limit(1)
    )
    row = session.scalar(query)
    if row is None:
        latest = _latest_version(caller.tenant_id, name, session) if version is not None else None
        if latest is not None:
            raise NotFoundError(
                f"policy {name!r} has no version {version} (its latest is {latest})",
                field="version",
            )
        raise NotFoundError(f"policy {name!r} not found", field="name")
    return _policy_view(row, _in_force_of(caller.tenant_id, name, session))


def _latest_version(tenant_id: str, name: str, session: Session) -> int | None:
    return session.scalar(
        select(func.max(Policy.version)).where(Policy.tenant_id == tenant_id, Policy.name == name)
    )


def try_policy(source: str, document: Any, *, tenant_id: str, cache: PolicyCache) -> Verdict:
    """Evaluate a source against an input without storing anything (`qm policy test`), within
    the evaluation budget of `cache`'s sandbox and `tenant_id`'s share of its workers. A policy
    that does not compile, fails on the input or goes over the budget is a 422 saying so."""
    compiled = CompiledPolicy(source)  # refuses a bad policy with the parser's words
    try:
        if cache.sandbox is None:
            return compiled.evaluate(document)
        key = "test/" + hashlib.sha256(source.encode()).hexdigest()
        return cache.sandbox.evaluate(key, "policy", source, document, tenant=tenant_id)
    except PolicyRuntimeError as exc:
        raise InvalidInputError(f"policy failed on this input: {exc}", field="input") from None


def publish_policies(tenant_id: str, *, session: Session) -> list[Policy]:
    """The versions in force of every policy asked at publish, by name. Admission policies
    (qm.admission…) speak to the decision API only (guardrails/admission.py)."""
    query = in_force_query(tenant_id, session=session).where(not_(in_package(ADMISSION_PACKAGE)))
    return list(session.scalars(query))


def evaluate(
    tenant_id: str,
    document: dict[str, Any],
    *,
    point: str,
    subject: str,
    app_version_id: str | None,
    cache: PolicyCache,
    session: Session,
    record: bool = True,
    policies: Sequence[Policy] | None = None,
    at: datetime | None = None,
    caller: AuthContext | None = None,
) -> Evaluation:
    """Run every enabled policy's latest version (or `policies`, as `publish_policies` read
    them once for many inputs); log one decision per policy (in the caller's transaction when
    `record`). A policy that fails at runtime denies (fail closed) unless it is in audit mode.
    `at` is the decisions' `decided_at`: the moment the input's `time` says; `caller` who
    caused them."""
    digest = input_digest(document)
    deny: list[str] = []
    approval: list[str] = []
    audit_only: list[str] = []
    views: list[DecisionView] = []
    named_deny: list[str] = []
    named_approval: list[str] = []
    now = at or utc_now()
    if policies is None:
        policies = publish_policies(tenant_id, session=session)
    # Every policy on the input at once: set once for all of them (in the sandbox, one
    # request to a worker, within the evaluation budget: policy/sandbox.py).
    outcomes = cache.evaluate_many(
        tenant_id, [(p.name, p.version, p.source) for p in policies], document
    )
    for policy, verdict in zip(policies, outcomes, strict=True):
        enforced = policy.mode == PolicyMode.ENFORCE.value
        if isinstance(verdict, Verdict):
            result = verdict.result
            reasons = [*verdict.quarantine, *verdict.deny, *verdict.require_approval]
            reasons += [f"warning: {w}" for w in verdict.warn]
            policy_deny, policy_approval = verdict.deny, verdict.require_approval
        else:
            result = "error"
            reasons = [f"policy {policy.name} v{policy.version} failed: {verdict}"]
            policy_deny, policy_approval = reasons, []
        label = "" if result == "error" else f"{policy.name}: "
        if enforced:
            deny += policy_deny
            approval += policy_approval
            named_deny += [label + m for m in policy_deny]
            named_approval += [label + m for m in policy_approval]
        else:
            audit_only += [f"[audit] {label}{r}" for r in (*policy_deny, *policy_approval)]
        row = PolicyDecision(
            tenant_id=tenant_id,
            point=point,
            subject=subject,
            app_version_id=app_version_id,
            policy_name=policy.name,
            policy_version=policy.version,
            mode=policy.mode,
            input_digest=digest,
            result=result,
            reasons=json.dumps(reasons),
            enforced=enforced,
            decided_at=now,
            caller_id=caller.principal_id if caller else None,
            caller_name=caller.principal_name if caller else None,
        )
        if record:
            session.add(row)
            session.flush()
        views.append(_decision_view(row))
    return Evaluation(views, deny, approval, audit_only, digest, named_deny, named_approval)


def input_time(at: datetime) -> dict[str, Any]:
    """`time` (RFC 3339, UTC, microseconds) and `time_ns` (nanoseconds since the epoch, for
    time.weekday / time.clock / time.date) of the moment a decision is made: every point's
    input has them, and the decision is logged with that moment as its `decided_at`, so the
    input stays reproducible (policies may not read the clock). Pure."""
    moment = at.astimezone(UTC)
    micros = (moment - EPOCH) // timedelta(microseconds=1)
    return {"time": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "time_ns": micros * 1000}


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def caller_document(caller: AuthContext, *, session: Session) -> dict[str, Any]:
    """Who asks, as a policy sees it: `principal` (name), `principal_id`, `role` and `team`
    (the caller's team slug; left out for a key without a team, so `not input.caller.team`
    means 'none')."""
    team = session.get(Team, caller.team_id) if caller.team_id else None
    document = {
        "principal": caller.principal_name,
        "principal_id": caller.principal_id,
        "role": caller.role.value,
    }
    return document if team is None else {**document, "team": team.slug}


def _decision_view(row: PolicyDecision) -> DecisionView:
    return DecisionView(
        id=row.id or "",
        point=row.point,
        subject=row.subject,
        policy_name=row.policy_name,
        policy_version=row.policy_version,
        mode=row.mode,
        input_digest=row.input_digest,
        result=row.result,
        reasons=json.loads(row.reasons),
        enforced=row.enforced,
        decided_at=row.decided_at,
        caller_id=row.caller_id,
        caller_name=row.caller_name,
        decision_id=row.decision_id,
    )


# What a decision can come to (a verdict's result, or a policy that failed).
DECISION_RESULTS = ("allow", "deny", "require_approval", "quarantine", "error")
# Where policies are asked.
DECISION_POINTS = ("publish", "admission")


@dataclass(frozen=True)
class DecisionPage:
    """A page of the decision log, newest first, and the cursor of the next (None: the last)."""

    decisions: list[DecisionView]
    next_after: str | None


def list_decisions(
    caller: AuthContext,
    *,
    subject: str | None = None,
    app: str | None = None,
    result: str | None = None,
    policy: str | None = None,
    point: str | None = None,
    after: str | None = None,
    limit: int = 100,
    session: Session,
) -> DecisionPage:
    """Newest first, from after the decision `after` (a previous page's `next_after`); only
    about `subject`, about an app's versions (`app`), with one `result`, by one `policy`
    (its name) or at one admission `point`."""
    if result is not None and result not in DECISION_RESULTS:
        raise InvalidInputError(
            f"result {result!r} is not one of: {', '.join(DECISION_RESULTS)}", field="result"
        )
    if point is not None and point not in DECISION_POINTS:
        raise InvalidInputError(
            f"point {point!r} is not one of: {', '.join(DECISION_POINTS)}", field="point"
        )
    query = select(PolicyDecision).where(PolicyDecision.tenant_id == caller.tenant_id)
    if subject is not None:
        query = query.where(PolicyDecision.subject == subject)
    if app is not None:  # a publish decision's subject is app_id@version
        query = query.where(PolicyDecision.subject.startswith(f"{app}@", autoescape=True))
    if result is not None:
        query = query.where(PolicyDecision.result == result)
    if policy is not None:
        query = query.where(PolicyDecision.policy_name == policy)
    if point is not None:
        query = query.where(PolicyDecision.point == point)
    order: Order = ((PolicyDecision.decided_at, True), (PolicyDecision.id, False))
    position = position_of(
        after,
        order,
        PolicyDecision.tenant_id == caller.tenant_id,
        PolicyDecision.id == after,
        noun="policy decisions",
        session=session,
    )
    page = read_page(
        query,
        order=order,
        position=position,
        limit=max(1, min(limit, 1000)),
        cursor=lambda row: row.id,
        session=session,
    )
    return DecisionPage([_decision_view(row) for row in page.rows], page.next_after)


# --- exceptions ------------------------------------------------------------------------------


def _exception_view(row: PolicyException, now: datetime) -> ExceptionView:
    return ExceptionView(
        id=row.id,
        key=row.key,
        team=row.team,
        app_id=row.app_id,
        reason=row.reason,
        granted_by=row.granted_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        revoked_by=row.revoked_by,
        active=row.revoked_at is None and row.expires_at > now,
    )


def grant_exception(
    caller: AuthContext,
    key: str,
    *,
    reason: str,
    expires_at: datetime,
    team: str | None = None,
    app_id: str | None = None,
    session: Session,
) -> ExceptionView:
    if not NAME.match(key):
        raise InvalidInputError(f"exception key {key!r} must be a slug, e.g. gpu", field="key")
    if (team is None) == (app_id is None):
        raise InvalidInputError("an exception is for exactly one of team or app_id", field="team")
    if not reason.strip():
        raise InvalidInputError("an exception needs a reason", field="reason")
    now = utc_now()
    if expires_at <= now:
        raise InvalidInputError("expires_at must be in the future", field="expires_at")
    if expires_at > now + timedelta(days=MAX_EXCEPTION_DAYS):
        raise InvalidInputError(
            f"an exception lasts at most {MAX_EXCEPTION_DAYS} days", field="expires_at"
        )
    row = PolicyException(
        tenant_id=caller.tenant_id,
        key=key,
        team=team,
        app_id=app_id,
        reason=reason.strip(),
        granted_by=caller.principal_name,
        created_at=now,
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    _audit_exception(caller, "grant-exception", row, session=session)
    session.commit()
    return _exception_view(row, now)


def _audit_exception(
    caller: AuthContext, action: str, row: PolicyException, *, session: Session
) -> None:
    """A grant or revocation in the tenant's audit chain, flushed with the change: beside
    principals and keys, the other changes of who may do what."""
    append_audit(
        caller.tenant_id,
        action=action,
        outcome="ok",
        actor=f"principal:{caller.principal_name}",
        detail={
            "exception_id": row.id,
            "key": row.key,
            "team": row.team,
            "app_id": row.app_id,
            "expires_at": row.expires_at.isoformat(),
            "reason": row.reason,
        },
        session=session,
    )


def _visible_exceptions(caller: AuthContext, *, session: Session) -> Select[Any]:
    """The caller's tenant's exceptions, and for a team-member only those for its own team or
    one of its team's apps (admin and finance see all; a team-member without a team: 403)."""
    query = select(PolicyException).where(PolicyException.tenant_id == caller.tenant_id)
    view = member_view(caller, session=session)
    if view is not None:
        mine = [PolicyException.team == view.team]
        if view.apps:
            mine.append(PolicyException.app_id.in_(sorted(view.apps)))
        query = query.where(or_(*mine))
    return query


def list_exceptions(
    caller: AuthContext, *, include_lapsed: bool = False, session: Session
) -> list[ExceptionView]:
    """Active exceptions (or all, `include_lapsed`) the caller may see, soonest to lapse first."""
    now = utc_now()
    query = _visible_exceptions(caller, session=session)
    if not include_lapsed:
        query = query.where(PolicyException.expires_at > now, PolicyException.revoked_at.is_(None))
    rows = session.scalars(query.order_by(PolicyException.expires_at))
    return [_exception_view(row, now) for row in rows]


def get_exception(caller: AuthContext, exception_id: str, *, session: Session) -> ExceptionView:
    """One exception by id (or a unique prefix of 8+); another team's is not found for a
    team-member, as another tenant's is for anyone."""
    row = by_id_or_prefix(
        _visible_exceptions(caller, session=session),
        PolicyException.id,
        exception_id,
        what="exception",
        field="exception_id",
        session=session,
    )
    if row is None:
        raise NotFoundError(f"exception {exception_id!r} not found", field="exception_id")
    return _exception_view(row, utc_now())


def revoke_exception(caller: AuthContext, exception_id: str, *, session: Session) -> ExceptionView:
    row = by_id_or_prefix(
        select(PolicyException).where(PolicyException.tenant_id == caller.tenant_id),
        PolicyException.id,
        exception_id,
        what="exception",
        field="exception_id",
        session=session,
    )
    if row is None:
        raise NotFoundError(f"exception {exception_id!r} not found", field="exception_id")
    if row.revoked_at is None:
        row.revoked_at = utc_now()
        row.revoked_by = caller.principal_name
        _audit_exception(caller, "revoke-exception", row, session=session)
        session.commit()
    return _exception_view(row, utc_now())


def active_exception_keys(
    tenant_id: str, *, team: str, app_id: str, at: datetime, session: Session
) -> list[str]:
    """Keys waived for this app or its team at `at`: lapsed or revoked ones are simply not
    here, so an exception ends at its expiry without any job having to run."""
    rows = session.scalars(
        select(PolicyException.key)
        .where(
            PolicyException.tenant_id == tenant_id,
            PolicyException.expires_at > at,
            PolicyException.revoked_at.is_(None),
            or_(PolicyException.team == team, PolicyException.app_id == app_id),
        )
        .distinct()
    )
    return sorted(rows)


@dataclass(frozen=True, slots=True)
class ExceptionKeys:
    """The keys in force at one moment, by team slug and by app id, read in one query for
    many apps (`active_exception_keys` is one app's)."""

    by_team: dict[str, set[str]]
    by_app: dict[str, set[str]]

    def keys(self, *, team: str, app_id: str) -> list[str]:
        """What `active_exception_keys` answers for this app and its team. Pure."""
        return sorted(self.by_team.get(team, set()) | self.by_app.get(app_id, set()))


def exception_keys_at(tenant_id: str, *, at: datetime, session: Session) -> ExceptionKeys:
    """Every key waived at `at` in the tenant, by team and by app (exceptions in force are
    few: a tenant's are read at once rather than by a list of thousands of app ids)."""
    found = ExceptionKeys({}, {})
    rows = session.execute(
        select(PolicyException.key, PolicyException.team, PolicyException.app_id).where(
            PolicyException.tenant_id == tenant_id,
            PolicyException.expires_at > at,
            PolicyException.revoked_at.is_(None),
        )
    )
    for key, team, app_id in rows:
        if team is not None:
            found.by_team.setdefault(team, set()).add(key)
        if app_id is not None:
            found.by_app.setdefault(app_id, set()).add(key)
    return found
