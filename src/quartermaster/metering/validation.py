"""Per-event validation of an ingest batch (pure): each raw event is checked on its own and
becomes either an `AcceptedEvent` or a `Rejection` naming the field and the reason.

The rules (docs/events.md lists each reason code):
- the envelope must be a valid `domain.events.CloudEvent` with an RFC 3339 `time` carrying an
  offset, and `type` one of `DATA_MODELS`; `data` must be valid for that type;
- `time` at most `max_future_skew` ahead of receipt; older than `late_after` is accepted, late;
- a `qmlease` token must be authentic, of this tenant, match the event's resource and app,
  cover the event's time and not be revoked before it; it supplies the app of the event;
- a principal with role "app" may only send events of its own app;
- a signature (`qmkeyid` + `qmsignature`) is verified whenever present and required when the
  event's app requires signatures; the key must belong to the event's app.
Dedup and conflicts are decided where the event is stored (service.py), not here.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import re
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from quartermaster.bus.protocol import LogRecord, new_log_record
from quartermaster.catalog.lease_tokens import InvalidLeaseToken, LeaseClaims, verify_token
from quartermaster.domain.events import (
    BEYOND_A_DOUBLE,
    DATA_MODELS,
    EARLIEST_TIME,
    TIME_EXPECTED,
    CloudEvent,
    InvocationUsage,
    PlatformCost,
    ResourceUsage,
)
from quartermaster.domain.timeutil import TIME_PARSING_ERRORS, duration_text, parsing_reason
from quartermaster.metering.fastpath import (
    KnownValidator,
    ModelCheck,
    TimesInOrder,
    compile_model,
    fast_timestamp,
)
from quartermaster.metering.signing import HmacSha256, float_spellings, has_float, spelling_free
from quartermaster.tenancy.models import Role

_SORTED = orjson.OPT_SORT_KEYS


class RejectReason(enum.StrEnum):
    INVALID_ENVELOPE = "invalid_envelope"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_DATA = "invalid_data"
    FUTURE_TIMESTAMP = "future_timestamp"
    MISSING_SIGNATURE = "missing_signature"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    KEY_APP_MISMATCH = "key_app_mismatch"
    SOURCE_APP_MISMATCH = "source_app_mismatch"
    INVALID_LEASE = "invalid_lease"
    FORBIDDEN_APP = "forbidden_app"
    CONFLICT = "conflict"
    # Refused after validation by the guardrail gate (metering/service.py `refuse_gated`).
    THROTTLED = "throttled"
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True, slots=True)
class UnreadableEvent:
    """In place of an event of a request body holding a number beyond a double (`1e400`,
    read as infinite: metering.body): `event` as read, and `field`, where the first such
    number is, named when the checks find nothing else wrong with the event (the number may
    sit where nothing checks it, an extension attribute, and no JSON writes it back)."""

    event: dict[str, Any]
    field: str


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    id: str | None
    field: str | None
    reason: RejectReason
    message: str

    def as_dict(self) -> dict[str, object]:
        # What the sender wrote is echoed cut short (a 4 MB id or key comes back as 200
        # characters), so that a report stays about the size of its request.
        return {
            "index": self.index,
            "id": None if self.id is None else cut_text(self.id, ECHO_LIMIT),
            "field": None if self.field is None else cut_text(self.field, ECHO_LIMIT),
            "reason": self.reason.value,
            "message": cut_text(self.message, MESSAGE_LIMIT),
        }


ECHO_LIMIT = 200
# one problem's text (the expected form of a time is long)
PROBLEM_LIMIT = 400
MESSAGE_LIMIT = 4_000


def cut_text(text: str, limit: int) -> str:
    """`text`, or its first `limit` characters and how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters)"


class AcceptedEvent(NamedTuple):
    """A valid event (its position in the request, and the record for the log). The record's
    `payload` is the canonical JSON without the signature: the HMAC was checked here, and
    kept it would prove nothing the server could not forge, since the server holds the key."""

    event_index: int
    record: LogRecord


@dataclass(frozen=True, slots=True)
class VerifyingKey:
    key_id: str
    app_id: str
    hmac: HmacSha256


