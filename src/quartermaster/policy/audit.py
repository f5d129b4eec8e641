"""The policy audit: every app's current published version evaluated against the publish
policies enabled now, as OPA Gatekeeper's audit evaluates existing resources against the
current constraints. Nothing is changed: no version changes state, no decision is logged.

An app's input is the one publishing built for that version (catalog/versions.py
`policy_input`): its stored manifest, its stored check results, the exceptions in force now
for the app or its team, and `approval.approved` true when a reviewer approved the version.
So a published version that a new or changed policy would now reject is listed as `deny`
(or `quarantine`, `require_approval`), one a policy fails on as `error` with the reason; a
failure on one app is that app's result, and the audit goes on with the next.

The audit pages over the apps in app-id order (`after`, `limit`): one request evaluates at
most `limit` apps, so a tenant of thousands is audited in as many requests as it takes, each
a bounded piece of work in the same budgeted worker processes as a publish (policy/sandbox.py).
The policies are read once per page; each page names them, so a client can see a change
between pages."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from quartermaster.catalog.checks import CheckResult
from quartermaster.catalog.manifest import Manifest, version_key
from quartermaster.catalog.models import App
from quartermaster.catalog.publish_models import AppVersion, VersionState
from quartermaster.catalog.versions import policy_input
from quartermaster.domain.timeutil import utc_now
from quartermaster.errors import QMError
from quartermaster.policy import service
from quartermaster.policy.engine import PolicyCache
from quartermaster.policy.models import Approval, ApprovalStatus, Policy
from quartermaster.tenancy.models import Team
from quartermaster.tenancy.service import AuthContext

AUDIT_RESULTS = ("allow", "deny", "require_approval", "quarantine", "error")
DEFAULT_PAGE = 100
MAX_PAGE = 1000
# Apps evaluated at once, each in a worker process: half of the sandbox's workers
# (policy/sandbox.py MAX_WORKERS), so publishes and `qm policy test` still find one.
CONCURRENCY = 2
_WARNING = "warning: "


@dataclass(frozen=True, slots=True)
class Finding:
    """One policy's verdict on one app, when it is not a plain allow."""

    policy: str
    version: int
    mode: str
    enforced: bool
    result: str
    messages: list[str]


@dataclass(frozen=True, slots=True)
class AppAudit:
    app_id: str
    team: str
    version: str
    result: str  # what a publish of this version would come to now (AUDIT_RESULTS)
    reasons: list[str]  # the enforced messages that make the result (empty on allow)
    excepted: bool  # an exception is in force for the app or its team
    exceptions: list[str]  # their keys, as the policies saw them in input.exceptions
    findings: list[Finding]  # every policy whose verdict was not a plain allow


@dataclass(slots=True)
class AuditTotals:
    apps: int = 0
    allow: int = 0
    deny: int = 0
    require_approval: int = 0
    quarantine: int = 0
    error: int = 0
    excepted: int = 0  # apps with an exception in force, whatever their result
    audit_only: int = 0  # apps an audit-mode policy objects to (never enforced)

    @property
    def violations(self) -> int:
        """Apps a publish would not let through as they are: deny, quarantine, approval."""
        return self.deny + self.require_approval + self.quarantine

    def add(self, app: AppAudit) -> None:
        self.apps += 1
        setattr(self, app.result, getattr(self, app.result) + 1)
        self.excepted += app.excepted
        self.audit_only += any(not f.enforced and f.result != "allow" for f in app.findings)


@dataclass(frozen=True, slots=True)
class AuditPage:
    policies: list[str]  # `name@version (mode)` of every policy evaluated, by name
    audited_at: datetime
    published_apps: int  # apps with a published version in the tenant (every page's total)
    apps: list[AppAudit]
    totals: AuditTotals = field(default_factory=AuditTotals)
    next_after: str | None = None  # pass as `after` for the next page; None on the last


