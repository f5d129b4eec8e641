"""App versions and the publish workflow.

draft → checking → (rejected | pending_approval | published) → deprecated; quarantined from
any state, by a policy's `quarantine` rule or by an admin, with the reason.

Publishing runs the checks (catalog/checks.py) on the manifest and the package, then every
enabled policy with the manifest and the check results as input (policy/service.py). A
blocking check or an enforced deny rejects the version; an enforced `require_approval` holds
it for a reviewer; otherwise it is published, the app's earlier published version is
deprecated, and the search index is updated in the same transaction."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from quartermaster.catalog import search_index
from quartermaster.catalog.access import ensure_may_read, ensure_may_write, visible_team
from quartermaster.catalog.checks import (
    CheckResult,
    blocking_failures,
    check_package,
    checks_for_zip,
)
from quartermaster.catalog.manifest import SEMVER, Manifest, require_manifest, version_key
from quartermaster.catalog.models import App, Lifecycle
from quartermaster.catalog.publish_models import AppVersion, VersionState
from quartermaster.catalog.service import (
    AppRegistration,
    check_registration,
    find_app,
    load_app,
    register_app,
)
from quartermaster.domain.timeutil import moment_text, utc_now
from quartermaster.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    QMError,
)
from quartermaster.policy import service as policy
from quartermaster.policy.engine import PolicyCache, canonical_json
from quartermaster.policy.models import Approval, ApprovalStatus
from quartermaster.storage.ids import by_id_or_prefix
from quartermaster.tenancy.models import CostCenter, Role, Team
from quartermaster.tenancy.service import AuthContext

APPROVAL_TTL = timedelta(days=14)
# A version left `checking` this long had its publish end without a result (its server
# stopped mid-check; the checks take a few minutes at most): publishing it again starts over.
CHECKING_STALE_AFTER = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class VersionView:
    app_id: str
    version: str
    state: VersionState
    state_reason: str | None
    manifest: dict[str, Any]
    manifest_digest: str
    package_digest: str | None
    checks: list[dict[str, Any]]
    decision: dict[str, Any] | None
    checked_at: datetime | None
    published_at: datetime | None
    created_by: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SubmittedVersion:
    view: VersionView
    created: bool  # False: the same manifest and package were stored already (a retry)


@dataclass(frozen=True, slots=True)
class ApprovalView:
    id: str
    app_id: str
    version: str
    reasons: list[str]
    status: ApprovalStatus
    requested_by: str
    requested_at: datetime
    expires_at: datetime
    reviewer: str | None
    comment: str | None
    decided_at: datetime | None
    version_state: VersionState  # where the version stands now (after a review: its outcome)
    version_state_reason: str | None


def _view(row: AppVersion, app_id: str) -> VersionView:
    return VersionView(
        app_id=app_id,
        version=row.version,
        state=VersionState(row.state),
        state_reason=row.state_reason,
        manifest=json.loads(row.manifest),
        manifest_digest=row.manifest_digest,
        package_digest=row.package_digest,
        checks=json.loads(row.checks),
        decision=json.loads(row.decision) if row.decision else None,
        checked_at=row.checked_at,
        published_at=row.published_at,
        created_by=row.created_by,
        created_at=row.created_at,
    )


def manifest_document(manifest: Manifest) -> dict[str, Any]:
    """The manifest as policies see it: JSON types, absent fields left out (so that a Rego
    `not input.manifest.cost_center` means 'not given')."""
    document: dict[str, Any] = json.loads(manifest.model_dump_json(exclude_none=True))
    return document


def policy_input(
    manifest: Manifest,
    checks: list[CheckResult],
    *,
    exceptions: list[str],
    approved: bool,
    at: datetime,
    caller: dict[str, Any],
    point: str = "publish",
) -> dict[str, Any]:
    """What every publish policy receives (documented in docs/policy.md): `at` is the moment
    of the decision (`time`, `time_ns`), `caller` who publishes (policy.caller_document)."""
    return {
        "point": point,
        **policy.input_time(at),
        "caller": caller,
        "manifest": manifest_document(manifest),
        "checks": {
            c.name: {"outcome": c.outcome, "blocking": c.blocking, "findings": len(c.findings)}
            for c in checks
        },
        "pii_kinds": sorted({f["kind"] for c in checks if c.name == "pii" for f in c.findings}),
        "exceptions": exceptions,
        "approval": {"approved": approved},
    }


def require_version_text(version: str) -> str:
    """A version named in a URL: a semantic version, or a 422 (as other ill-formed ids are)
    rather than a 404."""
    if not SEMVER.match(version):
        raise InvalidInputError(
            f"version {version!r} is not a semantic version (MAJOR.MINOR.PATCH[-pre], "
            "e.g. 1.4.0 or 2.0.0-rc.1)",
            field="version",
        )
    return version


def _load_version(
    tenant_id: str, app: App, version: str, session: Session, *, lock: bool = True
) -> AppVersion:
    query = select(AppVersion).where(
        AppVersion.tenant_id == tenant_id,
        AppVersion.app_pk == app.id,
        AppVersion.version == version,
    )
    row = session.scalar(query.with_for_update() if lock else query)
    if row is None:
        raise NotFoundError(f"version {version!r} of app {app.app_id!r} not found", field="version")
    return row


def _registration(manifest: Manifest) -> AppRegistration:
    """An app's first version registers it from its manifest."""
    return AppRegistration(
        app_id=manifest.app_id,
        owner=manifest.owner,
        team=manifest.team,
        cost_center=manifest.cost_center,
        title=manifest.title,
        lifecycle=Lifecycle(manifest.lifecycle),
    )


