"""Usage services: meters, environment overrides, and metered quantities for billing.

Services take `session` keyword-only, commit their unit of work, and are scoped to the caller's
tenant. `metered_quantities` is the call billing runs, previews and explain use."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from quartermaster.audit.log import append_audit
from quartermaster.billing.models import BillingDocument, DocumentStatus
from quartermaster.catalog.models import App
from quartermaster.catalog.service import validate_environment
from quartermaster.domain.money import plain_text
from quartermaster.domain.timeutil import Period, utc_now
from quartermaster.errors import ConflictError, InvalidInputError, NotFoundError
from quartermaster.tenancy.models import CostCenter, Team
from quartermaster.tenancy.service import AuthContext
from quartermaster.usage.meters import (
    DEFAULT_METERS,
    Aggregation,
    MeterDefinition,
    validate_meter,
)
from quartermaster.usage.models import EnvironmentOverride, Meter, ReplayRequest
from quartermaster.usage.snapshot import meter_definition, tenant_meters
from quartermaster.usage.store import UsageFilter, UsageStore, UsageTotal


@dataclass(frozen=True, slots=True)
class MeterView:
    definition: MeterDefinition
    built_in: bool  # a default meter in force because the tenant defined none


@dataclass(frozen=True, slots=True)
class OverrideView:
    environment: str
    cost_center: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class MeteredQuantity:
    """A meter's quantity for one owner in a period, its aggregation applied."""

    cost_center: str
    team: str
    app: str
    meter: str
    unit: str
    aggregation: Aggregation
    quantity: Decimal
    event_count: int
    unattributed: bool


# --- meters ------------------------------------------------------------------------------------


def list_meters(tenant_id: str, *, session: Session) -> list[MeterView]:
    own = tenant_meters(tenant_id, session=session)
    if not own:
        return [MeterView(m, built_in=True) for m in DEFAULT_METERS]
    return [MeterView(meter_definition(m), built_in=False) for m in own]


def create_meter(
    caller: AuthContext, definition: MeterDefinition, *, session: Session
) -> MeterDefinition:
    """Create a meter; it rates events that become billable from now on."""
    validate_meter(definition)
    exists = session.scalar(
        select(Meter.id).where(Meter.tenant_id == caller.tenant_id, Meter.name == definition.name)
    )
    if exists is not None:
        raise ConflictError(
            f"meter {definition.name!r} already exists; meters are immutable, "
            "create one under a new name",
            field="name",
        )
    meter = _row(caller, definition, created_at=utc_now())
    session.add(meter)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ConflictError(f"meter {definition.name!r} already exists", field="name") from None
    return meter_definition(meter)


def install_default_meters(caller: AuthContext, *, session: Session) -> list[MeterDefinition]:
    """Create every default meter the tenant does not have yet; returns the ones created."""
    have = {m.name for m in tenant_meters(caller.tenant_id, session=session)}
    now = utc_now()
    created = [_row(caller, d, created_at=now) for d in DEFAULT_METERS if d.name not in have]
    session.add_all(created)
    session.commit()
    return [meter_definition(m) for m in created]


def _row(caller: AuthContext, definition: MeterDefinition, *, created_at: datetime) -> Meter:
    return Meter(
        tenant_id=caller.tenant_id,
        name=definition.name,
        event_type=definition.event_type,
        value=definition.value,
        aggregation=definition.aggregation.value,
        unit=definition.unit.strip(),
        filter_field=definition.filter_field,
        filter_value=definition.filter_value,
        description=definition.description[:500],
        created_by=caller.principal_name,
        created_at=created_at,
    )


# --- environment overrides -----------------------------------------------------------------


def list_environment_overrides(tenant_id: str, *, session: Session) -> list[OverrideView]:
    rows = session.execute(
        select(EnvironmentOverride.environment, CostCenter.slug, EnvironmentOverride.created_at)
        .join(CostCenter, CostCenter.id == EnvironmentOverride.cost_center_id)
        .where(EnvironmentOverride.tenant_id == tenant_id)
        .order_by(EnvironmentOverride.environment)
    )
    return [OverrideView(*row) for row in rows]


