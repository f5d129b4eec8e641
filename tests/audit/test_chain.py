"""The hash chain, pure: a clean chain verifies; every kind of tampering is named."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from quartermaster.audit.chain import (
    GENESIS_HASH,
    ChainRecord,
    ChainVerifier,
    compute_hash,
    verify_records,
)

START = datetime(2026, 1, 1, tzinfo=UTC)


def build_chain(count: int, tenant_id: str = "acme") -> list[ChainRecord]:
    records: list[ChainRecord] = []
    prev = GENESIS_HASH
    for seq in range(1, count + 1):
        draft = ChainRecord(
            tenant_id=tenant_id,
            seq=seq,
            recorded_at=START + timedelta(seconds=seq),
            action="read",
            outcome="ok",
            actor="app:billing",
            path=f"apps/billing/k{seq}",
            lease_id=f"lease-{seq}",
            version=1,
            detail={"value_hmac": f"{seq:064x}"},
            prev_hash=prev,
            hash="",
        )
        record = dataclasses.replace(draft, hash=compute_hash(draft, prev))
        records.append(record)
        prev = record.hash
    return records


def test_an_untouched_chain_verifies() -> None:
    chain = build_chain(20)
    report = verify_records(chain, head_seq=20, head_hash=chain[-1].hash)
    assert report.ok
    assert (report.checked, report.last_seq) == (20, 20)


def test_an_edited_record_is_named() -> None:
    chain = build_chain(10)
    chain[4] = dataclasses.replace(chain[4], path="apps/billing/elsewhere")
    report = verify_records(chain)
    assert [(p.kind, p.seq) for p in report.problems] == [("edited", 5)]
    assert "record seq 5 was edited" in report.problems[0].message


def test_an_edited_and_rehashed_record_is_named_by_its_successor() -> None:
    chain = build_chain(10)
    forged = dataclasses.replace(chain[4], actor="principal:mallory")
    chain[4] = dataclasses.replace(forged, hash=compute_hash(forged, forged.prev_hash))
    report = verify_records(chain)
    assert [(p.kind, p.seq) for p in report.problems] == [("rehashed", 5)]


def test_a_removed_record_is_named() -> None:
    chain = build_chain(10)
    del chain[6]
    report = verify_records(chain)
    assert [(p.kind, p.seq) for p in report.problems] == [("removed", 7)]
    assert report.problems[0].message == "record seq 7 is missing (removed)"


def test_reordered_records_are_named() -> None:
    chain = build_chain(10)
    chain[3], chain[4] = chain[4], chain[3]
    report = verify_records(chain)
    assert [(p.kind, p.seq) for p in report.problems] == [("reordered", 4)]
    assert "stored after seq 5" in report.problems[0].message


def test_records_cut_from_the_end_are_caught_by_the_head() -> None:
    chain = build_chain(10)
    report = verify_records(chain[:7], head_seq=10, head_hash=chain[-1].hash)
    assert [(p.kind, p.seq) for p in report.problems] == [("truncated", 8)]


def test_a_duplicated_record_is_named() -> None:
    chain = build_chain(5)
    chain.append(chain[2])
    report = verify_records(chain)
    assert [(p.kind, p.seq) for p in report.problems] == [("duplicated", 3)]


def test_round_trip_through_json_keeps_the_hash() -> None:
    chain = build_chain(3)
    again = [ChainRecord.from_json(r.to_json()) for r in chain]
    assert verify_records(again).ok


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(min_value=3, max_value=25),
    data=st.data(),
)
def test_any_single_tampering_is_detected(size: int, data: st.DataObject) -> None:
    chain = build_chain(size)
    index = data.draw(st.integers(min_value=0, max_value=size - 2))
    kind = data.draw(st.sampled_from(["edit", "remove", "swap"]))
    if kind == "edit":
        chain[index] = dataclasses.replace(chain[index], detail={"value_hmac": "f" * 64})
    elif kind == "remove":
        del chain[index]
    else:
        chain[index], chain[index + 1] = chain[index + 1], chain[index]
    verifier = ChainVerifier()
    for record in chain:
        verifier.feed(record)
    report = verifier.finish()
    assert not report.ok
    assert report.problems[0].seq in (index + 1, index + 2)
