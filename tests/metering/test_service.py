"""ingest_events against the database (SQLite and PostgreSQL): storage, dedup, conflicts,
counters in the same transaction, retry of a lost race, lookups and their cache."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from quartermaster.bus.models import EventLogEntry
from quartermaster.catalog.models import App
from quartermaster.catalog.signing_keys import create_signing_key, retire_signing_key
from quartermaster.domain.timeutil import floor_hour, utc_now
from quartermaster.metering import service
from quartermaster.metering.service import IngestState, ingest_events, reconciliation
from quartermaster.metering.signing import float_spellings, sign_event
from quartermaster.runtime import Runtime
from quartermaster.tenancy.models import Role
from quartermaster.tenancy.service import AuthContext, authenticate
from tests.conftest import TenantHandle
from tests.metering.conftest import AppHandle, create_app_with_key, usage_event


def caller_of(runtime: Runtime, tenant: TenantHandle) -> AuthContext:
    with runtime.session_factory() as session:
        return authenticate(tenant.admin_token, session=session)


def stored(runtime: Runtime, tenant_id: str) -> list[tuple[str, str]]:
    with runtime.session_factory() as session:
        return [
            (row.event_id, row.payload)
            for row in session.scalars(
                select(EventLogEntry)
                .where(EventLogEntry.tenant_id == tenant_id)
                .order_by(EventLogEntry.position)
            )
        ]


def counters(runtime: Runtime, tenant_id: str) -> dict[str, Any]:
    """The tenant's counters summed over the last hours (a test may straddle an hour)."""
    now = utc_now()
    start, end = floor_hour(now) - timedelta(hours=2), now + timedelta(hours=1)
    with runtime.session_factory() as session:
        hours = reconciliation(tenant_id, start, end, session=session)
    if not hours:
        return {}
    stages: dict[str, int] = {}
    reasons: dict[str, dict[str, int]] = {}
    for hour in hours:
        for stage, n in hour.stages.items():
            stages[stage] = stages.get(stage, 0) + n
        for stage, by_reason in hour.reasons.items():
            for reason, n in by_reason.items():
                reasons.setdefault(stage, {})[reason] = reasons.get(stage, {}).get(reason, 0) + n
    return {"stages": stages, "reasons": reasons}


def test_valid_events_are_stored_with_attribution_fields(
    runtime: Runtime, tenant: TenantHandle, make_app: Callable[..., AppHandle]
) -> None:
    bot = make_app()
    old = utc_now() - timedelta(hours=3)
    events = [bot.sign(usage_event(bot.app_id)), usage_event(bot.app_id, time=old)]
    report = ingest_events(events, caller=caller_of(runtime, tenant), runtime=runtime)
    assert (report.accepted, report.duplicates, report.rejected) == (2, 0, [])
    with runtime.session_factory() as session:
        rows = session.scalars(
            select(EventLogEntry)
            .where(EventLogEntry.tenant_id == tenant.tenant_id)
            .order_by(EventLogEntry.position)
        ).all()
    assert [r.event_id for r in rows] == [e["id"] for e in events]
    assert [r.late for r in rows] == [False, True]
    assert rows[0].app_id == bot.app_id
    assert rows[1].event_time == old.replace(microsecond=old.microsecond)
    assert "qmsignature" not in rows[0].payload
    assert bot.key_id in rows[0].payload


def test_resending_a_batch_reports_duplicates_and_stores_once(
    runtime: Runtime, tenant: TenantHandle, make_app: Callable[..., AppHandle]
) -> None:
    bot = make_app()
    caller = caller_of(runtime, tenant)
    events = [bot.sign(usage_event(bot.app_id)) for _ in range(5)]
    assert ingest_events(events, caller=caller, runtime=runtime).accepted == 5
    again = ingest_events(events, caller=caller, runtime=runtime)
    assert (again.accepted, again.duplicates, again.rejected) == (0, 5, [])
    assert len(stored(runtime, tenant.tenant_id)) == 5
    counts = counters(runtime, tenant.tenant_id)["stages"]
    assert counts == {"received": 10, "accepted": 5, "duplicate": 5}


