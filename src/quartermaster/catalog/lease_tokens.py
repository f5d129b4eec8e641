"""Resource lease tokens (pure): `rl1.<payload>.<mac>`, an HMAC by a key derived from the
server key, binding a resource to its app for [issued_at, expires_at)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from quartermaster.catalog.sealing import derive_key

PREFIX = "rl1"
_PURPOSE = b"qm resource lease tokens v1"


@dataclass(frozen=True, slots=True)
class LeaseClaims:
    lease_id: str
    tenant_id: str
    resource_id: str
    app_id: str
    issued_at: datetime
    expires_at: datetime


class InvalidLeaseToken(ValueError):
    """The token is malformed, forged, or for another tenant; the message says which."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_token(claims: LeaseClaims, *, server_key: bytes) -> str:
    payload = orjson.dumps(
        {
            "lid": claims.lease_id,
            "ten": claims.tenant_id,
            "res": claims.resource_id,
            "app": claims.app_id,
            "iat": int(claims.issued_at.timestamp()),
            "exp": int(claims.expires_at.timestamp()),
        }
    )
    body = f"{PREFIX}.{_b64(payload)}"
    mac = hmac.new(derive_key(server_key, _PURPOSE), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def verify_token(token: str, *, server_key: bytes, tenant_id: str) -> LeaseClaims:
    """Check the MAC and the tenant. Expiry is not checked here: events that happened during
    the lease stay attributable when they arrive after it ended (the caller compares times)."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise InvalidLeaseToken("lease token is malformed: expected rl1.<payload>.<mac>")
    body = f"{parts[0]}.{parts[1]}"
    expected = hmac.new(derive_key(server_key, _PURPOSE), body.encode(), hashlib.sha256).digest()
    try:
        given = _unb64(parts[2])
        payload = orjson.loads(_unb64(parts[1]))
    except (ValueError, orjson.JSONDecodeError):
        raise InvalidLeaseToken("lease token is malformed: bad base64 or JSON") from None
    if not hmac.compare_digest(expected, given):
        raise InvalidLeaseToken("lease token signature does not match")
    if payload.get("ten") != tenant_id:
        raise InvalidLeaseToken("lease token belongs to another tenant")
    return LeaseClaims(
        lease_id=str(payload["lid"]),
        tenant_id=str(payload["ten"]),
        resource_id=str(payload["res"]),
        app_id=str(payload["app"]),
        issued_at=datetime.fromtimestamp(int(payload["iat"]), UTC),
        expires_at=datetime.fromtimestamp(int(payload["exp"]), UTC),
    )
