from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from quartermaster.metering.signing import (
    HmacSha256,
    canonical_bytes,
    content_bytes,
    content_hash,
    ecmascript_number,
    float_spellings,
    has_float,
    numbers_as_integers,
    sign_event,
    signature_for,
    verify_signature,
)

EVENT: dict[str, Any] = {
    "specversion": "1.0",
    "id": "evt-1",
    "source": "app://billing-bot",
    "type": "qm.invocation.usage",
    "time": "2026-11-01T12:00:00Z",
    "data": {"tokens": 12, "app_id": "billing-bot", "note": "héllo ✓"},
}
SECRET = bytes(range(32))

json_leaf = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20)
json_values = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def test_canonical_form_sorts_keys_drops_the_signature_and_keeps_utf8() -> None:
    signed = sign_event(EVENT, key_id="sk_1", secret=SECRET)
    canonical = canonical_bytes(signed)
    assert b"qmsignature" not in canonical
    assert b'"qmkeyid":"sk_1"' in canonical
    assert canonical.startswith(b'{"data":{"app_id":"billing-bot","note":"h\xc3\xa9llo')
    assert b" " not in canonical.replace("héllo ✓".encode(), b"")


@given(st.dictionaries(st.text(max_size=10), json_values, max_size=6))
def test_canonical_form_equals_the_documented_stdlib_recipe(event: dict[str, Any]) -> None:
    recipe = json.dumps(
        {k: v for k, v in event.items() if k != "qmsignature"},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    assert canonical_bytes(event) == recipe


@given(st.binary(min_size=0, max_size=200), st.binary(max_size=500))
def test_precomputed_hmac_is_rfc2104_hmac_sha256(secret: bytes, message: bytes) -> None:
    expected = hmac.new(secret, message, hashlib.sha256).hexdigest()
    assert HmacSha256(secret).hexdigest(message) == expected
    assert HmacSha256(secret).matches(message, expected.upper())


def test_sign_then_verify_and_tampering_fails() -> None:
    signed = sign_event(EVENT, key_id="sk_1", secret=SECRET)
    assert verify_signature(signed, secret=SECRET)
    assert not verify_signature(signed, secret=b"other" * 8)
    tampered = {**signed, "data": {**signed["data"], "tokens": 13}}
    assert not verify_signature(tampered, secret=SECRET)
    swapped_key = {**signed, "qmkeyid": "sk_2"}  # the key id is signed too
    assert not verify_signature(swapped_key, secret=SECRET)
    assert not verify_signature(EVENT, secret=SECRET)  # unsigned


def test_signature_is_the_hmac_of_the_canonical_bytes() -> None:
    signed = sign_event(EVENT, key_id="sk_1", secret=SECRET)
    expected = hmac.new(SECRET, canonical_bytes(signed), hashlib.sha256).hexdigest()
    assert signed["qmsignature"] == expected == signature_for(signed, secret=SECRET)


def test_content_hash_ignores_key_id_and_signature_but_not_content() -> None:
    first = sign_event(EVENT, key_id="sk_old", secret=SECRET)
    rotated = sign_event(EVENT, key_id="sk_new", secret=b"n" * 32)
    assert content_hash(first) == content_hash(rotated) == content_hash(EVENT)
    changed = {**EVENT, "data": {**EVENT["data"], "tokens": 99}}
    assert content_hash(changed) != content_hash(EVENT)
    # key order in the JSON text does not matter
    reordered = dict(reversed(list(EVENT.items())))
    assert content_hash(reordered) == content_hash(EVENT)


def test_content_hash_is_over_numbers_not_their_spelling() -> None:
    def with_units(units: object) -> dict[str, Any]:
        return {**EVENT, "data": {**EVENT["data"], "units": units, "list": [units]}}

    for whole, integer in [(2.0, 2), (1e16, 10**16), (-0.0, 0), (1.5e18, 15 * 10**17)]:
        assert content_hash(with_units(whole)) == content_hash(with_units(integer))
    # a fraction, a string and a number beyond the integers stay what they are
    assert content_hash(with_units(2.5)) != content_hash(with_units(2))
    assert content_hash(with_units("2.0")) != content_hash(with_units(2))
    assert numbers_as_integers({"a": [2**64 * 1.0, 1e300, True]}) == {
        "a": [2**64 * 1.0, 1e300, True]
    }
    assert type(numbers_as_integers(1.8446744073709552e19)) is float
    # a string holding ".0" or "e+" with no float is not rewritten
    text = {"id": "v1.0", "note": "e+"}
    assert content_bytes(text) == canonical_bytes(text)


@given(st.integers(min_value=-(2**53), max_value=2**53))
def test_a_whole_float_hashes_as_its_integer(number: int) -> None:
    assert content_hash({"n": float(number)}) == content_hash({"n": number})


json_leaf_with_floats = json_leaf | st.floats(allow_nan=False, allow_infinity=False)
json_values_with_floats = st.recursive(
    json_leaf_with_floats,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=8), json_values_with_floats, max_size=6))
