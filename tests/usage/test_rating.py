"""Reading logged payloads: numbers come out as the decimals the payload spells."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import orjson
from hypothesis import given
from hypothesis import strategies as st

from quartermaster.bus.protocol import LogRecord
from quartermaster.domain.money import to_decimal
from quartermaster.usage.meters import value_text
from quartermaster.usage.rating import parse_event

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def _logged(payload: bytes) -> LogRecord:
    return LogRecord(
        "t",
        "s",
        "e",
        "qm.invocation.usage",
        None,
        NOW,
        NOW,
        "h",
        "a",
        None,
        False,
        payload.decode(),
    )


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_float_reads_as_the_decimal_its_canonical_text_spells(number: float) -> None:
    # The payload is what ingestion stores: orjson's canonical text of the float it parsed.
    payload = orjson.dumps({"data": {"app_id": "a", "compute_units": number}})
    exact = json.loads(payload, parse_float=Decimal)["data"]["compute_units"]
    read = parse_event(1, _logged(payload)).data["compute_units"]
    assert to_decimal(read) == exact
    assert value_text(read) == value_text(exact)


def test_integers_strings_and_a_broken_payload() -> None:
    payload = orjson.dumps({"data": {"tokens": 2**62, "compute_units": "0.25", "environment": "x"}})
    parsed = parse_event(1, _logged(payload))
    assert parsed.data["tokens"] == 2**62
    assert to_decimal(parsed.data["compute_units"]) == Decimal("0.25")
    assert parsed.environment == "x"
    broken = parse_event(2, _logged(b"{not json"))
    assert broken.data == {}
    assert broken.environment is None