@dataclass(frozen=True, slots=True)
class ValidationContext:
    tenant_id: str
    received_at: datetime
    max_future_skew: timedelta
    late_after: timedelta
    caller_role: Role
    caller_app: str | None
    # A team-member's team's apps among those the batch names; None when the role is not
    # limited to a team's apps.
    caller_team_apps: Set[str] | None = None
    signing_keys: Mapping[str, VerifyingKey] = field(default_factory=dict)
    apps_requiring_signatures: Set[str] = frozenset()
    # lease token -> its verified claims, or the reason it is invalid (see `verify_leases`)
    leases: Mapping[str, LeaseClaims | str] = field(default_factory=dict)
    revoked_leases: Mapping[str, datetime] = field(default_factory=dict)
    # The bindings of the resources named by events that name no app (nor lease): whose
    # signing policy and keys apply to them (the pipeline attributes them the same way).
    resource_bindings: Mapping[str, Sequence[ResourceBinding]] = field(default_factory=dict)
    # The registered apps among those the batch's `app://<app_id>` sources name.
    registered_source_apps: Set[str] = frozenset()


class ResourceBinding(NamedTuple):
    """A resource belonged to `app_id` over [valid_from, valid_to) (None: open)."""

    valid_from: datetime
    valid_to: datetime | None
    app_id: str


def bound_app(bindings: Sequence[ResourceBinding] | None, at: datetime) -> str | None:
    """The app a resource was bound to at `at`, from its bindings, or None."""
    for binding in bindings or ():
        if binding.valid_from <= at and (binding.valid_to is None or at < binding.valid_to):
            return binding.app_id
    return None


# Sources in the `app://<app_id>` form, of a registered app, are reserved to that app: another
# app's key cannot take an app's (source, id) first and have the app's own event refused as a
# conflict.
APP_SOURCE_SCHEME = "app://"


_APP_SOURCE = re.compile(r"app://([^/?#]*)")


def source_app(source: object) -> str | None:
    """The app a source of the form `app://<app_id>[/…]` names, else None."""
    if type(source) is not str:
        return None
    match = _APP_SOURCE.match(source)
    return match.group(1) if match is not None else None


@dataclass(frozen=True, slots=True)
class BatchReferences:
    """What a batch refers to, so the service looks up only those keys, apps and leases."""

    key_ids: frozenset[str]
    app_ids: frozenset[str]
    lease_tokens: frozenset[str]
    # resources named by events naming neither an app nor a lease
    resources_without_app: frozenset[str] = frozenset()
    # apps named by `app://<app_id>` sources
    source_apps: frozenset[str] = frozenset()


def collect_references(raw_events: Sequence[object]) -> BatchReferences:
    key_ids: set[str] = set()
    app_ids: set[str] = set()
    tokens: set[str] = set()
    resources: set[str] = set()
    source_apps: set[str] = set()
    for raw in raw_events:
        if type(raw) is not dict:
            continue
        named = source_app(raw.get("source"))
        if named is not None:
            source_apps.add(named)
        key_id = raw.get("qmkeyid")
        if type(key_id) is str:
            key_ids.add(key_id)
        token = raw.get("qmlease")
        if type(token) is str:
            tokens.add(token)
        data = raw.get("data")
        if type(data) is dict:
            app_id = data.get("app_id")
            if type(app_id) is str:
                app_ids.add(app_id)
            elif token is None:
                resource_id = data.get("resource_id")
                if type(resource_id) is str:
                    resources.add(resource_id)
    return BatchReferences(
        frozenset(key_ids),
        frozenset(app_ids),
        frozenset(tokens),
        frozenset(resources),
        frozenset(source_apps),
    )


def verify_leases(
    tokens: Set[str], *, server_key: bytes, tenant_id: str
) -> dict[str, LeaseClaims | str]:
    """Each distinct token once (verification derives a key): claims, or why it is invalid."""
    verified: dict[str, LeaseClaims | str] = {}
    for token in tokens:
        try:
            verified[token] = verify_token(token, server_key=server_key, tenant_id=tenant_id)
        except InvalidLeaseToken as exc:
            verified[token] = str(exc)
    return verified


@dataclass(frozen=True, slots=True)
class EventChecks:
    envelope: ModelCheck | None
    data: Mapping[str, ModelCheck | None]


# Model validators the fast path may reproduce: "at least one of these fields is set", and
# "one time is after the other".
_KNOWN_VALIDATORS: dict[type[BaseModel], dict[str, KnownValidator]] = {
    InvocationUsage: {"_has_a_measure": ("tokens", "compute_units", "duration_ms", "bytes")},
    ResourceUsage: {
        "_has_a_measure": ("cpu_seconds", "memory_gb_hours", "network_bytes", "storage_gb_days")
    },
    PlatformCost: {
        "_period_in_order": TimesInOrder("billing_period_start", "billing_period_end"),
    },
}


@functools.cache
def event_checks() -> EventChecks:
    """Fast checks derived from the event models, built on first use."""
    return EventChecks(
        # `time` is parsed by validate_event (fast_timestamp) before the envelope check runs,
        # and any time it cannot parse sends the event to pydantic, so the check skips it.
        envelope=compile_model(CloudEvent, overrides={"time": "True"}),
        data={
            name: compile_model(model, known_validators=_KNOWN_VALIDATORS.get(model))
            for name, model in DATA_MODELS.items()
        },
    )


def validate_batch(
    raw_events: Sequence[object], ctx: ValidationContext
) -> tuple[list[AcceptedEvent], list[Rejection]]:
    accepted: list[AcceptedEvent] = []
    rejected: list[Rejection] = []
    checks = event_checks()
    for index, raw in enumerate(raw_events):
        outcome = validate_event(index, raw, ctx, checks)
        if type(outcome) is AcceptedEvent:
            accepted.append(outcome)
        else:
            rejected.append(outcome)  # type: ignore[arg-type]
    return accepted, rejected


def json_kind(value: object) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None:
        return "null"
    names = {dict: "object", list: "array", str: "string", bool: "boolean"}
    return names.get(type(value), "number")


def _readable_id(raw: object) -> str | None:
    if type(raw) is dict:
        value = raw.get("id")
        if type(value) is str:
            return value
    return None


# A rejection's message names each problem of the event (up to this many), so that one round
# trip shows the sender everything to fix; its `field` is the first problem's.
SHOWN_ERRORS = 10


def _field_and_problems(
    exc: ValidationError, prefix: str, *, also: ValidationError | None = None
) -> tuple[str, str]:
    """The first problem's field, and a message naming every problem (up to SHOWN_ERRORS);
    `also`: the problems of the event's `data`, listed after the envelope's."""
    named = [(prefix, e) for e in exc.errors(include_url=False)]
    if also is not None:
        named += [("data", e) for e in also.errors(include_url=False)]

    def field_of(prefix: str, error: ErrorDetails) -> str:
        loc = ".".join(str(part) for part in error["loc"])
        return f"{prefix}.{loc}" if prefix and loc else (prefix or loc)

    def message_of(prefix: str, error: ErrorDetails) -> str:
        if not prefix and error["loc"] == ("time",) and error["type"] in _TIME_PARSING_ERRORS:
            return _time_message(error)
        return error["msg"]

    def part(prefix: str, error: ErrorDetails) -> str:
        where = cut_text(field_of(prefix, error) or "event", ECHO_LIMIT)
        return f"{where}: {cut_text(message_of(prefix, error), PROBLEM_LIMIT)}"

    parts = [part(*n) for n in named[:SHOWN_ERRORS]]
    more = f" (and {len(named) - SHOWN_ERRORS} more)" if len(named) > SHOWN_ERRORS else ""
    return field_of(*named[0]), "; ".join(parts) + more


def _data_problems(event: dict[str, Any]) -> ValidationError | None:
    """The problems of an event's `data` when its type is known (listed with an envelope's
    problems, so that one round trip shows everything to fix)."""
    event_type, data = event.get("type"), event.get("data")
    model = DATA_MODELS.get(event_type) if type(event_type) is str else None
    if model is None or type(data) is not dict:
        return None
    try:
        model.model_validate(data)
    except ValidationError as exc:
        return exc
    return None


_TIME_PARSING_ERRORS = TIME_PARSING_ERRORS | {"datetime_type"}


def _time_message(error: ErrorDetails) -> str:
    """An envelope `time` pydantic cannot parse: what is expected, and pydantic's reason
    when it names the part that is wrong (a month of 13)."""
    return f"{error['input']!r} is not {TIME_EXPECTED}{parsing_reason(error)}"


def _out_of_range(event: dict[str, Any], *, early: bool) -> str:
    if early:
        return (
            f"time {event['time']!r} is before 1970-01-01T00:00:00Z, the earliest event time "
            "accepted"
        )
    return f"time {event['time']!r} is after 9999-12-31T23:59:59.999999Z, the latest time there is"


def validate_event(
    index: int, raw: object, ctx: ValidationContext, checks: EventChecks
) -> AcceptedEvent | Rejection:
    def reject(reason: RejectReason, field_name: str | None, message: str) -> Rejection:
        return Rejection(index, _readable_id(raw), field_name, reason, message)

    if type(raw) is not dict:
        if type(raw) is UnreadableEvent:
            # Every problem of the event, as for any other, the infinite number among them
            # where a check reads it (a count, a quantity, an id).
            checked = validate_event(index, raw.event, ctx, checks)
            if type(checked) is Rejection:
                return checked
            in_data = raw.field.split(".")[0] == "data"
            return Rejection(
                index,
                _readable_id(raw.event),
                raw.field,
                RejectReason.INVALID_DATA if in_data else RejectReason.INVALID_ENVELOPE,
                f"{raw.field}: the number {BEYOND_A_DOUBLE} (docs/events.md)",
            )
        return reject(
            RejectReason.INVALID_ENVELOPE,
            None,
            f"event is a JSON {json_kind(raw)}, expected an object",
        )
    event: dict[str, Any] = raw
    # --- envelope -------------------------------------------------------------------------
    event_time = fast_timestamp(event.get("time"))
    if event_time is None or checks.envelope is None or not checks.envelope(event):
        try:
            model = CloudEvent.model_validate(event)
        except ValidationError as exc:
            problems = _field_and_problems(exc, "", also=_data_problems(event))
            return reject(RejectReason.INVALID_ENVELOPE, *problems)
        event_time = model.time
    try:
        event_time = event_time.astimezone(UTC)
    except OverflowError:  # year 1 east of UTC or year 9999 west of it: no UTC instant
        early = event_time.year < EARLIEST_TIME.year
        return reject(RejectReason.INVALID_ENVELOPE, "time", _out_of_range(event, early=early))
    if event_time < EARLIEST_TIME:
        return reject(RejectReason.INVALID_ENVELOPE, "time", _out_of_range(event, early=True))
    event_type: str = event["type"]
    if event_type not in checks.data:
        known = ", ".join(sorted(DATA_MODELS))
        return reject(
            RejectReason.UNKNOWN_TYPE,
            "type",
            f"unknown event type {event_type!r}; known types: {known}",
        )
    data: dict[str, Any] = event["data"]
    data_check = checks.data[event_type]
    if data_check is None or not data_check(data):
        try:
            DATA_MODELS[event_type].model_validate(data)
        except ValidationError as exc:
            return reject(RejectReason.INVALID_DATA, *_field_and_problems(exc, "data"))
    storable = _storage_problem(event, data)
    if storable is not None:
        return reject(*storable)
    # --- time -----------------------------------------------------------------------------
    age = ctx.received_at - event_time
    if -age > ctx.max_future_skew:
        return reject(
            RejectReason.FUTURE_TIMESTAMP,
            "time",
            f"time {event_time.isoformat()} is {duration_text(age)} ahead of its receipt at "
            f"{ctx.received_at.isoformat(timespec='seconds')}; at most "
            f"{duration_text(ctx.max_future_skew)} ahead is accepted (is the sender's clock "
            "right?)",
        )
    # --- attribution: app and resource, possibly through a lease --------------------------
    app_id: str | None = data.get("app_id")
    resource_id: str | None = data.get("resource_id")
    token = event.get("qmlease")
    if token is not None:
        verdict = ctx.leases.get(token, "lease token was not verified")
        if type(verdict) is str:
            return reject(RejectReason.INVALID_LEASE, "qmlease", verdict)
        claims: LeaseClaims = verdict  # type: ignore[assignment]
        problem = _lease_problem(claims, event_time, resource_id, app_id, ctx)
        if problem is not None:
            return reject(RejectReason.INVALID_LEASE, "qmlease", problem)
        app_id = claims.app_id
        resource_id = resource_id or claims.resource_id
    if ctx.caller_role is Role.APP and app_id != ctx.caller_app:
        named = f"app {app_id!r}" if app_id else "no app"
        return reject(
            RejectReason.FORBIDDEN_APP,
            "data.app_id",
            f"this API key may only send events of app {ctx.caller_app!r}; the event names {named}",
        )
    if ctx.caller_team_apps is not None and app_id not in ctx.caller_team_apps:
        named = f"app {app_id!r}" if app_id else "no app"
        return reject(
            RejectReason.FORBIDDEN_APP,
            "data.app_id",
            "role 'team-member' may only send events of its own team's apps; the event "
            f"names {named}",
        )
    # whose event it is for the source and signature rules: the app it names, else its lease's,
    # else the app its resource is bound to at its time (as far as known on receipt)
    owner = app_id
    if owner is None and resource_id is not None:
        owner = bound_app(ctx.resource_bindings.get(resource_id), event_time)
    # (the source read again only when the batch's sources name a registered app at all)
    named_app = source_app(event["source"]) if ctx.registered_source_apps else None
    if (
        named_app is not None
        and owner is not None
        and named_app != owner
        and named_app in ctx.registered_source_apps
    ):
        return reject(
            RejectReason.SOURCE_APP_MISMATCH,
            "source",
            f"source {event['source']!r} is reserved to app {named_app!r} (a source "
            f"{APP_SOURCE_SCHEME}<app_id> of a registered app belongs to that app); this event "
            f"is of app {owner!r}" + _bound_by(app_id, resource_id),
        )
    # --- signature ------------------------------------------------------------------------
    signature = event.get("qmsignature")
    key_id = event.get("qmkeyid")
    if signature is not None and key_id is None:
        return reject(
            RejectReason.INVALID_ENVELOPE, "qmkeyid", "qmsignature is set but qmkeyid is missing"
        )
    # The signed form lacks the signature; the content (below) also lacks the key id. One
    # copy and a `del` per form, in C, rather than a filtering comprehension per form.
    unsigned = event
    if signature is not None:
        unsigned = event.copy()
        del unsigned["qmsignature"]
    try:
        canonical = orjson.dumps(unsigned, option=_SORTED)
    except TypeError:  # orjson's "Recursion limit reached": nested too deep to write
        return reject(*_nesting_problem(event))
    if key_id is not None:
        key = ctx.signing_keys.get(key_id)
        if signature is None:
            return reject(
                RejectReason.MISSING_SIGNATURE,
                "qmsignature",
                "qmkeyid is set but qmsignature is missing",
            )
        if key is None:
            return reject(
                RejectReason.UNKNOWN_KEY,
                "qmkeyid",
                f"signing key {key_id!r} is not an active key of this tenant",
            )
        if not key.hmac.matches(canonical, signature):
            # Other spellings are written in Python, value by value: tried for events of a
            # usual size only, so that one large event cannot hold the validator for seconds.
            floats = has_float(unsigned)
            respell = floats and len(canonical) <= MAX_RESPELLED_BYTES
            if not (respell and _signs_a_float_spelling(key.hmac, unsigned, signature)):
                hint = _FLOAT_HINT if respell else _TOO_LARGE_TO_RESPELL if floats else ""
                return reject(
                    RejectReason.BAD_SIGNATURE,
                    "qmsignature",
                    f"qmsignature does not match the event's canonical form under key {key_id!r}"
                    + hint,
                )
        if owner is not None and key.app_id != owner:
            return reject(
                RejectReason.KEY_APP_MISMATCH,
                "qmkeyid",
                f"signing key {key_id!r} belongs to app {key.app_id!r}, not {owner!r}"
                + _bound_by(app_id, resource_id),
            )
        del unsigned["qmkeyid"]  # the copy made above: a signature is present here
        content = orjson.dumps(unsigned, option=_SORTED)
    else:
        # Only the events naming their app (or lease): a sample naming only its resource is
        # the platform's report about the app (a cluster's exporter), not the app's own.
        if app_id is not None and app_id in ctx.apps_requiring_signatures:
            return reject(
                RejectReason.MISSING_SIGNATURE,
                "qmsignature",
                f"app {app_id!r} requires signed events (qmkeyid and qmsignature)",
            )
        content = canonical
    return AcceptedEvent(
        index,
        new_log_record(
            ctx.tenant_id,
            event["source"],
            event["id"],
            event_type,
            event.get("subject"),
            event_time,
            ctx.received_at,
            hashlib.sha256(spelling_free(unsigned, content)).hexdigest(),
            app_id,
            resource_id,
            age > ctx.late_after,
            canonical.decode(),
        ),
    )


