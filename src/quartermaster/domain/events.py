"""The event contract: CloudEvents 1.0 envelope and the data of each Quartermaster event type.

Documented for users in docs/events.md. Ingestion validates against these models and the
pipeline reads accepted events through them, so both sides always agree."""

from __future__ import annotations

import copy
import enum
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticCustomError, core_schema

from quartermaster.domain.currencies import ACTIVE_CURRENCY

SLUG_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
# An app's, team's or cost center's id as the directory registers it (tenancy uses it too):
# an event naming an id that can never be registered would wait for its app forever.
DIRECTORY_SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
DirectorySlug = Annotated[str, StringConstraints(pattern=DIRECTORY_SLUG_PATTERN)]
NonEmpty = Annotated[str, StringConstraints(min_length=1, max_length=500)]
# The event log's and the catalog's resource_id columns hold 200 characters: the schema says so,
# so that a client generated from /openapi.json does not send ids the log cannot store.
ResourceId = Annotated[str, StringConstraints(min_length=1, max_length=200)]
# The largest number a quantity, count or amount may be (docs/events.md). The usage store keeps
# them as DECIMAL(38, 12) (below 10^26, 12 decimal places) and sums them per hour and day in
# that type: at 10^18 apiece a sum still fits for 10^8 events of one app and meter, where a
# bound at the type's own limit let two events overflow the sum of their batch, and the
# pipeline stopped at that batch for every tenant. A quantity keeps 12 decimal places
# (half to even beyond them, docs/events.md), so 10^18 needs 31 digits.
MAX_QUANTITY = 10**18
# A number as JSON writes one, in a string: what a decimal string may be (docs/events.md).
DECIMAL_TEXT = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def _rfc3339_text(separators: str) -> re.Pattern[str]:
    """RFC 3339's date-time: seconds required, a fraction of any length, `Z` or
    `+HH:MM`/`-HH:MM` (the ranges of each part are pydantic's to check, with its messages),
    the date and time apart by one of `separators`."""
    return re.compile(
        rf"[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}[{separators}][0-9]{{2}}:[0-9]{{2}}:[0-9]{{2}}"
        r"(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
    )


# An event's `time`: `T` (or `t`) between the date and the time.
RFC3339_TEXT = _rfc3339_text("Tt")
# A moment a request gives (domain.timeutil.RequestMoment) may also have a space there, as
# RFC 3339 allows (section 5.6, NOTE) and as `qm`'s tables print moments.
RFC3339_SPACED_TEXT = _rfc3339_text("Tt ")
_JSON_KINDS = {bool: "a boolean", str: "a string", dict: "an object", list: "an array"}
# What is said of a number no double holds (`1e400`, read as infinite), after "the number".
BEYOND_A_DOUBLE = (
    "is beyond the largest a JSON number may be (about 1.8e308); a quantity, count or amount "
    "is at most 10^18"
)


@dataclass(frozen=True, slots=True)
class JsonNumber:
    """Annotated metadata: the value must be a JSON number or, with `text`, a string writing
    a number as JSON does (`"0.25"`, `"1e-6"`). pydantic's lax mode took `true` as 1 and
    `"5"`, `" 5 "`, `"1_000"` or `"+5"` as numbers, none of which docs/events.md allows.
    The ingest fast path (metering.fastpath) knows it: what it accepts is a subset."""

    text: bool

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_before_validator_function(self.check, handler(source))

    def check(self, value: object) -> object:
        if type(value) is float and math.isinf(value):  # `1e400`, read as infinite
            raise PydanticCustomError("number_too_large", f"the number {BEYOND_A_DOUBLE}")
        if type(value) is float and not self.text and value.is_integer():
            # 1e19 as a count: pydantic's int parsing refused it without naming the limit.
            return int(value)
        kind = type(value)
        if kind is int or kind is float or kind is Decimal:
            return value
        if isinstance(value, str) and self.text:
            if DECIMAL_TEXT.fullmatch(value) is not None:
                return value
            raise PydanticCustomError(
                "decimal_text",
                '{shown} is not a number written as JSON writes one (e.g. "0.25", "1e-6";'
                " no spaces, underscores, leading + or zeros)",
                {"shown": repr(value)},
            )
        expected = "a JSON number or a decimal string" if self.text else "a JSON integer"
        raise PydanticCustomError(
            "number_type",
            "expected {expected}, got {kind}",
            {"expected": expected, "kind": _JSON_KINDS.get(kind, kind.__name__)},
        )


