"""A small in-process cache of verified API keys, so a request's key check costs no database
round trip (nor a thread hop) while the key's last check is recent.

Entries are keyed by the SHA-256 of the whole token (key id and secret): a wrong secret for a
cached key id misses and is checked against the database as before. An entry is used only
while it is younger than the TTL and its key has not expired (the expiry is kept with it and
checked at every use), and revoking a key through this process drops its entries at once.
A key revoked by another process (another server, the CLI against another server) stays
usable here for at most the TTL; `auth_cache_seconds = 0` turns the cache off.

It also keeps the state (revoked, expiry) of API keys that minted workload identity tokens, by
key id, so checking a token's minting key costs no database read while that state is recent;
revoking a key through this process drops it too, so its tokens are refused here at once."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from quartermaster.domain.timeutil import utc_now
from quartermaster.tenancy.service import AuthContext, KeyState


@dataclass(frozen=True, slots=True)
class _Entry:
    context: AuthContext
    key_id: str
    expires_at: datetime | None
    checked_at: float  # monotonic seconds


class AuthCache:
    """Verified keys, at most `max_entries` (least recently used dropped first)."""

    def __init__(
        self,
        ttl_seconds: float,
        *,
        max_entries: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._key_states: OrderedDict[str, tuple[KeyState, float]] = OrderedDict()
        self._lock = threading.Lock()
        # Bumped by every invalidation: a check that read the database before a revocation
        # committed must not store its (stale) result after the revocation dropped the key.
        self._generation = 0

    @property
    def enabled(self) -> bool:
        return self.ttl_seconds > 0

    @staticmethod
    def token_hash(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    @property
    def generation(self) -> int:
        return self._generation

    def get(self, token: str) -> AuthContext | None:
        if not self.enabled:
            return None
        digest = self.token_hash(token)
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            fresh = self._clock() - entry.checked_at < self.ttl_seconds
            if not fresh or (entry.expires_at is not None and entry.expires_at <= utc_now()):
                del self._entries[digest]  # the next request checks the database again
                return None
            self._entries.move_to_end(digest)
            return entry.context

    def put(
        self,
        token: str,
        context: AuthContext,
        *,
        key_id: str,
        expires_at: datetime | None,
        generation: int,
    ) -> None:
        """Store a check's result, unless a key was invalidated since `generation` was read
        (taken before the database read)."""
        if not self.enabled:
            return
        digest, entry = self.token_hash(token), _Entry(context, key_id, expires_at, self._clock())
        with self._lock:
            if generation != self._generation:
                return
            self._entries[digest] = entry
            self._entries.move_to_end(digest)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def key_state(self, key_id: str) -> KeyState | None:
        """The cached state of API key `key_id` if it was read less than the TTL ago (its
        expiry is for the caller to compare with now)."""
        if not self.enabled:
            return None
        with self._lock:
            found = self._key_states.get(key_id)
            if found is None:
                return None
            if self._clock() - found[1] >= self.ttl_seconds:
                del self._key_states[key_id]
                return None
            self._key_states.move_to_end(key_id)
            return found[0]

    def put_key_state(self, state: KeyState, *, generation: int) -> None:
        """Store a key's state read from the database, unless a key was invalidated since
        `generation` was read (taken before that read)."""
        if not self.enabled:
            return
        with self._lock:
            if generation != self._generation:
                return
            self._key_states[state.key_id] = (state, self._clock())
            self._key_states.move_to_end(state.key_id)
            while len(self._key_states) > self.max_entries:
                self._key_states.popitem(last=False)

    def invalidate_key(self, key_id: str) -> None:
        """Drop every entry of `key_id`, and its state (called when this process revokes it)."""
        with self._lock:
            self._generation += 1
            self._key_states.pop(key_id, None)
            for digest in [d for d, e in self._entries.items() if e.key_id == key_id]:
                del self._entries[digest]

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()
            self._key_states.clear()

    def __len__(self) -> int:
        return len(self._entries)
