"""Workload identity tokens: short-lived JWTs signed with the server's Ed25519 key (EdDSA).

The signing key lives in the data dir (mode 600), created by `qm init` or at first use; there
is no default key. A token names one tenant and one app (and a job, for CI jobs), and the API
key that minted it (`qm_key`); the broker exchanges it for secrets according to the tenant's
access rules while that key is neither revoked nor expired (secrets/workloads.py).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from quartermaster.config import ConfigurationError, Settings
from quartermaster.domain.timeutil import utc_now

IDENTITY_KEY_FILE = "identity-ed25519.pem"
ALGORITHM = "EdDSA"


def identity_key_path(settings: Settings) -> Path:
    return settings.data_dir / IDENTITY_KEY_FILE


def generate_identity_key(settings: Settings) -> Path:
    """Create the signing key once; a concurrent creator's key wins, nothing is overwritten."""
    path = identity_key_path(settings)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def load_identity_key(settings: Settings) -> Ed25519PrivateKey:
    return read_identity_key(generate_identity_key(settings))


def read_identity_key(path: Path) -> Ed25519PrivateKey:
    """The key in an existing identity key file; ConfigurationError naming the file and what
    is wrong with it (readable by others, not a PEM private key, not Ed25519)."""
    if path.stat().st_mode & 0o077:
        raise ConfigurationError(f"{path} is readable by other users: chmod 600 it")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigurationError(
            f"{path} does not hold an unencrypted PEM private key (Ed25519)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"{path} does not hold an Ed25519 private key")
    return key


@dataclass(frozen=True, slots=True)
class WorkloadClaims:
    tenant_id: str
    subject: str  # app:<app> | job:<job>
    app: str
    team: str | None
    job: str | None
    token_id: str
    expires_at: datetime
    minted_by: str | None = None  # the id of the API key that minted it (claim `qm_key`)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    claims: WorkloadClaims


@dataclass(frozen=True, slots=True)
class TokenRejection:
    """Why a token was refused, with the claims it carried if they could be read (for the
    audit record; `signature_valid` says whether they can be trusted)."""

    reason: str
    tenant_id: str | None
    subject: str | None
    signature_valid: bool


class IdentitySigner:
    def __init__(self, private_key: Ed25519PrivateKey, *, issuer: str) -> None:
        self._private = private_key
        self._public: Ed25519PublicKey = private_key.public_key()
        raw = self._public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.key_id = hashlib.sha256(raw).hexdigest()[:16]
        self._public_raw = raw
        self.issuer = issuer

    def jwks(self) -> dict[str, Any]:
        x = base64.urlsafe_b64encode(self._public_raw).rstrip(b"=").decode()
        return {
            "keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.key_id, "alg": ALGORITHM}]
        }

    def issue(
        self,
        *,
        tenant_id: str,
        app: str,
        team: str | None,
        job: str | None,
        audience: str,
        ttl: timedelta,
        minted_by: str | None = None,
        now: datetime | None = None,
    ) -> IssuedToken:
        issued_at = now or utc_now()
        expires_at = issued_at + ttl
        subject = f"job:{job}" if job is not None else f"app:{app}"
        token_id = secrets.token_hex(12)
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "iat": int(issued_at.timestamp()),
            "nbf": int(issued_at.timestamp()),
            "exp": int(expires_at.timestamp()),
            "jti": token_id,
            "qm_tenant": tenant_id,
            "qm_app": app,
        }
        if team is not None:
            payload["qm_team"] = team
        if job is not None:
            payload["qm_job"] = job
        if minted_by is not None:
            payload["qm_key"] = minted_by
        token = jwt.encode(
            payload, self._private, algorithm=ALGORITHM, headers={"kid": self.key_id}
        )
        claims = WorkloadClaims(
            tenant_id=tenant_id,
            subject=subject,
            app=app,
            team=team,
            job=job,
            token_id=token_id,
            expires_at=datetime.fromtimestamp(payload["exp"], tz=issued_at.tzinfo),
            minted_by=minted_by,
        )
        return IssuedToken(token=token, claims=claims)

    def verify(self, token: str, *, audience: str) -> WorkloadClaims | TokenRejection:
        try:
            payload = jwt.decode(
                token,
                self._public,
                algorithms=[ALGORITHM],
                audience=audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub", "aud", "iss", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            return self._rejection(token, "identity token has expired", signature_valid=True)
        except jwt.InvalidAudienceError:
            return self._rejection(
                token, f"identity token is not for audience {audience!r}", signature_valid=True
            )
        except jwt.InvalidIssuerError:
            return self._rejection(
                token, f"identity token was not issued by {self.issuer!r}", signature_valid=True
            )
        except jwt.ImmatureSignatureError:
            return self._rejection(token, "identity token is not valid yet", signature_valid=True)
        except jwt.MissingRequiredClaimError as exc:
            return self._rejection(
                token, f"identity token lacks the {exc.claim!r} claim", signature_valid=True
            )
        except jwt.InvalidSignatureError:
            return self._rejection(
                token,
                "identity token signature is invalid (not signed by this server)",
                signature_valid=False,
            )
        except jwt.InvalidTokenError as exc:
            # Any other refusal (alg "none" or not EdDSA, a bad header): its claims are still
            # read, unverified, so the attempt is audited in the tenant it names like the rest.
            return self._rejection(token, f"malformed identity token: {exc}", signature_valid=False)
        try:
            tenant_id = str(payload["qm_tenant"])
            app = str(payload["qm_app"])
            subject = str(payload["sub"])
        except KeyError as exc:
            return self._rejection(
                token, f"identity token lacks the {exc.args[0]!r} claim", signature_valid=True
            )
        job = payload.get("qm_job")
        minted_by = payload.get("qm_key")
        expected_subject = f"job:{job}" if job is not None else f"app:{app}"
        if subject != expected_subject:
            return TokenRejection(
                "identity token subject is inconsistent", tenant_id, subject, True
            )
        return WorkloadClaims(
            tenant_id=tenant_id,
            subject=subject,
            app=app,
            team=payload.get("qm_team"),
            job=None if job is None else str(job),
            token_id=str(payload["jti"]),
            expires_at=datetime.fromtimestamp(int(payload["exp"]), tz=utc_now().tzinfo),
            minted_by=None if minted_by is None else str(minted_by),
        )

    @staticmethod
    def _rejection(token: str, reason: str, *, signature_valid: bool) -> TokenRejection:
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            return TokenRejection(reason, None, None, signature_valid)
        tenant = unverified.get("qm_tenant")
        subject = unverified.get("sub")
        return TokenRejection(
            reason,
            str(tenant) if isinstance(tenant, str) else None,
            str(subject) if isinstance(subject, str) else None,
            signature_valid,
        )


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and not token.startswith("qm_")
