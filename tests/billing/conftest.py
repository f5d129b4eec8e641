"""Fixtures of the billing tests that run the real pipeline: a fresh database and usage store
per test (the pipeline consumes the whole event log), the API app, and a small platform
built and fed through it (tests/billing/platform.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from quartermaster.api.app import create_app
from quartermaster.billing.calculator import BillingCalculator
from quartermaster.billing.router import get_calculator, get_preview_calculator
from quartermaster.runtime import Runtime, build_runtime
from quartermaster.tenancy.service import bootstrap_tenant
from tests.billing.platform import Platform, build_platform, immediate_calculator, january_events
from tests.conftest import make_settings


@pytest.fixture
def billing_runtime(tmp_path: Path, fresh_db_url: str) -> Iterator[Runtime]:
    settings = make_settings(tmp_path / "qm", fresh_db_url, pipeline_enabled=False)
    runtime = build_runtime(settings, migrate=False)
    yield runtime
    runtime.close()


@pytest.fixture
def billing_app(billing_runtime: Runtime) -> FastAPI:
    app = create_app(billing_runtime.settings, runtime=billing_runtime)
    app.dependency_overrides[get_calculator] = lambda: immediate_calculator(billing_runtime)
    app.dependency_overrides[get_preview_calculator] = lambda: preview_calculator(billing_runtime)
    return app


def preview_calculator(runtime: Runtime) -> BillingCalculator:
    """The API's preview calculator (as of the pipeline's progress) without the settle delay."""
    calculator = get_preview_calculator(runtime)
    calculator.settle = timedelta(0)  # type: ignore[attr-defined]
    return calculator


@pytest.fixture
def platform(billing_app: FastAPI, billing_runtime: Runtime) -> Iterator[Platform]:
    with billing_runtime.session_factory() as session:
        issued = bootstrap_tenant("acme", name="Acme Corp", session=session)
    with TestClient(billing_app) as client:
        built = Platform(client, billing_runtime, "acme", issued.token)
        build_platform(built)
        built.send(january_events())
        yield built