def test_same_source_and_id_with_other_content_is_a_conflict(
    runtime: Runtime, tenant: TenantHandle, make_app: Callable[..., AppHandle]
) -> None:
    bot = make_app()
    caller = caller_of(runtime, tenant)
    first = usage_event(bot.app_id, event_id="dup-1", tokens=1)
    ingest_events([first], caller=caller, runtime=runtime)
    changed = {**first, "data": {**first["data"], "tokens": 2}}
    in_batch = usage_event(bot.app_id, event_id="dup-2")
    in_batch_changed = {**in_batch, "data": {**in_batch["data"], "tokens": 99}}
    report = ingest_events([changed, in_batch, in_batch_changed], caller=caller, runtime=runtime)
    assert report.accepted == 1
    assert [(r.index, r.id, r.reason.value, r.field) for r in report.rejected] == [
        (0, "dup-1", "conflict", "id"),
        (2, "dup-2", "conflict", "id"),
    ]
    assert "different content" in report.rejected[0].message
    assert counters(runtime, tenant.tenant_id)["reasons"] == {"rejected": {"conflict": 2}}


def test_a_resend_signed_with_a_rotated_key_is_a_duplicate(
    runtime: Runtime, tenant: TenantHandle, make_app: Callable[..., AppHandle]
) -> None:
    bot = make_app()
    caller = caller_of(runtime, tenant)
    raw = usage_event(bot.app_id)
    ingest_events([bot.sign(raw)], caller=caller, runtime=runtime)
    from tests.metering.conftest import create_app_with_key  # noqa: F401 - same app, new key

    with runtime.session_factory() as session:
        app = session.get(App, bot.app_pk)
        assert app is not None
        new = create_signing_key(app, server_key=runtime.server_key, session=session)
    resent = sign_event(raw, key_id=new.key_id, secret=bytes.fromhex(new.secret_hex))
    report = ingest_events([resent], caller=caller, runtime=runtime)
    assert (report.accepted, report.duplicates) == (0, 1)


@pytest.mark.parametrize(
    ("first", "resent"),
    [("2.0", "2"), ("1e16", "10000000000000000"), ("-0.0", "0"), ("1E+3", "1000.000")],
)
def test_a_resend_spelling_a_whole_number_otherwise_is_a_duplicate(
    runtime: Runtime,
    tenant: TenantHandle,
    make_app: Callable[..., AppHandle],
    first: str,
    resent: str,
) -> None:
    bot = make_app()
    caller = caller_of(runtime, tenant)
    template = json.dumps(usage_event(bot.app_id, compute_units=0))

    def spelled(number: str) -> dict[str, Any]:
        parsed: dict[str, Any] = orjson.loads(
            template.replace('"compute_units": 0', f'"compute_units": {number}')
        )
        return parsed

    assert ingest_events([spelled(first)], caller=caller, runtime=runtime).accepted == 1
    report = ingest_events([spelled(resent)], caller=caller, runtime=runtime)
    assert (report.accepted, report.duplicates, report.rejected) == (0, 1, [])
    other = ingest_events([spelled("2.5")], caller=caller, runtime=runtime)
    assert [r.reason.value for r in other.rejected] == ["conflict"]


def test_counters_balance_received_against_every_outcome(
    runtime: Runtime, tenant: TenantHandle, make_app: Callable[..., AppHandle]
) -> None:
    bot = make_app(require_signatures=True)
    caller = caller_of(runtime, tenant)
    good = bot.sign(usage_event(bot.app_id))
    events: list[Any] = [
        good,
        usage_event(bot.app_id),  # unsigned: missing_signature
        {**bot.sign(usage_event(bot.app_id)), "qmsignature": "00" * 32},  # bad_signature
        {"specversion": "1.0"},  # invalid_envelope
        7,  # invalid_envelope
        usage_event(bot.app_id, time=utc_now() + timedelta(hours=1)),  # future_timestamp
    ]
    report = ingest_events(events, caller=caller, runtime=runtime)
    ingest_events([good], caller=caller, runtime=runtime)  # duplicate
    assert report.accepted == 1
    result = counters(runtime, tenant.tenant_id)
    assert result["stages"] == {"received": 7, "accepted": 1, "duplicate": 1, "rejected": 5}
    assert result["reasons"]["rejected"] == {
        "bad_signature": 1,
        "future_timestamp": 1,
        "invalid_envelope": 2,
        "missing_signature": 1,
    }


