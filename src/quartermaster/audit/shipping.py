"""Shipping the audit log to an external sink, asynchronously.

The shipper runs in its own thread with its own cursor per (sink, tenant): the broker only
ever writes the database, so a slow, failing or hung sink delays shipping and nothing else.
Delivery is at least once; every shipped record carries (tenant_id, seq, hash), which a sink
can deduplicate on and verify with `qm audit verify --file`.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from quartermaster.audit.log import to_chain_record
from quartermaster.audit.models import AuditHead, AuditRecord, AuditSinkCursor
from quartermaster.background import BackgroundService
from quartermaster.config import ConfigurationError, audit_sink_problem
from quartermaster.domain.timeutil import utc_now
from quartermaster.runtime import Runtime

WEBHOOK_TIMEOUT_SECONDS = 30.0


class AuditSink(Protocol):
    """Somewhere outside the database. `write` returns only once the batch is durable there,
    and raises otherwise (the batch is then shipped again later)."""

    @property
    def name(self) -> str: ...

    def write(self, records: list[dict[str, Any]]) -> None: ...


def _sink_name(url: str) -> str:
    # A new destination starts from the beginning of every chain.
    return hashlib.sha256(url.encode()).hexdigest()[:32]


class JsonlFileSink:
    def __init__(self, path: Path, *, url: str | None = None) -> None:
        self.path = path
        self._name = _sink_name(url or f"file://{path}")
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    def write(self, records: list[dict[str, Any]]) -> None:
        lines = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(lines)
                fh.flush()
                os.fsync(fh.fileno())


class WebhookSink:
    """POSTs {"records": [...]} as JSON; any 2xx is acceptance."""

    def __init__(self, url: str, *, timeout: float = WEBHOOK_TIMEOUT_SECONDS) -> None:
        self.url = url
        self._name = _sink_name(url)
        self._client = httpx.Client(timeout=timeout)

    @property
    def name(self) -> str:
        return self._name

    def write(self, records: list[dict[str, Any]]) -> None:
        response = self._client.post(self.url, json={"records": records})
        if not response.is_success:
            raise RuntimeError(f"audit sink answered {response.status_code}")

    def close(self) -> None:
        self._client.close()


def sink_from_url(url: str) -> AuditSink:
    """The sink of a valid audit_sink_url; the settings refuse the others (config.py)."""
    problem = audit_sink_problem(url)
    if problem is not None:
        raise ConfigurationError(f"QM_AUDIT_SINK_URL={url!r} {problem}")
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return JsonlFileSink(Path(unquote(parsed.path)), url=url)
    return WebhookSink(url)


def _advance(sink: str, tenant_id: str, seq: int, *, session: Session) -> None:
    now = utc_now()
    result = session.execute(
        update(AuditSinkCursor)
        .where(AuditSinkCursor.sink == sink, AuditSinkCursor.tenant_id == tenant_id)
        .where(AuditSinkCursor.seq < seq)
        .values(seq=seq, updated_at=now)
    )
    if getattr(result, "rowcount", 0):
        session.commit()
        return
    exists = session.scalar(
        select(AuditSinkCursor.seq).where(
            AuditSinkCursor.sink == sink, AuditSinkCursor.tenant_id == tenant_id
        )
    )
    if exists is None:
        session.add(AuditSinkCursor(sink=sink, tenant_id=tenant_id, seq=seq, updated_at=now))
        try:
            session.commit()
        except IntegrityError:
            session.rollback()  # another shipper created it; it moves forward on its own
    else:
        session.commit()


def ship_once(session_factory: sessionmaker[Session], sink: AuditSink, *, batch: int) -> int:
    """Ship up to `batch` new records of each tenant that has any; returns how many shipped."""
    with session_factory() as session:
        behind = session.execute(
            select(AuditHead.tenant_id, func.coalesce(AuditSinkCursor.seq, 0))
            .outerjoin(
                AuditSinkCursor,
                (AuditSinkCursor.tenant_id == AuditHead.tenant_id)
                & (AuditSinkCursor.sink == sink.name),
            )
            .where(AuditHead.seq > func.coalesce(AuditSinkCursor.seq, 0))
            .order_by(AuditHead.tenant_id)
        ).all()
    shipped = 0
    for tenant_id, cursor in behind:
        with session_factory() as session:
            rows = session.scalars(
                select(AuditRecord)
                .where(AuditRecord.tenant_id == tenant_id, AuditRecord.seq > cursor)
                .order_by(AuditRecord.seq)
                .limit(batch)
            ).all()
            payload = [to_chain_record(row).to_json() for row in rows]
        # The read transaction is over before the sink is called: on SQLite every transaction
        # holds the write lock, and a hung sink must never hold it.
        if not payload:
            continue
        sink.write(payload)
        with session_factory() as session:
            _advance(sink.name, tenant_id, int(payload[-1]["seq"]), session=session)
        shipped += len(payload)
    return shipped


class AuditShipper(BackgroundService):
    name = "audit-shipper"

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        sink: AuditSink,
        *,
        interval_seconds: float,
        batch: int,
        enabled: bool = True,
    ) -> None:
        super().__init__(interval_seconds=interval_seconds, enabled=enabled)
        self._session_factory = session_factory
        self.sink = sink
        self._batch = batch
        self.shipped_total = 0

    def run_once(self) -> bool:
        shipped = ship_once(self._session_factory, self.sink, batch=self._batch)
        self.shipped_total += shipped
        return shipped >= self._batch

    def close(self) -> None:
        if isinstance(self.sink, WebhookSink):
            self.sink.close()


def build_audit_shipper(runtime: Runtime) -> AuditShipper:
    """Disabled (never started, its sink never written) when no audit_sink_url is set."""
    settings = runtime.settings
    url = settings.audit_sink_url
    sink: AuditSink = (
        sink_from_url(url) if url else JsonlFileSink(settings.data_dir / "audit.jsonl")
    )
    return AuditShipper(
        runtime.session_factory,
        sink,
        interval_seconds=settings.audit_ship_interval_seconds,
        batch=settings.audit_ship_batch,
        enabled=url is not None,
    )