class OverrideChange(enum.StrEnum):
    CREATED = "created"
    UNCHANGED = "unchanged"  # the same cost center again: nothing written
    REPLACED = "replaced"  # another cost center, in force from now


def _find_override(
    tenant_id: str, environment: str, *, session: Session
) -> EnvironmentOverride | None:
    return session.scalar(
        select(EnvironmentOverride)
        .where(
            EnvironmentOverride.tenant_id == tenant_id,
            EnvironmentOverride.environment == environment,
        )
        .execution_options(populate_existing=True)
    )


def set_environment_override(
    caller: AuthContext, environment: str, cost_center: str, *, session: Session
) -> tuple[OverrideView, OverrideChange]:
    """Send unclaimed usage of `environment` to `cost_center` (by slug) from now on.

    Idempotent: the same cost center again changes nothing (the override keeps its
    created_at). Another cost center replaces the override as a delete and a new override
    would: it counts from now (events recorded from now on, or still waiting now), usage
    already rated stays where it went. Creating, replacing (with the cost center it replaced)
    and deleting are recorded in the tenant's audit chain."""
    validate_environment(environment)
    target = session.scalar(
        select(CostCenter).where(
            CostCenter.tenant_id == caller.tenant_id, CostCenter.slug == cost_center
        )
    )
    if target is None:
        raise NotFoundError(f"cost center {cost_center!r} does not exist", field="cost_center")
    # A second attempt follows a concurrent first PUT of the same environment.
    for attempt in (1, 2):
        existing = _find_override(caller.tenant_id, environment, session=session)
        if existing is not None and existing.cost_center_id == target.id:
            view = OverrideView(environment, target.slug, existing.created_at)
            return view, OverrideChange.UNCHANGED
        now = utc_now()
        detail: dict[str, object] = {"environment": environment, "to": target.slug}
        if existing is None:
            change = OverrideChange.CREATED
            existing = EnvironmentOverride(
                tenant_id=caller.tenant_id, environment=environment, cost_center_id=target.id
            )
            session.add(existing)
        else:
            change = OverrideChange.REPLACED
            detail["from"] = session.scalar(
                select(CostCenter.slug).where(CostCenter.id == existing.cost_center_id)
            )
            existing.cost_center_id = target.id
        existing.created_by = caller.principal_name
        existing.created_at = now
        try:
            session.flush()
            _audit_override(caller, change.value, detail, session=session)
            session.commit()
        except IntegrityError:
            session.rollback()
            if attempt == 2:
                raise ConflictError(
                    f"environment {environment!r} was changed by another request at the same "
                    "time; send the PUT again",
                    field="environment",
                ) from None
            continue
        return OverrideView(environment, target.slug, now), change
    raise AssertionError("unreachable")


def _audit_override(
    caller: AuthContext, change: str, detail: dict[str, object], *, session: Session
) -> None:
    append_audit(
        caller.tenant_id,
        action="configure",
        outcome="ok",
        actor=f"principal:{caller.principal_name}",
        detail={"environment_override": {"change": change, **detail}},
        session=session,
    )


def delete_environment_override(caller: AuthContext, environment: str, *, session: Session) -> None:
    existing = _find_override(caller.tenant_id, environment, session=session)
    if existing is None:
        raise NotFoundError(f"environment {environment!r} has no override", field="environment")
    cost_center = session.scalar(
        select(CostCenter.slug).where(CostCenter.id == existing.cost_center_id)
    )
    session.delete(existing)
    _audit_override(
        caller, "deleted", {"environment": environment, "from": cost_center}, session=session
    )
    session.commit()


# --- quantities --------------------------------------------------------------------------------


def plain(value: Decimal) -> Decimal:
    """The same number without the store's trailing zeros (42.000000000000 -> 42)."""
    return Decimal(plain_text(value))


def meter_quantity(total: UsageTotal, aggregation: Aggregation) -> Decimal:
    """A meter's quantity from the statistics of its usage (pure)."""
    if aggregation is Aggregation.SUM:
        return plain(total.quantity_sum)
    if aggregation is Aggregation.COUNT:
        return Decimal(total.event_count)
    value: Decimal | int | None
    if aggregation is Aggregation.MAX:
        value = total.quantity_max
    elif aggregation is Aggregation.LATEST:
        value = total.latest_quantity
    else:
        value = total.distinct_count
    if value is None:
        raise _not_answerable(total.meter, aggregation)
    return plain(Decimal(value))