def test_unknown_and_retired_keys_are_rejected(
    runtime: Runtime, tenant: TenantHandle, make_app: Callable[..., AppHandle]
) -> None:
    bot = make_app()
    caller = caller_of(runtime, tenant)
    state = IngestState(ttl_seconds=0)  # no reuse of looked-up keys between batches
    assert ingest_events(
        [bot.sign(usage_event(bot.app_id))], caller=caller, runtime=runtime, state=state
    ).accepted
    with runtime.session_factory() as session:
        retire_signing_key(tenant.tenant_id, bot.key_id, session=session)
    report = ingest_events(
        [bot.sign(usage_event(bot.app_id))], caller=caller, runtime=runtime, state=state
    )
    assert [r.reason.value for r in report.rejected] == ["unknown_key"]


def test_key_cache_expires_after_its_ttl(
    runtime: Runtime, tenant: TenantHandle, make_app: Callable[..., AppHandle]
) -> None:
    bot = make_app()
    caller = caller_of(runtime, tenant)
    now = [1000.0]
    state = IngestState(ttl_seconds=5, clock=lambda: now[0])
    ingest_events([bot.sign(usage_event(bot.app_id))], caller=caller, runtime=runtime, state=state)
    with runtime.session_factory() as session:
        retire_signing_key(tenant.tenant_id, bot.key_id, session=session)
    now[0] += 4  # within the TTL the cached key still verifies
    within = ingest_events(
        [bot.sign(usage_event(bot.app_id))], caller=caller, runtime=runtime, state=state
    )
    assert within.accepted == 1
    now[0] += 2
    after = ingest_events(
        [bot.sign(usage_event(bot.app_id))], caller=caller, runtime=runtime, state=state
    )
    assert [r.reason.value for r in after.rejected] == ["unknown_key"]


def test_another_tenants_key_is_unknown(
    runtime: Runtime,
    make_tenant: Callable[..., TenantHandle],
) -> None:
    tenant_a, tenant_b = make_tenant("a"), make_tenant("b")
    app_b = create_app_with_key(runtime, tenant_b.tenant_id, "shared-name")
    create_app_with_key(runtime, tenant_a.tenant_id, "shared-name")
    report = ingest_events(
        [app_b.sign(usage_event("shared-name"))],
        caller=caller_of(runtime, tenant_a),
        runtime=runtime,
    )
    assert [r.reason.value for r in report.rejected] == ["unknown_key"]
    assert stored(runtime, tenant_b.tenant_id) == []


