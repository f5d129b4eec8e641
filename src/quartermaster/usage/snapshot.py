"""Load what attribution and rating read from the control plane, once per pipeline pass.

Bulk queries per tenant (apps with their ownership spans, the resources named by the pass's
events, environment overrides, meters) rather than a lookup per event."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from quartermaster.catalog.models import App, AppAssignment, Resource
from quartermaster.tenancy.models import CostCenter, Team
from quartermaster.tenancy.service import DEFAULT_COST_CENTER_SLUG
from quartermaster.usage.attribution import (
    AppRecord,
    MetadataSnapshot,
    OverrideRecord,
    OwnerSpan,
    ResourceRecord,
)
from quartermaster.usage.meters import Aggregation, MeterDefinition, MeterSet
from quartermaster.usage.models import EnvironmentOverride, Meter

_CHUNK = 500


def load_snapshot(
    tenant_id: str, *, resource_ids: Collection[str], session: Session
) -> MetadataSnapshot:
    default_cc = session.scalar(
        select(CostCenter.slug).where(
            CostCenter.tenant_id == tenant_id, CostCenter.is_default.is_(True)
        )
    )
    return MetadataSnapshot(
        tenant_id=tenant_id,
        default_cost_center=default_cc or DEFAULT_COST_CENTER_SLUG,
        apps=_apps(tenant_id, session),
        resources=_resources(tenant_id, resource_ids, session),
        overrides=_overrides(tenant_id, session),
    )


def _apps(tenant_id: str, session: Session) -> dict[str, AppRecord]:
    team, cost_center = aliased(Team), aliased(CostCenter)
    spans: dict[str, list[OwnerSpan]] = {}
    span_rows = session.execute(
        select(
            AppAssignment.app_pk,
            team.slug,
            cost_center.slug,
            AppAssignment.valid_from,
            AppAssignment.valid_to,
        )
        .join(team, team.id == AppAssignment.team_id)
        .join(cost_center, cost_center.id == AppAssignment.cost_center_id)
        .where(AppAssignment.tenant_id == tenant_id)
        .order_by(AppAssignment.app_pk, AppAssignment.valid_from)
    )
    for app_pk, team_slug, cc_slug, valid_from, valid_to in span_rows:
        spans.setdefault(app_pk, []).append(OwnerSpan(team_slug, cc_slug, valid_from, valid_to))
    team, cost_center = aliased(Team), aliased(CostCenter)
    rows = session.execute(
        select(
            App.id,
            App.app_id,
            App.created_at,
            App.lifecycle,
            App.environment,
            team.slug,
            cost_center.slug,
        )
        .join(team, team.id == App.team_id)
        .join(cost_center, cost_center.id == App.cost_center_id)
        .where(App.tenant_id == tenant_id)
    )
    return {
        app_id: AppRecord(
            app_id=app_id,
            created_at=created_at,
            lifecycle=lifecycle,
            environment=environment,
            team=team_slug,
            cost_center=cc_slug,
            spans=tuple(spans.get(app_pk, ())),
        )
        for app_pk, app_id, created_at, lifecycle, environment, team_slug, cc_slug in rows
    }


def _resources(
    tenant_id: str, resource_ids: Collection[str], session: Session
) -> dict[str, tuple[ResourceRecord, ...]]:
    found: dict[str, list[ResourceRecord]] = {}
    wanted = sorted(set(resource_ids))
    for start in range(0, len(wanted), _CHUNK):
        rows = session.execute(
            select(
                Resource.resource_id,
                App.app_id,
                Resource.environment,
                Resource.valid_from,
                Resource.valid_to,
                Resource.created_at,
            )
            .join(App, App.id == Resource.app_pk)
            .where(
                Resource.tenant_id == tenant_id,
                Resource.resource_id.in_(wanted[start : start + _CHUNK]),
            )
            .order_by(Resource.resource_id, Resource.valid_from)
        )
        for row in rows:
            found.setdefault(row[0], []).append(ResourceRecord(*row))
    return {key: tuple(value) for key, value in found.items()}


def _overrides(tenant_id: str, session: Session) -> dict[str, OverrideRecord]:
    rows = session.execute(
        select(EnvironmentOverride.environment, CostCenter.slug, EnvironmentOverride.created_at)
        .join(CostCenter, CostCenter.id == EnvironmentOverride.cost_center_id)
        .where(EnvironmentOverride.tenant_id == tenant_id)
    )
    return {env: OverrideRecord(env, slug, created_at) for env, slug, created_at in rows}


def load_meter_set(tenant_id: str, *, session: Session) -> MeterSet:
    return MeterSet(meter_definition(m) for m in tenant_meters(tenant_id, session=session))


def tenant_meters(tenant_id: str, *, session: Session) -> list[Meter]:
    return list(
        session.scalars(
            select(Meter).where(Meter.tenant_id == tenant_id).order_by(Meter.created_at, Meter.name)
        )
    )


def meter_definition(meter: Meter) -> MeterDefinition:
    return MeterDefinition(
        name=meter.name,
        event_type=meter.event_type,
        value=meter.value,
        aggregation=Aggregation(meter.aggregation),
        unit=meter.unit,
        filter_field=meter.filter_field,
        filter_value=meter.filter_value,
        description=meter.description,
        created_at=meter.created_at,
    )


Fingerprint = tuple[tuple[int, datetime | None], ...]


def metadata_fingerprints(tenant_ids: Iterable[str], *, session: Session) -> dict[str, Fingerprint]:
    """A cheap summary per tenant of the metadata that can resolve a waiting event; when it is
    unchanged, re-trying that tenant's waiting events cannot attribute any of them."""
    ids = list(tenant_ids)
    parts: dict[str, list[tuple[int, datetime | None]]] = {t: [] for t in ids}
    for model in (App, Resource, EnvironmentOverride):
        counted: dict[str, tuple[int, datetime | None]] = dict.fromkeys(ids, (0, None))
        rows = session.execute(
            select(model.tenant_id, func.count(), func.max(model.created_at))
            .where(model.tenant_id.in_(ids))
            .group_by(model.tenant_id)
        )
        for tenant_id, count, latest in rows:
            counted[tenant_id] = (int(count), latest)
        for tenant_id in ids:
            parts[tenant_id].append(counted[tenant_id])
    return {tenant_id: tuple(values) for tenant_id, values in parts.items()}