def _not_answerable(meter: str, aggregation: Aggregation) -> InvalidInputError:
    return InvalidInputError(
        f"meter {meter!r} ({aggregation.value}) cannot be answered as of that time: "
        "its raw usage is past the retention window, and only sums and counts are kept "
        "in rollups",
        field="as_of",
    )


def definitions_by_name(meters: Iterable[MeterDefinition]) -> dict[str, MeterDefinition]:
    """The definition of each meter name that can appear in the store: the tenant's own over
    the defaults (which rated its events before it had meters)."""
    named = {m.name: m for m in DEFAULT_METERS}
    named.update({m.name: m for m in meters})
    return named


def apply_meters(
    totals: Iterable[UsageTotal], definitions: Mapping[str, MeterDefinition]
) -> list[MeteredQuantity]:
    result: list[MeteredQuantity] = []
    for total in totals:
        definition = definitions.get(total.meter)
        aggregation = definition.aggregation if definition else Aggregation.SUM
        result.append(
            MeteredQuantity(
                cost_center=total.cost_center,
                team=total.team,
                app=total.app,
                meter=total.meter,
                unit=definition.unit if definition else "",
                aggregation=aggregation,
                quantity=meter_quantity(total, aggregation),
                event_count=total.event_count,
                unattributed=total.unattributed,
            )
        )
    return result


def metered_quantities(
    tenant_id: str,
    period: Period,
    *,
    store: UsageStore,
    as_of: datetime | None = None,
    session: Session,
) -> list[MeteredQuantity]:
    """Quantities per (cost center, team, app, meter) of the tenant in `period`, each meter's
    aggregation applied. `as_of`: as the store stood then (see store.py)."""
    definitions = definitions_by_name(
        meter_definition(m) for m in tenant_meters(tenant_id, session=session)
    )
    return apply_meters(store.quantities(tenant_id, period, as_of=as_of), definitions)


# --- the usage view (GET /v1/usage) -------------------------------------------------------

# `by` -> the owner columns a group keeps (with the meter and the unattributed flag: every
# group is one meter's, as quantities of different meters have different units).
USAGE_LEVELS: dict[str, tuple[str, ...]] = {
    "cost-center": ("cost_center",),
    "team": ("team",),
    "app": ("app",),
    "meter": (),
}
DETAIL = ("cost_center", "team", "app")
MAX_FILTER_VALUES = 1000
MAX_TOP = 100_000


def group_columns(by: str | None) -> tuple[str, ...]:
    """The columns a `by` level groups by (None: every owner column, the detailed view)."""
    if by is None:
        return DETAIL
    if by not in USAGE_LEVELS:
        raise InvalidInputError(
            f"by {by!r} is not a grouping level; expected one of {', '.join(USAGE_LEVELS)}",
            field="by",
        )
    return USAGE_LEVELS[by]


def filter_values(values: Iterable[str] | None, field: str) -> tuple[str, ...]:
    """A filter's values, given repeated and/or comma-separated (`a,b&x=c`), deduplicated in
    order. An empty value is refused: it would match nothing, or only usage without owner."""
    found: dict[str, None] = {}
    for given in values or ():
        for value in given.split(","):
            value = value.strip()
            if not value:
                raise InvalidInputError(
                    f"{field} has an empty value in {given!r}; give slugs, repeated or "
                    "comma-separated",
                    field=field,
                )
            found[value] = None
    if len(found) > MAX_FILTER_VALUES:
        raise InvalidInputError(
            f"{field} has {len(found)} values; at most {MAX_FILTER_VALUES}", field=field
        )
    return tuple(found)