def audit_apps(
    caller: AuthContext,
    *,
    after: str | None = None,
    limit: int = DEFAULT_PAGE,
    cache: PolicyCache,
    session: Session,
) -> AuditPage:
    """One page of the audit: up to `limit` apps with a published version, in app-id order
    after the app `after`, each evaluated against the enabled publish policies."""
    tenant_id = caller.tenant_id
    limit = max(1, min(limit, MAX_PAGE))
    now = utc_now()
    policies = service.publish_policies(tenant_id, session=session)
    published = select(AppVersion.app_pk).where(
        AppVersion.tenant_id == tenant_id, AppVersion.state == VersionState.PUBLISHED.value
    )
    apps_query = (
        select(App, Team.slug)
        .join(Team, Team.id == App.team_id)
        .where(App.tenant_id == tenant_id, App.id.in_(published))
    )
    total = session.scalar(select(func.count()).select_from(apps_query.subquery())) or 0
    if after is not None:
        apps_query = apps_query.where(App.app_id > after)
    rows = session.execute(apps_query.order_by(App.app_id).limit(limit + 1)).all()
    more = len(rows) > limit
    last = rows[limit - 1][0].app_id if more else None
    versions = _current_versions([app.id for app, _ in rows[:limit]], session)
    # An app whose published version was deprecated or quarantined since the query above (a
    # writer in between) has none to audit any more.
    audited_rows = [(app, team) for app, team in rows[:limit] if app.id in versions]
    approved = _approved(tenant_id, [v.id for v in versions.values()], session)
    keys = service.exception_keys_at(tenant_id, at=now, session=session)
    who = service.caller_document(caller, session=session)
    page = AuditPage(
        policies=[f"{p.name}@{p.version} ({p.mode})" for p in policies],
        audited_at=now,
        published_apps=total,
        apps=[],
        next_after=last,
    )

    def audit_one(row: tuple[App, str]) -> AppAudit:
        app, team = row
        version = versions[app.id]
        return _audit_one(
            tenant_id,
            app.app_id,
            team,
            version,
            exceptions=keys.keys(team=team, app_id=app.app_id),
            approved=version.id in approved,
            at=now,
            caller=who,
            policies=policies,
            cache=cache,
            session=session,  # not used: the policies are given and nothing is recorded
        )

    # A few apps at once, each in a worker of its own: the server prepares the next input
    # and reads the last answer while a worker evaluates.
    with ThreadPoolExecutor(max_workers=CONCURRENCY, thread_name_prefix="policy-audit") as pool:
        for audited in pool.map(audit_one, audited_rows):
            page.apps.append(audited)
            page.totals.add(audited)
    return page


def _current_versions(app_pks: list[str], session: Session) -> dict[str, AppVersion]:
    """Each app's current published version: the highest, should several be published."""
    current: dict[str, AppVersion] = {}
    if not app_pks:
        return current
    for row in session.scalars(
        select(AppVersion).where(
            AppVersion.app_pk.in_(app_pks), AppVersion.state == VersionState.PUBLISHED.value
        )
    ):
        known = current.get(row.app_pk)
        if known is None or version_key(row.version) > version_key(known.version):
            current[row.app_pk] = row
    return current


def _approved(tenant_id: str, version_ids: list[str], session: Session) -> set[str]:
    """The versions among these that a reviewer approved (their input said approved)."""
    if not version_ids:
        return set()
    return set(
        session.scalars(
            select(Approval.app_version_id).where(
                Approval.tenant_id == tenant_id,
                Approval.app_version_id.in_(version_ids),
                Approval.status == ApprovalStatus.APPROVED.value,
            )
        )
    )


def _audit_one(
    tenant_id: str,
    app_id: str,
    team: str,
    version: AppVersion,
    *,
    exceptions: list[str],
    approved: bool,
    at: datetime,
    caller: dict[str, Any],
    policies: list[Policy],
    cache: PolicyCache,
    session: Session,
) -> AppAudit:
    def audited(result: str, reasons: list[str], findings: list[Finding]) -> AppAudit:
        return AppAudit(
            app_id=app_id,
            team=team,
            version=version.version,
            result=result,
            reasons=reasons,
            excepted=bool(exceptions),
            exceptions=exceptions,
            findings=findings,
        )

    try:
        document = version_input(
            version, exceptions=exceptions, approved=approved, at=at, caller=caller
        )
    except (ValidationError, QMError, ValueError, TypeError, KeyError) as exc:
        reason = f"the stored version could not be read as a policy input: {_short(exc)}"
        return audited("error", [reason], [])
    evaluation = service.evaluate(
        tenant_id,
        document,
        point="publish",
        subject=f"{app_id}@{version.version}",
        app_version_id=version.id,
        cache=cache,
        session=session,
        record=False,
        policies=policies,
    )
    findings = [
        Finding(d.policy_name, d.policy_version, d.mode, d.enforced, d.result, d.reasons)
        for d in evaluation.decisions
        if d.result != "allow" or d.reasons
    ]
    enforced = [f for f in findings if f.enforced]
    for result in ("error", "quarantine", "deny", "require_approval"):
        if any(f.result == result for f in enforced):
            break
    else:
        result = "allow"
    reasons = [
        message
        for f in enforced
        if f.result != "allow"
        for message in f.messages
        if not message.startswith(_WARNING)
    ]
    return audited(result, reasons, findings)


def version_input(
    version: AppVersion,
    *,
    exceptions: list[str],
    approved: bool,
    at: datetime,
    caller: dict[str, Any],
) -> dict[str, Any]:
    """The input publishing built for this version (as approving rebuilds it), exceptions as
    they are now, the time `at` (the audit's) and the caller (the admin auditing)."""
    manifest = Manifest.model_validate(json.loads(version.manifest))
    checks = [CheckResult(**c) for c in json.loads(version.checks)]
    return policy_input(
        manifest, checks, exceptions=exceptions, approved=approved, at=at, caller=caller
    )


def _short(exc: Exception) -> str:
    text = exc.message if isinstance(exc, QMError) else str(exc)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first[:300]