def test_the_quick_byte_check_misses_no_whole_float(event: dict[str, Any]) -> None:
    # content_bytes skips the rewrite when its byte search finds no whole-float spelling: that
    # shortcut must give what rewriting every whole float gives, wherever the floats sit
    expected = orjson.dumps(numbers_as_integers(event), option=orjson.OPT_SORT_KEYS)
    assert content_bytes(event) == expected


def test_sign_event_asks_for_the_secret_as_bytes_when_given_its_hex() -> None:
    event = {"specversion": "1.0", "id": "e1", "source": "s", "type": "t", "time": "x"}
    with pytest.raises(TypeError, match=r"secret must be bytes, not str: pass bytes\.fromhex"):
        sign_event(event, key_id="k1", secret="00ff" * 8)  # type: ignore[arg-type]


# JSON.stringify of each float, as node 18 prints it (the implementation was also compared
# with node on 40,000 random doubles when it was written).
JAVASCRIPT_SPELLINGS = {
    1e-5: "0.00001",
    2.5e-5: "0.000025",
    1e-7: "1e-7",
    1e-6: "0.000001",
    1e16: "10000000000000000",
    1e21: "1e+21",
    1.5e21: "1.5e+21",
    123.45: "123.45",
    -0.000001234: "-0.000001234",
    5e-324: "5e-324",
    1.7976931348623157e308: "1.7976931348623157e+308",
    123456789012345680000.0: "123456789012345680000",
    0.1: "0.1",
    2.0: "2",
    -0.0: "0",
}


@pytest.mark.parametrize(("value", "spelled"), JAVASCRIPT_SPELLINGS.items())
def test_ecmascript_number_writes_floats_as_json_stringify_does(value: float, spelled: str) -> None:
    assert ecmascript_number(value) == spelled


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_ecmascript_number_reads_back_as_the_same_float(value: float) -> None:
    spelled = ecmascript_number(value)
    assert float(spelled) == value
    assert float(json.loads(spelled)) == value  # an integral spelling parses as an int


def test_float_spellings_are_the_stdlib_and_javascript_forms() -> None:
    event = {"id": "e1", "data": {"units": 1e-5, "big": 1e16, "n": 3, "s": "é"}, "qmkeyid": "k"}
    assert has_float(event)
    assert not has_float({"data": {"n": 3, "s": "1e-5"}})
    python_form, javascript_form = float_spellings(event)
    assert python_form == (
        '{"data":{"big":1e+16,"n":3,"s":"é","units":1e-05},"id":"e1","qmkeyid":"k"}'.encode()
    )
    assert (
        javascript_form
        == (
            '{"data":{"big":10000000000000000,"n":3,"s":"é","units":0.00001},"id":"e1",'
            '"qmkeyid":"k"}'
        ).encode()
    )
    assert canonical_bytes(event) not in (python_form, javascript_form)  # ours: 0.00001, 1e+16
