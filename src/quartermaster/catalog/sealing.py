"""Seal small secrets (app signing keys) at rest with a key derived from the server key."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_NONCE_BYTES = 12


def derive_key(server_key: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(server_key)


def seal(plaintext: bytes, *, server_key: bytes, purpose: bytes, context: bytes) -> bytes:
    """AES-256-GCM; `context` (e.g. the key id) is bound as associated data."""
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCM(derive_key(server_key, purpose)).encrypt(nonce, plaintext, context)


def unseal(sealed: bytes, *, server_key: bytes, purpose: bytes, context: bytes) -> bytes:
    nonce, body = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
    return AESGCM(derive_key(server_key, purpose)).decrypt(nonce, body, context)
