"""The fast path may only accept what pydantic accepts (it sends everything else to pydantic)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError, field_validator, model_validator

from quartermaster.domain.events import DATA_MODELS, CloudEvent
from quartermaster.metering.fastpath import compile_model, fast_timestamp
from quartermaster.metering.validation import _KNOWN_VALIDATORS, event_checks

TRICKY_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    7,
    100,
    599,
    600,
    2**70,
    0.0,
    -0.0,
    1.5,
    -2.5,
    float("nan"),
    float("inf"),
    5.0,
    "",
    "a",
    "abc",
    "ABC",
    "a b",
    "app-1",
    "app.1_x",
    "a\n",
    "12",
    "-1",
    "0.25",
    "1e3",
    " 1",
    "NaN",
    "x" * 64,
    "y" * 65,
    "z" * 501,
    "USD",
    "usd",
    "XYZ",  # three capitals, not an ISO 4217 code
    "HRK",  # withdrawn
    "lb",
    "start",
    "deploy",
    "nope",
    "application/json",
    "text/plain",
    "1.0",
    "2.0",
    [],
    [1],
    {},
    {"k": 1},
    "2026-11-01T12:00:00Z",
    "2026-11-01T12:00:00.123456+02:00",
    "2026-11-01T12:00:00",
    "2026-13-01T12:00:00Z",
    "2026-11-01 12:00:00Z",
    "2026-11-01T12:00:00+24:00",
    "2026-11-01T12:00:00.1234567Z",
    "2026-02-30T00:00:00Z",
    "2026-11-01T12:00+01:00",
    "2026-11-01T12:00:00+0100",
    "2026-11-01T12:00:00,5Z",
    "2026-11-01T10:00:00+01:00",  # before 2026-11-01T12:00:00Z, a period's end
    "9999-12-31T23:59:59-01:00",  # no UTC instant
    "1969-12-31T23:59:59Z",
    1e19,
    "2026-11-01",
    "1700000000",
    1_700_000_000,
    "1_000",
    "+5",
    "007",
    "\uff15",
    "5.",
    ".5",
    # The limit of every quantity, count and amount (domain/events.py MAX_QUANTITY): at it,
    # and just over it in each spelling.
    10**18,
    10**18 + 1,
    2**64,
    1e18,
    1.0000000000000002e18,
    1e20,
    "1000000000000000000",
    "1000000000000000000.000000000000",
    "1000000000000000000.000000000001",
    "100000000000000000000",
    "1e18",
    "1e26",
]
values = st.sampled_from(TRICKY_VALUES)

TYPICAL: dict[str, dict[str, Any]] = {
    "qm.invocation.usage": {"app_id": "bot", "tokens": 10, "compute_units": "0.25"},
    "qm.resource.usage": {"resource_id": "vm-1", "cpu_seconds": 1.5, "network_bytes": 10},
    "qm.resource.lifecycle": {"resource_id": "vm-1", "action": "start", "replicas": 2},
    "qm.request.trace": {"app_id": "bot", "request_id": "r1", "status": 200, "duration_ms": 3},
    "qm.platform.cost": {
        "cost_type": "lb",
        "amount": "12.50",
        "currency": "EUR",
        "billing_period_start": "2026-11-01T00:00:00Z",
        "billing_period_end": "2026-11-01T12:00:00Z",
    },
}

ENVELOPE: dict[str, Any] = {
    "specversion": "1.0",
    "id": "e1",
    "source": "app://x",
    "type": "qm.invocation.usage",
    "time": "2026-11-01T12:00:00Z",
    "subject": "s",
    "data": {},
    "qmkeyid": "k",
}


def _accepted_by_pydantic(model: type[BaseModel], data: dict[str, Any]) -> bool:
    try:
        model.model_validate(data)
    except ValidationError:
        return False
    return True


@st.composite
def data_for(draw: st.DrawFn, model: type[BaseModel], base: dict[str, Any]) -> dict[str, Any]:
    """A valid sample with one to three fields replaced by tricky values, or removed."""
    sample = dict(base)
    names = [*model.model_fields, "unexpected"]
    for name in draw(st.lists(st.sampled_from(names), unique=True, min_size=1, max_size=3)):
        if draw(st.booleans()) and name in sample:
            del sample[name]
        else:
            sample[name] = draw(values)
    return sample


@pytest.mark.parametrize("event_type", sorted(DATA_MODELS))
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_data_fast_path_never_accepts_what_pydantic_rejects(event_type: str, data: Any) -> None:
    model = DATA_MODELS[event_type]
    check = event_checks().data[event_type]
    assert check is not None
    sample = data.draw(data_for(model, TYPICAL[event_type]))
    if check(sample):
        assert _accepted_by_pydantic(model, sample), sample


@settings(max_examples=200, deadline=None)
@given(sample=data_for(CloudEvent, ENVELOPE))
def test_envelope_fast_path_never_accepts_what_pydantic_rejects(sample: dict[str, Any]) -> None:
    check = event_checks().envelope
    assert check is not None
    # validate_event parses `time` with fast_timestamp before it runs the envelope check
    if fast_timestamp(sample.get("time")) is not None and check(sample):
        assert _accepted_by_pydantic(CloudEvent, sample), sample


@given(values)
def test_fast_timestamps_are_what_pydantic_parses(value: Any) -> None:
    parsed = fast_timestamp(value)
    if parsed is not None:
        assert parsed.tzinfo is not None
        assert (
            CloudEvent.model_validate(
                {
                    "specversion": "1.0",
                    "id": "1",
                    "source": "s",
                    "type": "t",
                    "time": value,
                    "data": {},
                }
            ).time
            == parsed
        )


@pytest.mark.parametrize("event_type", sorted(DATA_MODELS))
def test_typical_events_take_the_fast_path(event_type: str) -> None:
    check = event_checks().data[event_type]
    assert check is not None
    assert check(TYPICAL[event_type])
    assert _accepted_by_pydantic(DATA_MODELS[event_type], TYPICAL[event_type])


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        (m, f)
        for m, rules in _KNOWN_VALIDATORS.items()
        for rule in rules.values()
        if isinstance(rule, tuple)
        for f in rule
    ],
)
def test_each_field_of_a_known_validator_satisfies_the_model(
    model: type[BaseModel], fields: str
) -> None:
    required = {n: TYPICAL_REQUIRED[n] for n, f in model.model_fields.items() if f.is_required()}
    assert _accepted_by_pydantic(model, {**required, fields: 1})
    assert not _accepted_by_pydantic(model, required)


TYPICAL_REQUIRED = {"app_id": "bot", "resource_id": "vm-1"}


def test_times_in_order_are_checked_by_the_fast_path() -> None:
    check = event_checks().data["qm.platform.cost"]
    assert check is not None
    base = {"cost_type": "lb", "amount": 1}
    start, end = "2026-11-01T00:00:00Z", "2026-11-01T00:30:00+01:00"  # end is before start
    assert check({**base, "billing_period_start": start})
    assert not check({**base, "billing_period_start": start, "billing_period_end": end})
    assert check({**base, "billing_period_start": end, "billing_period_end": start})


def test_models_with_unknown_validators_get_no_fast_path() -> None:
    class WithModelValidator(BaseModel):
        x: int

        @model_validator(mode="after")
        def _odd(self) -> WithModelValidator:
            return self

    class WithFieldValidator(BaseModel):
        x: int

        @field_validator("x")
        @classmethod
        def _double(cls, value: int) -> int:
            return value * 2

    assert compile_model(WithModelValidator) is None
    assert compile_model(WithFieldValidator) is None
    known = compile_model(WithModelValidator, known_validators={"_odd": ("x",)})
    assert known is not None
    assert known({"x": 1})


def test_slug_with_trailing_newline_is_left_to_pydantic() -> None:
    check = event_checks().data["qm.invocation.usage"]
    assert check is not None
    assert not check({"app_id": "bot\n", "tokens": 1})
    assert not _accepted_by_pydantic(
        DATA_MODELS["qm.invocation.usage"], {"app_id": "bot\n", "tokens": 1}
    )


# Every quantity, count and amount of each event type.
LIMITED: dict[str, tuple[str, ...]] = {
    "qm.invocation.usage": ("tokens", "compute_units", "duration_ms", "bytes"),
    "qm.resource.usage": ("cpu_seconds", "memory_gb_hours", "network_bytes", "storage_gb_days"),
    "qm.resource.lifecycle": ("replicas",),
    "qm.request.trace": ("bytes_in", "bytes_out", "duration_ms"),
    "qm.platform.cost": ("amount",),
}


@pytest.mark.parametrize("event_type", sorted(DATA_MODELS))
def test_the_fast_path_refuses_every_value_over_the_limit(event_type: str) -> None:
    """A number over 10^18 is never accepted without pydantic, which rejects it; one at the
    limit still takes the fast path."""
    model = DATA_MODELS[event_type]
    check = event_checks().data[event_type]
    assert check is not None
    numbers = LIMITED[event_type]
    assert set(numbers) <= set(model.model_fields)
    over: list[Any] = [
        10**18 + 1,
        1e20,
        1.0000000000000002e18,
        "1000000000000000000.000000000001",
        "100000000000000000000",
    ]
    for name in numbers:
        for value in over:
            sample = {**TYPICAL[event_type], name: value}
            assert not check(sample), (name, value)
            assert not _accepted_by_pydantic(model, sample), (name, value)
        assert check({**TYPICAL[event_type], name: 10**18}), name
