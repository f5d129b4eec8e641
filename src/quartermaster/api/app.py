"""The FastAPI application factory. `qm serve` and the tests build it from settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi_offline import FastAPIOffline

from quartermaster import __version__
from quartermaster.api.body_limit import BodyLimit
from quartermaster.api.errors import install_error_handlers
from quartermaster.api.openapi import install_openapi, operation_id
from quartermaster.api.text_guard import RefuseUnstorableText
from quartermaster.config import Settings
from quartermaster.runtime import Runtime, build_runtime

# Each feature exposes `router`; listed here, in one place.
ROUTER_MODULES: tuple[str, ...] = (
    "quartermaster.tenancy.router",
    "quartermaster.catalog.publish_router",  # before catalog.router: /v1/apps/search etc.
    "quartermaster.catalog.router",
    "quartermaster.pricing.router",
    "quartermaster.usage.router",
    "quartermaster.billing.router",
    "quartermaster.metering.router",
    "quartermaster.secrets.router",
    "quartermaster.secrets.lease_router",
    "quartermaster.audit.router",
    "quartermaster.policy.router",
    "quartermaster.guardrails.router",
    "quartermaster.guardrails.anomaly_router",
    "quartermaster.guardrails.defaults_router",
)

BackgroundStarter = Callable[[Runtime], Callable[[], None]]


def _feature_routers() -> list[APIRouter]:
    import importlib

    routers: list[APIRouter] = []
    for name in ROUTER_MODULES:
        routers.append(importlib.import_module(name).router)
    return routers


def create_app(
    settings: Settings,
    *,
    runtime: Runtime | None = None,
    background: tuple[BackgroundStarter, ...] = (),
    on_started: Callable[[], None] | None = None,
) -> FastAPI:
    """Build the app. `background` starters run on startup and return a stop function
    (`qm serve` passes the pipeline workers; tests usually pass none); `on_started` runs
    once they have started (`qm serve` tunes the garbage collector there)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = runtime is None
        rt = runtime if runtime is not None else build_runtime(settings)
        app.state.runtime = rt
        stops = [start(rt) for start in background]
        if on_started is not None:
            on_started()
        try:
            yield
        finally:
            for stop in reversed(stops):
                stop()
            if owned:
                rt.close()

    # The docs pages' scripts are served by this server (fastapi-offline's copies of Swagger UI
    # and ReDoc), not fetched by the browser from a CDN: /docs works where the server does.
    app = FastAPIOffline(
        title="Quartermaster",
        version=__version__,
        description="Metering, chargeback and governance for platforms of micro-apps.",
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
    )
    install_error_handlers(app)
    install_openapi(app)
    # Added first, so it runs inside BodyLimit: a body it reads is already bounded. Ingestion
    # refuses NUL per event; the ingest benchmark's floor route is passed as ingestion is, so
    # that the floor measures the same path.
    app.add_middleware(
        RefuseUnstorableText, own_checks=frozenset({"/v1/events", "/v1/_bench/parse"})
    )
    app.add_middleware(
        BodyLimit, limit=settings.max_body_bytes, own_limits=frozenset({"/v1/events"})
    )

    @app.get("/healthz", tags=["system"], summary="Liveness")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    for router in _feature_routers():
        app.include_router(router)
    if settings.bench_routes_enabled:
        from quartermaster.metering.router import bench_router

        app.include_router(bench_router)
    return app
