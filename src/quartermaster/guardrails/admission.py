"""Policies at the decision point: the tenant's Rego policies for admitting work.

A policy takes part in decisions when its package is `qm.admission` or below it
(`package qm.admission.gpu`), the way publish policies live under `qm.publish`; the other
policies are not asked (a publish rule about manifests has nothing to say about a cpu
request). They are evaluated with the request as input (docs/policy.md, "Input at
admission"), all of them in one sandbox request (PolicyCache.evaluate_many: the input set
once; over the budget each is evaluated again alone); an enforced policy's `deny` messages
are reasons of kind `policy` beside the quota and budget ones, an audit-mode policy's are
only logged. A policy that fails on the input denies (fail closed) unless it is in audit
mode. One decision per policy goes to the policy decision log (`GET /v1/policy-decisions`,
point `admission`).

The gate keeps each tenant's admission policies with its other rules for 2 s (no query per
decision); an upload through the API refreshes them at once in that process (other API
processes within the 2 s).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from quartermaster.catalog.models import App
from quartermaster.policy.engine import PolicyCache, PolicyRuntimeError, Verdict, input_digest
from quartermaster.policy.models import PolicyDecision, PolicyMode
from quartermaster.policy.service import (
    ADMISSION_PACKAGE,
    active_exception_keys,
    caller_document,
    in_force_query,
    in_package,
    input_time,
)
from quartermaster.tenancy.service import AuthContext

POINT = "admission"


@dataclass
class AdmissionVerdict:
    deny: list[str] = field(default_factory=list)  # enforced: reasons of kind "policy"
    audit_only: list[str] = field(default_factory=list)  # what audit-mode policies would do
    warn: list[str] = field(default_factory=list)
    decisions: list[PolicyDecision] = field(default_factory=list)  # to log with the outcome


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    name: str
    version: int
    mode: str
    source: str


def admission_policies(tenant_id: str, *, session: Session) -> list[AdmissionPolicy]:
    """The versions in force (policy/service.py `in_force`: an audit trial beside the enforced
    version) of each policy whose package is qm.admission[.…] (plain rows: the gate caches
    them per tenant, see enforcement.py)."""
    query = in_force_query(tenant_id, session=session).where(in_package(ADMISSION_PACKAGE))
    return [
        AdmissionPolicy(row.name, row.version, row.mode, row.source)
        for row in session.scalars(query)
    ]


def admission_input(
    caller: AuthContext,
    *,
    app: str | None,
    team: str | None,
    cost_center: str | None,
    resources: dict[str, int],
    requested: dict[str, str | int | float],
    essential: bool,
    at: datetime,
    session: Session,
    renewal: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The input document a policy sees (documented in docs/policy.md); `renewal` (the
    decision renewed and when it was admitted) only when running work asks to go on."""
    lifecycle = environment = None
    if app is not None:
        row = session.execute(
            select(App.lifecycle, App.environment).where(
                App.tenant_id == caller.tenant_id, App.app_id == app
            )
        ).first()
        if row is not None:
            lifecycle, environment = row
    return {
        "point": POINT,
        **input_time(at),
        "app": app,
        "team": team,
        "cost_center": cost_center,
        "lifecycle": lifecycle,
        "environment": environment,
        "resources": resources,
        "requested": {k: str(v) for k, v in requested.items()},
        "essential": essential,
        "caller": caller_document(caller, session=session),
        "exceptions": active_exception_keys(
            caller.tenant_id, team=team or "", app_id=app or "", at=at, session=session
        ),
        **({"renewal": renewal} if renewal is not None else {}),
    }


def evaluate_admission(
    tenant_id: str,
    policies: Iterable[AdmissionPolicy],
    document: dict[str, Any],
    *,
    subject: str,
    cache: PolicyCache,
    at: datetime,
    caller: AuthContext | None = None,
) -> AdmissionVerdict:
    """Every admission policy on the request; the decision rows are returned, not added, so
    they are committed with the decision's own outcome (in its transaction). `at` is the
    moment the input's `time` says (each row's `decided_at`), `caller` who asked."""
    verdict = AdmissionVerdict()
    digest = input_digest(document)
    chosen = list(policies)
    for policy, result in zip(
        chosen, _evaluate_all(tenant_id, chosen, document, cache), strict=True
    ):
        enforced = policy.mode == PolicyMode.ENFORCE.value
        if isinstance(result, Verdict):
            deny, outcome = result.deny, "deny" if result.deny else "allow"
            reasons = [*deny, *(f"warning: {w}" for w in result.warn)]
            verdict.warn += result.warn
        else:
            deny = [f"policy {policy.name} v{policy.version} failed: {result}"]
            outcome, reasons = "error", deny
        # At admission only deny decides; require_approval and quarantine belong to publish.
        labelled = [f"{policy.name}: {message}" for message in deny]
        if enforced:
            verdict.deny += labelled
        else:
            verdict.audit_only += [f"[audit] {message}" for message in labelled]
        verdict.decisions.append(
            PolicyDecision(
                tenant_id=tenant_id,
                point=POINT,
                subject=subject,
                app_version_id=None,
                policy_name=policy.name,
                policy_version=policy.version,
                mode=policy.mode,
                input_digest=digest,
                result=outcome,
                reasons=json.dumps(reasons),
                enforced=enforced,
                decided_at=at,
                caller_id=caller.principal_id if caller else None,
                caller_name=caller.principal_name if caller else None,
            )
        )
    return verdict


def _evaluate_all(
    tenant_id: str, policies: list[AdmissionPolicy], document: dict[str, Any], cache: PolicyCache
) -> list[Verdict | PolicyRuntimeError]:
    """Each policy's verdict or the error it failed with, in order: all of them in one request
    to a sandbox worker (the input set once; over the budget each is retried alone, so only
    the one that goes over fails: PolicyCache.evaluate_many). An input the engine cannot take
    fails every policy, as it failed each one evaluated alone."""
    try:
        return cache.evaluate_many(
            tenant_id, [(p.name, p.version, p.source) for p in policies], document
        )
    except PolicyRuntimeError as exc:
        return [exc for _ in policies]
