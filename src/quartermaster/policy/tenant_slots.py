"""Which tenant's evaluation gets the next free policy worker (policy/sandbox.py).

The workers are shared by every tenant; one tenant holds at most its share of them at once
(`tenant_share`: all but one). A free worker goes to a waiting tenant below its share: the one
holding the fewest, then the one served longest ago, then the earliest to ask, so tenants take
turns even with one worker. A wait has a bound: past it the evaluation fails with
`PolicyQueueError`, naming why."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from quartermaster.policy.engine import PolicyRuntimeError


class PolicyQueueError(PolicyRuntimeError):
    """The evaluation waited too long for a worker; it did not run."""


def tenant_share(max_workers: int) -> int:
    """Workers one tenant may hold at once: all but one (so another tenant finds one at once
    while a single tenant's evaluations keep most of the throughput); with one worker, that
    one (fairness is then the order in which a freed worker is handed on, `_next_waiter`)."""
    return max(1, max_workers - 1)


def _next_waiter(
    waiting: Sequence[tuple[int, str]],
    held: dict[str, int],
    served: dict[str, int],
    share: int,
) -> int | None:
    """The ticket of the waiter a free worker goes to: of the tenants below their share, the
    one holding the fewest, then the one served longest ago (`served`: the number of its last
    grant; never: first), then the earliest ticket; None if all are at their share. `waiting`
    is (ticket, tenant) in arrival order. With one worker, tenants take turns."""
    best: tuple[int, int, int] | None = None
    for ticket, tenant in waiting:
        holding = held.get(tenant, 0)
        rank = (holding, served.get(tenant, 0), ticket)
        if holding < share and (best is None or rank < best):
            best = rank
    return None if best is None else best[2]


class TenantSlots:
    """`total` slots shared by tenants, at most `share` held by one tenant at once."""

    def __init__(self, total: int, share: int) -> None:
        self.total = total
        self.share = share
        self._free = total
        self._held: dict[str, int] = {}
        self._waiting: list[tuple[int, str]] = []
        self._tickets = 0
        self._served: dict[str, int] = {}  # tenant: its last grant's number, while it waits
        self._grants = 0
        self._changed = threading.Condition()

    def held(self, tenant: str) -> int:
        with self._changed:
            return self._held.get(tenant, 0)

    def acquire(self, tenant: str, *, seconds: float) -> None:
        """Take a slot for `tenant`, waiting at most `seconds`; PolicyQueueError past that."""
        deadline = time.monotonic() + seconds
        with self._changed:
            self._tickets += 1
            ticket = self._tickets
            self._waiting.append((ticket, tenant))
            try:
                while not (
                    self._free > 0
                    and _next_waiter(self._waiting, self._held, self._served, self.share) == ticket
                ):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise PolicyQueueError(self._queue_message(tenant, seconds))
                    self._changed.wait(remaining)
            finally:
                self._waiting.remove((ticket, tenant))
                self._changed.notify_all()  # the next waiter may be eligible now
            self._free -= 1
            self._held[tenant] = self._held.get(tenant, 0) + 1
            self._grants += 1
            self._served[tenant] = self._grants
            self._forget_idle()

    def release(self, tenant: str) -> None:
        with self._changed:
            self._free += 1
            self._held[tenant] -= 1
            if not self._held[tenant]:
                del self._held[tenant]
            self._forget_idle()
            self._changed.notify_all()

    def _forget_idle(self) -> None:
        """A tenant holding and awaiting nothing counts as never served: bounded by those
        that are."""
        active = set(self._held) | {tenant for _, tenant in self._waiting}
        for tenant in [tenant for tenant in self._served if tenant not in active]:
            del self._served[tenant]

    def _queue_message(self, tenant: str, seconds: float) -> str:
        if self._held.get(tenant, 0) >= self.share:
            cause = (
                f"this tenant's other evaluations held its share of {self.share} of the"
                f" {self.total} policy workers"
            )
        else:
            cause = f"all {self.total} policy workers were busy"
        return f"the policy's evaluation waited over {seconds:g} s for a worker: {cause}"
