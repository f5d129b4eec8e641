"""Envelope encryption, pure: root keys wrap per-tenant data keys; data keys seal values.

Everything is AES-256-GCM with a fresh 96-bit nonce per seal. The associated data binds each
ciphertext to where it belongs, so a ciphertext copied to another tenant, path or version (or a
wrapped data key copied to another tenant) fails to open instead of decrypting silently.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
NONCE_BYTES = 12
_FINGERPRINT_INFO = b"qm secrets fingerprint v1"


class SealError(Exception):
    """A ciphertext did not open: wrong key, wrong associated data, or tampered bytes."""


def new_data_key() -> bytes:
    return os.urandom(KEY_BYTES)


def _associated(*parts: str | int) -> bytes:
    # Length-prefixed, so ("a/b", 1) and ("a", "b/1") can never encode the same bytes.
    out = bytearray()
    for part in parts:
        encoded = str(part).encode()
        out += len(encoded).to_bytes(4, "big") + encoded
    return bytes(out)


def value_aad(tenant_id: str, path: str, version: int) -> bytes:
    return _associated("qm-kv-v1", tenant_id, path, version)


def data_key_aad(tenant_id: str) -> bytes:
    return _associated("qm-dek-v1", tenant_id)


def record_aad(tenant_id: str, kind: str, name: str) -> bytes:
    """For other sealed per-tenant material (engine connections, dynamic passwords)."""
    return _associated("qm-rec-v1", tenant_id, kind, name)


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    if len(key) != KEY_BYTES:
        raise ValueError(f"AES-256 needs a {KEY_BYTES}-byte key, got {len(key)} bytes")
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    if len(sealed) < NONCE_BYTES + 16:
        raise SealError("ciphertext is truncated")
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
    except InvalidTag:
        raise SealError("ciphertext does not open with this key and context") from None


def wrap_data_key(root_key: bytes, data_key: bytes, tenant_id: str) -> bytes:
    return seal(root_key, data_key, data_key_aad(tenant_id))


def unwrap_data_key(root_key: bytes, wrapped: bytes, tenant_id: str) -> bytes:
    return open_sealed(root_key, wrapped, data_key_aad(tenant_id))


def fingerprint_key(data_key: bytes) -> bytes:
    """The tenant's HMAC key for value fingerprints; derived, so it survives root rotation."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_FINGERPRINT_INFO).derive(
        data_key
    )


def fingerprint(key: bytes, value: str) -> str:
    """A keyed HMAC of a secret value: comparable, never reversible without the key."""
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()
