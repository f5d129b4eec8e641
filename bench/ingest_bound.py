"""The least work any ingest of this design must do per event, measured on the benchmark's own
bodies, so that `bench.ingest` can say what ratio to its floor is reachable at all.

Ingestion has to (a) serialize each event canonically, (b) check its HMAC-SHA256 and (c) hash
its content, then (d) append it durably to SQLite. Here each is done by the bare primitive
with no checks or bookkeeping around it, so every figure undercounts the real work:

- one `orjson.dumps(event, OPT_SORT_KEYS)` per event (the real path serializes twice, once
  without the signature and once without the key id), one HMAC under one key (ingestion's
  own `HmacSha256`, its pads hashed once: half the cost of `hmac.digest`), one
  `hashlib.sha256`: all of it runs holding the GIL (events are ~400 bytes; hashlib releases
  the GIL only from 2,048);
- one INSERT per event of (key, payload) into a two-column table with one index, through a
  bare `sqlite3` connection with the server's settings (WAL, `synchronous=FULL`, its cache), one
  transaction per batch; no dedup lookup, no other column, no counters.

In one process the HTTP read and parse (the floor route's whole work) and (a)-(c) are
serial under the GIL, so the ratio ingest / floor can be at most
`floor / (floor + serialize_and_hash)`, and with the append on the same core
`floor / (floor + serialize_and_hash + append)`; several processes scale the floor route by
as much as the ingest route, so they do not change the ratio.
"""

from __future__ import annotations

import gc
import hashlib
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from quartermaster.metering.signing import HmacSha256

_SORTED = orjson.OPT_SORT_KEYS


@dataclass(frozen=True)
class IrreducibleCost:
    """CPU µs per event of the bare primitives (see the module docstring)."""

    events: int
    serialize_and_hash_us: float
    append_us: float
    append_wall_us: float

    def best_ratio(self, floor_us: float, *, with_append: bool) -> float:
        """The highest ingest / floor ratio one process can reach, given the floor's
        per-event cost (HTTP read and parse)."""
        extra = self.serialize_and_hash_us + (self.append_us if with_append else 0.0)
        return floor_us / (floor_us + extra)


def measure_irreducible(bodies: list[bytes], *, secret: bytes, work_dir: Path) -> IrreducibleCost:
    """Time the bare primitives over the events of `bodies` (JSON arrays of events); the
    SQLite file is created in `work_dir`. The collector is off while they run: with every
    batch parsed up front its passes would be timed too, which the server avoids (it tunes
    its collector for serving, api.app.tune_gc_for_serving)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _measure(bodies, secret=secret, work_dir=work_dir)
    finally:
        if enabled:
            gc.enable()


def _measure(bodies: list[bytes], *, secret: bytes, work_dir: Path) -> IrreducibleCost:
    # One batch at a time, as the server works: holding every batch's rows at once would
    # time the allocator's growth rather than the primitives.
    signer = HmacSha256(secret)
    events = 0
    serialize_and_hash = append = append_wall = 0.0
    connection = sqlite3.connect(work_dir / "bound.db", isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        # the server's (storage/engine.py)
        connection.execute("PRAGMA cache_size=-32768")
        connection.execute("PRAGMA wal_autocheckpoint=10000")
        connection.execute("CREATE TABLE log (position INTEGER PRIMARY KEY, key INTEGER, payload)")
        connection.execute("CREATE INDEX ix_log_key ON log (key)")
        for body in bodies:
            batch = orjson.loads(body)
            events += len(batch)
            started = time.thread_time()
            rows = []
            for event in batch:
                canonical = orjson.dumps(event, option=_SORTED)
                signer.hexdigest(canonical)
                digest = hashlib.sha256(canonical).digest()
                rows.append((int.from_bytes(digest[:8], "big", signed=True), canonical))
            serialize_and_hash += time.thread_time() - started
            started, wall = time.thread_time(), time.perf_counter()
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany("INSERT INTO log (key, payload) VALUES (?, ?)", rows)
            connection.execute("COMMIT")
            append += time.thread_time() - started
            append_wall += time.perf_counter() - wall
        stored = connection.execute("SELECT count(*) FROM log").fetchone()[0]
    finally:
        connection.close()
    if stored != events:
        raise RuntimeError(f"the bound's table holds {stored} rows, {events} were inserted")
    per_event = 1e6 / events
    return IrreducibleCost(
        events=events,
        serialize_and_hash_us=serialize_and_hash * per_event,
        append_us=append * per_event,
        append_wall_us=append_wall * per_event,
    )
