"""`RequestMoment`, a moment an API request gives (a body field, a query parameter, a price
book's date): RFC 3339 with seconds and a UTC offset, checked as an event's `time` is
(docs/api.md, docs/events.md) except that a space may stand for `T`, as RFC 3339 allows and as
`qm`'s tables print moments. pydantic alone took Unix seconds and `+0100`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, TypeAdapter, ValidationError

from quartermaster.domain.events import SPACED_TIME_EXPECTED, TIME_EXPECTED, CloudEvent
from quartermaster.domain.timeutil import RequestMoment
from quartermaster.pricing.loader import (
    PriceBookError,
    document_from_json,
    parse_price_book,
    stored_json,
)
from tests.conftest import TenantHandle
from tests.pricing.support import EXAMPLE
from tests.tenancy.support import make_team, ok

MOMENT: TypeAdapter[datetime] = TypeAdapter(RequestMoment)


class _Body(BaseModel):
    expires_at: RequestMoment | None = None


REFUSED = [
    "1893456000",  # Unix seconds in a string
    1893456000,  # Unix seconds as a number
    1893456000.5,
    "2030-01-01  00:00:00Z",  # two spaces for T
    "2030-01-01_00:00:00Z",  # an underscore for T (pydantic takes it)
    "2030-01-01 00:00Z",  # a space for T, and no seconds
    "2030-01-01 00:00:00",  # a space for T, and no offset
    "2030-01-01T00:00:00+0100",  # an offset without its colon
    "2030-01-01T00:00Z",  # no seconds
    "2030-01-01T00:00:00",  # no offset
    "2030-01-01",  # a date alone
    "2030-01-01T00:00:00,5Z",  # a comma fraction
    " 2030-01-01T00:00:00Z",
    "",
    True,
]


@pytest.mark.parametrize("value", REFUSED, ids=repr)
def test_a_spelling_rfc3339_does_not_have_is_refused_saying_what_is_expected(
    value: object,
) -> None:
    for validate in (MOMENT.validate_python, lambda v: MOMENT.validate_json(json.dumps(v))):
        with pytest.raises(ValidationError) as caught:
            validate(value)
        [error] = caught.value.errors()
        assert error["type"] == "rfc3339_text"
        assert error["msg"] == f"{value!r} is not {SPACED_TIME_EXPECTED}"
        assert "RFC 3339 timestamp with a UTC offset" in error["msg"]


@pytest.mark.parametrize("value", REFUSED, ids=repr)
def test_a_body_field_names_itself_in_the_error(value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        _Body.model_validate_json(json.dumps({"expires_at": value}))
    [error] = caught.value.errors()
    assert error["loc"] == ("expires_at",)
    assert SPACED_TIME_EXPECTED in error["msg"]


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("2030-01-01T00:00:00Z", datetime(2030, 1, 1, tzinfo=UTC)),
        ("2030-01-01t00:00:00z", datetime(2030, 1, 1, tzinfo=UTC)),
        ("2030-01-01T00:00:00+00:00", datetime(2030, 1, 1, tzinfo=UTC)),
        ("2030-01-01T02:00:00+02:00", datetime(2030, 1, 1, tzinfo=UTC)),
        ("2029-12-31T19:00:00-05:00", datetime(2030, 1, 1, tzinfo=UTC)),
        ("2030-01-01T00:00:00.5Z", datetime(2030, 1, 1, 0, 0, 0, 500_000, tzinfo=UTC)),
        # A space for T (RFC 3339, 5.6 NOTE), as qm's tables print a moment.
        ("2030-01-01 00:00:00Z", datetime(2030, 1, 1, tzinfo=UTC)),
        ("2030-01-01 02:00:00.25+02:00", datetime(2030, 1, 1, 0, 0, 0, 250_000, tzinfo=UTC)),
        # What the CLI sends (isoformat()).
        (
            "2026-12-05T02:54:34.123456+00:00",
            datetime(2026, 12, 5, 2, 54, 34, 123_456, tzinfo=UTC),
        ),
    ],
)
def test_rfc3339_with_an_offset_passes(text: str, moment: datetime) -> None:
    assert MOMENT.validate_python(text) == moment
    assert MOMENT.validate_json(json.dumps(text)) == moment


def test_an_offset_is_kept_as_sent() -> None:
    parsed = MOMENT.validate_json('"2030-01-01T02:00:00+02:00"')
    assert parsed.utcoffset() == timedelta(hours=2)


def test_a_fraction_beyond_microseconds_is_cut_as_an_events_time_is() -> None:
    text = "2030-01-01T00:00:00.123456789Z"
    expected = datetime(2030, 1, 1, 0, 0, 0, 123_456, tzinfo=UTC)
    assert MOMENT.validate_json(json.dumps(text)) == expected
    event = CloudEvent.model_validate(
        {"specversion": "1.0", "id": "1", "source": "s", "type": "t", "time": text, "data": {}}
    )
    assert event.time == expected


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2030, 1, 1, tzinfo=UTC),
        datetime(2030, 1, 1, tzinfo=timezone(timedelta(hours=2))),
    ],
)
def test_a_datetime_already_built_passes(moment: datetime) -> None:
    assert MOMENT.validate_python(moment) == moment


def test_a_datetime_without_an_offset_is_still_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        MOMENT.validate_python(datetime(2030, 1, 1))
    assert caught.value.errors()[0]["type"] == "timezone_aware"


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-10:00"])
def test_a_moment_outside_the_calendar_in_utc_is_still_refused(text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        MOMENT.validate_json(json.dumps(text))
    [error] = caught.value.errors()
    assert error["type"] == "datetime_out_of_calendar"
    assert "outside the calendar once converted to UTC" in error["msg"]


@pytest.mark.parametrize(
    ("written", "moment"),
    [
        ("2026-11-01T00:00:00Z", datetime(2026, 11, 1, tzinfo=UTC)),
        ("'2026-11-01T00:00:00Z'", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T01:00:00+01:00", datetime(2026, 11, 1, tzinfo=UTC)),
    ],
)
def test_a_yaml_price_book_keeps_loading_and_reads_back(written: str, moment: datetime) -> None:
    """A price book's `effective_from` is a RequestMoment: unquoted in YAML it stays text
    (StringTimestampLoader) and passes; the stored form (`…Z`) reads back."""
    text = EXAMPLE.read_text().replace(
        "effective_from: 2026-01-01T00:00:00Z", f"effective_from: {written}", 1
    )
    document = parse_price_book(text, "yaml")
    assert document.effective_from == moment
    assert document_from_json(stored_json(document)) == document


def test_the_space_form_is_the_only_difference_from_an_events_time() -> None:
    """An event's `time` still refuses a space for `T` (docs/events.md), with its own words."""
    envelope = {"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data": {}}
    with pytest.raises(ValidationError) as caught:
        CloudEvent.model_validate({**envelope, "time": "2030-01-01 00:00:00Z"})
    [error] = caught.value.errors()
    assert error["type"] == "rfc3339_text"
    assert error["msg"] == f"'2030-01-01 00:00:00Z' is not {TIME_EXPECTED}"
    for value in REFUSED:
        with pytest.raises(ValidationError):
            CloudEvent.model_validate({**envelope, "time": value})


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("2026-02-30T00:00:00Z", " (day value is outside expected range)"),
        ("2026-13-01 00:00:00Z", " (month value is outside expected range of 1-12)"),
        ("2026-11-01T24:00:00Z", ""),  # pydantic's reason names no part: left out
        ("2026-12-31T23:59:60Z", ""),
        ("2026-11-01T00:00:00+24:00", ""),
    ],
)
def test_a_well_formed_moment_that_does_not_exist_says_what_is_expected_and_why(
    text: str, reason: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        MOMENT.validate_json(json.dumps(text))
    [error] = caught.value.errors()
    assert error["type"] == "rfc3339_value"
    assert error["msg"] == f"{text!r} is not {SPACED_TIME_EXPECTED}{reason}"


def test_a_yaml_price_book_with_a_space_for_t_loads_as_with_t() -> None:
    text = EXAMPLE.read_text().replace(
        "effective_from: 2026-01-01T00:00:00Z", "effective_from: 2026-11-01 00:00:00Z", 1
    )
    document = parse_price_book(text, "yaml")
    assert document.effective_from == datetime(2026, 11, 1, tzinfo=UTC)


def test_a_yaml_price_book_with_unix_seconds_is_refused_naming_effective_from() -> None:
    text = EXAMPLE.read_text().replace(
        "effective_from: 2026-01-01T00:00:00Z", "effective_from: 1893456000", 1
    )
    with pytest.raises(PriceBookError) as caught:
        parse_price_book(text, "yaml")
    [(path, message)] = caught.value.issues
    assert path == "effective_from"
    assert "RFC 3339 timestamp with a UTC offset" in message


# --- every request time is a RequestMoment (docs/api.md, "Times") -----------------------------

# (path, the parameter under test, the other parameters the route needs)
QUERY_MOMENTS = [
    ("/v1/usage", "start", {"end": "2026-11-02T00:00:00Z"}),
    ("/v1/usage", "end", {"start": "2026-10-31T00:00:00Z"}),
    ("/v1/usage", "as_of", {"start": "2026-10-31T00:00:00Z", "end": "2026-11-02T00:00:00Z"}),
    ("/v1/pipeline/status", "since", {}),
    ("/v1/pipeline/accounting", "start", {"end": "2026-11-02T00:00:00Z"}),
    ("/v1/pipeline/accounting", "end", {"start": "2026-10-31T00:00:00Z"}),
    ("/v1/reconciliation", "start", {"end": "2026-11-02T00:00:00Z"}),
    ("/v1/reconciliation", "end", {"start": "2026-10-31T00:00:00Z"}),
    ("/v1/billing/costs", "period_start", {"period_end": "2026-11-02T00:00:00Z"}),
    ("/v1/billing/costs", "period_end", {"period_start": "2026-10-31T00:00:00Z"}),
]


@pytest.mark.parametrize(("path", "name", "others"), QUERY_MOMENTS)
def test_a_query_moment_is_checked_and_named(
    client: TestClient, tenant: TenantHandle, path: str, name: str, others: dict[str, str]
) -> None:
    for refused in ("1893456000", "2026-11-01T00:00:00+0100", "2026-11-01T00:00:00"):
        response = client.get(path, params={**others, name: refused}, headers=tenant.headers)
        assert response.status_code == 422, (refused, response.text)
        error = response.json()["error"]
        assert error["field"] == name
        assert f"{refused!r} is not {SPACED_TIME_EXPECTED}" in error["message"]
    # The space form, as qm's tables print a moment (a bare `+` in a URL is a space too).
    spaced = client.get(
        path, params={**others, name: "2026-11-01 00:00:00Z"}, headers=tenant.headers
    )
    assert spaced.status_code != 422, spaced.text


def test_a_policy_exceptions_expires_at_is_a_request_moment(
    client: TestClient, tenant: TenantHandle
) -> None:
    make_team(client, tenant, "data", cost_center="default")
    body = {"key": "gpu", "team": "data", "reason": "training run"}
    refused = client.post(
        "/v1/policy-exceptions",
        json={**body, "expires_at": 1893456000},
        headers=tenant.headers,
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["field"] == "expires_at"
    assert SPACED_TIME_EXPECTED in refused.json()["error"]["message"]
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    made = ok(
        client.post(
            "/v1/policy-exceptions",
            json={**body, "expires_at": expires.strftime("%Y-%m-%d %H:%M:%SZ")},
            headers=tenant.headers,
        ),
        201,
    )
    assert datetime.fromisoformat(made["expires_at"]) == expires
