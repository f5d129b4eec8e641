"""Adjustment documents for finalized runs, and reproducing any document exactly as issued.

An adjustment recomputes the run's period as recorded now, with the price book as known
now, and bills the difference per line key against what was issued (the run plus earlier
adjustments). Late usage and back-dated price book versions both show up this way. The
document names the run and period it corrects, is issued finalized, and never edits the
run. When nothing changed, no document is made, so adjusting twice is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from fractions import Fraction

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from quartermaster.billing.calculator import BillingCalculator
from quartermaster.billing.lines import (
    NEW_LINE,
    REALLOCATED,
    RERATED,
    REVERSED_LINE,
    LineDraft,
    adjustment_lines,
    issued_by_key,
    parse_versions,
    total_of,
    versions_text,
)
from quartermaster.billing.models import BillingDocument, CostType, DocumentStatus, DocumentType
from quartermaster.billing.periods import tenant_zone
from quartermaster.billing.service import (
    RUN_ATTEMPTS,
    PreparedLines,
    adjustments_of,
    compute_period,
    document_lines,
    draft_from_row,
    end_read,
    get_document,
    insert_rows,
    line_values,
    prepare_lines,
    require_admin,
)
from quartermaster.domain.money import quantize_to
from quartermaster.domain.timeutil import Period, ensure_utc, moment_text, utc_now
from quartermaster.errors import ConflictError
from quartermaster.pricing.rating import unit_price
from quartermaster.storage.base import new_id
from quartermaster.tenancy.service import AuthContext


def _issued_documents(
    run: BillingDocument, earlier: list[BillingDocument], *, session: Session
) -> list[list[tuple[LineDraft, str]]]:
    return [
        [(draft_from_row(row), row.id) for row in document_lines(document, session=session)]
        for document in [run, *earlier]
    ]


def _expected_adjustment(
    run: BillingDocument,
    earlier: list[BillingDocument],
    *,
    as_of: datetime,
    calculator: BillingCalculator,
    session: Session,
) -> tuple[list[LineDraft], dict[str, str], datetime, tuple[int, ...], str]:
    """(adjustment lines, run line id per key, as_of used, versions, currency)."""
    issued = issued_by_key(_issued_documents(run, earlier, session=session))
    computed = compute_period(
        run.tenant_id,
        Period(run.period_start, run.period_end),
        as_of=as_of,
        price_book=run.price_book,
        calculator=calculator,
        session=session,
    )
    issued_as_of = max(document.as_of for document in [run, *earlier])
    last = earlier[-1] if earlier else run
    lines = adjustment_lines(
        computed.lines,
        issued,
        issued_as_of=issued_as_of,
        issued_versions=parse_versions(last.price_book_versions),
    )
    corrects = {key: entry.line_id for key, entry in issued.items() if entry.line_id}
    return lines, corrects, computed.as_of, computed.versions, computed.currency


def _summary(run: BillingDocument, lines: list[LineDraft]) -> str:
    """What the adjustment corrects, accounting for every line: a line is counted once per
    cause its reason names (late usage and a price change can both move one line), and a
    line with neither is a reallocated shared cost or a re-rating of the same usage."""
    reasons = [line.reason or "" for line in lines]
    late = sum(1 for reason in reasons if "recorded after" in reason)
    rerated = sum(1 for reason in reasons if "price book versions" in reason)
    causes = [
        f"{late} with late usage",
        f"{rerated} re-rated by price book changes",
    ]
    reallocated = sum(1 for reason in reasons if reason.startswith(REALLOCATED))
    if reallocated:
        causes.append(f"{reallocated} reallocated shared cost{'' if reallocated == 1 else 's'}")
    other = sum(1 for reason in reasons if reason.startswith(RERATED))
    if other:
        causes.append(f"{other} re-rated with the same usage")
    # A new or reversed key whose quantity and prices did not move: e.g. a platform cost
    # recorded after the run (its shares are new lines), a subscription fee of quantity 0.
    alone = [line for line in lines if (line.reason or "") in (NEW_LINE, REVERSED_LINE)]
    new_shared = sum(
        1 for line in alone if line.reason == NEW_LINE and line.key_cost_type is CostType.PLATFORM
    )
    new_other = sum(1 for line in alone if line.reason == NEW_LINE) - new_shared
    reversed_ = sum(1 for line in alone if line.reason == REVERSED_LINE)
    for number, what in (
        (new_shared, "new shared-cost line"),
        (new_other, "new line"),
        (reversed_, "reversed line"),
    ):
        if number:
            causes.append(f"{number} {what}{'' if number == 1 else 's'}")
    zone = tenant_zone(run.timezone)
    start, end = (
        moment_text(ensure_utc(m).astimezone(zone)) for m in (run.period_start, run.period_end)
    )
    count = f"{len(lines)} line" if len(lines) == 1 else f"{len(lines)} lines"
    return (
        f"corrects {run.kind} run {run.id} for the period from {start} until {end}: {count} "
        f"({', '.join(causes)})"
    )


def nothing_changed_message(caller: AuthContext, run_id: str, *, session: Session) -> str:
    """Why no adjustment was made, naming what was last issued: the run, or its latest
    adjustment (an earlier adjustment already settled everything up to its as_of)."""
    run = get_document(caller, run_id, session=session)
    earlier = adjustments_of(run, session=session)
    if not earlier:
        return "nothing changed since the run was issued"
    last = earlier[-1]
    return f"nothing changed since adjustment {last.sequence} ({last.id}) was issued"


@dataclass(frozen=True, slots=True)
class AdjustmentPlan:
    """An adjustment computed (and its lines' stored columns built) outside the write
    transaction, with the earlier adjustments it was computed against."""

    run_id: str
    earlier: tuple[str, ...]  # ids of the run's adjustments it diffed against
    document: BillingDocument  # not added to any session yet
    rows: PreparedLines


def plan_adjustment(
    caller: AuthContext,
    run_id: str,
    *,
    as_of: datetime,
    calculator: BillingCalculator,
    session: Session,
) -> AdjustmentPlan | None:
    """The computing phase of an adjustment: read-only (`session` may be a read session).
    None when nothing changed."""
    run = get_document(caller, run_id, session=session)
    if run.doc_type != DocumentType.RUN.value:
        raise ConflictError(
            f"{run_id!r} is an adjustment document: adjust the run it corrects ({run.corrects_id})",
            field="run_id",
        )
    if run.status != DocumentStatus.FINALIZED.value:
        raise ConflictError(
            f"run {run_id!r} is a draft: run the period again to recompute it; adjustments "
            "correct finalized runs only",
            field="run_id",
        )
    earlier = adjustments_of(run, session=session)
    lines, corrects, computed_as_of, versions, currency = _expected_adjustment(
        run, earlier, as_of=as_of, calculator=calculator, session=session
    )
    if not lines:
        return None
    sequence = max((document.sequence for document in earlier), default=0) + 1
    document = BillingDocument(
        id=new_id(),
        tenant_id=run.tenant_id,
        doc_type=DocumentType.ADJUSTMENT.value,
        doc_key=f"adjustment/{run.id}/{sequence}",
        kind=run.kind,
        corrects_id=run.id,
        sequence=sequence,
        period_start=run.period_start,
        period_end=run.period_end,
        timezone=run.timezone,
        status=DocumentStatus.DRAFT.value,
        as_of=computed_as_of,
        price_book=run.price_book,
        price_book_versions=versions_text(versions),
        currency=currency,
        total=total_of(lines),
        line_count=len(lines),
        note=_summary(run, lines),
        created_at=utc_now(),
        created_by=caller.principal_name,
    )
    return AdjustmentPlan(
        run_id=run.id,
        earlier=tuple(a.id for a in earlier),
        document=document,
        rows=prepare_lines(
            line_values(document, lines, corrects=corrects), dialect=session.get_bind().dialect
        ),
    )


def store_adjustment(
    caller: AuthContext, plan: AdjustmentPlan, *, session: Session
) -> BillingDocument | None:
    """The storing phase, in one write transaction: the run's adjustments are checked again
    (another one issued meanwhile: None, the transaction rolled back; compute again), then
    the document and its lines are stored, issued final."""
    run = get_document(caller, plan.run_id, session=session)
    if tuple(a.id for a in adjustments_of(run, session=session)) != plan.earlier:
        session.rollback()
        return None
    document = plan.document
    session.add(document)
    try:
        session.flush()
        insert_rows(plan.rows, session=session)
        document.status = DocumentStatus.FINALIZED.value
        document.finalized_at = document.created_at
        document.finalized_by = caller.principal_name
        session.commit()
    except IntegrityError:
        session.rollback()
        return None
    return document


def create_adjustment(
    caller: AuthContext,
    run_id: str,
    *,
    calculator: BillingCalculator,
    session: Session,
    read_session: Session | None = None,
    as_of: datetime | None = None,
) -> BillingDocument | None:
    """Issue the run's next adjustment document, or None when nothing changed. `as_of`
    None: as recorded now (`calculator.cutoff()`, taken before the unit of work opens).
    It is computed in `read_session` (default: `session`; a read session keeps SQLite's
    write lock free meanwhile) and stored in `session`."""
    require_admin(caller, "create adjustments")
    cutoff = as_of if as_of is not None else calculator.cutoff()
    reader = read_session if read_session is not None else session
    for _ in range(RUN_ATTEMPTS):
        plan = plan_adjustment(caller, run_id, as_of=cutoff, calculator=calculator, session=reader)
        end_read(reader, session)
        if plan is None:
            return None
        document = store_adjustment(caller, plan, session=session)
        if document is not None:
            return document
    raise ConflictError(
        f"other adjustments of run {run_id!r} were issued at the same time: run adjust "
        "again to pick up anything they did not cover",
        field="run_id",
    )


@dataclass(frozen=True, slots=True)
class Reproduction:
    document: BillingDocument
    identical: bool
    differences: list[str]


def _compare(stored: list[LineDraft], expected: list[LineDraft]) -> list[str]:
    differences: list[str] = []
    by_key = {line.line_key: line for line in expected}
    stored_keys = {line.line_key for line in stored}
    discounted = {line.parent_key for line in stored if line.parent_key is not None}
    for line in stored:
        other = by_key.get(line.line_key)
        if other is None:
            differences.append(f"{line.line_key}: issued but not recomputed")
            continue
        for field in fields(LineDraft):
            mine, theirs = getattr(line, field.name), getattr(other, field.name)
            if field.name == "unit_price":
                if line.line_key in discounted and _issued_from_amount(line):
                    continue
                theirs = _at_issued_precision(mine, theirs)
            if mine != theirs:
                differences.append(f"{line.line_key}: {field.name} {mine} != {theirs}")
    differences.extend(
        f"{key}: recomputed but not issued" for key in by_key if key not in stored_keys
    )
    if not differences and [d.line_key for d in stored] != [d.line_key for d in expected]:
        differences.append("line order differs")
    return differences


def _issued_from_amount(line: LineDraft) -> bool:
    """Whether a discounted charge was issued with the unit price an earlier release gave it,
    its rounded amount / quantity (0.000499999508 for a list price of 0.0005): the same bill
    as one showing the list price now, since the unit price is display only."""
    if line.unit_price is None or line.quantity == 0:
        return False
    derived = unit_price(Fraction(line.amount), line.quantity)
    return _at_issued_precision(line.unit_price, derived) == line.unit_price


def _at_issued_precision(issued: object, recomputed: object) -> object:
    """A unit price is derived (amount ÷ quantity) and shown with as many digits as a release
    finds needed: a recomputed one is compared at the issued one's precision, so a bill issued
    before a release that shows more digits still reproduces as identical."""
    if isinstance(issued, Decimal) and isinstance(recomputed, Decimal):
        exponent = issued.as_tuple().exponent
        if isinstance(exponent, int) and recomputed.as_tuple().exponent != exponent:
            return quantize_to(recomputed, Decimal(1).scaleb(exponent), what="unit price")
    return recomputed


def reproduce_document(
    caller: AuthContext, document_id: str, *, calculator: BillingCalculator, session: Session
) -> Reproduction:
    """Recompute a document from what was recorded by its `as_of` (usage and price book
    versions) and compare it line by line with what was issued."""
    document = get_document(caller, document_id, session=session)
    stored = [draft_from_row(row) for row in document_lines(document, session=session)]
    if document.doc_type == DocumentType.RUN.value:
        expected = list(
            compute_period(
                document.tenant_id,
                Period(document.period_start, document.period_end),
                as_of=document.as_of,
                price_book=document.price_book,
                calculator=calculator,
                session=session,
            ).lines
        )
    else:
        run = get_document(caller, document.corrects_id or "", session=session)
        earlier = [
            a for a in adjustments_of(run, session=session) if a.sequence < document.sequence
        ]
        expected, _, _, _, _ = _expected_adjustment(
            run, earlier, as_of=document.as_of, calculator=calculator, session=session
        )
    differences = _compare(stored, expected)
    return Reproduction(document, identical=not differences, differences=differences)