_FLOAT_HINT = (
    " (also tried with its fractional numbers written as Python's json and as JavaScript's"
    " JSON.stringify write them; numbers sent as decimal strings avoid the question,"
    " docs/events.md)"
)


def _bound_by(app_id: str | None, resource_id: str | None) -> str:
    """Why the event is of its app, when it does not name it."""
    if app_id is not None or resource_id is None:
        return ""
    return f" (resource {resource_id!r} is bound to it at the event's time)"


# orjson writes at most this many levels of arrays and objects inside each other.
MAX_NESTING = 254
# The largest canonical form whose floats are tried in other spellings (`float_spellings`).
MAX_RESPELLED_BYTES = 64 * 1024
_TOO_LARGE_TO_RESPELL = (
    f" (its floats were not tried in other spellings: the event is over {MAX_RESPELLED_BYTES:,}"
    " bytes; send fractional numbers as decimal strings, docs/events.md)"
)


def _nesting_problem(event: dict[str, Any]) -> tuple[RejectReason, str, str]:
    field_name = too_deep_field(event)
    in_data = field_name.startswith("data")
    return (
        RejectReason.INVALID_DATA if in_data else RejectReason.INVALID_ENVELOPE,
        field_name,
        f"{field_name}: arrays and objects are nested too deep to be stored (at most"
        f" {MAX_NESTING} levels in an event, the event itself the first)",
    )