def test_a_lost_race_on_the_dedup_claim_is_retried_and_counted_once(
    runtime: Runtime,
    tenant: TenantHandle,
    make_app: Callable[..., AppHandle],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bot = make_app()
    real_append = runtime.event_log.append
    calls = {"n": 0}

    def racing_append(records: Any, *, session: Any) -> Any:
        calls["n"] += 1
        result = real_append(records, session=session)
        if calls["n"] == 1:
            session.flush()
            raise IntegrityError("INSERT", {}, Exception("duplicate key (simulated race)"))
        return result

    monkeypatch.setattr(runtime.event_log, "append", racing_append)
    events = [usage_event(bot.app_id) for _ in range(3)]
    report = ingest_events(events, caller=caller_of(runtime, tenant), runtime=runtime)
    assert calls["n"] == 2
    assert report.accepted == 3
    assert len(stored(runtime, tenant.tenant_id)) == 3
    assert counters(runtime, tenant.tenant_id)["stages"]["received"] == 3


def test_a_failed_commit_stores_nothing_and_counts_nothing(
    runtime: Runtime,
    tenant: TenantHandle,
    make_app: Callable[..., AppHandle],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bot = make_app()

    def broken_counters(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(service, "add_to_counters", broken_counters)
    with pytest.raises(RuntimeError, match="disk full"):
        ingest_events([usage_event(bot.app_id)], caller=caller_of(runtime, tenant), runtime=runtime)
    monkeypatch.undo()
    assert stored(runtime, tenant.tenant_id) == []
    assert counters(runtime, tenant.tenant_id) == {}
    # the retry of the same event then counts once, not zero times
    retry = usage_event(bot.app_id)
    assert ingest_events([retry], caller=caller_of(runtime, tenant), runtime=runtime).accepted == 1


def test_app_principals_are_restricted_to_their_app(
    runtime: Runtime, tenant: TenantHandle, make_app: Callable[..., AppHandle]
) -> None:
    bot, other = make_app(), make_app()
    caller = AuthContext(
        tenant_id=tenant.tenant_id,
        principal_id="p",
        principal_name="bot-runtime",
        role=Role.APP,
        team_id=None,
        app_slug=bot.app_id,
    )
    report = ingest_events(
        [usage_event(bot.app_id), usage_event(other.app_id)], caller=caller, runtime=runtime
    )
    assert report.accepted == 1
    assert [(r.index, r.reason.value) for r in report.rejected] == [(1, "forbidden_app")]


def _signed_as(form: str, event: dict[str, Any], bot: AppHandle) -> dict[str, Any]:
    """The event signed the way a sender's JSON library writes its floats."""
    unsigned = {**event, "qmkeyid": bot.key_id}
    if form == "python":
        text = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    else:
        text = list(float_spellings(unsigned))[1].decode()  # checked against node in test_signing
    signature = hmac.new(bot.secret, text.encode(), hashlib.sha256).hexdigest()
    return {**unsigned, "qmsignature": signature}


@pytest.mark.parametrize("form", ["python", "javascript"])
def test_floats_signed_as_python_or_javascript_write_them_are_accepted(
    form: str, runtime: Runtime, tenant: TenantHandle, make_app: Callable[..., AppHandle]
) -> None:
    bot = make_app(require_signatures=True)
    caller = caller_of(runtime, tenant)
    events = [
        _signed_as(form, usage_event(bot.app_id, compute_units=units), bot)
        for units in (1e-5, 2.5e-5, 1e-7, 1e16, 0.5)
    ]
    report = ingest_events(events, caller=caller, runtime=runtime)
    assert (report.accepted, report.rejected) == (5, [])
    # the same events again are duplicates: the content is the parsed value, not its spelling
    again = ingest_events(
        [_signed_as("python", e, bot) for e in map(_unsigned, events)],
        caller=caller,
        runtime=runtime,
    )
    assert (again.accepted, again.duplicates) == (0, 5)


def _unsigned(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in ("qmkeyid", "qmsignature")}


def test_a_bad_signature_over_floats_says_which_spellings_were_tried(
    runtime: Runtime, tenant: TenantHandle, make_app: Callable[..., AppHandle]
) -> None:
    bot = make_app(require_signatures=True)
    caller = caller_of(runtime, tenant)
    with_float = {**_signed_as("python", usage_event(bot.app_id, compute_units=1e-5), bot)}
    with_float["qmsignature"] = "00" * 32
    without = {**bot.sign(usage_event(bot.app_id)), "qmsignature": "00" * 32}
    report = ingest_events([with_float, without], caller=caller, runtime=runtime)
    assert [r.reason.value for r in report.rejected] == ["bad_signature", "bad_signature"]
    assert "JSON.stringify" in report.rejected[0].message
    assert "decimal strings" in report.rejected[0].message
    assert "JSON.stringify" not in report.rejected[1].message
