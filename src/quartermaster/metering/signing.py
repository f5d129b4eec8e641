"""Event signing (pure): the canonical form, HMAC-SHA256 signatures and the content hash.

Canonical form of an event: the JSON object without its `qmsignature` attribute, serialized with
keys sorted at every level, no insignificant whitespace, UTF-8 (non-ASCII characters are not
escaped). Python's `json.dumps(obj, sort_keys=True, separators=(",", ":"),
ensure_ascii=False).encode()` produces the same bytes but for some floats (`float_spellings`
covers those); docs/events.md has a runnable example.

The signature is the lowercase hex HMAC-SHA256 of those bytes under the app key's secret; the key
id travels in `qmkeyid` (and so is itself signed). The content hash leaves out both `qmkeyid`
and `qmsignature`: an event re-sent after a key rotation is the same event (a duplicate), not a
conflict. It also writes whole numbers as integers (`spelling_free`), so that `2.0` and `2`
are one content.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

SIGNING_SECRET_BYTES = 32  # an app signing key's secret: 64 hex characters as shown
SIGNATURE_ATTRIBUTE = "qmsignature"
KEY_ID_ATTRIBUTE = "qmkeyid"
_SORTED = orjson.OPT_SORT_KEYS
_BLOCK = 64  # SHA-256 block size, for the HMAC pads
_IPAD = bytes(0x36 for _ in range(_BLOCK))
_OPAD = bytes(0x5C for _ in range(_BLOCK))


def canonical_bytes(event: Mapping[str, Any]) -> bytes:
    """The bytes that are signed: the event without `qmsignature`, canonically serialized."""
    if SIGNATURE_ATTRIBUTE in event:
        event = {k: v for k, v in event.items() if k != SIGNATURE_ATTRIBUTE}
    return orjson.dumps(event, option=_SORTED)


def content_bytes(event: Mapping[str, Any]) -> bytes:
    """The canonical form without `qmsignature` and `qmkeyid`, its whole numbers written as
    integers (`numbers_as_integers`): what dedup compares."""
    if SIGNATURE_ATTRIBUTE in event or KEY_ID_ATTRIBUTE in event:
        event = {k: v for k, v in event.items() if k not in (SIGNATURE_ATTRIBUTE, KEY_ID_ATTRIBUTE)}
    return spelling_free(event, orjson.dumps(event, option=_SORTED))


def content_hash(event: Mapping[str, Any]) -> str:
    """Hex SHA-256 of `content_bytes(event)`."""
    return hashlib.sha256(content_bytes(event)).hexdigest()


# The canonical form writes a whole float as `2.0` or `1e+16`: `.0` closed by the `,`, `}` or
# `]` that ends a value, or a positive exponent. Those bytes appear in it otherwise only inside
# strings (a version's "1.0" is closed by a quote), so a form without them holds no whole float.
# A match inside a string takes the exact path, which changes nothing.
_VALUE_ENDS = b",}]"


def _may_hold_a_whole_float(serialized: bytes) -> bool:
    # a find loop: most events hold ".0" once, in "specversion":"1.0"; cheaper than a regex
    # or a search per closing byte
    at = serialized.find(b".0")
    while at >= 0:
        if serialized[at + 2 : at + 3] in _VALUE_ENDS:  # (at the very end: b"" is in it)
            return True
        at = serialized.find(b".0", at + 2)
    return b"e+" in serialized


# The integers the canonical form writes as integers (orjson's): a number beyond them is
# parsed as a float whatever its spelling, so it stays one.
_INTEGER_RANGE = range(-(2**63), 2**64)


def spelling_free(content: Mapping[str, Any], serialized: bytes) -> bytes:
    """`serialized` (the canonical form of `content`) with each whole number written as an
    integer: `2`, `2.0` and `2e0`, or `10000000000000000` and `1e16`, are one number in JSON,
    and an event re-sent by another JSON library is the same event (a duplicate, not a
    conflict). Other floats already serialize alike whatever their spelling."""
    if not _may_hold_a_whole_float(serialized):
        return serialized
    return orjson.dumps(numbers_as_integers(content), option=_SORTED)


def numbers_as_integers(value: Any) -> Any:
    """A copy of a parsed JSON value with each whole float in the integer range an int
    (`-0.0` becomes 0)."""
    if type(value) is float:
        if value.is_integer() and int(value) in _INTEGER_RANGE:
            return int(value)
        return value
    if type(value) is dict:
        return {k: numbers_as_integers(v) for k, v in value.items()}
    if type(value) is list:
        return [numbers_as_integers(v) for v in value]
    return value


def has_float(value: object) -> bool:
    """True when a parsed JSON value holds a number with a fraction or an exponent anywhere."""
    if type(value) is float:
        return True
    if type(value) is dict:
        return any(has_float(v) for v in value.values())
    if type(value) is list:
        return any(has_float(v) for v in value)
    return False


def float_spellings(unsigned: Mapping[str, Any]) -> Iterator[bytes]:
    """The canonical form of an event (without `qmsignature`) with its floats written as
    Python's `json` and as ECMAScript's `JSON.stringify` write them: the two spellings senders
    produce that differ from ours for some floats (1e-05 and 0.00001, 1e+16 and
    10000000000000000). Numbers are parsed alike whatever their spelling, so a signature over
    any of them signs the same content; tried only after the canonical form failed."""
    yield json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    yield "".join(_ecmascript_json(unsigned)).encode()


def _ecmascript_json(value: object) -> Iterator[str]:
    """JSON text with sorted keys and no whitespace, numbers as ECMAScript writes them."""
    if type(value) is dict:
        yield "{"
        for i, key in enumerate(sorted(value)):
            if i:
                yield ","
            yield json.dumps(key, ensure_ascii=False)
            yield ":"
            yield from _ecmascript_json(value[key])
        yield "}"
    elif type(value) is list:
        yield "["
        for i, item in enumerate(value):
            if i:
                yield ","
            yield from _ecmascript_json(item)
        yield "]"
    elif type(value) is float:
        yield ecmascript_number(value)
    else:
        yield json.dumps(value, ensure_ascii=False)


def ecmascript_number(value: float) -> str:
    """A finite float as ECMAScript's Number::toString writes it (JSON.stringify, RFC 8785):
    the shortest digits that read back as the same float, in fixed notation from 1e-6 up to
    1e21 and in exponent notation (1e-7, 1.5e+21) outside."""
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    all_digits = whole + fraction
    significant = all_digits.lstrip("0")
    # value = 0.<significant> x 10^point
    point = len(whole) + int(exponent or 0) - (len(all_digits) - len(significant))
    digits = significant.rstrip("0")
    count = len(digits)
    if count <= point <= 21:
        return sign + digits + "0" * (point - count)
    if 0 < point <= 21:
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * -point + digits
    power = point - 1
    head = digits[0] + ("." + digits[1:] if count > 1 else "")
    return f"{sign}{head}e{'+' if power > 0 else '-'}{abs(power)}"


class HmacSha256:
    """HMAC-SHA256 (RFC 2104) with the keyed pads hashed once: signing many events with one key
    then costs two hash copies per event instead of a fresh HMAC setup (about half the time)."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, secret: bytes) -> None:
        key = hashlib.sha256(secret).digest() if len(secret) > _BLOCK else secret
        key = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(a ^ b for a, b in zip(key, _IPAD, strict=True)))
        self._outer = hashlib.sha256(bytes(a ^ b for a, b in zip(key, _OPAD, strict=True)))

    def hexdigest(self, message: bytes) -> str:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()

    def matches(self, message: bytes, signature: str) -> bool:
        """Constant-time comparison against a hex signature (either case)."""
        return hmac.compare_digest(self.hexdigest(message), signature.lower())


def signature_for(event: Mapping[str, Any], *, secret: bytes) -> str:
    return HmacSha256(secret).hexdigest(canonical_bytes(event))


def sign_event(event: Mapping[str, Any], *, key_id: str, secret: bytes) -> dict[str, Any]:
    """A copy of `event` carrying `qmkeyid` and a fresh `qmsignature`. `secret` is the key's
    bytes (`bytes.fromhex` of the hex `qm app key create` shows)."""
    if not isinstance(secret, bytes):
        raise TypeError(
            f"secret must be bytes, not {type(secret).__name__}: pass bytes.fromhex(secret_hex)"
        )
    signed = {k: v for k, v in event.items() if k != SIGNATURE_ATTRIBUTE}
    signed[KEY_ID_ATTRIBUTE] = key_id
    signed[SIGNATURE_ATTRIBUTE] = signature_for(signed, secret=secret)
    return signed


def verify_signature(event: Mapping[str, Any], *, secret: bytes) -> bool:
    """True when the event carries a `qmsignature` made with `secret` over its canonical form."""
    signature = event.get(SIGNATURE_ATTRIBUTE)
    if not isinstance(signature, str):
        return False
    return HmacSha256(secret).matches(canonical_bytes(event), signature)
