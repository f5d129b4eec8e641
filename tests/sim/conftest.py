"""Small simulated platforms shared by the sim tests (built once per session: they are pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from quartermaster.sim.factory import AppKey, Credentials
from quartermaster.sim.model import Platform, Registration, SimConfig
from quartermaster.sim.platform import build_platform

# A Monday, so the first day has office hours.
START = datetime(2026, 5, 4, tzinfo=UTC)


def fake_credentials(platform: Platform) -> Credentials:
    """Deterministic stand-ins for what the control plane would hand out."""
    return Credentials(
        keys={
            app.app_id: AppKey(f"sk_{app.index:016x}", bytes([app.index % 251 + 1]) * 32)
            for app in platform.apps
        },
        leases={
            r.resource_id: f"rl1.lease-{r.index}.mac"
            for r in platform.resources
            if r.registration is Registration.LEASED
        },
    )


@pytest.fixture(scope="session")
def small_platform() -> Platform:
    """Two days, 60 apps: every scenario present, quick to generate."""
    return build_platform(
        SimConfig(start=START, hours=48, apps=60, teams=8, events_per_day=6_000, anomalies=3)
    )
