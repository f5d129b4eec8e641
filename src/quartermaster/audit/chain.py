"""The hash chain (pure): how a record is hashed, and a streaming verifier that names the
record that was edited, removed or reordered.

Each record's hash is SHA-256 over the previous record's hash and the record's canonical JSON,
so changing, dropping or moving any record breaks the chain at that point. Verification reads
records in stored order (insertion order in the database, line order in a shipped file) and
keeps memory proportional to the anomalies found, not to the length of the log.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

GENESIS_HASH = "0" * 64


@dataclass(frozen=True, slots=True)
class ChainRecord:
    tenant_id: str
    seq: int
    recorded_at: datetime
    action: str
    outcome: str
    actor: str
    path: str | None
    lease_id: str | None
    version: int | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {**_content(self), "prev_hash": self.prev_hash, "hash": self.hash}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChainRecord:
        return cls(
            tenant_id=str(data["tenant_id"]),
            seq=int(data["seq"]),
            recorded_at=datetime.fromisoformat(str(data["recorded_at"])),
            action=str(data["action"]),
            outcome=str(data["outcome"]),
            actor=str(data["actor"]),
            path=data.get("path"),
            lease_id=data.get("lease_id"),
            version=None if data.get("version") is None else int(data["version"]),
            detail=dict(data.get("detail") or {}),
            prev_hash=str(data["prev_hash"]),
            hash=str(data["hash"]),
        )


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def canonical_detail(detail: dict[str, Any]) -> str:
    return json.dumps(detail, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _content(record: ChainRecord) -> dict[str, Any]:
    return {
        "tenant_id": record.tenant_id,
        "seq": record.seq,
        "recorded_at": format_time(record.recorded_at),
        "action": record.action,
        "outcome": record.outcome,
        "actor": record.actor,
        "path": record.path,
        "lease_id": record.lease_id,
        "version": record.version,
        "detail": record.detail,
    }


def compute_hash(record: ChainRecord, prev_hash: str) -> str:
    body = json.dumps(_content(record), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainProblem:
    kind: str  # edited | rehashed | removed | reordered | duplicated | truncated
    seq: int
    message: str


@dataclass(slots=True)
class VerifyReport:
    checked: int
    last_seq: int
    last_hash: str
    problems: list[ChainProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class ChainVerifier:
    """Feed one tenant's records in stored order, then `finish()`."""

    def __init__(self, *, start_seq: int = 1, start_prev_hash: str = GENESIS_HASH) -> None:
        self._max_seq = start_seq - 1
        self._prev: tuple[int, str] = (start_seq - 1, start_prev_hash)
        self._missing: list[list[int]] = []  # [low, high] seq ranges skipped over so far
        self._problems: list[ChainProblem] = []
        self._checked = 0

    def feed(self, record: ChainRecord) -> None:
        self._checked += 1
        if compute_hash(record, record.prev_hash) != record.hash:
            self._problems.append(
                ChainProblem(
                    "edited",
                    record.seq,
                    f"record seq {record.seq} was edited: its content no longer matches its hash",
                )
            )
        prev_seq, prev_hash = self._prev
        if record.seq == self._max_seq + 1:
            if prev_seq == record.seq - 1 and record.prev_hash != prev_hash:
                self._problems.append(
                    ChainProblem(
                        "rehashed",
                        prev_seq,
                        f"record seq {prev_seq} was altered and re-hashed: record seq "
                        f"{record.seq} no longer chains to it",
                    )
                )
            self._max_seq = record.seq
        elif record.seq > self._max_seq + 1:
            self._missing.append([self._max_seq + 1, record.seq - 1])
            self._max_seq = record.seq
        elif self._take_missing(record.seq):
            self._problems.append(
                ChainProblem(
                    "reordered",
                    record.seq,
                    f"record seq {record.seq} is out of order: stored after seq {self._max_seq}",
                )
            )
        else:
            self._problems.append(
                ChainProblem("duplicated", record.seq, f"record seq {record.seq} appears twice")
            )
        self._prev = (record.seq, record.hash)

    def _take_missing(self, seq: int) -> bool:
        for index, (low, high) in enumerate(self._missing):
            if low <= seq <= high:
                pieces = [r for r in ([low, seq - 1], [seq + 1, high]) if r[0] <= r[1]]
                self._missing[index : index + 1] = pieces
                return True
        return False

    def finish(self, *, head_seq: int | None = None, head_hash: str | None = None) -> VerifyReport:
        problems = list(self._problems)
        for low, high in self._missing:
            which = f"record seq {low} is" if low == high else f"records seq {low}-{high} are"
            problems.append(ChainProblem("removed", low, f"{which} missing (removed)"))
        if head_seq is not None and head_seq > self._max_seq:
            problems.append(
                ChainProblem(
                    "truncated",
                    self._max_seq + 1,
                    f"records seq {self._max_seq + 1}-{head_seq} are missing from the end "
                    f"(the chain head says seq {head_seq})",
                )
            )
        elif (
            head_seq is not None
            and head_hash is not None
            and head_seq == self._prev[0]
            and head_hash != self._prev[1]
        ):
            problems.append(
                ChainProblem(
                    "rehashed",
                    head_seq,
                    f"record seq {head_seq} does not match the chain head's hash",
                )
            )
        problems.sort(key=lambda p: p.seq)
        return VerifyReport(
            checked=self._checked,
            last_seq=self._max_seq,
            last_hash=self._prev[1],
            problems=problems,
        )


def verify_records(
    records: list[ChainRecord], *, head_seq: int | None = None, head_hash: str | None = None
) -> VerifyReport:
    verifier = ChainVerifier()
    for record in records:
        verifier.feed(record)
    return verifier.finish(head_seq=head_seq, head_hash=head_hash)