def _check_app(caller: AuthContext, manifest: Manifest, session: Session) -> App | None:
    """The manifest's app, which the caller may change and whose team the manifest names
    (raising as submitting the version would); None when there is none yet."""
    app = find_app(caller.tenant_id, manifest.app_id, session=session)
    if app is None:
        return None
    ensure_may_write(caller, team_id=app.team_id, what=f"app {app.app_id!r}")
    team = session.get_one(Team, app.team_id)
    if team.slug != manifest.team:
        raise InvalidInputError(
            f"manifest team {manifest.team!r} is not the app's team {team.slug!r}: change the "
            "owner with `qm app update --team` (a dated change), then publish",
            field="team",
        )
    cost_center = session.get_one(CostCenter, app.cost_center_id)
    if manifest.cost_center is not None and manifest.cost_center != cost_center.slug:
        raise InvalidInputError(
            f"manifest cost_center {manifest.cost_center!r} is not the app's cost center "
            f"{cost_center.slug!r}: a manifest does not change who pays; an admin changes it "
            "with `qm app update --cost-center` (a dated change), then publish",
            field="cost_center",
        )
    return app


def _ensure_app(caller: AuthContext, manifest: Manifest, session: Session) -> App:
    app = _check_app(caller, manifest, session)
    if app is not None:
        return app
    register_app(caller, _registration(manifest), session=session)  # checks it as it registers
    return load_app(caller.tenant_id, manifest.app_id, session=session)


@dataclass(frozen=True, slots=True)
class _Content:
    manifest_json: str
    manifest_digest: str
    package_digest: str | None


def _content(manifest: Manifest, package_zip: bytes | None) -> _Content:
    manifest_json = canonical_json(manifest_document(manifest))
    return _Content(
        manifest_json,
        hashlib.sha256(manifest_json.encode()).hexdigest(),
        hashlib.sha256(package_zip).hexdigest() if package_zip else None,
    )


def _same_version(
    tenant_id: str, app: App, manifest: Manifest, content: _Content, session: Session
) -> AppVersion | None:
    """The app's version of this number, sent again (a retry), or None; other content under
    an existing version is a conflict: versions are immutable."""
    existing = session.scalar(
        select(AppVersion).where(
            AppVersion.tenant_id == tenant_id,
            AppVersion.app_pk == app.id,
            AppVersion.version == manifest.version,
        )
    )
    if existing is not None and (existing.manifest_digest, existing.package_digest) != (
        content.manifest_digest,
        content.package_digest,
    ):
        raise ConflictError(
            f"version {manifest.version} of {app.app_id!r} exists with other content: "
            "versions are immutable, bump the version",
            field="version",
        )
    return existing


