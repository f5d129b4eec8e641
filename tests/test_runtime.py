"""A closed Runtime refuses every use instead of opening new connections (both databases)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from quartermaster.config import Settings
from quartermaster.guardrails.gate import guardrail_gate
from quartermaster.policy.dependencies import policy_cache
from quartermaster.runtime import Runtime, RuntimeClosedError, build_runtime
from quartermaster.usage.pipeline import pipeline_worker


def _checked_out(runtime: Runtime) -> int:
    return int(runtime.engine.pool.checkedout())


def test_a_closed_runtime_refuses_its_database_instead_of_reconnecting(
    settings: Settings,
) -> None:
    runtime = build_runtime(settings, migrate=False)
    with runtime.session_factory() as session:
        assert session.execute(text("SELECT 1")).scalar() == 1
    head = runtime.event_log.head()
    runtime.close()
    assert runtime.closed

    uses = [
        lambda: runtime.session_factory().execute(text("SELECT 1")),
        lambda: runtime.engine.connect(),
        lambda: runtime.event_log.head(),
        lambda: runtime.read_session_factory,
        lambda: runtime.usage_store,
        lambda: runtime.auth_cache,
        lambda: pipeline_worker(runtime),
        lambda: guardrail_gate(runtime),
        lambda: policy_cache(runtime),
    ]
    for use in uses:
        with pytest.raises(RuntimeClosedError, match="runtime is closed"):
            use()
    assert isinstance(RuntimeClosedError(), RuntimeError)
    assert _checked_out(runtime) == 0  # nothing was opened (nor left open)

    # The data is untouched: a new runtime on the same settings reads it.
    again = build_runtime(settings, migrate=False)
    try:
        assert again.event_log.head() == head
    finally:
        again.close()


def test_a_read_session_factory_taken_before_close_is_refused_after_it(
    settings: Settings,
) -> None:
    runtime = build_runtime(settings, migrate=False)
    reads = runtime.read_session_factory
    store = runtime.usage_store
    runtime.close()
    with pytest.raises(RuntimeClosedError), reads() as session:
        session.execute(text("SELECT 1"))
    with pytest.raises(RuntimeError, match="usage store is closed"):
        store.streams()


def test_close_is_idempotent_and_closes_the_services_once(settings: Settings) -> None:
    runtime = build_runtime(settings, migrate=False)
    closed: list[str] = []

    class Client:
        def close(self) -> None:
            closed.append("client")

    runtime.service("client", Client, Client)
    assert runtime.service("client", Client, Client) is runtime.services["client"]
    runtime.close()
    runtime.close()
    assert closed == ["client"]
    assert runtime.services == {}


def test_a_failing_service_close_still_closes_the_database(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = build_runtime(settings, migrate=False)

    class Broken:
        def close(self) -> None:
            raise OSError("the socket is gone")

    runtime.service("broken", Broken, Broken)
    runtime.close()
    assert "closing the runtime service" in caplog.text
    with pytest.raises(RuntimeClosedError):
        runtime.engine.connect()


def test_a_service_of_another_kind_is_refused(runtime: Runtime) -> None:
    runtime.services["thing"] = object()
    with pytest.raises(TypeError, match="runtime service 'thing' is a object"):
        runtime.service("thing", str, str)
