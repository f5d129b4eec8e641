"""The demo's stages after ingestion: drain the pipeline, close the reconciliation window,
load the price book, run and finalize the month's billing, explain a line, bill late usage
with an adjustment, cross a budget, and print the showback. Each talks to the server only
through its public HTTP API."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import orjson

from quartermaster.billing.sources import DEFAULT_SETTLE
from quartermaster.domain.timeutil import floor_hour, utc_now
from quartermaster.metering.signing import sign_event
from quartermaster.pricing.loader import DocumentFormat, PriceBookError, guess_format, parse_raw
from quartermaster.pricing.references import references
from quartermaster.sim import showback
from quartermaster.sim.context import DemoContext, DemoFailure, start_server, stop_server
from quartermaster.sim.driver import demo_progress, post_batch, request

DRAIN_TIMEOUT_SECONDS = 1800.0
POLL_SECONDS = 0.5


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def default_price_book() -> Path:
    """docs/examples/pricebook.yaml of the checkout this package runs from."""
    return Path(__file__).resolve().parents[3] / "docs" / "examples" / "pricebook.yaml"


def _status(client: httpx.Client, since: datetime | None = None) -> dict[str, Any]:
    """The pipeline's status; its latency figures cover the events rated since `since`."""
    query = f"?{urlencode({'since': _iso(since)})}" if since is not None else ""
    status: dict[str, Any] = request(client, "GET", f"/v1/pipeline/status{query}").json()
    return status