def submit_version(
    caller: AuthContext,
    app_id: str,
    manifest_data: Any,
    *,
    package_zip: bytes | None,
    publish: bool,
    cache: PolicyCache,
    session: Session,
) -> SubmittedVersion:
    """Store a version of an app (registering the app from its manifest on first use), and
    publish it at once when asked. Sending the same manifest and package again is a no-op."""
    manifest = require_manifest(manifest_data)
    if manifest.app_id != app_id:
        raise InvalidInputError(
            f"manifest app_id {manifest.app_id!r} does not match {app_id!r} in the URL",
            field="app_id",
        )
    if package_zip is not None:
        check_package(package_zip)  # refused now, not when a draft of it is published
    app = _ensure_app(caller, manifest, session)
    content = _content(manifest, package_zip)
    row = _same_version(caller.tenant_id, app, manifest, content, session)
    created = row is None
    if row is None:
        row = AppVersion(
            tenant_id=caller.tenant_id,
            app_pk=app.id,
            version=manifest.version,
            state=VersionState.DRAFT.value,
            manifest=content.manifest_json,
            manifest_digest=content.manifest_digest,
            package_digest=content.package_digest,
            created_by=caller.principal_name,
        )
        session.add(row)
        session.commit()
    if publish and (row.state == VersionState.DRAFT.value or _stale_check(row)):
        published = publish_version(
            caller, app_id, manifest.version, package_zip=package_zip, cache=cache, session=session
        )
        return SubmittedVersion(published, created)
    return SubmittedVersion(_view(row, app_id), created)


def publish_version(
    caller: AuthContext,
    app_id: str,
    version: str,
    *,
    package_zip: bytes | None,
    cache: PolicyCache,
    session: Session,
) -> VersionView:
    require_version_text(version)
    app = load_app(caller.tenant_id, app_id, session=session, lock=True)
    ensure_may_write(caller, team_id=app.team_id, what=f"app {app_id!r}")
    row = _load_version(caller.tenant_id, app, version, session)
    if row.state != VersionState.DRAFT.value and not _stale_check(row):
        raise ConflictError(f"{app_id}@{version} is {row.state}; only a draft is published")
    _ensure_same_package(row, package_zip)  # the package checked when it was submitted
    # Committed before the checks run (they take seconds to minutes, without the write lock),
    # so that another publish of the version waits for this one's result.
    _transition(row, VersionState.CHECKING, None)
    session.commit()
    manifest = Manifest.model_validate(json.loads(row.manifest))
    try:
        results = checks_for_zip(manifest, package_zip)
    except BaseException:
        # No result: the version is a draft again, to be published once the cause is gone.
        session.rollback()
        row = _load_version(caller.tenant_id, app, version, session)
        _transition(row, VersionState.DRAFT, None)
        session.commit()
        raise
    row = _load_version(caller.tenant_id, app, version, session)
    row.checks = json.dumps([r.as_dict() for r in results])
    row.checked_at = utc_now()
    blocked = blocking_failures(results)
    if blocked:
        _transition(row, VersionState.REJECTED, "blocked by check(s): " + _names(blocked))
        session.commit()
        return _view(row, app_id)
    _decide(caller, app, row, manifest, results, approved=False, cache=cache, session=session)
    session.commit()
    return _view(row, app_id)


def _stale_check(row: AppVersion) -> bool:
    return (
        row.state == VersionState.CHECKING.value
        and row.updated_at < utc_now() - CHECKING_STALE_AFTER
    )


def _ensure_same_package(row: AppVersion, package_zip: bytes | None) -> None:
    """Only the package's digest is stored at submit: publishing scans the package, so it is
    sent again, the same bytes as at submit (a version submitted without one is published
    without one)."""
    digest = hashlib.sha256(package_zip).hexdigest() if package_zip else None
    if digest == row.package_digest:
        return
    if row.package_digest is None:
        raise InvalidInputError(
            f"version {row.version} was submitted without a package: publish it without "
            "package_zip_b64 (a new package is a new version)",
            field="package_zip_b64",
        )
    if digest is None:
        raise InvalidInputError(
            f"package_zip_b64 is required: resend the package submitted with version "
            f"{row.version} (the server keeps only its digest, and publishing scans it)",
            field="package_zip_b64",
        )
    raise InvalidInputError(
        f"the package differs from the one submitted with version {row.version} (sha256 "
        f"{digest[:12]}..., submitted {row.package_digest[:12]}...): resend that package, or "
        "submit this one as a new version",
        field="package_zip_b64",
    )


def _names(results: list[CheckResult]) -> str:
    return ", ".join(f"{r.name} ({r.summary})" for r in results)


