"""Policies are evaluated in worker processes with a time and a memory budget.

regopy has no limit of its own: `numbers.range(1, 1e7)` in a rule runs for minutes and takes
gigabytes, in the server's own process. So an evaluation is sent to a worker
(`python -m quartermaster.policy.worker`), started with an empty environment, and the server
waits at most `EVALUATION_SECONDS` for its answer while it checks the worker's resident memory
against `EVALUATION_MEMORY_BYTES`; over either, the worker is killed (a new one starts on next
use) and the evaluation fails with `PolicyBudgetError`, naming the limit. A worker is reused
for evaluation after evaluation and keeps its compiled policies, so a warm evaluation costs a
round trip on a pipe (well under a millisecond) on top of the query. A policy a worker has not
compiled yet is compiled there first, in a request of its own within `COMPILE_SECONDS` (and
the memory limit): compiling is not charged to the evaluation's time limit.

The workers are shared by every tenant, but one tenant holds at most `tenant_share` of them at
once (all but one): its further evaluations wait for one of its own to end, so one tenant's
slow policies leave a worker for the others. A freed worker goes to the waiting tenant that
holds the fewest (policy/tenant_slots.py), so with one worker, or several tenants each holding
their share, another tenant's evaluation waits for one evaluation to end, not for a queue of
someone else's. An evaluation that waits longer than `QUEUE_SECONDS` for a worker fails
(`PolicyQueueError`, naming the cause): a decision then fails closed, as over the budget."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

from quartermaster.errors import InvalidInputError
from quartermaster.policy.engine import (
    RULE_SETS,
    PolicyRuntimeError,
    Verdict,
    canonical_json,
)
from quartermaster.policy.tenant_slots import PolicyQueueError, TenantSlots, tenant_share
from quartermaster.policy.worker import MAX_COMPILED

__all__ = ["PolicyBudgetError", "PolicyQueueError", "PolicySandbox", "tenant_share"]

EVALUATION_SECONDS = 2.0
EVALUATION_MEMORY_BYTES = 512 * 1024 * 1024
MAX_WORKERS = 4  # evaluations at once; more wait for a worker
# How long an evaluation waits for a worker before it fails: a tenant's burst of decisions
# against policies that run into the budget (3 workers of 4, up to twice the time limit each)
# drains 12 in 8-16 s.
QUEUE_SECONDS = 30.0
STARTUP_SECONDS = 30.0  # importing regopy in a new worker; not charged to an evaluation
# Compiling a policy a worker has not seen, not charged to an evaluation either: a 128 KiB
# policy (engine.MAX_POLICY_BYTES) of 1,500 rules compiled in 3-8 s at load 12.
COMPILE_SECONDS = 60.0
_POLL_SECONDS = 0.01


class PolicyBudgetError(PolicyRuntimeError):
    """The evaluation went over its time or memory budget; its worker was killed."""


class _WorkerStopped(Exception):
    pass


def _worker_environment() -> dict[str, str]:
    """Only what Python needs to find the package: no database URL, no secrets."""
    paths = [path for path in sys.path if path]
    return {"PATH": os.defpath, "PYTHONPATH": os.pathsep.join(paths), "LC_ALL": "C.UTF-8"}


def _resident_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None  # not Linux: the time limit still holds


class _Worker:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "quartermaster.policy.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=_worker_environment(),
            close_fds=True,
        )
        self._buffer = b""
        # The keys the worker holds compiled, oldest first, as worker.compiled_policy keeps
        # them (the same bound, the same order): a policy not among them is compiled first.
        self.compiled: dict[str, None] = {}

    def compile(self, policies: Sequence[tuple[str, str, str]], *, memory_bytes: int) -> None:
        """Have the worker compile the policies it lacks, within COMPILE_SECONDS."""
        missing = [policy for policy in policies if policy[0] not in self.compiled]
        if not missing:
            return
        request = {"compile": [{"key": k, "name": n, "source": s} for k, n, s in missing]}
        try:
            self.ask(request, seconds=COMPILE_SECONDS, memory_bytes=memory_bytes)
        except PolicyBudgetError as exc:
            raise PolicyBudgetError(str(exc).replace("evaluation", "compilation", 1)) from None
        for key, _, _ in missing:
            if len(self.compiled) >= MAX_COMPILED:
                self.compiled.pop(next(iter(self.compiled)))
            self.compiled[key] = None

    def ask(self, request: dict[str, Any], *, seconds: float, memory_bytes: int) -> Any:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(request).encode() + b"\n")
            self.process.stdin.flush()
        except OSError as exc:
            raise _WorkerStopped(str(exc)) from None
        return json.loads(self._read_line(seconds=seconds, memory_bytes=memory_bytes))

    def _read_line(self, *, seconds: float, memory_bytes: int) -> bytes:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + seconds
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PolicyBudgetError(
                    f"the policy's evaluation went over its time limit of {seconds:g} s"
                )
            ready, _, _ = select.select([fd], [], [], min(remaining, _POLL_SECONDS))
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise _WorkerStopped(f"exit status {self.process.wait()}")
                self._buffer += chunk
            resident = _resident_bytes(self.process.pid)
            if resident is not None and resident > memory_bytes:
                raise PolicyBudgetError(
                    "the policy's evaluation went over its memory limit of "
                    f"{memory_bytes // (1024 * 1024)} MiB"
                )
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def wait_ready(self) -> None:
        answer = json.loads(self._read_line(seconds=STARTUP_SECONDS, memory_bytes=1 << 62))
        if answer != {"ready": True}:
            raise _WorkerStopped(f"unexpected greeting {answer!r}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


def _stop_all(workers: list[_Worker]) -> None:
    while workers:
        workers.pop().stop()


class PolicySandbox:
    """Worker processes that evaluate policies within a budget; thread-safe."""

    def __init__(
        self,
        *,
        seconds: float = EVALUATION_SECONDS,
        memory_bytes: int = EVALUATION_MEMORY_BYTES,
        max_workers: int = MAX_WORKERS,
        queue_seconds: float = QUEUE_SECONDS,
    ) -> None:
        self.seconds = seconds
        self.memory_bytes = memory_bytes
        self.queue_seconds = queue_seconds
        self.slots = TenantSlots(max_workers, tenant_share(max_workers))
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _stop_all, self._idle)

    def evaluate(self, key: str, name: str, source: str, document: Any, *, tenant: str) -> Verdict:
        """One policy on one input, for `tenant` (whose share of the workers it waits for).
        Raises InvalidInputError (the source does not compile), PolicyBudgetError (over the
        budget), PolicyQueueError (no worker in time) or PolicyRuntimeError (it failed on the
        input)."""
        answer = self._ask([(key, name, source)], json.loads(canonical_json(document)), tenant)
        outcome = _outcome(answer["results"][0])
        if isinstance(outcome, Verdict):
            return outcome
        raise outcome

    def evaluate_many(
        self, policies: Sequence[tuple[str, str, str]], document: Any, *, tenant: str
    ) -> list[Verdict | PolicyRuntimeError | InvalidInputError]:
        """Several policies (key, name, source) on one input, in one request: the worker sets
        the input once for all of them (as `InputBatch` does in-process), so each policy after
        the first costs its query only. Each policy's outcome in order: its verdict, or the
        error it failed with (InvalidInputError: the source does not compile). Should the
        request go over the budget or its worker stop, which policy did it cannot be told:
        each is then evaluated alone, within a budget of its own, so the one that goes over
        fails naming the limit and the others answer. No worker in time (PolicyQueueError):
        each fails with that, none is tried again."""
        if not policies:
            return []
        plain = json.loads(canonical_json(document))
        try:
            answer = self._ask(policies, plain, tenant)
        except PolicyQueueError as exc:
            return [exc for _ in policies]
        except PolicyRuntimeError as exc:
            if len(policies) == 1:
                return [exc]
            return [self._alone(policy, plain, tenant) for policy in policies]
        return [_outcome(result) for result in answer["results"]]

    def _alone(
        self, policy: tuple[str, str, str], document: Any, tenant: str
    ) -> Verdict | PolicyRuntimeError | InvalidInputError:
        try:
            return _outcome(self._ask([policy], document, tenant)["results"][0])
        except PolicyRuntimeError as exc:
            return exc

    def _ask(self, policies: Sequence[tuple[str, str, str]], document: Any, tenant: str) -> Any:
        """One request to an idle worker (a new one if none is idle), within the budget, once
        `tenant` has a worker of its share (`TenantSlots`)."""
        request = {
            "policies": [
                {"key": key, "name": name, "source": source} for key, name, source in policies
            ],
            "input": document,
        }
        self.slots.acquire(tenant, seconds=self.queue_seconds)
        try:
            with self._lock:
                worker = self._idle.pop() if self._idle else None
            try:
                if worker is None:
                    worker = _Worker()
                    worker.wait_ready()
                worker.compile(policies, memory_bytes=self.memory_bytes)
                answer = worker.ask(request, seconds=self.seconds, memory_bytes=self.memory_bytes)
            except PolicyBudgetError:
                if worker is not None:
                    worker.stop()
                raise
            except (_WorkerStopped, OSError, ValueError) as exc:
                if worker is not None:
                    worker.stop()
                raise PolicyRuntimeError(
                    f"the policy's evaluation stopped ({exc}); it may have run out of memory"
                ) from None
            with self._lock:
                self._idle.append(worker)
        finally:
            self.slots.release(tenant)
        return answer

    def close(self) -> None:
        self._finalizer()


def _outcome(result: dict[str, Any]) -> Verdict | PolicyRuntimeError | InvalidInputError:
    """One policy's answer from the worker, as a verdict or the error it failed with."""
    if "verdict" in result:
        return Verdict(**{rule: list(result["verdict"][rule]) for rule in RULE_SETS})
    if result.get("invalid"):
        return InvalidInputError(str(result["error"]), field="source")
    return PolicyRuntimeError(str(result["error"]))
