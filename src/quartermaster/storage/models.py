"""One place that imports every feature's tables, for Alembic and for tests."""

from __future__ import annotations

import importlib

# A feature package that owns tables lists its models module here.
MODEL_MODULES = (
    "quartermaster.tenancy.models",
    "quartermaster.catalog.models",
    "quartermaster.bus.models",
    "quartermaster.metering.models",
    "quartermaster.usage.models",
    "quartermaster.pricing.models",
    "quartermaster.billing.models",
    "quartermaster.secrets.models",
    "quartermaster.audit.models",
    "quartermaster.catalog.publish_models",
    "quartermaster.policy.models",
    "quartermaster.guardrails.models",
    "quartermaster.storage.key_checks",
)


def import_all_models() -> None:
    for name in MODEL_MODULES:
        importlib.import_module(name)
