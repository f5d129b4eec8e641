"""A run of a finalized period named with another price book: the answer says the book was
not used (it returned the run priced with its own book, silently)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from quartermaster.cli.main import _register_groups, app
from tests.billing.platform import JANUARY_MONTH, Platform
from tests.conftest import start_live_server


def _run(platform: Platform, **extra: Any) -> Any:
    response = platform.client.post(
        "/v1/billing/runs", json={"month": JANUARY_MONTH, **extra}, headers=platform.headers
    )
    assert response.status_code in (200, 201), response.text
    return response.json()


def _finalized_january(platform: Platform) -> str:
    platform.upload_price_book(name="other")
    run_id: str = _run(platform)["run"]["id"]
    finalized = platform.client.post(
        f"/v1/billing/runs/{run_id}/finalize", headers=platform.headers
    )
    assert finalized.status_code == 200, finalized.text
    return run_id


def test_the_answer_says_a_named_price_book_was_not_used(platform: Platform) -> None:
    run_id = _finalized_january(platform)
    answer = _run(platform, price_book="other")
    assert (answer["outcome"], answer["run"]["id"], answer["run"]["price_book"]) == (
        "unchanged",
        run_id,
        "internal",
    )
    assert answer["price_book_not_used"] == (
        "price book 'other' was not used: the run is finalized, priced with 'internal', and "
        "a finalized run never changes (an adjustment corrects it, with the run's own price "
        "book)"
    )
    # Its own book, or none named: nothing to say.
    assert _run(platform, price_book="internal")["price_book_not_used"] is None
    assert _run(platform)["price_book_not_used"] is None


@pytest.fixture
def qm(
    billing_app: FastAPI, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> Iterator[CliRunner]:
    if not any(group.name == "bill" for group in app.registered_groups):
        _register_groups()
    live = start_live_server(billing_app)
    monkeypatch.setenv("QM_URL", live.url)
    monkeypatch.setenv("QM_API_KEY", platform.headers["Authorization"].removeprefix("Bearer "))
    monkeypatch.setenv("COLUMNS", "250")
    yield CliRunner()
    live.server.should_exit = True
    live.thread.join(timeout=20)


@pytest.mark.parametrize("fresh_db_url", ["sqlite"], indirect=True)
def test_qm_bill_run_says_so_too(qm: CliRunner, platform: Platform) -> None:
    _finalized_january(platform)
    result = qm.invoke(app, ["bill", "run", "--month", JANUARY_MONTH, "--price-book", "other"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "already finalized: unchanged" in text
    assert "price book 'other' was not used: the run is finalized, priced with 'internal'" in text