def refuse_unknown_owners(tenant_id: str, filters: UsageFilter, *, session: Session) -> None:
    """A cost center, team or app filter naming none of the tenant's is a 422 naming it:
    usage is only ever owned by the catalog's (or by none), so a typo (`--team paymnets`)
    answered "no usage" as if the team had used nothing."""
    checks = (
        ("cost_center", "cost center", filters.cost_centers, CostCenter.slug, CostCenter),
        ("team", "team", filters.teams, Team.slug, Team),
        ("app", "app", filters.apps, App.app_id, App),
    )
    for field, noun, wanted, column, model in checks:
        if not wanted:
            continue
        known = set(
            session.scalars(select(column).where(model.tenant_id == tenant_id, column.in_(wanted)))
        )
        unknown = [value for value in wanted if value not in known]
        if unknown:
            raise InvalidInputError(
                f"unknown {noun} {unknown[0]!r}: the tenant has no {noun} of that name",
                field=field,
            )


@dataclass(frozen=True, slots=True)
class GroupedQuantity:
    """The summed quantities of one group of the usage view. An owner column the view does
    not group by is None; `rows`: the (cost center, team, app) rows summed; `share`: the
    group's fraction of its meter's quantity in the view (0 when that is 0)."""

    cost_center: str | None
    team: str | None
    app: str | None
    meter: str
    unit: str
    aggregation: Aggregation
    quantity: Decimal
    event_count: int
    rows: int
    unattributed: bool
    share: Decimal


@dataclass(frozen=True, slots=True)
class MeterSummary:
    """One meter in the usage view: its quantity over every group (shown or not), how many
    groups it has, and those `top` left out with their quantity and share."""

    meter: str
    unit: str
    aggregation: Aggregation
    quantity: Decimal
    groups: int
    shown: int
    omitted: int
    omitted_quantity: Decimal
    omitted_share: Decimal


@dataclass(frozen=True, slots=True)
class UsageView:
    groups: list[GroupedQuantity]
    meters: list[MeterSummary]

    def rows(self) -> list[MeteredQuantity]:
        """The groups of the detailed view (by None) as `metered_quantities` rows, in their
        order: cost center, team, app, meter, unattributed."""
        rows = [
            MeteredQuantity(
                cost_center=g.cost_center or "",
                team=g.team or "",
                app=g.app or "",
                meter=g.meter,
                unit=g.unit,
                aggregation=g.aggregation,
                quantity=g.quantity,
                event_count=g.event_count,
                unattributed=g.unattributed,
            )
            for g in self.groups
        ]
        rows.sort(key=lambda r: (r.cost_center, r.team, r.app, r.meter, r.unattributed))
        return rows


def share(part: Decimal, whole: Decimal) -> Decimal:
    """`part / whole` to 4 places (0 when `whole` is 0)."""
    if not whole:
        return Decimal(0)
    return plain((part / whole).quantize(Decimal("0.0001")))


def usage_view(
    tenant_id: str,
    period: Period,
    *,
    store: UsageStore,
    by: str | None = None,
    filters: UsageFilter = UsageFilter(),
    top: int | None = None,
    as_of: datetime | None = None,
    session: Session,
) -> UsageView:
    """The tenant's metered quantities in `period`, filtered, summed per group of the `by`
    level (None: per cost center, team and app) and each meter's `top` largest groups, summed
    in the store's query. Groups come per meter, largest first."""
    columns = group_columns(by)
    if top is not None and not 1 <= top <= MAX_TOP:
        raise InvalidInputError(f"top {top} must be between 1 and {MAX_TOP}", field="top")
    definitions = definitions_by_name(
        meter_definition(m) for m in tenant_meters(tenant_id, session=session)
    )
    unknown = [m for m in filters.meters if m not in definitions]
    if unknown:
        raise InvalidInputError(
            f"meter {unknown[0]!r} is not a meter of the tenant; its meters: "
            f"{', '.join(sorted(definitions))}",
            field="meter",
        )
    refuse_unknown_owners(tenant_id, filters, session=session)
    found = store.usage_groups(
        tenant_id,
        period,
        aggregations={name: d.aggregation.value for name, d in definitions.items()},
        by=columns,
        filters=filters,
        top=top,
        as_of=as_of,
    )
    groups: list[GroupedQuantity] = []
    meters: dict[str, MeterSummary] = {}
    shown: dict[str, Decimal] = {}
    counted: dict[str, int] = {}
    for group in found:
        definition = definitions.get(group.meter)
        aggregation = definition.aggregation if definition else Aggregation.SUM
        if group.quantity is None or group.meter_quantity is None:
            raise _not_answerable(group.meter, aggregation)
        quantity, total = plain(group.quantity), plain(group.meter_quantity)
        unit = definition.unit if definition else ""
        groups.append(
            GroupedQuantity(
                cost_center=group.cost_center,
                team=group.team,
                app=group.app,
                meter=group.meter,
                unit=unit,
                aggregation=aggregation,
                quantity=quantity,
                event_count=group.event_count,
                rows=group.rows,
                unattributed=group.unattributed,
                share=share(quantity, total),
            )
        )
        shown[group.meter] = shown.get(group.meter, Decimal(0)) + quantity
        count = counted[group.meter] = counted.get(group.meter, 0) + 1
        left = total - shown[group.meter]
        meters[group.meter] = MeterSummary(
            meter=group.meter,
            unit=unit,
            aggregation=aggregation,
            quantity=total,
            groups=group.meter_groups,
            shown=count,
            omitted=group.meter_groups - count,
            omitted_quantity=plain(left),
            omitted_share=share(left, total),
        )
    return UsageView(groups=groups, meters=list(meters.values()))