@dataclass(frozen=True, slots=True)
class Rfc3339:
    """Annotated metadata: a time must be a string in RFC 3339's form (`RFC3339_TEXT`):
    pydantic also took `12:00+0100`, `12:00Z` without seconds, a date alone and Unix seconds,
    and a time without an offset. With `bounded`, it must also name an instant from
    `EARLIEST_TIME` on (`9999-12-31T23:59:59-01:00` has none): the envelope's `time` gets
    its own messages for those (metering.validation). The ingest fast path knows it."""

    bounded: bool = False
    # With `space`, a space may stand for `T` (`RFC3339_SPACED_TEXT`, `SPACED_TIME_EXPECTED`):
    # a request's moment, never an event's (the ingest fast path only knows the `T` form).
    space: bool = False

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        schema = core_schema.no_info_before_validator_function(self.check, handler(source))
        if self.bounded:
            return core_schema.no_info_after_validator_function(_bounded_instant, schema)
        return schema

    @property
    def expected(self) -> str:
        """What the message says a time must be."""
        return SPACED_TIME_EXPECTED if self.space else TIME_EXPECTED

    def check(self, value: object) -> object:
        pattern = RFC3339_SPACED_TEXT if self.space else RFC3339_TEXT
        if type(value) is str and pattern.fullmatch(value) is not None:
            return value
        raise PydanticCustomError(
            "rfc3339_text",
            "{shown} is not {expected}",
            {"shown": repr(value), "expected": self.expected},
        )


# No time is earlier (docs/events.md): usage is placed in hours, days and months from 1970 on.
EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)


def is_bounded_instant(value: datetime) -> bool:
    """Whether an aware `value` names an instant from `EARLIEST_TIME` on (one east of UTC in
    year 1 or west of it in year 9999 names none)."""
    try:
        return value.astimezone(UTC) >= EARLIEST_TIME
    except OverflowError:
        return False


def _bounded_instant(value: datetime) -> datetime:
    if not is_bounded_instant(value):
        raise PydanticCustomError(
            "time_out_of_range",
            "{shown} is not an instant from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z",
            {"shown": value.isoformat()},
        )
    return value


TIME_EXPECTED = (
    "an RFC 3339 timestamp with a UTC offset, YYYY-MM-DDTHH:MM:SS[.ffffff] then Z or "
    "+HH:MM/-HH:MM (hours 00-23, seconds 00-59: no leap second), e.g. 2026-11-01T12:00:00Z"
)
SPACED_TIME_EXPECTED = (
    "an RFC 3339 timestamp with a UTC offset, YYYY-MM-DDTHH:MM:SS[.ffffff] (T or a space) then "
    "Z or +HH:MM/-HH:MM (hours 00-23, seconds 00-59: no leap second), e.g. 2026-11-01T12:00:00Z"
)
Quantity = Annotated[
    Decimal, Field(ge=0, le=MAX_QUANTITY, allow_inf_nan=False), JsonNumber(text=True)
]
Count = Annotated[int, Field(ge=0, le=MAX_QUANTITY), JsonNumber(text=False)]
Timestamp = Annotated[datetime, Rfc3339()]
PeriodBound = Annotated[datetime, Rfc3339(bounded=True)]


class EventType(enum.StrEnum):
    INVOCATION_USAGE = "qm.invocation.usage"
    RESOURCE_USAGE = "qm.resource.usage"
    RESOURCE_LIFECYCLE = "qm.resource.lifecycle"
    REQUEST_TRACE = "qm.request.trace"
    PLATFORM_COST = "qm.platform.cost"


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InvocationUsage(_Data):
    """One invocation of an app."""

    app_id: DirectorySlug
    actor_id: NonEmpty | None = None
    environment: Slug | None = None
    tokens: Count | None = None
    compute_units: Quantity | None = None
    duration_ms: Quantity | None = None
    bytes: Count | None = None

    @model_validator(mode="after")
    def _has_a_measure(self) -> InvocationUsage:
        if all(v is None for v in (self.tokens, self.compute_units, self.duration_ms, self.bytes)):
            raise PydanticCustomError(
                "no_measure", "needs at least one of tokens, compute_units, duration_ms, bytes"
            )
        return self