def too_deep_field(event: Mapping[str, Any]) -> str:
    """For an event nested too deep to be written (orjson writes MAX_NESTING levels): the
    attribute, or `data`'s field, holding the deepest value, each tried at the depth it has
    in the event ("event" when none is alone to blame). `qm events send` names it alike."""
    for name, value in event.items():
        if _writable(value, levels_above=1):
            continue
        if name == "data" and type(value) is dict:
            inner = next((k for k, v in value.items() if not _writable(v, levels_above=2)), None)
            return f"data.{inner}" if inner is not None else name
        return name
    return "event"


def _writable(value: object, *, levels_above: int) -> bool:
    for _ in range(levels_above):
        value = [value]
    try:
        orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return False
    return True


def _signs_a_float_spelling(hmac: HmacSha256, unsigned: dict[str, Any], signature: str) -> bool:
    """Whether the signature is over the event with its floats spelled as a sender's JSON
    library may have written them (`signing.float_spellings`)."""
    return any(hmac.matches(form, signature) for form in float_spellings(unsigned))


def _storage_problem(
    event: dict[str, Any], data: dict[str, Any]
) -> tuple[RejectReason, str, str] | None:
    """What the event log cannot hold although the models allow it: the NUL character
    (PostgreSQL text cannot contain it)."""
    for name in ("id", "source", "subject"):
        value = event.get(name)
        if value is not None and "\x00" in value:
            return RejectReason.INVALID_ENVELOPE, name, f"{name} contains the NUL character"
    resource_id = data.get("resource_id")
    if isinstance(resource_id, str) and "\x00" in resource_id:
        return (
            RejectReason.INVALID_DATA,
            "data.resource_id",
            "data.resource_id contains the NUL character",
        )
    return None


def _lease_problem(
    claims: LeaseClaims,
    event_time: datetime,
    resource_id: str | None,
    app_id: str | None,
    ctx: ValidationContext,
) -> str | None:
    if resource_id is not None and resource_id != claims.resource_id:
        return (
            f"lease {claims.lease_id} is for resource {claims.resource_id!r}, "
            f"the event names {resource_id!r}"
        )
    if app_id is not None and app_id != claims.app_id:
        return (
            f"lease {claims.lease_id} binds its resource to app {claims.app_id!r}, not {app_id!r}"
        )
    slack = ctx.max_future_skew
    if not claims.issued_at - slack <= event_time < claims.expires_at + slack:
        return (
            f"event time {event_time.isoformat()} is outside lease {claims.lease_id}'s lifetime "
            f"[{claims.issued_at.isoformat()}, {claims.expires_at.isoformat()})"
        )
    revoked_at = ctx.revoked_leases.get(claims.lease_id)
    if revoked_at is not None and event_time >= revoked_at:
        return f"lease {claims.lease_id} was revoked at {revoked_at.isoformat()}"
    return None
