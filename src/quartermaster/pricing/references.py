"""The names a price book uses that its tenant must have: meters, teams, cost centers, apps.

A rule for a meter the tenant does not have never prices anything, and its real meter is
billed as unpriced at 0; a scope or discount for a team that does not exist never applies.
So a price book is checked against its tenant when it is loaded (the document alone cannot
know the tenant's names). The walk reads the plain data, so that the unknown names of a
document that also has bad fields are reported with them, in one answer.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from quartermaster.catalog.models import App
from quartermaster.pricing.document import Issue
from quartermaster.tenancy.models import CostCenter, Team
from quartermaster.usage.meters import DEFAULT_METERS
from quartermaster.usage.snapshot import tenant_meters

Kind = Literal["meter", "team", "cost_center", "app"]
OWNER_KINDS: tuple[Kind, ...] = ("team", "cost_center", "app")
_LABELS: dict[Kind, str] = {
    "meter": "meter",
    "team": "team",
    "cost_center": "cost center",
    "app": "app",
}


@dataclass(frozen=True, slots=True)
class Reference:
    path: str
    kind: Kind
    name: str


@dataclass(frozen=True, slots=True)
class TenantNames:
    """What a price book of the tenant may name."""

    meters: frozenset[str]
    teams: frozenset[str]
    cost_centers: frozenset[str]
    apps: frozenset[str]

    def of(self, kind: Kind) -> frozenset[str]:
        return {
            "meter": self.meters,
            "team": self.teams,
            "cost_center": self.cost_centers,
            "app": self.apps,
        }[kind]


def _items(data: dict[str, Any], key: str) -> Iterator[tuple[str, dict[str, Any]]]:
    items = data.get(key)
    if isinstance(items, list):
        for index, item in enumerate(items):
            if isinstance(item, dict):
                yield f"{key}[{index}]", item


def _name(path: str, kind: Kind, value: Any) -> Iterator[Reference]:
    if isinstance(value, str):
        yield Reference(path, kind, value)


def _owners(path: str, selector: Any) -> Iterator[Reference]:
    if isinstance(selector, dict):
        for kind in OWNER_KINDS:
            yield from _name(f"{path}.{kind}", kind, selector.get(kind))


def references(data: Any) -> list[Reference]:
    """Every meter, team, cost center and app a price book's plain data names, with the path
    where it appears (valid or not: parts that are not as the schema says are skipped)."""
    if not isinstance(data, dict):
        return []
    found: list[Reference] = []
    for path, rule in _items(data, "prices"):
        found.extend(_name(f"{path}.meter", "meter", rule.get("meter")))
        found.extend(_owners(f"{path}.scope", rule.get("scope")))
    for path, discount in _items(data, "discounts"):
        found.extend(_owners(f"{path}.applies_to", discount.get("applies_to")))
        meters = discount.get("meters")
        if isinstance(meters, list):
            for position, meter in enumerate(meters):
                found.extend(_name(f"{path}.meters[{position}]", "meter", meter))
    for path, policy in _items(data, "platform_costs"):
        found.extend(_name(f"{path}.meter", "meter", policy.get("meter")))
        found.extend(_owners(f"{path}.to", policy.get("to")))
    for path, reservation in _items(data, "reservations"):
        found.extend(_name(f"{path}.meter", "meter", reservation.get("meter")))
    return found


def unknown_name_issues(found: list[Reference], names: TenantNames) -> list[Issue]:
    """One issue per name the tenant does not have, with a close known name if there is one."""
    issues: list[Issue] = []
    for reference in found:
        known = names.of(reference.kind)
        if reference.name in known:
            continue
        message = f"unknown {_LABELS[reference.kind]} {reference.name!r}"
        close = difflib.get_close_matches(reference.name, sorted(known), n=1)
        if close:
            message += f" (did you mean {close[0]!r}?)"
        elif reference.kind != "meter" and not known:
            message += f": the tenant has no {_LABELS[reference.kind]}s of its own"
        issues.append((reference.path, message))
    return issues


def meters_note(names: TenantNames) -> str:
    return "The tenant's meters (qm meter list): " + ", ".join(sorted(names.meters))


def tenant_names(
    tenant_id: str, *, effective_from: datetime | None, session: Session
) -> TenantNames:
    """The meters rating uses for the tenant (its own; the built-in ones while it has none,
    and for a version that takes effect before its first own meter, whose usage until then
    the built-in meters rated; `effective_from` None: not known, allowed too) and the slugs
    of its teams, cost centers and apps."""
    own = tenant_meters(tenant_id, session=session)
    meters = {meter.name for meter in own}
    first_own = min((meter.created_at for meter in own), default=None)
    if first_own is None or effective_from is None or effective_from < first_own:
        meters.update(meter.name for meter in DEFAULT_METERS)

    def slugs(column: Any, tenant_column: Any) -> frozenset[str]:
        return frozenset(session.scalars(select(column).where(tenant_column == tenant_id)))

    return TenantNames(
        meters=frozenset(meters),
        teams=slugs(Team.slug, Team.tenant_id),
        cost_centers=slugs(CostCenter.slug, CostCenter.tenant_id),
        apps=slugs(App.app_id, App.tenant_id),
    )
