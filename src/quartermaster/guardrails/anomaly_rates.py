"""The rate card anomaly detection prices hourly usage with: each app's list rate per unit of
each meter, from the tenant's price book in force (pure, plus one loader).

An hour's cost is an estimate at the *list* rate, not an invoice amount: free allowances,
tier positions and subscription fees belong to a whole billing period and would make the
same usage cost nothing early in the month and full price later, which no hourly baseline
could follow. The list rate is the rule's unit price (its first tier for graduated and volume
tiers, package price / package size, a subscription's overage rate), after the discounts that
apply to the app's meter. Meters aggregated by max, latest or unique count have no hourly
cost and are left out; count meters are priced per event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from quartermaster.pricing.book import CompiledBook, Owner, apply_discounts
from quartermaster.pricing.document import (
    Graduated,
    Package,
    PerUnit,
    PriceBookDocument,
    PricingModel,
    Subscription,
    Volume,
)
from quartermaster.pricing.history import NoVersionInForceError
from quartermaster.usage.meters import Aggregation, MeterDefinition
from quartermaster.usage.store import MeterRate

PRICED_AGGREGATIONS = (Aggregation.SUM, Aggregation.COUNT)


def unit_rate(model: PricingModel) -> Decimal | None:
    """The list price of one unit under a pricing model (None: usage is not charged)."""
    if isinstance(model, PerUnit):
        return model.unit_price
    if isinstance(model, Graduated | Volume):
        return model.tiers[0].unit_price
    if isinstance(model, Package):
        return model.package_price / model.package_size
    if isinstance(model, Subscription):
        return unit_rate(model.overage) if model.overage is not None else None
    return None  # pragma: no cover - every model is handled above


def rate_card(
    document: PriceBookDocument,
    owners: Iterable[Owner],
    meters: Mapping[str, MeterDefinition],
) -> list[MeterRate]:
    """One rate per (app, meter) for the given owners, plus the meter's default rate (app
    "") for usage of apps not listed."""
    book = CompiledBook(document)
    priced = {
        name: meter for name, meter in meters.items() if meter.aggregation in PRICED_AGGREGATIONS
    }
    rates: list[MeterRate] = []
    nobody = Owner("", "", "")
    for owner in [nobody, *owners]:
        for name, meter in sorted(priced.items()):
            found = book.rule_for(name, owner)
            if found is None:
                continue
            rate = unit_rate(found[1])
            if rate is None:
                continue
            if owner is not nobody:
                rate = apply_discounts(rate, book.discounts_for(owner, name)).net
            rates.append(
                MeterRate(
                    app=owner.app,
                    meter=name,
                    rate=rate,
                    per_event=meter.aggregation is Aggregation.COUNT,
                )
            )
    return rates


def tenant_rate_card(tenant_id: str, at: datetime, *, session: Session) -> list[MeterRate]:
    """The tenant's rate card from its default price book in force at `at` (none: an empty
    card, so nothing is scored until a price book exists)."""
    # Billing and the catalog import the runtime; imported here so the pure part stays light.
    from quartermaster.billing.sources import owner_directory, tenant_meter_definitions
    from quartermaster.catalog.models import App
    from quartermaster.pricing.service import default_price_book_name, load_history

    name = default_price_book_name(tenant_id, session=session)
    if name is None:
        return []
    history = load_history(tenant_id, name, session=session)
    try:
        document = history.effective_at(at)
    except NoVersionInForceError:
        return []
    directory = owner_directory(tenant_id, session=session)
    lifecycles = dict(
        session.execute(select(App.app_id, App.lifecycle).where(App.tenant_id == tenant_id)).all()
    )
    owners = [
        Owner(center, team, app, lifecycles.get(app, "persistent"))
        for app, (center, team) in sorted(directory.apps.items())
    ]
    return rate_card(document, owners, tenant_meter_definitions(tenant_id, session=session))
