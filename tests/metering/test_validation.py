"""Every validation rule and rejection reason, on the pure validator (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from quartermaster.catalog.lease_tokens import LeaseClaims, issue_token
from quartermaster.metering.signing import HmacSha256, content_hash, sign_event
from quartermaster.metering.validation import (
    MAX_NESTING,
    MAX_RESPELLED_BYTES,
    MESSAGE_LIMIT,
    AcceptedEvent,
    Rejection,
    RejectReason,
    ResourceBinding,
    ValidationContext,
    VerifyingKey,
    collect_references,
    validate_batch,
    verify_leases,
)
from quartermaster.tenancy.models import Role

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
SERVER_KEY = b"s" * 32
BOT_SECRET = b"b" * 32
OTHER_SECRET = b"o" * 32


def event(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "specversion": "1.0",
        "id": "e1",
        "source": "app://bot",
        "type": "qm.invocation.usage",
        "time": "2026-11-01T11:59:00Z",
        "data": {"app_id": "bot", "tokens": 5},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def lease(
    *, resource: str = "vm-1", app: str = "bot", tenant: str = "acme", lease_id: str = "l1"
) -> str:
    return issue_token(
        LeaseClaims(
            lease_id=lease_id,
            tenant_id=tenant,
            resource_id=resource,
            app_id=app,
            issued_at=NOW - timedelta(hours=1),
            expires_at=NOW + timedelta(hours=1),
        ),
        server_key=SERVER_KEY,
    )


def context(
    raw: list[Any],
    *,
    role: Role = Role.ADMIN,
    caller_app: str | None = None,
    requiring: frozenset[str] = frozenset(),
    revoked: dict[str, datetime] | None = None,
    bindings: dict[str, list[ResourceBinding]] | None = None,
    registered: frozenset[str] = frozenset(),
) -> ValidationContext:
    refs = collect_references(raw)
    return ValidationContext(
        tenant_id="acme",
        received_at=NOW,
        max_future_skew=timedelta(minutes=5),
        late_after=timedelta(hours=1),
        caller_role=role,
        caller_app=caller_app,
        signing_keys={
            "sk_bot": VerifyingKey("sk_bot", "bot", HmacSha256(BOT_SECRET)),
            "sk_other": VerifyingKey("sk_other", "other", HmacSha256(OTHER_SECRET)),
        },
        apps_requiring_signatures=requiring,
        leases=verify_leases(refs.lease_tokens, server_key=SERVER_KEY, tenant_id="acme"),
        revoked_leases=revoked or {},
        resource_bindings=bindings or {},
        registered_source_apps=refs.source_apps & registered,
    )


def one(raw: Any, **kwargs: Any) -> AcceptedEvent | Rejection:
    accepted, rejected = validate_batch([raw], context([raw], **kwargs))
    return (accepted or rejected)[0]


def rejected(raw: Any, reason: RejectReason, field: str | None, **kwargs: Any) -> Rejection:
    outcome = one(raw, **kwargs)
    assert isinstance(outcome, Rejection), outcome
    assert (outcome.reason, outcome.field) == (reason, field), outcome
    return outcome


def accepted(raw: Any, **kwargs: Any) -> AcceptedEvent:
    outcome = one(raw, **kwargs)
    assert isinstance(outcome, AcceptedEvent), outcome
    return outcome


def test_a_valid_event_is_normalized_for_the_log() -> None:
    ok = accepted(event(subject="s1", time="2026-11-01T13:59:00+02:00")).record
    assert (ok.source, ok.event_id, ok.type, ok.subject) == (
        "app://bot",
        "e1",
        event()["type"],
        "s1",
    )
    assert ok.event_time == datetime(2026, 11, 1, 11, 59, tzinfo=UTC)
    assert ok.event_time.tzinfo is UTC
    assert (ok.app_id, ok.resource_id, ok.late) == ("bot", None, False)
    assert ok.content_hash == content_hash(event(subject="s1", time="2026-11-01T13:59:00+02:00"))


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        ([1, 2], None, "JSON array"),
        ("text", None, "JSON string"),
        (event(specversion="0.3"), "specversion", "1.0"),
        (event(id=""), "id", "at least 1"),
        (event(id=None), "id", "required"),
        (event(source="x" * 501), "source", "at most 500"),
        (event(time="yesterday"), "time", "RFC 3339"),
        (event(time="2026-11-01T11:59:00"), "time", "UTC offset"),
        (event(time=1_762_000_000), "time", "RFC 3339"),
        (event(data=[1]), "data", "dictionary"),
        (event(qmkeyid=7), "qmkeyid", "string"),
        (event(qmsignature="ab" * 32), "qmkeyid", "qmkeyid is missing"),
    ],
)
def test_invalid_envelope(raw: Any, field: str | None, words: str) -> None:
    rejection = rejected(raw, RejectReason.INVALID_ENVELOPE, field)
    assert words in rejection.message


def test_rejection_carries_the_readable_id_and_index() -> None:
    raw = [event(id="ok-1"), event(id="bad-1", specversion="2"), event(id=5)]
    ok, bad = validate_batch(raw, context(raw))
    assert [a.event_index for a in ok] == [0]
    assert [(r.index, r.id) for r in bad] == [(1, "bad-1"), (2, None)]


def test_unknown_type_lists_the_known_ones() -> None:
    rejection = rejected(event(type="qm.nope"), RejectReason.UNKNOWN_TYPE, "type")
    assert "qm.invocation.usage" in rejection.message


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"app_id": "bot", "tokens": -1}, "data.tokens"),
        ({"app_id": "Bot!", "tokens": 1}, "data.app_id"),
        ({"app_id": "bot"}, "data"),  # no measure at all
        ({"app_id": "bot", "tokens": 1, "colour": "red"}, "data.colour"),
        ({"tokens": 1}, "data.app_id"),
    ],
)
def test_invalid_data_names_the_field(data: dict[str, Any], field: str) -> None:
    rejected(event(data=data), RejectReason.INVALID_DATA, field)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"app_id": "bot", "duration_ms": "100000000000000000000"}, "data.duration_ms"),
        ({"app_id": "bot", "compute_units": 1e20}, "data.compute_units"),
        ({"app_id": "bot", "compute_units": "1000000000000000000.000000000001"}, None),
        ({"app_id": "bot", "tokens": 10**18 + 1}, "data.tokens"),
    ],
)
def test_a_number_over_the_limit_is_rejected_alone_naming_the_field_and_the_limit(
    data: dict[str, Any], field: str | None
) -> None:
    """The usage store cannot hold it: accepted, it stopped the pipeline for every tenant."""
    field = field or "data.compute_units"
    bad, good = event(id="big", data=data), event(id="ok", data={"app_id": "bot", "tokens": 1})
    accepted_events, rejections = validate_batch([bad, good], context([bad, good]))
    assert [a.record.event_id for a in accepted_events] == ["ok"]
    [rejection] = rejections
    assert (rejection.reason, rejection.field) == (RejectReason.INVALID_DATA, field)
    assert "less than or equal to 1000000000000000000" in rejection.message


def test_numbers_at_the_limit_are_accepted() -> None:
    for data in (
        {"app_id": "bot", "duration_ms": "1e18", "tokens": 10**18},
        {"app_id": "bot", "compute_units": "1000000000000000000.000000000000"},
        {"app_id": "bot", "duration_ms": "100000000000000000"},  # the walkthrough's value
    ):
        accepted(event(data=data))
    accepted(event(type="qm.platform.cost", data={"cost_type": "lb", "amount": "1e18"}))
    rejected(
        event(type="qm.platform.cost", data={"cost_type": "lb", "amount": "1e19"}),
        RejectReason.INVALID_DATA,
        "data.amount",
    )


def test_whole_numbers_in_any_json_spelling_are_accepted_through_pydantic() -> None:
    ok = accepted(event(data={"app_id": "bot", "tokens": 12.0, "duration_ms": 5.0})).record
    assert ok.app_id == "bot"
    assert accepted(event(data={"app_id": "bot", "bytes": 1e3, "compute_units": "2.5e-3"}))


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("tokens", True, "expected a JSON integer, got a boolean"),
        ("tokens", "5", "expected a JSON integer, got a string"),
        ("bytes", 2.5, "got a number with a fractional part"),
        ("compute_units", False, "expected a JSON number or a decimal string, got a boolean"),
        ("compute_units", "1_000", "'1_000' is not a number written as JSON writes one"),
        ("compute_units", " 5", "' 5' is not a number written as JSON writes one"),
        ("compute_units", "+5", "'+5' is not a number written as JSON writes one"),
        ("compute_units", "007", "'007' is not a number written as JSON writes one"),
        ("compute_units", "\uff15", "is not a number written as JSON writes one"),
        ("duration_ms", ".5", "'.5' is not a number written as JSON writes one"),
    ],
)
def test_a_number_is_a_json_number_or_a_decimal_string(
    field: str, value: object, problem: str
) -> None:
    raw = event(data={"app_id": "bot", "tokens": 1, field: value})
    rejection = rejected(raw, RejectReason.INVALID_DATA, f"data.{field}")
    assert problem in rejection.message


def test_future_timestamps_beyond_the_skew_are_rejected() -> None:
    accepted(event(time="2026-11-01T12:04:59Z"))
    rejection = rejected(event(time="2026-11-01T12:05:01Z"), RejectReason.FUTURE_TIMESTAMP, "time")
    assert rejection.message == (
        "time 2026-11-01T12:05:01+00:00 is 301 s ahead of its receipt at "
        "2026-11-01T12:00:00+00:00; at most 300 s ahead is accepted (is the sender's clock right?)"
    )


@pytest.mark.parametrize(
    "time",
    [
        "0001-01-01T00:00:00+01:00",  # no UTC instant (OverflowError)
        "0001-01-01T00:00:00.1234567+01:00",  # the same through pydantic (slow path)
        "0001-01-01T00:00:00Z",
        "1969-12-31T23:59:59.999999Z",
        "1970-01-01T00:59:59+01:00",
    ],
)
def test_times_before_1970_are_rejected_naming_the_bound(time: str) -> None:
    rejection = rejected(event(time=time), RejectReason.INVALID_ENVELOPE, "time")
    assert rejection.message == (
        f"time {time!r} is before 1970-01-01T00:00:00Z, the earliest event time accepted"
    )


def test_the_first_instant_of_1970_is_accepted() -> None:
    assert accepted(event(time="1970-01-01T01:00:00+01:00")).record.late


@pytest.mark.parametrize("time", ["9999-12-31T23:59:59-01:00", "9999-12-31T23:59:59.1234567-01:00"])
def test_a_time_past_the_last_representable_instant_is_rejected_alone(time: str) -> None:
    raw = [event(id="before"), event(id="bad", time=time), event(id="after")]
    ok, refused = validate_batch(raw, context(raw))
    assert [a.record.event_id for a in ok] == ["before", "after"]
    assert [(r.index, r.reason, r.field, r.message) for r in refused] == [
        (
            1,
            RejectReason.INVALID_ENVELOPE,
            "time",
            f"time {time!r} is after 9999-12-31T23:59:59.999999Z, the latest time there is",
        )
    ]


@pytest.mark.parametrize(
    "time",
    [
        "2016-12-31T23:59:60Z",
        "2016-12-31T24:00:00Z",
        "2016-12-31T10:00:00+2400",
        "2016-12-31T10:00:00+05:45:30",
        "2016-12-31T10:00:00+0100",
        "2016-12-31T10:00Z",
        "2016-12-31T10:00:00,5Z",
        "2016-12-31 10:00:00Z",
        "2016-12-31",
        "1700000000",
        "2016-12-31T10:00:00",
    ],
)
def test_an_unparsable_time_is_told_what_is_expected(time: str) -> None:
    rejection = rejected(event(time=time), RejectReason.INVALID_ENVELOPE, "time")
    assert rejection.message == (
        f"time: {time!r} is not an RFC 3339 timestamp with a UTC offset, "
        "YYYY-MM-DDTHH:MM:SS[.ffffff] then Z or +HH:MM/-HH:MM (hours 00-23, seconds 00-59: "
        "no leap second), e.g. 2026-11-01T12:00:00Z"
    )
    assert "unexpected extra characters" not in rejection.message


def test_unix_seconds_are_not_a_time() -> None:
    rejection = rejected(event(time=1_700_000_000), RejectReason.INVALID_ENVELOPE, "time")
    assert rejection.message.startswith("time: 1700000000 is not an RFC 3339 timestamp")


def test_a_time_may_have_more_digits_of_a_second_and_lower_case_letters() -> None:
    record = accepted(event(time="2026-11-01t11:30:00.123456789z")).record
    assert record.event_time == datetime(2026, 11, 1, 11, 30, 0, 123456, tzinfo=UTC)


def test_an_unparsable_time_keeps_the_reason_naming_the_wrong_part() -> None:
    rejection = rejected(event(time="2016-13-01T10:00:00Z"), RejectReason.INVALID_ENVELOPE, "time")
    assert rejection.message.endswith("(month value is outside expected range of 1-12)")


def test_old_events_are_accepted_and_marked_late() -> None:
    assert accepted(event(time="2026-11-01T10:59:59Z")).record.late
    assert not accepted(event(time="2026-11-01T11:00:00Z")).record.late


def test_signed_events_are_verified() -> None:
    assert accepted(sign_event(event(), key_id="sk_bot", secret=BOT_SECRET))
    tampered = sign_event(event(), key_id="sk_bot", secret=BOT_SECRET)
    tampered["data"] = {"app_id": "bot", "tokens": 500}
    rejected(tampered, RejectReason.BAD_SIGNATURE, "qmsignature")
    wrong_secret = sign_event(event(), key_id="sk_bot", secret=OTHER_SECRET)
    rejected(wrong_secret, RejectReason.BAD_SIGNATURE, "qmsignature")


def test_unknown_key() -> None:
    raw = sign_event(event(), key_id="sk_retired", secret=BOT_SECRET)
    rejection = rejected(raw, RejectReason.UNKNOWN_KEY, "qmkeyid")
    assert "sk_retired" in rejection.message


def test_key_of_another_app() -> None:
    raw = sign_event(event(), key_id="sk_other", secret=OTHER_SECRET)
    rejection = rejected(raw, RejectReason.KEY_APP_MISMATCH, "qmkeyid")
    assert "'other'" in rejection.message
    assert "'bot'" in rejection.message


def test_missing_signature_when_the_app_requires_one() -> None:
    rejected(event(), RejectReason.MISSING_SIGNATURE, "qmsignature", requiring=frozenset({"bot"}))
    accepted(event(), requiring=frozenset({"someone-else"}))
    accepted(sign_event(event(), key_id="sk_bot", secret=BOT_SECRET), requiring=frozenset({"bot"}))
    rejected(event(qmkeyid="sk_bot"), RejectReason.MISSING_SIGNATURE, "qmsignature")


def test_unregistered_apps_are_not_rejected() -> None:
    assert accepted(event(data={"app_id": "never-registered", "tokens": 1})).record.app_id == (
        "never-registered"
    )


def test_app_role_may_only_send_its_own_app() -> None:
    accepted(event(), role=Role.APP, caller_app="bot")
    rejection = rejected(
        event(), RejectReason.FORBIDDEN_APP, "data.app_id", role=Role.APP, caller_app="other"
    )
    assert "'other'" in rejection.message
    cost = event(type="qm.platform.cost", data={"cost_type": "lb", "amount": "1"})
    rejected(cost, RejectReason.FORBIDDEN_APP, "data.app_id", role=Role.APP, caller_app="bot")


def usage_with_lease(token: str, **data: Any) -> dict[str, Any]:
    return event(
        type="qm.resource.usage",
        data={"resource_id": "vm-1", "cpu_seconds": "1.5", **data},
        qmlease=token,
    )


def test_a_lease_attributes_the_event_to_its_app() -> None:
    ok = accepted(usage_with_lease(lease())).record
    assert (ok.app_id, ok.resource_id) == ("bot", "vm-1")
    no_resource = event(
        type="qm.resource.lifecycle", data={"resource_id": "vm-1", "action": "stop"}
    )
    assert accepted({**no_resource, "qmlease": lease()}).record.app_id == "bot"
    # an app principal may send its own app's resource events through the lease
    assert accepted(usage_with_lease(lease()), role=Role.APP, caller_app="bot")


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (usage_with_lease("rl1.garbage"), "malformed"),
        (usage_with_lease(lease(tenant="globex")), "another tenant"),
        (usage_with_lease(lease()[:-4] + "AAAA"), "signature"),
        (usage_with_lease(lease(resource="vm-2")), "'vm-2'"),
        (usage_with_lease(lease(), app_id="other"), "not 'other'"),
        ({**usage_with_lease(lease()), "time": "2026-11-01T10:50:00Z"}, "outside"),
    ],
)
def test_invalid_lease(raw: dict[str, Any], words: str) -> None:
    rejection = rejected(raw, RejectReason.INVALID_LEASE, "qmlease")
    assert words in rejection.message


def test_a_revoked_lease_covers_events_before_the_revocation_only() -> None:
    revoked = {"l1": datetime(2026, 11, 1, 11, 30, tzinfo=UTC)}
    rejected(usage_with_lease(lease()), RejectReason.INVALID_LEASE, "qmlease", revoked=revoked)
    before = {**usage_with_lease(lease()), "time": "2026-11-01T11:29:00Z"}
    accepted(before, revoked=revoked)


def test_a_signature_covers_the_lease_and_the_key_must_match_the_lease_app() -> None:
    signed = sign_event(usage_with_lease(lease()), key_id="sk_bot", secret=BOT_SECRET)
    accepted(signed, requiring=frozenset({"bot"}))
    rejected(
        usage_with_lease(lease()),
        RejectReason.MISSING_SIGNATURE,
        "qmsignature",
        requiring=frozenset({"bot"}),
    )
    foreign = sign_event(usage_with_lease(lease()), key_id="sk_other", secret=OTHER_SECRET)
    rejected(foreign, RejectReason.KEY_APP_MISMATCH, "qmkeyid")


APPS = frozenset({"bot", "other"})


def test_a_registered_apps_source_is_reserved_to_it() -> None:
    # another app's key cannot take bot's (source, id) first: its source names bot
    squat = sign_event(
        event(source="app://bot/jobs", data={"app_id": "other", "tokens": 1}),
        key_id="sk_other",
        secret=OTHER_SECRET,
    )
    rejection = rejected(
        squat,
        RejectReason.SOURCE_APP_MISMATCH,
        "source",
        role=Role.APP,
        caller_app="other",
        registered=APPS,
    )
    assert "reserved to app 'bot'" in rejection.message
    assert "this event is of app 'other'" in rejection.message
    # admin keys too; a source naming no registered app, or another scheme, is shared
    mine = {"app_id": "other", "tokens": 1}
    rejected(
        event(source="app://bot", data=mine),
        RejectReason.SOURCE_APP_MISMATCH,
        "source",
        registered=APPS,
    )
    accepted(event(source="app://shared-exporter", data=mine), registered=APPS)
    accepted(event(source="/apps/bot", data=mine), registered=APPS)
    accepted(event(source="app://other?run=1", data=mine), registered=APPS)
    # a source naming an app not registered (yet) is not reserved
    accepted(event(source="app://bot", data=mine))
    accepted(event(source="app://bot/x"), registered=APPS)  # bot's own event


BOUND = {"vm-9": [ResourceBinding(NOW - timedelta(days=1), None, "bot")]}


def resource_sample(**envelope: Any) -> dict[str, Any]:
    return event(
        type="qm.resource.usage", data={"resource_id": "vm-9", "cpu_seconds": 2}, **envelope
    )


def test_an_event_naming_only_its_resource_is_of_the_app_it_is_bound_to() -> None:
    # signed with another app's key: refused as for an event naming that app
    foreign = sign_event(resource_sample(), key_id="sk_other", secret=OTHER_SECRET)
    rejection = rejected(foreign, RejectReason.KEY_APP_MISMATCH, "qmkeyid", bindings=BOUND)
    assert "not 'bot' (resource 'vm-9' is bound to it at the event's time)" in rejection.message
    accepted(sign_event(resource_sample(), key_id="sk_bot", secret=BOT_SECRET), bindings=BOUND)
    # its source may not name another registered app
    rejected(
        resource_sample(source="app://other"),
        RejectReason.SOURCE_APP_MISMATCH,
        "source",
        bindings=BOUND,
        registered=APPS,
    )
    # a platform's unsigned sample of it is taken although bot requires signatures: it is the
    # platform's report, not bot's own event; the pipeline attributes it by the binding
    assert (
        accepted(resource_sample(), bindings=BOUND, requiring=frozenset({"bot"})).record.app_id
        is None
    )
    # outside the binding, or unbound: nobody's yet
    before = {**foreign, "time": (NOW - timedelta(days=2)).isoformat()}
    accepted(sign_event(before, key_id="sk_other", secret=OTHER_SECRET), bindings=BOUND)
    accepted(foreign)


@pytest.mark.parametrize(
    ("raw", "reason", "field"),
    [
        (event(id="a\x00b"), RejectReason.INVALID_ENVELOPE, "id"),
        (event(source="app://\x00"), RejectReason.INVALID_ENVELOPE, "source"),
        (event(subject="\x00"), RejectReason.INVALID_ENVELOPE, "subject"),
        (
            event(type="qm.resource.usage", data={"resource_id": "r" * 201, "cpu_seconds": 1}),
            RejectReason.INVALID_DATA,
            "data.resource_id",
        ),
        (
            event(type="qm.resource.usage", data={"resource_id": "r\x00", "cpu_seconds": 1}),
            RejectReason.INVALID_DATA,
            "data.resource_id",
        ),
    ],
)
def test_what_the_log_cannot_store_is_rejected(
    raw: dict[str, Any], reason: RejectReason, field: str
) -> None:
    rejected(raw, reason, field)


@pytest.mark.parametrize("app_id", ["my.app_v2", "a" * 64, "Bot", "-bot"])
def test_an_app_id_the_directory_could_never_register_is_invalid(app_id: str) -> None:
    """Such an event would wait for its app forever and bill the default cost center."""
    raw = event(data={"app_id": app_id, "tokens": 5})
    outcome = rejected(raw, RejectReason.INVALID_DATA, "data.app_id")
    assert "^[a-z0-9][a-z0-9-]{0,62}$" in outcome.message


def test_the_longest_app_id_the_directory_registers_is_valid() -> None:
    accepted(event(data={"app_id": "a" * 63, "tokens": 5}))


def test_an_envelope_rejection_also_names_the_datas_problems() -> None:
    # one round trip shows everything to fix, the data's problems after the envelope's
    raw = event(id="", data={"app_id": "bot", "tokens": -1, "colour": "red"})
    rejection = rejected(raw, RejectReason.INVALID_ENVELOPE, "id")
    parts = rejection.message.split("; ")
    assert parts[0].startswith("id: String should have at least 1 character")
    assert parts[1].startswith("data.tokens: Input should be greater than or equal to 0")
    assert parts[2].startswith("data.colour: Extra inputs are not permitted")
    # an unknown type, or data that is no object, has no data problems to add
    assert (
        "data."
        not in rejected(
            event(id="", type="qm.unknown"), RejectReason.INVALID_ENVELOPE, "id"
        ).message
    )
    many = event(id="", data={f"x{i}": i for i in range(12)})
    assert rejected(many, RejectReason.INVALID_ENVELOPE, "id").message.endswith("(and 4 more)")


def nested(levels: int) -> object:
    value: object = 1
    for _ in range(levels):
        value = [value]
    return value


def test_an_event_nested_too_deep_to_store_is_rejected_alone() -> None:
    # the event is the first level: an extension of 253 more levels is the most it can hold
    accepted(event(xdeep=nested(MAX_NESTING - 1)))
    too_deep = rejected(event(xdeep=nested(MAX_NESTING)), RejectReason.INVALID_ENVELOPE, "xdeep")
    assert f"at most {MAX_NESTING} levels" in too_deep.message
    lifecycle = event(
        type="qm.resource.lifecycle",
        data={"resource_id": "vm-1", "action": "stop", "metadata": {"x": nested(MAX_NESTING)}},
    )
    rejected(lifecycle, RejectReason.INVALID_DATA, "data.metadata")


def test_a_rejection_echoes_what_the_sender_wrote_cut_short() -> None:
    huge = "k" * 4_000_000
    rejection = rejected(
        event(id=huge, data={"app_id": "bot", "tokens": 1, huge: 1}),
        RejectReason.INVALID_ENVELOPE,
        "id",
    )
    shown = rejection.as_dict()
    assert len(str(shown["id"])) < 250
    assert "(4,000,000 characters)" in str(shown["id"])
    assert len(str(shown["message"])) < MESSAGE_LIMIT + 50
    assert "data.kkkk" in str(shown["message"])  # the data's problem is still named


def test_a_large_events_floats_are_not_tried_in_other_spellings() -> None:
    floats = [0.1 * i for i in range(MAX_RESPELLED_BYTES // 8)]
    raw = sign_event(event(xfloats=floats), key_id="sk_bot", secret=BOT_SECRET)
    raw["qmsignature"] = "ab" * 32
    rejection = rejected(raw, RejectReason.BAD_SIGNATURE, "qmsignature")
    assert "not tried in other spellings" in rejection.message
    small = sign_event(event(xfloats=[0.1]), key_id="sk_bot", secret=BOT_SECRET)
    small["qmsignature"] = "ab" * 32
    assert "also tried" in rejected(small, RejectReason.BAD_SIGNATURE, "qmsignature").message
