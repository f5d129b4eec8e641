"""Rate limits with GCRA (the generic cell rate algorithm), behind a `RateLimiter` seam.

GCRA keeps one number per key, the theoretical arrival time (TAT). A request of cost c at
time t is allowed when max(TAT, t) + c/rate - t <= burst/rate, and then sets TAT to that sum;
so from idle a key may take `burst` requests at once and afterwards `rate` per second. The
in-process backend holds TATs in a dict under a lock (one process); the Redis backend keeps
them in Redis and decides in one Lua script (atomic, clock from the Redis server), so every
API process shares the same limits.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from quartermaster.config import ConfigurationError, Settings
from quartermaster.errors import ServiceUnavailableError


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    retry_after: float  # seconds until this request would be allowed (0 when allowed)
    remaining: int  # requests still allowed right now after this one


def gcra(
    tat: float | None, now: float, *, rate: float, burst: int, cost: int = 1
) -> tuple[RateDecision, float | None]:
    """One GCRA step (pure): the decision and the new TAT (None: unchanged)."""
    if rate <= 0 or burst < 1:
        raise ValueError("rate must be positive and burst at least 1")
    interval = 1.0 / rate
    tolerance = interval * burst
    new_tat = max(tat if tat is not None else now, now) + interval * cost
    over = new_tat - now - tolerance
    if over > 1e-9:
        remaining = max(0, math.floor((tolerance - (max(tat or now, now) - now)) / interval))
        return RateDecision(False, over, remaining), None
    return RateDecision(True, 0.0, max(0, math.floor(-over / interval + 1e-9))), new_tat


class RateLimiter(Protocol):
    def acquire(self, key: str, *, rate: float, burst: int, cost: int = 1) -> RateDecision:
        """Take `cost` from the key's allowance if it has room."""
        ...

    def reset(self, key: str) -> None: ...

    def close(self) -> None: ...


class MemoryRateLimiter:
    """One process's limits (the embedded default)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tats: dict[str, float] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str, *, rate: float, burst: int, cost: int = 1) -> RateDecision:
        with self._lock:
            now = self._clock()
            decision, new_tat = gcra(self._tats.get(key), now, rate=rate, burst=burst, cost=cost)
            if new_tat is not None:
                self._tats[key] = new_tat
            if len(self._tats) > 100_000:
                self._tats = {k: v for k, v in self._tats.items() if v > now}
            return decision

    def reset(self, key: str) -> None:
        with self._lock:
            self._tats.pop(key, None)

    def close(self) -> None:
        self._tats.clear()


# KEYS[1] the key; ARGV rate, burst, cost. Time from the server so all clients agree.
GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = 1 / tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local new_tat = tat + interval * cost
local over = new_tat - now - tolerance
if over > 1e-9 then
  local remaining = math.floor((tolerance - (tat - now)) / interval)
  if remaining < 0 then remaining = 0 end
  return {0, tostring(over), remaining}
end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1000)
return {1, '0', math.floor(-over / interval + 1e-9)}
"""


class RedisRateLimiter:
    """Limits shared by every process through Redis (one Lua script per decision)."""

    def __init__(self, url: str, *, prefix: str = "qm:rl:") -> None:
        import redis

        self._client: Any = redis.Redis.from_url(url, socket_timeout=2.0)
        self._script: Any = self._client.register_script(GCRA_SCRIPT)
        self._prefix = prefix
        self._unreachable = (redis.ConnectionError, redis.TimeoutError)
        self._target = _host_and_port(self._client)

    def acquire(self, key: str, *, rate: float, burst: int, cost: int = 1) -> RateDecision:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        try:
            allowed, retry, remaining = self._script(
                keys=[self._prefix + key], args=[rate, burst, cost]
            )
        except self._unreachable as exc:
            # Refused rather than let through: a limit that cannot be counted is not applied
            # silently. Clients retry a 503; `qm events send` does.
            raise ServiceUnavailableError(
                f"rate limits cannot be checked: Redis at {self._target} (QM_REDIS_URL) "
                f"cannot be reached ({exc}); retry later"
            ) from None
        retry_after = float(retry.decode() if isinstance(retry, bytes) else retry)
        return RateDecision(bool(allowed), retry_after, int(remaining))

    def reset(self, key: str) -> None:
        self._client.delete(self._prefix + key)

    def close(self) -> None:
        self._client.close()


def _host_and_port(client: Any) -> str:
    """Where a Redis client connects, without the URL's password."""
    where = client.connection_pool.connection_kwargs
    return f"{where.get('host', '?')}:{where.get('port', '?')}"


def check_rate_limit_backend(settings: Settings) -> None:
    """Refuse to start on a Redis that cannot be reached: every ingest and decision would
    otherwise fail once a rate limit exists, with nothing said at startup."""
    if settings.rate_limit_backend != "redis":
        return
    import redis

    try:
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=2.0)
    except ValueError as exc:  # no scheme: 127.0.0.1:6379
        raise ConfigurationError(f"QM_REDIS_URL is not a Redis URL: {exc}") from None
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ConfigurationError(
            f"cannot reach Redis at {_host_and_port(client)} (QM_REDIS_URL), the rate-limit "
            f"backend (QM_RATE_LIMIT_BACKEND=redis): {exc}"
        ) from None
    finally:
        client.close()


def build_rate_limiter(backend: str, redis_url: str) -> RateLimiter:
    if backend == "redis":
        return RedisRateLimiter(redis_url)
    return MemoryRateLimiter()
