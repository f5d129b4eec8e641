"""The runtime's one guardrail gate, and the check the ingest path calls."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from quartermaster.guardrails.enforcement import AppRefusal, GuardrailGate
from quartermaster.guardrails.ratelimit import build_rate_limiter
from quartermaster.runtime import Runtime
from quartermaster.tenancy.service import AuthContext

SERVICE_NAME = "guardrail_gate"


def guardrail_gate(runtime: Runtime) -> GuardrailGate:
    """Created on first use, one per runtime (its caches and in-process rate limits); closed
    with the runtime (its rate limiter's client)."""

    def make() -> GuardrailGate:
        settings = runtime.settings
        limiter = build_rate_limiter(settings.rate_limit_backend, settings.redis_url)
        return GuardrailGate(runtime.session_factory, limiter)

    return runtime.service(SERVICE_NAME, GuardrailGate, make)


def check_ingest(runtime: Runtime, caller: AuthContext) -> None:
    """429 when the caller's tenant, team or app is throttled by a budget or over a rate
    limit (raised before the body is read). The events of other apps under a throttle or
    limit are refused one by one after validation (`refuse_event_apps`)."""
    gate = guardrail_gate(runtime)
    gate.check(caller, gate.caller_scopes(caller), what="ingest")


def refuse_event_apps(
    runtime: Runtime, caller: AuthContext, apps: Callable[[], Iterable[str]]
) -> dict[str, AppRefusal]:
    """After validation: the apps whose events ingest refuses alone (a throttle on the app,
    its team or cost center, or the app's rate limit), whatever key sends them. `apps` (the
    apps the valid events name) is called only when a throttle binds an app or an app rate
    limit exists, so the common case reads no event."""
    gate = guardrail_gate(runtime)
    if not gate.binds_apps(caller.tenant_id):
        return {}
    return gate.refuse_apps(caller, apps())