class ResourceUsage(_Data):
    """A usage sample of a resource."""

    resource_id: ResourceId
    app_id: DirectorySlug | None = None
    environment: Slug | None = None
    cpu_seconds: Quantity | None = None
    memory_gb_hours: Quantity | None = None
    network_bytes: Count | None = None
    storage_gb_days: Quantity | None = None

    @model_validator(mode="after")
    def _has_a_measure(self) -> ResourceUsage:
        values = (self.cpu_seconds, self.memory_gb_hours, self.network_bytes, self.storage_gb_days)
        if all(v is None for v in values):
            raise PydanticCustomError(
                "no_measure",
                "needs at least one of cpu_seconds, memory_gb_hours, network_bytes, "
                "storage_gb_days",
            )
        return self


class LifecycleAction(enum.StrEnum):
    START = "start"
    STOP = "stop"
    SCALE = "scale"
    DEPLOY = "deploy"
    DELETE = "delete"


class ResourceLifecycle(_Data):
    """A resource starting, stopping, scaling, being deployed or deleted (explain markers)."""

    resource_id: ResourceId
    action: LifecycleAction
    app_id: DirectorySlug | None = None
    team_id: DirectorySlug | None = None
    environment: Slug | None = None
    replicas: Count | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class RequestTrace(_Data):
    """One request served by an app."""

    app_id: DirectorySlug
    request_id: NonEmpty
    actor_id: NonEmpty | None = None
    environment: Slug | None = None
    bytes_in: Count = 0
    bytes_out: Count = 0
    duration_ms: Quantity = Decimal(0)
    status: Annotated[int, Field(ge=100, le=599), JsonNumber(text=False)] | None = None


class PlatformCost(_Data):
    """A shared platform cost to allocate."""

    cost_type: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
    amount: Quantity
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$"), ACTIVE_CURRENCY] = "USD"
    billing_period_start: PeriodBound | None = None
    billing_period_end: PeriodBound | None = None

    @model_validator(mode="after")
    def _period_in_order(self) -> PlatformCost:
        start, end = self.billing_period_start, self.billing_period_end
        if start is not None and end is not None and end <= start:
            raise PydanticCustomError(
                "period_order",
                "billing_period_end {end} is not after billing_period_start {start}",
                {"end": end.isoformat(), "start": start.isoformat()},
            )
        return self


DATA_MODELS: dict[str, type[_Data]] = {
    EventType.INVOCATION_USAGE.value: InvocationUsage,
    EventType.RESOURCE_USAGE.value: ResourceUsage,
    EventType.RESOURCE_LIFECYCLE.value: ResourceLifecycle,
    EventType.REQUEST_TRACE.value: RequestTrace,
    EventType.PLATFORM_COST.value: PlatformCost,
}


class CloudEvent(BaseModel):
    """CloudEvents 1.0 envelope as Quartermaster accepts it: `time` is required (usage must be
    placed in a period) and `data` is a JSON object. Extension attributes: `qmkeyid` and
    `qmsignature` (HMAC signing), `qmlease` (a resource lease token)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: Literal["1.0"]
    id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    source: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    type: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    time: Timestamp
    subject: Annotated[str, StringConstraints(max_length=500)] | None = None
    datacontenttype: Literal["application/json"] | None = None
    data: dict[str, Any]
    qmkeyid: str | None = None
    qmsignature: str | None = None
    qmlease: str | None = None


def event_json_schema() -> dict[str, Any]:
    """The JSON Schema of one event Quartermaster accepts: one variant per event type, each
    the envelope with its `type` fixed and its `data` model, self-contained (no `$ref`s), so
    that it can sit inline in the OpenAPI request body. A model validator such as "at least
    one measure" is not expressible here; the server still checks it."""
    envelope = _inlined(CloudEvent.model_json_schema())
    variants = []
    for event_type, model in DATA_MODELS.items():
        variant = copy.deepcopy(envelope)
        variant["title"] = f"{event_type} event"
        variant["properties"]["type"] = {"const": event_type, "type": "string"}
        variant["properties"]["data"] = _inlined(model.model_json_schema())
        variants.append(variant)
    return {"oneOf": variants}


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with each local `$ref` replaced by its definition (the models are not
    recursive), and its `$defs` and null defaults dropped."""
    definitions = schema.get("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            reference = node.get("$ref")
            if isinstance(reference, str) and reference.startswith("#/$defs/"):
                return resolve(definitions[reference.removeprefix("#/$defs/")])
            return {
                key: resolve(value)
                for key, value in node.items()
                # `"default": null` says nothing to a sender, and FastAPI drops it anyway.
                if key != "$defs" and not (key == "default" and value is None)
            }
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved
