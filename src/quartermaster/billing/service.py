"""Billing runs: compute, recompute (drafts only), finalize, read, and reproduce as issued.

Running a period whose run is finalized is a no-op that returns the finalized run; running
it while the run is a draft recomputes the draft. Finalized documents are never changed.
Every function takes the caller and reads only the caller's tenant; a team-member sees only
its own team's lines.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Dialect, delete, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from quartermaster.billing.calculator import (
    BillingCalculator,
    Computed,
    price_inputs,
    version_cuts,
)
from quartermaster.billing.lines import (
    LineDraft,
    audit_key,
    line_id,
    parse_versions,
    total_of,
    versions_text,
)
from quartermaster.billing.models import (
    BillingDocument,
    BillingLine,
    CostType,
    DocumentStatus,
    DocumentType,
    RunKind,
)
from quartermaster.billing.periods import resolve_period, tenant_zone
from quartermaster.domain.money import money_context, money_sum
from quartermaster.domain.timeutil import Period, moment_text, utc_now
from quartermaster.errors import ConflictError, NotFoundError, PermissionDeniedError
from quartermaster.storage.base import Base, new_id
from quartermaster.storage.ids import by_id_or_prefix
from quartermaster.tenancy.models import Role, Team, Tenant
from quartermaster.tenancy.service import AuthContext
from quartermaster.usage.service import refuse_unknown_owners
from quartermaster.usage.store import UsageFilter


@dataclass(frozen=True, slots=True)
class RunOutcome:
    document: BillingDocument
    created: bool  # a new draft was computed
    recomputed: bool  # an existing draft was computed again

    @property
    def unchanged(self) -> bool:
        """The period's run was already finalized: nothing was done."""
        return not self.created and not self.recomputed


def price_book_not_used(outcome: RunOutcome, requested: str | None) -> str | None:
    """Why the price book a request named is not the run's, or None: a finalized run is
    never priced again, with any book (pure)."""
    if requested is None or not outcome.unchanged or outcome.document.price_book == requested:
        return None
    return (
        f"price book {requested!r} was not used: the run is finalized, priced with "
        f"{outcome.document.price_book!r}, and a finalized run never changes (an adjustment "
        "corrects it, with the run's own price book)"
    )


@dataclass(frozen=True, slots=True)
class Waiting:
    """Events of a period still waiting in the reconciliation window (their owner is not
    known yet): they are billed once attributed, so by an adjustment of a finalized run."""

    events: int
    until: datetime | None  # the latest deadline: by then every one of them is settled


NOTHING_WAITING = Waiting(0, None)
# Counts the events of a tenant's period waiting in the reconciliation window.
WaitingCounter = Callable[[str, Period], Waiting]


@dataclass(frozen=True, slots=True)
class FinalizeOutcome:
    document: BillingDocument
    finalized: bool  # this call finalized it; False: it was final already, nothing was done
    waiting: Waiting = NOTHING_WAITING  # the period's events not billed yet, still waiting


@dataclass(frozen=True, slots=True)
class DocumentView:
    """A document and the lines the caller may see (a team-member: its team's only); with
    `lines` empty when they were not asked for, `visible_total` and `visible_count` still
    cover every line the caller may see."""

    document: BillingDocument
    lines: list[BillingLine]
    team: str | None  # the team the lines are limited to, if any
    adjustments: list[BillingDocument]
    visible_total: Decimal
    visible_count: int


@dataclass(frozen=True, slots=True)
class LinePage:
    """One page of a document's lines (in position order) and the cursor to the next."""

    document: BillingDocument
    lines: list[BillingLine]
    team: str | None
    next: int | None  # the `after` of the next page; None: this is the last page


@dataclass(frozen=True, slots=True)
class Share:
    """The amount of an owner (a cost center, a team, an app) in a document's lines."""

    cost_center: str
    team: str | None
    app: str | None
    amount: Decimal
    lines: int


@dataclass(frozen=True, slots=True)
class LineSummary:
    """A document's lines summed per cost center, per team and per app (the top apps)."""

    cost_centers: list[Share]
    teams: list[Share]
    top_apps: list[Share]
    apps: int  # how many apps have lines
    total: Decimal
    lines: int


Owner = tuple[str, str | None, str | None]  # cost center, team, app


@money_context()
def summarize(
    rows: Iterable[tuple[str, str | None, str | None, Decimal]], *, top: int
) -> LineSummary:
    """Sum (cost center, team, app, amount) rows per owner, largest first (pure)."""
    sums: list[dict[Owner, Decimal]] = [{}, {}, {}]  # per cost center, team, app
    counts: list[dict[Owner, int]] = [{}, {}, {}]
    total, count = Decimal(0), 0
    for cost_center, team, app, amount in rows:
        total += amount
        count += 1
        keys: list[Owner] = [(cost_center, None, None), (cost_center, team, None)]
        if app:
            keys.append((cost_center, team, app))
        for level, key in enumerate(keys):
            sums[level][key] = sums[level].get(key, Decimal(0)) + amount
            counts[level][key] = counts[level].get(key, 0) + 1

    def ranked(level: int) -> list[Share]:
        shares = [
            Share(key[0], key[1], key[2], amount, counts[level][key])
            for key, amount in sums[level].items()
        ]
        return sorted(shares, key=lambda s: (-s.amount, s.cost_center, s.team or "", s.app or ""))

    return LineSummary(
        cost_centers=ranked(0),
        teams=ranked(1),
        top_apps=ranked(2)[:top],
        apps=len(sums[2]),
        total=total,
        lines=count,
    )


def require_admin(caller: AuthContext, action: str) -> None:
    if caller.role is not Role.ADMIN:
        raise PermissionDeniedError(f"role {caller.role.value!r} may not {action} (admin only)")


def caller_team_slug(caller: AuthContext, *, session: Session) -> str | None:
    """The team slug a team-member's reads are limited to; None for admin and finance."""
    if caller.role is not Role.TEAM_MEMBER:
        return None
    team = session.get(Team, caller.team_id) if caller.team_id else None
    if team is None or team.tenant_id != caller.tenant_id:
        raise PermissionDeniedError("this team-member key has no team: it may read no billing")
    return team.slug


def load_tenant(tenant_id: str, *, session: Session) -> Tenant:
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFoundError(f"tenant {tenant_id!r} not found")
    return tenant


def run_period(
    caller: AuthContext,
    *,
    start: datetime | None,
    end: datetime | None,
    month: str | None,
    session: Session,
    now: datetime | None = None,
) -> Period:
    zone = tenant_zone(load_tenant(caller.tenant_id, session=session).timezone)
    return resolve_period(start=start, end=end, month=month, zone=zone, now=now or utc_now())


def run_doc_key(kind: RunKind, period: Period) -> str:
    return f"run/{kind.value}/{period.start.isoformat()}/{period.end.isoformat()}"


def line_values(
    document: BillingDocument,
    lines: Sequence[LineDraft],
    *,
    corrects: Mapping[str, str] | None = None,
) -> list[dict[str, object]]:
    """The stored columns of a document's lines (ids and audit keys derived, pure)."""
    period = Period(document.period_start, document.period_end)
    keys = [draft.line_key for draft in lines]
    return [
        {
            "id": line_id(document.id, key),
            "tenant_id": document.tenant_id,
            "document_id": document.id,
            "position": position,
            "line_key": key,
            "parent_key": draft.parent_key,
            "cost_type": draft.cost_type.value,
            "item": draft.item,
            "meter": draft.meter,
            "unit": draft.unit,
            "cost_center": draft.cost_center,
            "team": draft.team,
            "app": draft.app,
            "lifecycle": draft.lifecycle,
            "quantity": draft.quantity,
            "unit_price": draft.unit_price,
            "amount": draft.amount,
            "currency": document.currency,
            "pricing_rule": draft.pricing_rule,
            "allocation_method": draft.allocation_method,
            "price_book_versions": versions_text(draft.versions),
            "audit_key": audit_key(document.tenant_id, period, document.as_of, draft, key=key),
            "adjusted_cost_type": (
                draft.adjusted_cost_type.value if draft.adjusted_cost_type else None
            ),
            "corrects_line_id": (corrects or {}).get(key),
            "previous_quantity": draft.previous_quantity,
            "previous_amount": draft.previous_amount,
            "reason": draft.reason,
        }
        for position, (draft, key) in enumerate(zip(lines, keys, strict=True))
    ]


# Lines stored per INSERT statement (executemany); bounded so each statement stays small.
INSERT_BATCH = 5000


@dataclass(frozen=True, slots=True)
class PreparedLines:
    """Lines' INSERT as the database driver takes it, every value already converted, so that
    the write transaction spends no time on it (~1 s of a 40,000-line run's 2.6 s)."""

    statement: str
    params: list[Any]  # tuples (positional parameter styles) or dicts (named ones)

    def __len__(self) -> int:
        return len(self.params)


def prepare_lines(rows: Sequence[dict[str, object]], *, dialect: Dialect) -> PreparedLines:
    """The INSERT of lines' columns (line_values) compiled for `dialect` (pure)."""
    table = Base.metadata.tables[BillingLine.__tablename__]
    compiled = insert(table).compile(dialect=dialect)
    processors = {
        column.key: processor
        for column in table.columns
        if (processor := column.type.dialect_impl(dialect).bind_processor(dialect)) is not None
    }
    keys = [column.key for column in table.columns]

    def bound(row: Mapping[str, object]) -> dict[str, Any]:
        return {
            key: processors[key](row.get(key)) if key in processors else row.get(key)
            for key in keys
        }

    order = compiled.positiontup
    params: list[Any] = [
        tuple(values[key] for key in order) if order else values
        for values in (bound(row) for row in rows)
    ]
    return PreparedLines(str(compiled), params)


def insert_rows(lines: PreparedLines, *, session: Session) -> None:
    """Store prepared lines, executemany in batches."""
    connection = session.connection()
    for start in range(0, len(lines.params), INSERT_BATCH):
        connection.exec_driver_sql(lines.statement, lines.params[start : start + INSERT_BATCH])


def draft_from_row(row: BillingLine) -> LineDraft:
    """A stored line as the pure value it was stored from (to compare and to diff)."""
    return LineDraft(
        cost_type=CostType(row.cost_type),
        item=row.item,
        cost_center=row.cost_center,
        team=row.team,
        app=row.app,
        lifecycle=row.lifecycle,
        meter=row.meter,
        unit=row.unit,
        quantity=row.quantity,
        unit_price=row.unit_price,
        amount=row.amount,
        pricing_rule=row.pricing_rule,
        allocation_method=row.allocation_method,
        versions=parse_versions(row.price_book_versions),
        parent_key=row.parent_key,
        adjusted_cost_type=CostType(row.adjusted_cost_type) if row.adjusted_cost_type else None,
        previous_quantity=row.previous_quantity,
        previous_amount=row.previous_amount,
        reason=row.reason,
    )


def _apply_computed(document: BillingDocument, computed: Computed) -> None:
    document.as_of = computed.as_of
    document.price_book = computed.price_book
    document.price_book_versions = versions_text(computed.versions)
    document.currency = computed.currency
    document.total = total_of(computed.lines)
    document.line_count = len(computed.lines)
    document.note = document_note(computed)


def document_note(computed: Computed, *, team: str | None = None) -> str | None:
    """What a run leaves out of its money, said on the document: usage of meters with no
    price rule (billed at 0), and platform costs in another currency than the price book's
    (not priced: there is no conversion; they are in no line). With `team`, that team's
    unpriced usage alone (the tenant's platform costs are not its to read)."""
    notes: list[str] = []
    unpriced = sorted({u.meter for u in computed.unpriced if team in (None, u.owner.team)})
    if unpriced:
        notes.append(f"usage with no price rule (billed at 0): {', '.join(unpriced)}")
    if computed.unpriced_costs and team is None:
        costs = ", ".join(cost.describe() for cost in computed.unpriced_costs)
        notes.append(
            f"platform costs not in the price book's currency {computed.currency}, not billed "
            f"(no currency conversion; in no line): {costs}"
        )
    return "; ".join(notes) or None


def compute_period(
    tenant_id: str,
    period: Period,
    *,
    as_of: datetime,
    price_book: str | None,
    calculator: BillingCalculator,
    session: Session,
) -> Computed:
    context = calculator.context(tenant_id, price_book=price_book, session=session)
    inputs = calculator.inputs(
        tenant_id, period, as_of=as_of, cuts=version_cuts(context), session=session
    )
    return price_inputs(context, period, inputs)


def lock_tenant_runs(tenant_id: str, *, session: Session) -> None:
    """Serialize the creation and finalization of one tenant's runs until the transaction
    ends, so that two overlapping runs created at the same moment do not both pass the
    overlap check. PostgreSQL: a transaction-level advisory lock per tenant. SQLite: every
    writing transaction already starts with BEGIN IMMEDIATE (storage/engine.py)."""
    if session.get_bind().dialect.name == "postgresql":
        digest = hashlib.sha256(f"qm-billing-runs:{tenant_id}".encode()).digest()
        key = int.from_bytes(digest[:8], "big", signed=True)
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})


def period_text(start: datetime, end: datetime, zone_name: str | None) -> str:
    """'from 2026-11-01 00:00 UTC until 2026-12-01 00:00 UTC', in the tenant's zone."""
    zone = tenant_zone(zone_name)
    return f"from {moment_text(start.astimezone(zone))} until {moment_text(end.astimezone(zone))}"


def overlapping_run(
    tenant_id: str,
    kind: str,
    period: Period,
    *,
    session: Session,
    exclude_id: str | None = None,
    status: DocumentStatus | None = None,
) -> BillingDocument | None:
    """The earliest other run of `kind` whose period shares a moment with `period`. Runs of
    the other kind are separate ledgers (an invoice and an internal chargeback of the same
    usage) and do not count."""
    query = select(BillingDocument).where(
        BillingDocument.tenant_id == tenant_id,
        BillingDocument.doc_type == DocumentType.RUN.value,
        BillingDocument.kind == kind,
        BillingDocument.period_start < period.end,
        BillingDocument.period_end > period.start,
    )
    if exclude_id is not None:
        query = query.where(BillingDocument.id != exclude_id)
    if status is not None:
        query = query.where(BillingDocument.status == status.value)
    return session.scalars(query.order_by(BillingDocument.period_start).limit(1)).first()


def overlap_error(kind: str, period: Period, other: BillingDocument, zone: str | None) -> str:
    """Why a run of `period` is refused: `other` already bills some of it (pure)."""
    remedy = (
        f"bill late usage of it with an adjustment (qm bill adjust {other.id})"
        if other.status == DocumentStatus.FINALIZED.value
        else f"discard that draft first (qm bill discard {other.id}) or run its period"
    )
    return (
        f"the period {period_text(period.start, period.end, zone)} overlaps {kind} run "
        f"{other.id} ({other.status}, "
        f"{period_text(other.period_start, other.period_end, other.timezone)}): each moment "
        f"is billed by one {kind} run, else its usage is billed twice; {remedy}"
    )


def _find_run(
    tenant_id: str, key: str, *, session: Session, lock: bool = False
) -> BillingDocument | None:
    query = select(BillingDocument).where(
        BillingDocument.tenant_id == tenant_id, BillingDocument.doc_key == key
    )
    if lock:
        query = query.with_for_update()
    return session.scalars(query).first()


# A run computed outside the write transaction is stored only if what it was computed
# against is still so; else it is computed again, at most this many times in all.
RUN_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class RunPlan:
    """A period's run computed (and its lines' stored columns built) outside the write
    transaction, with the state of the period's run it was computed against."""

    period: Period
    kind: RunKind
    key: str
    seen: tuple[object, ...] | None  # the existing draft's state, None: there was no run
    document_id: str  # the existing draft's id, or the id of the new document
    computed: Computed
    rows: PreparedLines


def draft_state(document: BillingDocument | None) -> tuple[object, ...] | None:
    """What a recomputation of a draft depends on and changes (pure): when it differs
    between computing and storing, another request ran or finalized the period meanwhile."""
    if document is None:
        return None
    return (
        document.id,
        document.status,
        document.as_of,
        document.price_book,
        document.price_book_versions,
        document.total,
        document.line_count,
    )


def plan_run(
    caller: AuthContext,
    *,
    period: Period,
    kind: RunKind,
    price_book: str | None,
    as_of: datetime,
    calculator: BillingCalculator,
    session: Session,
) -> RunPlan | RunOutcome:
    """The computing phase of a run: read-only, so `session` may be a read session (on SQLite
    it then holds no write lock while the usage is read and priced). A finalized run is
    returned as the outcome; an overlap is refused here already (and again when storing)."""
    tenant = load_tenant(caller.tenant_id, session=session)
    key = run_doc_key(kind, period)
    existing = _find_run(caller.tenant_id, key, session=session)
    if existing is not None and existing.status == DocumentStatus.FINALIZED.value:
        return RunOutcome(existing, created=False, recomputed=False)
    other = overlapping_run(
        caller.tenant_id,
        kind.value,
        period,
        session=session,
        exclude_id=existing.id if existing is not None else None,
    )
    if other is not None:
        raise ConflictError(overlap_error(kind.value, period, other, tenant.timezone))
    book = price_book or (existing.price_book if existing is not None else None)
    computed = compute_period(
        caller.tenant_id,
        period,
        as_of=as_of,
        price_book=book,
        calculator=calculator,
        session=session,
    )
    document_id = existing.id if existing is not None else new_id()
    shape = BillingDocument(
        id=document_id,
        tenant_id=caller.tenant_id,
        period_start=period.start,
        period_end=period.end,
        as_of=computed.as_of,
        currency=computed.currency,
    )
    return RunPlan(
        period=period,
        kind=kind,
        key=key,
        seen=draft_state(existing),
        document_id=document_id,
        computed=computed,
        rows=prepare_lines(line_values(shape, computed.lines), dialect=session.get_bind().dialect),
    )


def store_run(caller: AuthContext, plan: RunPlan, *, session: Session) -> RunOutcome | None:
    """The storing phase of a run, in one write transaction: under the per-tenant lock it
    checks again what the plan was computed against (the period's run, overlapping runs)
    and stores the document and its lines. None: the period's run changed meanwhile (the
    transaction is rolled back; compute again)."""
    lock_tenant_runs(caller.tenant_id, session=session)
    tenant = load_tenant(caller.tenant_id, session=session)
    existing = _find_run(caller.tenant_id, plan.key, session=session, lock=True)
    if existing is not None and existing.status == DocumentStatus.FINALIZED.value:
        session.commit()
        return RunOutcome(existing, created=False, recomputed=False)
    if draft_state(existing) != plan.seen:
        session.rollback()
        return None
    other = overlapping_run(
        caller.tenant_id,
        plan.kind.value,
        plan.period,
        session=session,
        exclude_id=existing.id if existing is not None else None,
    )
    if other is not None:
        session.rollback()
        raise ConflictError(overlap_error(plan.kind.value, plan.period, other, tenant.timezone))
    if existing is not None:
        session.execute(delete(BillingLine).where(BillingLine.document_id == existing.id))
        document = existing
        document.created_by = caller.principal_name
    else:
        document = BillingDocument(
            id=plan.document_id,
            tenant_id=caller.tenant_id,
            doc_type=DocumentType.RUN.value,
            doc_key=plan.key,
            kind=plan.kind.value,
            sequence=0,
            period_start=plan.period.start,
            period_end=plan.period.end,
            timezone=tenant.timezone or "UTC",
            status=DocumentStatus.DRAFT.value,
            created_at=utc_now(),
            created_by=caller.principal_name,
        )
        session.add(document)
    _apply_computed(document, plan.computed)
    try:
        session.flush()
        insert_rows(plan.rows, session=session)
        session.commit()
    except IntegrityError:
        # Another request created this period's run at the same moment: compute again.
        session.rollback()
        return None
    return RunOutcome(document, created=existing is None, recomputed=existing is not None)


def end_read(session: Session, write_session: Session) -> None:
    """End a read session's transaction (its snapshot), unless it is the write session."""
    if session is not write_session:
        session.rollback()


def create_run(
    caller: AuthContext,
    *,
    period: Period,
    kind: RunKind,
    price_book: str | None = None,
    calculator: BillingCalculator,
    session: Session,
    read_session: Session | None = None,
    as_of: datetime | None = None,
) -> RunOutcome:
    """Compute the period's run as a draft, recompute its draft, or return it unchanged
    when it is finalized. `as_of` None: as recorded now (`calculator.cutoff()`, taken before
    the unit of work opens).

    The usage is read and priced in `read_session` (default: `session`); give a read session
    (runtime.read_session_factory) so that on SQLite the database's write lock is held only
    while the document and its lines are stored. Since `as_of` pins the inputs, computing
    again after a concurrent change gives the same lines."""
    require_admin(caller, "create billing runs")
    cutoff = as_of if as_of is not None else calculator.cutoff()
    reader = read_session if read_session is not None else session
    for _ in range(RUN_ATTEMPTS):
        planned = plan_run(
            caller,
            period=period,
            kind=kind,
            price_book=price_book,
            as_of=cutoff,
            calculator=calculator,
            session=reader,
        )
        end_read(reader, session)
        if isinstance(planned, RunOutcome):
            return planned
        outcome = store_run(caller, planned, session=session)
        if outcome is not None:
            return outcome
    raise ConflictError(
        f"the {kind.value} run of the period {period_text(period.start, period.end, None)} "
        f"was changed by other requests {RUN_ATTEMPTS} times while this one computed it: "
        "run it again"
    )


def get_document(caller: AuthContext, document_id: str, *, session: Session) -> BillingDocument:
    """A run or adjustment of the caller's tenant by its id or a unique prefix of it."""
    document = by_id_or_prefix(
        select(BillingDocument).where(BillingDocument.tenant_id == caller.tenant_id),
        BillingDocument.id,
        document_id,
        what="billing run",
        field="run_id",
        session=session,
    )
    if document is None:
        raise NotFoundError(f"billing run {document_id!r} not found", field="run_id")
    return document


def document_lines(document: BillingDocument, *, session: Session) -> list[BillingLine]:
    query = (
        select(BillingLine)
        .where(BillingLine.document_id == document.id)
        .order_by(BillingLine.position)
    )
    return list(session.scalars(query))


def visible(lines: Iterable[BillingLine], team: str | None) -> list[BillingLine]:
    return [line for line in lines if team is None or line.team == team]


def adjustments_of(run: BillingDocument, *, session: Session) -> list[BillingDocument]:
    query = (
        select(BillingDocument)
        .where(
            BillingDocument.tenant_id == run.tenant_id,
            BillingDocument.corrects_id == run.id,
        )
        .order_by(BillingDocument.sequence)
    )
    return list(session.scalars(query))


def visible_amounts(
    document: BillingDocument, team: str | None, *, session: Session
) -> list[tuple[str, str | None, str | None, Decimal]]:
    """(cost center, team, app, amount) of the lines `team` may see (None: all): summed in
    Python, since amounts are exact decimals stored as text."""
    query = select(
        BillingLine.cost_center, BillingLine.team, BillingLine.app, BillingLine.amount
    ).where(BillingLine.document_id == document.id)
    if team is not None:
        query = query.where(BillingLine.team == team)
    return [tuple(row) for row in session.execute(query)]  # type: ignore[misc]


def view_document(
    caller: AuthContext, document_id: str, *, session: Session, with_lines: bool = True
) -> DocumentView:
    """A document, its adjustments and the lines the caller may see; `with_lines` False:
    only their count and sum (a 40,000-line run is 26 MB of JSON)."""
    team = caller_team_slug(caller, session=session)
    document = get_document(caller, document_id, session=session)
    adjustments = (
        adjustments_of(document, session=session)
        if document.doc_type == DocumentType.RUN.value
        else []
    )
    if with_lines:
        lines = visible(document_lines(document, session=session), team)
        total = money_sum(line.amount for line in lines)
        return DocumentView(document, lines, team, adjustments, total, len(lines))
    amounts = visible_amounts(document, team, session=session)
    total = money_sum(row[3] for row in amounts)
    return DocumentView(document, [], team, adjustments, total, len(amounts))


def line_page(
    caller: AuthContext,
    document_id: str,
    *,
    after: int | None = None,
    limit: int,
    cost_center: str | None = None,
    team: str | None = None,
    app: str | None = None,
    session: Session,
) -> LinePage:
    """Up to `limit` of the document's lines after position `after`, in position order,
    limited to the given owner; a team-member's to its own team's lines whatever it asks."""
    own = caller_team_slug(caller, session=session)
    document = get_document(caller, document_id, session=session)
    # A slug the tenant lacks is a typo: an empty page read as "no costs" (slugs are never
    # renamed nor deleted, so a document's lines only carry existing ones).
    refuse_unknown_owners(
        caller.tenant_id,
        UsageFilter(
            cost_centers=(cost_center,) if cost_center is not None else (),
            teams=(team,) if team is not None else (),
            apps=(app,) if app is not None else (),
        ),
        session=session,
    )
    query = select(BillingLine).where(BillingLine.document_id == document.id)
    if after is not None:
        query = query.where(BillingLine.position > after)
    if own is not None:
        query = query.where(BillingLine.team == own)
    for column, value in (
        (BillingLine.cost_center, cost_center),
        (BillingLine.team, team),
        (BillingLine.app, app),
    ):
        if value is not None:
            query = query.where(column == value)
    rows = list(session.scalars(query.order_by(BillingLine.position).limit(limit + 1)))
    page = rows[:limit]
    more = len(rows) > limit
    return LinePage(document, page, own, page[-1].position if more else None)


def summarize_document(
    caller: AuthContext, document_id: str, *, top: int, session: Session
) -> tuple[BillingDocument, str | None, LineSummary]:
    """The lines the caller may see summed per cost center, team and app (its team's only
    for a team-member), computed here rather than by a client downloading every line."""
    team = caller_team_slug(caller, session=session)
    document = get_document(caller, document_id, session=session)
    return document, team, summarize(visible_amounts(document, team, session=session), top=top)


def list_documents(
    caller: AuthContext,
    *,
    doc_type: DocumentType | None = DocumentType.RUN,
    kind: RunKind | None = None,
    status: DocumentStatus | None = None,
    corrects: str | None = None,
    session: Session,
) -> list[BillingDocument]:
    caller_team_slug(caller, session=session)  # a team-member without a team reads nothing
    query = select(BillingDocument).where(BillingDocument.tenant_id == caller.tenant_id)
    if doc_type is not None:
        query = query.where(BillingDocument.doc_type == doc_type.value)
    if kind is not None:
        query = query.where(BillingDocument.kind == kind.value)
    if status is not None:
        query = query.where(BillingDocument.status == status.value)
    if corrects is not None:
        query = query.where(BillingDocument.corrects_id == corrects)
    query = query.order_by(
        BillingDocument.period_start.desc(), BillingDocument.kind, BillingDocument.sequence
    )
    return list(session.scalars(query))


def finalize_run(
    caller: AuthContext,
    document_id: str,
    *,
    session: Session,
    now: datetime | None = None,
    waiting: WaitingCounter | None = None,
) -> FinalizeOutcome:
    """Finalize a draft run (idempotent: a finalized run is returned as it is, and the
    outcome says so). A period that has not ended yet cannot be finalized: its usage is
    still arriving; nor can a run whose period overlaps a finalized run of its kind (one
    created before overlaps were refused). The outcome counts the period's events still
    waiting in the reconciliation window (`waiting`, none when not given): finalizing does
    not wait for them, and an adjustment will bill them."""
    require_admin(caller, "finalize billing runs")
    lock_tenant_runs(caller.tenant_id, session=session)
    document = get_document(caller, document_id, session=session)
    if document.doc_type != DocumentType.RUN.value:
        raise ConflictError(
            f"{document_id!r} is an adjustment document: those are issued final", field="run_id"
        )
    period = Period(document.period_start, document.period_end)

    def counted() -> Waiting:
        # Read from the usage store after the transaction ends: not under the write lock.
        return waiting(document.tenant_id, period) if waiting is not None else NOTHING_WAITING

    if document.status == DocumentStatus.FINALIZED.value:
        session.commit()
        return FinalizeOutcome(document, finalized=False, waiting=counted())
    moment = now or utc_now()
    if document.period_end > moment:
        raise ConflictError(
            f"the period of run {document_id!r} ends {moment_text(document.period_end)}: "
            "finalize it after it has ended",
            field="run_id",
        )
    other = overlapping_run(
        document.tenant_id,
        document.kind,
        period,
        session=session,
        exclude_id=document.id,
        status=DocumentStatus.FINALIZED,
    )
    if other is not None:
        raise ConflictError(
            overlap_error(document.kind, period, other, document.timezone)
            + f"; discard this draft (qm bill discard {document.id})",
            field="run_id",
        )
    document.status = DocumentStatus.FINALIZED.value
    document.finalized_at = moment
    document.finalized_by = caller.principal_name
    session.commit()
    return FinalizeOutcome(document, finalized=True, waiting=counted())


def discard_draft(caller: AuthContext, document_id: str, *, session: Session) -> None:
    """Delete a draft run; a finalized run is immutable and cannot be discarded."""
    require_admin(caller, "discard billing runs")
    document = get_document(caller, document_id, session=session)
    if document.doc_type == DocumentType.ADJUSTMENT.value:
        raise ConflictError(
            f"{document_id!r} is adjustment {document.sequence} of run {document.corrects_id}: "
            "an adjustment is issued final and is never discarded; a later adjustment "
            "corrects it",
            field="run_id",
        )
    if document.status == DocumentStatus.FINALIZED.value:
        raise ConflictError(
            f"run {document_id!r} is finalized and immutable: correct it with an adjustment",
            field="run_id",
        )
    session.execute(delete(BillingLine).where(BillingLine.document_id == document.id))
    session.delete(document)
    session.commit()
