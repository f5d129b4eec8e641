"""Event signing (pure): the canonical form, HMAC-SHA256 signatures and the content hash.

Canonical form of an event: the JSON object without its `qmsignature` attribute, serialized with
keys sorted at every level, no insignificant whitespace, UTF-8 (non-ASCII characters are not
escaped). Python's `json.dumps(obj, sort_keys=True, separators=(",", ":"),
ensure_ascii=False).encode()` produces the same bytes; docs/events.md has a runnable example.

The signature is the lowercase hex HMAC-SHA256 of those bytes under the app key's secret; the key
id travels in `qmkeyid` (and so is itself signed). The content hash leaves out both `qmkeyid`
and `qmsignature`: an event re-sent after a key rotation is the same event (a duplicate), not a
conflict.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
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
    """The canonical form without `qmsignature` and `qmkeyid`: what dedup compares."""
    if SIGNATURE_ATTRIBUTE in event or KEY_ID_ATTRIBUTE in event:
        event = {k: v for k, v in event.items() if k not in (SIGNATURE_ATTRIBUTE, KEY_ID_ATTRIBUTE)}
    return orjson.dumps(event, option=_SORTED)


def content_hash(event: Mapping[str, Any]) -> str:
    """Hex SHA-256 of `content_bytes(event)`."""
    return hashlib.sha256(content_bytes(event)).hexdigest()


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