def _transition(row: AppVersion, state: VersionState, reason: str | None) -> None:
    row.state = state.value
    row.state_reason = reason
    row.updated_at = utc_now()


def _decide(
    caller: AuthContext,
    app: App,
    row: AppVersion,
    manifest: Manifest,
    results: list[CheckResult],
    *,
    approved: bool,
    cache: PolicyCache,
    session: Session,
) -> None:
    team = session.get_one(Team, app.team_id)
    now = utc_now()
    exceptions = policy.active_exception_keys(
        caller.tenant_id, team=team.slug, app_id=app.app_id, at=now, session=session
    )
    document = policy_input(
        manifest,
        results,
        exceptions=exceptions,
        approved=approved,
        at=now,
        caller=policy.caller_document(caller, session=session),
    )
    evaluation = policy.evaluate(
        caller.tenant_id,
        document,
        point="publish",
        subject=f"{app.app_id}@{row.version}",
        app_version_id=row.id,
        cache=cache,
        session=session,
        at=now,
        caller=caller,
    )
    quarantine = [
        f"{d.policy_name}: {r}"
        for d in evaluation.decisions
        if d.enforced and d.result == "quarantine"
        for r in d.reasons
    ]
    row.decision = json.dumps(
        {
            "result": "quarantine" if quarantine else evaluation.result,
            "input_digest": evaluation.input_digest,
            "deny": evaluation.deny,
            "require_approval": evaluation.require_approval,
            "audit_only": evaluation.audit_only,
            "policies": [f"{d.policy_name}@{d.policy_version}" for d in evaluation.decisions],
        }
    )
    if quarantine:
        _transition(row, VersionState.QUARANTINED, "; ".join(quarantine))
    elif evaluation.deny:
        _transition(row, VersionState.REJECTED, "; ".join(evaluation.named_deny))
    elif evaluation.require_approval:
        _transition(row, VersionState.PENDING_APPROVAL, "; ".join(evaluation.named_approval))
        if approved:  # a re-run after a review asks for no second review: the caller rejects
            return
        session.add(
            Approval(
                tenant_id=caller.tenant_id,
                app_version_id=row.id,
                subject=f"{app.app_id}@{row.version}",
                reasons=json.dumps(evaluation.require_approval),
                status=ApprovalStatus.PENDING.value,
                requested_by=caller.principal_name,
                requested_at=now,
                expires_at=now + APPROVAL_TTL,
            )
        )
    else:
        _publish(app, row, session)


def _publish(app: App, row: AppVersion, session: Session) -> None:
    now = utc_now()
    manifest = json.loads(row.manifest)
    others = session.scalars(
        select(AppVersion).where(
            AppVersion.app_pk == app.id,
            AppVersion.state == VersionState.PUBLISHED.value,
            AppVersion.id != row.id,
        )
    ).all()
    newer = [o for o in others if version_key(o.version) > version_key(row.version)]
    if not newer:
        # The newest published manifest names the app from now on (a later PATCH may rename
        # it again); a patch of an older line, published beside it, does not.
        app.title, app.owner, app.updated_at = manifest["title"], manifest["owner"], now
    for other in others:
        if version_key(other.version) < version_key(row.version):
            _transition(other, VersionState.DEPRECATED, f"superseded by {row.version}")
    _transition(row, VersionState.PUBLISHED, None)
    row.published_at = now
    session.flush()
    search_index.sync_app(app.tenant_id, app.id, session=session)


# --- reads -----------------------------------------------------------------------------------


def list_versions(caller: AuthContext, app_id: str, *, session: Session) -> list[VersionView]:
    app = load_app(caller.tenant_id, app_id, session=session)
    ensure_may_read(caller, team_id=app.team_id, what=f"app {app_id!r}")
    rows = session.scalars(
        select(AppVersion).where(
            AppVersion.tenant_id == caller.tenant_id, AppVersion.app_pk == app.id
        )
    )
    return sorted((_view(r, app_id) for r in rows), key=lambda v: version_key(v.version))


def get_version(caller: AuthContext, app_id: str, version: str, *, session: Session) -> VersionView:
    require_version_text(version)
    app = load_app(caller.tenant_id, app_id, session=session)
    ensure_may_read(caller, team_id=app.team_id, what=f"app {app_id!r}")
    return _view(_load_version(caller.tenant_id, app, version, session, lock=False), app_id)