def _wait_for_pipeline(
    ctx: DemoContext, description: str, done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Poll the pipeline status, a bar over the log positions, until `done` holds."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    with ctx.client() as client, demo_progress(console=ctx.console) as progress:
        task = progress.add_task(description, total=None)
        while True:
            status = _status(client, ctx.started_at)
            head = int(status["log_head"])
            progress.update(task, total=head, completed=head - int(status["lag"]))
            if done(status):
                return status
            if status["worker"]["last_error"] and status["worker"]["failures"] > 3:
                raise DemoFailure(f"the pipeline keeps failing: {status['worker']['last_error']}")
            if time.monotonic() > deadline:
                raise DemoFailure(f"the pipeline did not drain within {DRAIN_TIMEOUT_SECONDS:.0f}s")
            time.sleep(POLL_SECONDS)


def drain_pipeline(ctx: DemoContext) -> None:
    """Wait until the pipeline (running in `qm serve` since the first event) has read and
    rated the whole log; events of unregistered resources stay waiting for their metadata."""
    status = _wait_for_pipeline(
        ctx, "rating the event log", lambda s: s["lag"] == 0 and s["worker"]["runs"] > 0
    )
    ctx.console.print(
        f"log head {status['log_head']:,}: every event read; {status['waiting']:,} waiting "
        "for their metadata (resources nobody registered)"
    )


def close_window(ctx: DemoContext) -> None:
    """The month passed in minutes, so the 24 h reconciliation window has not: restart the
    server with a window of 0 h, as if it had closed; what still waits goes to the default
    cost center, flagged unattributed."""
    with ctx.client() as client:
        before = _status(client)["waiting"]
    stop_server(ctx)
    ctx.server_env["QM_RECONCILIATION_WINDOW_HOURS"] = "0"
    start_server(ctx)
    status = _wait_for_pipeline(
        ctx, "settling waiting events", lambda s: s["lag"] == 0 and s["waiting"] == 0
    )
    ctx.pipeline = status
    end = floor_hour(utc_now()) + timedelta(hours=1)
    query = urlencode({"start": _iso(floor_hour(ctx.started_at)), "end": _iso(end)})
    with ctx.client() as client:
        ctx.accounting = request(client, "GET", f"/v1/pipeline/accounting?{query}").json()
    ctx.console.print(f"{before:,} waiting events settled to the default cost center")
    if not ctx.accounting["balanced"]:
        raise DemoFailure("the pipeline accounting does not balance: accepted != rated + waiting")


def register_price_book_owners(
    client: httpx.Client, text: str, fmt: DocumentFormat, *, fallback_team: str
) -> dict[str, list[str]]:
    """Create the teams, cost centers and apps the price book names that the tenant does not
    have (a price book naming an owner its tenant lacks is refused): the example names a few
    teams a small simulated platform has not got, and an app it never has. Returns what was
    created, by kind. An app goes to the first team the book names (else `fallback_team`)."""
    try:
        named = references(parse_raw(text, fmt))
    except PriceBookError:
        return {}  # the server names the problem when the book is loaded
    teams = [ref.name for ref in named if ref.kind == "team"]
    created: dict[str, list[str]] = {}

    def create(kind: str, path: str, name: str, body: dict[str, str]) -> None:
        response = request(client, "POST", path, json=body, accept=(201, 409))
        if response.status_code == 201:  # 409: the tenant has it already
            created.setdefault(kind, []).append(name)

    for ref in named:
        if ref.kind == "cost_center":
            create("cost centers", "/v1/cost-centers", ref.name, {"slug": ref.name})
        elif ref.kind == "team":
            body = {"slug": ref.name, "cost_center": "default"}
            create("teams", "/v1/teams", ref.name, body)
    for ref in named:
        if ref.kind == "app":
            body = {"app_id": ref.name, "owner": "price-book", "cost_center": "default"}
            body["team"] = teams[0] if teams else fallback_team
            create("apps", "/v1/apps", ref.name, body)
    return created


def load_price_book(ctx: DemoContext) -> None:
    """POST the YAML price book, as `qm pricebook load` does, once the tenant has the owners
    it names."""
    path = ctx.options.price_book or default_price_book()
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise DemoFailure(f"cannot read the price book {path}: {exc.strerror}") from None
    text = content.decode("utf-8", errors="replace")
    with ctx.client() as client:
        created = register_price_book_owners(
            client,
            text,
            guess_format(path.name, text),
            fallback_team=ctx.need_platform().teams[0].slug,
        )
        if created:
            listed = "; ".join(f"{kind} {', '.join(names)}" for kind, names in created.items())
            ctx.console.print(
                f"registered what the price book names and the platform lacks: {listed}"
            )
        ctx.price_book = request(
            client,
            "POST",
            "/v1/price-books",
            content=content,
            headers={"Content-Type": "application/yaml"},
        ).json()
    book = ctx.price_book
    ctx.console.print(
        f"price book {book['name']!r} version {book['version']} from {path} "
        f"(effective from {book['effective_from']})"
    )


def _timed(ctx: DemoContext, label: str, call: Callable[[], httpx.Response]) -> httpx.Response:
    began = time.perf_counter()
    response = call()
    ctx.timings[label] = time.perf_counter() - began
    return response


def billing_run(ctx: DemoContext) -> None:
    """A run for the simulated period, checked (total = sum of its lines, FOCUS BilledCost =
    total), finalized, and run again (a no-op on a finalized period)."""
    config = ctx.need_platform().config
    if ctx.price_book is None:
        raise DemoFailure("no price book was loaded")
    # A run counts what was recorded up to DEFAULT_SETTLE before it starts; waiting that long
    # makes everything the earlier stages recorded (price book, events, the closed window)
    # count, also in a small run that reaches this stage within seconds of sending.
    time.sleep(DEFAULT_SETTLE.total_seconds())
    body = {
        "period_start": _iso(config.start),
        "period_end": _iso(config.end),
        "price_book": ctx.price_book["name"],
    }
    with ctx.client() as client:
        created = _timed(
            ctx,
            "billing run: compute",
            lambda: request(client, "POST", "/v1/billing/runs", json=body, accept=(200, 201)),
        ).json()
        run_id = created["run"]["id"]
        detail = request(client, "GET", f"/v1/billing/runs/{run_id}").json()
        finalized = _timed(
            ctx,
            "billing run: finalize",
            lambda: request(client, "POST", f"/v1/billing/runs/{run_id}/finalize"),
        ).json()
        again = request(client, "POST", "/v1/billing/runs", json=body, accept=(200,)).json()
        focus = _timed(
            ctx,
            "billing run: FOCUS export",
            lambda: request(client, "GET", f"/v1/billing/runs/{run_id}/export?format=focus"),
        ).text
    detail["document"] = finalized
    ctx.run = detail
    problems = check_run(detail, focus)
    if again["outcome"] != "unchanged":
        problems.append(f"running the finalized period again answered {again['outcome']!r}")
    if problems:
        raise DemoFailure("the billing run does not add up:\n  " + "\n  ".join(problems))
    showback.print_run(ctx.console, detail, ctx.timings)


def check_run(detail: dict[str, Any], focus_csv: str) -> list[str]:
    """The run's total is the sum of its lines, and of the FOCUS file's BilledCost."""
    problems: list[str] = []
    total = Decimal(detail["document"]["total"])
    lines = sum((Decimal(line["amount"]) for line in detail["lines"]), Decimal(0))
    if lines != total:
        problems.append(f"sum of the {len(detail['lines'])} lines {lines} != total {total}")
    rows = list(csv.DictReader(io.StringIO(focus_csv)))
    billed = sum((Decimal(row["BilledCost"]) for row in rows), Decimal(0))
    if billed != total:
        problems.append(f"FOCUS BilledCost of {len(rows)} rows sums to {billed} != total {total}")
    if not detail["lines"]:
        problems.append("the run has no lines")
    return problems


def explain_line(ctx: DemoContext) -> None:
    """The largest usage line of one app, back to its rollups, events and markers."""
    if ctx.run is None:
        raise DemoFailure("no billing run")
    line = showback.line_to_explain(ctx.run["lines"])
    if line is None:
        raise DemoFailure("the run has no usage line of an app to explain")
    with ctx.client() as client:
        ctx.explanation = _timed(
            ctx,
            "explain a line",
            lambda: request(client, "GET", f"/v1/billing/lines/{quote(line['id'])}/explain"),
        ).json()
    showback.print_explanation(ctx.console, ctx.explanation)


LATE_EVENTS = 24
LATE_TIMEOUT_SECONDS = 120.0


def late_usage(ctx: DemoContext) -> None:
    """Usage of the billed period sent after its run was finalized, as a late-reporting app
    does: `GET /v1/billing/late` (`qm bill late`) names the run, the late events and the
    adjustment due, and `POST /v1/billing/adjustments` (`qm bill adjust`) bills exactly that,
    in a document of its own; the finalized run is never edited."""
    platform = ctx.need_platform()
    if ctx.run is None or ctx.credentials is None:
        raise DemoFailure("no finalized run, or the platform's signing keys are missing")
    run_id = ctx.run["document"]["id"]
    app = max(
        (a for a in platform.apps if a.app_id in ctx.credentials.keys), key=lambda a: a.weight
    )
    key = ctx.credentials.keys[app.app_id]
    start, end = platform.config.start, platform.config.end
    step = (end - start) / (LATE_EVENTS + 1)
    # One ordinary call at a time, spread over the period: late, not a spike.
    events = [
        sign_event(
            {
                "specversion": "1.0",
                "id": f"late-{run_id[:12]}-{i}",
                "source": f"app://{app.app_id}",
                "type": "qm.invocation.usage",
                "time": _iso(start + step * (i + 1)),
                "data": {"app_id": app.app_id, "environment": app.environment, "tokens": 1200},
            },
            key_id=key.key_id,
            secret=key.secret,
        )
        for i in range(LATE_EVENTS)
    ]
    with ctx.client() as client:
        report = post_batch(client, orjson.dumps(events))
        if report["accepted"] + report.get("duplicates", 0) != LATE_EVENTS:
            raise DemoFailure(f"the late events were not accepted whole: {report}")
        # Due means billable before a document computed now (one settle window ago).
        time.sleep(DEFAULT_SETTLE.total_seconds() + 1)
        late = _late_item(client, run_id)
        adjusted = _timed(
            ctx,
            "late usage: adjust",
            lambda: request(
                client, "POST", "/v1/billing/adjustments", json={"run_id": run_id}, accept=(201,)
            ),
        ).json()["adjustment"]
        after = request(client, "GET", "/v1/billing/late").json()
    ctx.adjustment = adjusted
    document = adjusted["document"]
    currency = late["currency"]
    ctx.console.print(
        f"{LATE_EVENTS} invocations of {app.app_id!r} within the billed period, sent after run "
        f"{run_id[:12]} was finalized: `qm bill late` lists {late['late_events']} late events "
        f"and an adjustment of {late['adjustment_due']} {currency} due"
    )
    ctx.console.print(
        f"`qm bill adjust {run_id[:12]}`: adjustment {document['id'][:12]} of "
        f"{document['total']} {currency} in {document['line_count']} lines ({document['note']})"
    )
    problems = []
    if Decimal(document["total"]) != Decimal(late["adjustment_due"]):
        problems.append(
            f"the adjustment bills {document['total']}, the late list said "
            f"{late['adjustment_due']} was due"
        )
    if any(item["run_id"] == run_id for item in after):
        problems.append("the run is still listed as late after its adjustment")
    if problems:
        raise DemoFailure("late usage does not add up:\n  " + "\n  ".join(problems))


def _late_item(client: httpx.Client, run_id: str) -> dict[str, Any]:
    """The run's entry in the late list once every late event is in it (the pipeline rates
    them within moments)."""
    deadline = time.monotonic() + LATE_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        for item in request(client, "GET", "/v1/billing/late").json():
            if item["run_id"] == run_id and item["late_events"] >= LATE_EVENTS:
                if item["adjustment_due"] is None:
                    raise DemoFailure(f"{LATE_EVENTS} late events changed no line of the run")
                return dict(item)
        time.sleep(POLL_SECONDS)
    raise DemoFailure(f"the late events were not listed within {LATE_TIMEOUT_SECONDS:g} s")


def budget_crossing(ctx: DemoContext) -> None:
    """A monthly budget on the team that spent most this month so far, set below its spend,
    evaluated now: the alert it raises. Budgets watch the current month: when the simulated
    period lies wholly before it (the default month), there is no spend to cross."""
    with ctx.client() as client:
        preview = request(client, "GET", "/v1/billing/preview").json()
        teams = [t for t in preview["teams"] if t["team"] and Decimal(t["month_to_date"]) > 0]
        if not teams:
            ctx.console.print(
                f"no spend in the current month ({preview['period_start'][:10]} on): the "
                "simulated period is a closed month and budgets watch the current one, so "
                "one app sends a burst of usage now"
            )
            teams = _spend_now(ctx, client)
        top = max(teams, key=lambda t: Decimal(t["month_to_date"]))
        spent = Decimal(top["month_to_date"])
        amount = (spent * Decimal("0.8")).quantize(Decimal("0.01"))
        budget = {
            "name": f"{top['team']}-monthly",
            "scope_kind": "team",
            "scope": top["team"],
            "amount": str(amount),
            "thresholds": [50, 80, 100],
        }
        request(client, "POST", "/v1/budgets", json=budget, accept=(201, 409))
        request(client, "POST", "/v1/budgets/evaluate")
        ctx.alerts = request(client, "GET", "/v1/alerts?kind=budget_threshold").json()
    ctx.console.print(
        f"budget {budget['name']!r}: {amount} {preview['currency']} a month for team "
        f"{top['team']!r}, which has spent {spent.quantize(Decimal('0.01'))} so far"
    )
    if not ctx.alerts:
        raise DemoFailure(f"the budget of team {top['team']!r} was crossed but raised no alert")
    showback.print_alerts(ctx.console, ctx.alerts)


BURST_EVENTS = 200


def _spend_now(ctx: DemoContext, client: httpx.Client) -> list[dict[str, Any]]:
    """Send a burst of signed invocations of the busiest app, timed now, through the real
    ingestion API, and wait for the pipeline to price them into the current month."""
    platform = ctx.need_platform()
    if ctx.credentials is None:
        raise DemoFailure("the platform's signing keys are missing")
    app = max(
        (a for a in platform.apps if a.app_id in ctx.credentials.keys), key=lambda a: a.weight
    )
    key = ctx.credentials.keys[app.app_id]
    now = utc_now()
    events = [
        sign_event(
            {
                "specversion": "1.0",
                "id": f"budget-burst-{now:%Y%m%d%H%M%S}-{i}",
                "source": f"app://{app.app_id}",
                "type": "qm.invocation.usage",
                "time": (now - timedelta(milliseconds=i)).isoformat().replace("+00:00", "Z"),
                "data": {
                    "app_id": app.app_id,
                    "environment": app.environment,
                    "tokens": 40_000,
                    "compute_units": "4",
                },
            },
            key_id=key.key_id,
            secret=key.secret,
        )
        for i in range(BURST_EVENTS)
    ]
    report = post_batch(client, orjson.dumps(events))
    if report["accepted"] != BURST_EVENTS:
        raise DemoFailure(f"the burst was not accepted whole: {report}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        preview = request(client, "GET", "/v1/billing/preview").json()
        teams = [t for t in preview["teams"] if t["team"] and Decimal(t["month_to_date"]) > 0]
        if teams:
            ctx.console.print(
                f"{BURST_EVENTS} invocations of {app.app_id!r} (team {app.team!r}) priced "
                "into the current month"
            )
            # Spend counts what was recorded one settle window ago (as a billing run does).
            time.sleep(DEFAULT_SETTLE.total_seconds() + 1)
            return list(teams)
        time.sleep(1)
    raise DemoFailure("the burst of usage was not priced within 120 s")


def showback_report(ctx: DemoContext) -> None:
    """Cost per cost center and team, the top apps, the unattributed share, the
    reconciliation identity, the pipeline latency and the stage timings."""
    if ctx.run is None or ctx.pipeline is None or ctx.accounting is None:
        raise DemoFailure("the billing run or the pipeline status is missing")
    showback.print_showback(ctx.console, ctx.run["lines"], ctx.run["document"])
    showback.print_pipeline(ctx.console, ctx.pipeline, ctx.accounting, ctx.summary)