# --- replay -------------------------------------------------------------------------------------

REPLAY_DOCUMENTS_NAMED = 3  # finalized documents a refused replay names


def any_finalized_documents(*, session: Session) -> bool:
    """Whether any tenant has a finalized billing document (a rebuild of the whole store may
    then change what they were computed from)."""
    found = session.scalar(
        select(BillingDocument.id)
        .where(BillingDocument.status == DocumentStatus.FINALIZED.value)
        .limit(1)
    )
    return found is not None


def check_replay_keeps_finalized(tenant_id: str, *, session: Session) -> None:
    """Refuse a replay of a tenant that has finalized billing documents.

    A replay rebuilds all of the tenant's usage from the event log, and the log does not hold
    the reconciliation window's decisions: events settled to the default cost center are
    decided again with the metadata and the window in force now, so a finalized document may
    no longer reproduce, and the next adjustment would move money (docs/usage.md, Replay).
    The caller passes `force` to replay anyway."""
    rows = session.execute(
        select(
            BillingDocument.id,
            BillingDocument.doc_type,
            BillingDocument.period_start,
            BillingDocument.period_end,
        )
        .where(
            BillingDocument.tenant_id == tenant_id,
            BillingDocument.status == DocumentStatus.FINALIZED.value,
        )
        .order_by(BillingDocument.period_end.desc(), BillingDocument.finalized_at.desc())
    ).all()
    if not rows:
        return
    named = ", ".join(
        f"{doc_type} {doc_id[:8]} ({start.date().isoformat()}..{end.date().isoformat()})"
        for doc_id, doc_type, start, end in rows[:REPLAY_DOCUMENTS_NAMED]
    )
    extra = len(rows) - REPLAY_DOCUMENTS_NAMED
    more = f" and {extra} more" if extra > 0 else ""
    raise ConflictError(
        f"{len(rows)} finalized billing document(s) cover usage this replay rebuilds: "
        f"{named}{more}. The event log does not record which events the reconciliation "
        "window settled to the default cost center: a replay decides them again with "
        "today's metadata and window, so these documents may no longer reproduce and the "
        "next adjustment would move money (docs/usage.md, Replay). Replay anyway with "
        "force=true (qm pipeline replay --force)",
        field="force",
    )


def record_replay_request(tenant_id: str | None, requested_by: str, *, session: Session) -> int:
    """Record a replay for every server of the database to apply (committed); its id."""
    request = ReplayRequest(tenant_id=tenant_id, requested_by=requested_by, requested_at=utc_now())
    session.add(request)
    session.commit()
    return request.id


def replay_requests_after(after: int, *, session: Session) -> list[tuple[int, str | None]]:
    """(id, tenant_id) of the replay requests after `after`, oldest first."""
    rows = session.execute(
        select(ReplayRequest.id, ReplayRequest.tenant_id)
        .where(ReplayRequest.id > after)
        .order_by(ReplayRequest.id)
    )
    return [(int(request_id), tenant_id) for request_id, tenant_id in rows]


def last_replay_request(*, session: Session) -> int:
    """The id of the newest replay request, 0 when there is none."""
    return int(session.scalar(select(func.max(ReplayRequest.id))) or 0)