# --- lifecycle -------------------------------------------------------------------------------


def deprecate_version(
    caller: AuthContext, app_id: str, version: str, *, reason: str | None, session: Session
) -> VersionView:
    require_version_text(version)
    app = load_app(caller.tenant_id, app_id, session=session, lock=True)
    ensure_may_write(caller, team_id=app.team_id, what=f"app {app_id!r}")
    row = _load_version(caller.tenant_id, app, version, session)
    if row.state != VersionState.PUBLISHED.value:
        raise ConflictError(f"{app_id}@{version} is {row.state}; only a published one deprecates")
    _transition(row, VersionState.DEPRECATED, reason or f"deprecated by {caller.principal_name}")
    session.flush()
    search_index.sync_app(caller.tenant_id, app.id, session=session)
    session.commit()
    return _view(row, app_id)


def quarantine_version(
    caller: AuthContext, app_id: str, version: str, *, reason: str, session: Session
) -> VersionView:
    """An admin pulls a version from any state (e.g. a leak found after publishing)."""
    if caller.role is not Role.ADMIN:
        raise PermissionDeniedError("only an admin may quarantine a version")
    if not reason.strip():
        raise InvalidInputError("quarantine needs a reason", field="reason")
    require_version_text(version)
    app = load_app(caller.tenant_id, app_id, session=session, lock=True)
    row = _load_version(caller.tenant_id, app, version, session)
    _transition(row, VersionState.QUARANTINED, f"quarantined by {caller.principal_name}: {reason}")
    # Its review is moot: closed, so that it leaves the reviewers' pending list.
    for request in session.scalars(
        select(Approval).where(
            Approval.app_version_id == row.id, Approval.status == ApprovalStatus.PENDING.value
        )
    ):
        request.status = ApprovalStatus.REJECTED.value
        request.reviewer, request.decided_at = caller.principal_name, utc_now()
        request.comment = f"closed: the version was quarantined: {reason}"
    session.flush()
    search_index.sync_app(caller.tenant_id, app.id, session=session)
    session.commit()
    return _view(row, app_id)


# --- approvals -------------------------------------------------------------------------------


def _approval_view(row: Approval, app_id: str, version: AppVersion, now: datetime) -> ApprovalView:
    status = ApprovalStatus(row.status)
    if status is ApprovalStatus.PENDING and row.expires_at <= now:
        status = ApprovalStatus.EXPIRED  # lapses by itself: no job needs to run first
    return ApprovalView(
        id=row.id,
        app_id=app_id,
        version=version.version,
        reasons=json.loads(row.reasons),
        status=status,
        requested_by=row.requested_by,
        requested_at=row.requested_at,
        expires_at=row.expires_at,
        reviewer=row.reviewer,
        comment=row.comment,
        decided_at=row.decided_at,
        version_state=VersionState(version.state),
        version_state_reason=version.state_reason,
    )


def list_approvals(
    caller: AuthContext, *, status: ApprovalStatus | None = None, session: Session
) -> list[ApprovalView]:
    """The tenant's approval requests, oldest first; a team-member's only for its own team's
    apps (as it reads their versions), admin and finance every one."""
    query = (
        select(Approval, App.app_id, AppVersion)
        .join(AppVersion, AppVersion.id == Approval.app_version_id)
        .join(App, App.id == AppVersion.app_pk)
        .where(Approval.tenant_id == caller.tenant_id)
        .order_by(Approval.requested_at, Approval.id)
    )
    scope = visible_team(caller)
    if scope is not None:
        query = query.where(App.team_id == scope)
    now = utc_now()
    views = [_approval_view(a, app_id, v, now) for a, app_id, v in session.execute(query)]
    return views if status is None else [v for v in views if v.status is status]


def decide_approval(
    caller: AuthContext,
    approval_id: str,
    *,
    approve: bool,
    comment: str,
    cache: PolicyCache,
    session: Session,
) -> ApprovalView:
    """A reviewer (admin) approves or rejects with a comment. Approving re-runs the policies
    with `input.approval.approved = true` (a new logged decision): a deny still rejects, and so
    does a `require_approval` that fires again (a rule that does not test `not
    input.approval.approved`), without asking for another approval. Only a version still
    pending approval can be approved; rejecting a request whose version is no longer pending
    closes the request and leaves the version as it is."""
    if caller.role is not Role.ADMIN:
        raise PermissionDeniedError("only an admin may review approval requests")
    if not comment.strip():
        raise InvalidInputError("a review needs a comment", field="comment")
    row = by_id_or_prefix(
        select(Approval).where(Approval.tenant_id == caller.tenant_id).with_for_update(),
        Approval.id,
        approval_id,
        what="approval",
        field="approval_id",
        session=session,
    )
    if row is None:
        raise NotFoundError(f"approval {approval_id!r} not found", field="approval_id")
    approval_id = row.id
    version = session.get_one(AppVersion, row.app_version_id)
    app = session.get_one(App, version.app_pk)
    now = utc_now()
    if row.status != ApprovalStatus.PENDING.value:
        raise ConflictError(f"approval {approval_id} is already {row.status}")
    if row.expires_at <= now:
        row.status = ApprovalStatus.EXPIRED.value
        if version.state == VersionState.PENDING_APPROVAL.value:
            _transition(version, VersionState.REJECTED, "approval request expired undecided")
        session.commit()
        raise ConflictError(f"approval {approval_id} expired at {moment_text(row.expires_at)}")
    pending = version.state == VersionState.PENDING_APPROVAL.value
    if approve and not pending:
        raise ConflictError(
            f"{app.app_id}@{version.version} is {version.state}, no longer pending approval: "
            f"it cannot be approved (reject approval {approval_id} to close it)",
            field="approval_id",
        )
    row.reviewer, row.comment, row.decided_at = caller.principal_name, comment.strip(), now
    if approve:
        row.status = ApprovalStatus.APPROVED.value
        manifest = Manifest.model_validate(json.loads(version.manifest))
        results = [CheckResult(**c) for c in json.loads(version.checks)]
        _decide(
            caller, app, version, manifest, results, approved=True, cache=cache, session=session
        )
        if version.state == VersionState.PENDING_APPROVAL.value:  # the policy still holds it
            _transition(
                version,
                VersionState.REJECTED,
                f"still requires approval after review: {version.state_reason} (a "
                "require_approval rule must test `not input.approval.approved`)",
            )
    else:
        row.status = ApprovalStatus.REJECTED.value
        if pending:
            _transition(
                version, VersionState.REJECTED, f"rejected by {caller.principal_name}: {comment}"
            )
    session.commit()
    return _approval_view(row, app.app_id, version, now)


def validate_only(
    caller: AuthContext,
    manifest_data: Any,
    *,
    package_zip: bytes | None,
    cache: PolicyCache,
    session: Session,
) -> tuple[list[CheckResult], policy.Evaluation]:
    """A dry run on the server: every check and every policy, nothing stored or logged. The
    first result, `references`, fails with what submitting the version would refuse: the
    app's team or cost center unknown, the app another team's, a version's content changed."""
    manifest = require_manifest(manifest_data)
    results = checks_for_zip(manifest, package_zip)
    now = utc_now()
    exceptions = policy.active_exception_keys(
        caller.tenant_id, team=manifest.team, app_id=manifest.app_id, at=now, session=session
    )
    document = policy_input(
        manifest,
        results,
        exceptions=exceptions,
        approved=False,
        at=now,
        caller=policy.caller_document(caller, session=session),
    )
    evaluation = policy.evaluate(
        caller.tenant_id,
        document,
        point="publish",
        subject=f"{manifest.app_id}@{manifest.version}",
        app_version_id=None,
        cache=cache,
        session=session,
        record=False,
        at=now,
        caller=caller,
    )
    return [_check_references(caller, manifest, package_zip, session), *results], evaluation


def _check_references(
    caller: AuthContext, manifest: Manifest, package_zip: bytes | None, session: Session
) -> CheckResult:
    """Submitting's own checks, as a check result (not in the policies' input: publishing
    runs the policies only once these have passed)."""
    try:
        app = _check_app(caller, manifest, session)
        if app is None:  # registering it from the manifest must succeed
            check_registration(caller, _registration(manifest), session=session)
        else:
            _same_version(caller.tenant_id, app, manifest, _content(manifest, package_zip), session)
    except QMError as exc:
        finding = {"field": exc.field or "manifest", "message": exc.message}
        return CheckResult("references", "fail", True, "publishing would refuse it", [finding])
    return CheckResult(
        "references", "pass", False, "the app, its team and cost center are in order"
    )
