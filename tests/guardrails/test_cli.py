"""`qm budget|quota|alerts|decide` against a live server over real HTTP."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from quartermaster.guardrails.alerts import Severity, raise_alert
from quartermaster.guardrails.common import record_action
from quartermaster.guardrails.evaluator import evaluate_tenant
from quartermaster.runtime import Runtime
from tests.conftest import LiveServer, TenantHandle
from tests.guardrails.support import FixedSpend, build_world, ok
from tests.tenancy.cli_support import make_qm

# The CLI only talks HTTP; the API it calls is tested on both backends elsewhere.
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def test_budget_quota_decide_and_alerts_commands(
    client: TestClient,
    runtime: Runtime,
    live_server: LiveServer,
    tenant: TenantHandle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = build_world(client, tenant)
    qm = make_qm(live_server, tenant, monkeypatch)

    made = qm(
        "budget", "create", "team-cap", "--amount", "100", "--scope-kind", "team",
        "--scope", world.team, "-t", "50", "-t", "90", "--action", "halt",
    ).output  # fmt: skip
    assert f"created budget team-cap: 100 per month for team {world.team}" in made
    assert "thresholds 50,90%, halt at 100%" in made
    tenant_wide = qm("budget", "create", "all", "--amount", "500").output
    assert "created budget all: 500 per month for the tenant," in tenant_wide
    budgets = qm("budget", "list").output
    assert re.search(
        rf"team-cap\s+│ team {world.team}\s+│ 100 a month\s+│ 50, 90 %\s+│ halt at 100 %", budgets
    )
    bad = qm("budget", "create", "x", "--amount", "5", "--scope-kind", "galaxy", expect=1)
    assert "scope_kind 'galaxy' is not one of" in bad.output

    quota = qm("quota", "set", "cpu", "2", "--scope-kind", "team", "--scope", world.team).output
    assert "cpu of team" in quota
    assert "hard 2, used 0" in quota
    limit_range = qm("quota", "limit-range", "memory", "--max", "1Gi").output
    assert re.search(r"limit range \w+: memory default none, max 1Gi", limit_range)
    # As the quantities were given, not in base units (1073741824 bytes, 500 millicores).
    qm("quota", "limit-range", "cpu", "--default", "500m", "--max", "4")
    assert re.search(r"│ tenant\s+│ cpu\s+│ 500m\s+│ 4\s+│", qm("quota", "limit-ranges").output)
    assert re.search(
        r"│ tenant\s+│ memory\s+│ none\s+│ 1Gi\s+│", qm("quota", "limit-ranges").output
    )
    assert "rate limit" in qm("quota", "rate-limit", "50", "10", "--scope-kind", "tenant").output
    assert re.search(r"│ tenant\s+│ 50/s\s+│ 10\s+│ \w{32}", qm("quota", "rate-limits").output)

    allowed = qm("decide", "request", "--app", world.app, "--cpu", "1500m").output
    assert allowed.startswith("allowed: decision ")
    # The hold in the quantities it was asked in, until a moment to the second.
    assert re.search(
        r"holds concurrency 1, cpu 1500m, runtime 3600s until "
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$",
        " ".join(allowed.split()),
    ), allowed
    decision_id = allowed.split()[2]
    assert re.search(
        rf"│ team {world.team}\s+│ cpu\s+│ 2\s+│ 1500m\s+│ \w+", qm("quota", "list").output
    )
    denied = qm("decide", "request", "--app", world.app, "--cpu", "1", expect=2).output
    assert f"- quota: quota cpu of team {world.team!r}: requested 1, used 1500m of limit 2" in (
        denied
    )
    over = qm("decide", "request", "--app", world.app, "--memory", "2Gi", expect=2).output
    assert "over the max 1Gi" in over
    # A unique prefix of 12 (8 or more) names the decision, as for billing runs.
    assert f"decision {decision_id} released" in qm("decide", "release", decision_id[:12]).output
    shown = qm("decide", "show", decision_id[:8]).output
    assert "status: released" in shown
    assert f"id: {decision_id}" in shown
    # The amounts held as `decide request` and `quota list` print them, not in base units.
    for line in ("cpu: 1500m", "memory: 0", "concurrency: 1", "runtime_seconds: 3600s"):
        assert re.search(rf"^{line}$", shown, re.MULTILINE), shown
    assert re.search(r"^released_at: \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$", shown, re.MULTILINE)

    spend = FixedSpend()
    spend.set("team", world.team, "120")
    with runtime.session_factory() as session:
        evaluate_tenant(tenant.tenant_id, spend=spend, session=session, now=datetime.now(UTC))
    listed = qm("alerts", "list").output
    assert "Budget team-cap: 90% reached" in listed
    assert "hard limit reached (halt)" in listed
    assert re.search(r"for the period from \d{4}-\d\d-01 00:00 (UTC|[+-]\d\d:\d\d): new", listed)
    assert '"threshold": 50' in qm("alerts", "list", "--details").output
    # --json: the API's page on stdout; the next page's command on stderr.
    paged = qm("alerts", "list", "--limit", "1", "--json")
    (newest,) = json.loads(paged.stdout)
    assert newest == ok(client.get("/v1/alerts", params={"limit": 1}, headers=world.headers))[0]
    assert "more: qm alerts list --after " in paged.stderr
    as_json = json.loads(qm("budget", "list", "--json").stdout)
    assert {b["name"] for b in as_json} == {"team-cap", "all"}
    assert "Budget team-cap" in qm("alerts", "list", "--kind", "budget_threshold").output
    bogus = qm("alerts", "list", "--kind", "budget", expect=1).output
    assert "kind 'budget' is not one of: budget_threshold, default_cap, anomaly, " in (
        " ".join(bogus.split())
    )
    enforcements = qm("alerts", "enforcements").output
    enforcement_id = ok(client.get("/v1/enforcements", headers=world.headers))[0]["id"]
    # The action over its id, whom it applies to, its state over its moment, and why.
    assert re.search(rf"│ halt\s+│ team {world.team}\s+│ in force until\s+│ team ", enforcements)
    # Twelve characters of the id, as git shortens hashes; the API takes any 8 or more.
    short = enforcement_id[:12]
    assert re.search(rf"│ {short}\s+│\s+│ \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\dZ", enforcements)
    assert enforcement_id not in enforcements
    lifted = qm("alerts", "lift", enforcement_id[:8]).output
    assert re.search(r"halt of team \S+ lifted by \S+ at \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", lifted)
    assert qm("alerts", "lift", enforcement_id).output == lifted  # the first lift, again
    assert re.search(r"│ lifted by \S+\s+│", qm("alerts", "enforcements").output)
    actions = qm("alerts", "actions").output
    assert "lift" in actions
    assert re.search(rf"│ lift\s+│ team {world.team}\s+│", actions)
    assert "deny" in actions
    assert "deleted budget team-cap" in qm("budget", "delete", "team-cap").output


def test_webhook_commands(
    client: TestClient,
    runtime: Runtime,
    live_server: LiveServer,
    tenant: TenantHandle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = build_world(client, tenant)
    qm = make_qm(live_server, tenant, monkeypatch)
    added = qm("alerts", "webhook-add", "https://hooks.example.com/qm", "--format", "slack")
    secret = added.stdout.strip().splitlines()[-1]
    assert len(secret) >= 32
    hook_id = ok(client.get("/v1/webhooks", headers=world.headers))[0]["id"]
    hooks = qm("alerts", "webhooks").output
    # The list shows the URL up to its host: a Slack URL's path is the credential.
    assert re.search(r"│ https://hooks\.example\.com/\.\.\.\s+│ slack, info and above\s+│", hooks)
    assert "/qm" not in hooks
    assert re.search(rf"│ {hook_id}\s+│ added \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\dZ\s+│", hooks)
    assert secret not in qm("alerts", "webhooks").output
    assert "no webhook delivery 'nope'" in qm("alerts", "delivery-log", "nope", expect=1).output
    assert "status 'lost' is not" in qm("alerts", "deliveries", "--status", "lost", expect=1).output
    qm("alerts", "deliveries", "--status", "dead")
    assert f"deleted webhook {hook_id}" in qm("alerts", "webhook-delete", hook_id).output


def test_alerts_list_pages_with_after_and_all(
    runtime: Runtime,
    live_server: LiveServer,
    tenant: TenantHandle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with runtime.session_factory() as session:
        for n in range(7):
            raise_alert(
                session,
                tenant_id=tenant.tenant_id,
                kind="budget_threshold",
                severity=Severity.INFO,
                dedup_key=f"k{n}",
                title=f"alert-{n}",
                message="m",
                details={"scope_kind": "team" if n % 2 else "app", "scope": "web"},
                at=datetime(2026, 11, 1, tzinfo=UTC) + timedelta(minutes=n),
            )
        session.commit()
    qm = make_qm(live_server, tenant, monkeypatch)

    first = qm("alerts", "list", "--limit", "2", "--scope", "team:web").output
    assert re.findall(r"alert-\d", first) == ["alert-5", "alert-3"]
    cursor = re.search(r"more: qm alerts list --scope team:web --after (\w+) \(or --all\)", first)
    assert cursor is not None
    last = qm("alerts", "list", "--limit", "2", "--scope", "team:web", "--after", cursor[1])
    assert re.findall(r"alert-\d", last.output) == ["alert-1"]
    assert "more:" not in last.output
    every = qm("alerts", "list", "--all").output
    assert re.findall(r"alert-\d", every) == [f"alert-{n}" for n in reversed(range(7))]
    assert "more:" not in every
    bad = qm("alerts", "list", "--after", "nope", expect=1).output
    assert "after 'nope' is not one of this tenant's alerts" in " ".join(bad.split())


def test_actions_and_deliveries_page_with_after_and_all(
    client: TestClient,
    runtime: Runtime,
    live_server: LiveServer,
    tenant: TenantHandle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = {"url": "http://127.0.0.1:9/hook"}
    hook_id = ok(client.post("/v1/webhooks", json=body, headers=tenant.headers), 201)["id"]
    with runtime.session_factory() as session:
        for n in range(5):
            record_action(
                session,
                tenant_id=tenant.tenant_id,
                action="notify",
                scope_kind="tenant",
                scope="",
                subject=f"budget:b{n}",
                reason=f"why-{n}",
            )
            raise_alert(
                session,
                tenant_id=tenant.tenant_id,
                kind="anomaly",
                severity=Severity.CRITICAL,
                dedup_key=f"k{n}",
                title=f"alert-{n}",
                message="m",
                details={},
                at=datetime(2026, 11, 1, tzinfo=UTC) + timedelta(minutes=n),
            )
        session.commit()
    deliveries = [d["id"] for d in ok(client.get("/v1/webhook-deliveries", headers=tenant.headers))]
    qm = make_qm(live_server, tenant, monkeypatch)

    first = qm("alerts", "actions", "--limit", "3").output
    assert re.findall(r"why-\d", first) == ["why-4", "why-3", "why-2"]
    cursor = re.search(r"more: qm alerts actions --after (\d+) \(or --all\)", first)
    assert cursor is not None
    rest = qm("alerts", "actions", "--limit", "3", "--after", cursor[1]).output
    assert re.findall(r"why-\d", rest) == ["why-1", "why-0"]
    assert "more:" not in rest
    every = qm("alerts", "actions", "--all").output
    assert re.findall(r"why-\d", every) == [f"why-{n}" for n in reversed(range(5))]
    assert "more:" not in every

    first = qm("alerts", "deliveries", "--limit", "2", "--webhook-id", hook_id).output
    table = first.split("more:")[0]
    assert re.findall(r"\b[0-9a-f]{32}\b", table) == [
        deliveries[0],
        hook_id,
        deliveries[1],
        hook_id,
    ]
    cursor = re.search(
        rf"more: qm alerts deliveries --webhook-id {hook_id} --after (\w+) \(or --all\)", first
    )
    assert cursor is not None
    assert cursor[1] == deliveries[1]
    every = qm("alerts", "deliveries", "--all").output
    assert [d for d in re.findall(r"\b[0-9a-f]{32}\b", every) if d != hook_id] == deliveries
    bad = qm("alerts", "deliveries", "--after", "nope", expect=1).output
    assert "after 'nope' is not one of this tenant's webhook deliveries" in " ".join(bad.split())
    # The database is shared: another test's notifier cannot open this webhook's sealed URL.
    ok(client.delete(f"/v1/webhooks/{hook_id}", headers=tenant.headers), 204)


def test_budget_update_and_decide_renew(
    client: TestClient,
    live_server: LiveServer,
    tenant: TenantHandle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = build_world(client, tenant)
    qm = make_qm(live_server, tenant, monkeypatch)
    qm("budget", "create", "grow", "--amount", "100")
    changed = qm(
        "budget", "update", "grow", "--amount", "250", "-t", "50", "-t", "90",
        "--action", "throttle",
    ).output  # fmt: skip
    assert "updated budget grow: 250 per month, thresholds 50,90%, throttle at 100%" in changed
    nothing = qm("budget", "update", "grow", expect=2)
    assert "nothing to change" in nothing.output
    missing = qm("budget", "update", "nope", "--amount", "5", expect=1)
    assert "no budget named 'nope'" in missing.output
    made = ok(client.post("/v1/decisions", json={"app": world.app}, headers=tenant.headers))
    renewed = qm("decide", "renew", made["id"][:8], "--runtime", "2h").output
    assert re.search(
        rf"decision {made['id']} active until \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\dZ\n", renewed
    ), renewed
    qm("decide", "release", made["id"])
    late = qm("decide", "renew", made["id"], expect=1)
    assert "released" in late.output


def test_limit_range_delete(
    client: TestClient,
    live_server: LiveServer,
    tenant: TenantHandle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = build_world(client, tenant)
    qm = make_qm(live_server, tenant, monkeypatch)
    made = qm(
        "quota", "limit-range", "gpu", "--max", "1", "--scope-kind", "team", "--scope", world.team
    )
    range_id = made.output.split()[2].rstrip(":")
    assert range_id in qm("quota", "limit-ranges").output
    assert f"deleted limit range {range_id}" in qm("quota", "limit-range-delete", range_id).output
    assert "no limit ranges" in qm("quota", "limit-ranges").output
    gone = qm("quota", "limit-range-delete", range_id, expect=1).output
    assert f"no limit range {range_id!r}" in gone
    assert re.search(rf"│ delete\s+│ team {world.team}\s+│", qm("alerts", "actions").output)


def test_decide_request_says_what_the_decision_is_about(
    client: TestClient,
    live_server: LiveServer,
    tenant: TenantHandle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = build_world(client, tenant)
    qm = make_qm(live_server, tenant, monkeypatch)
    tenant_wide = " ".join(qm("decide", "request", "--cpu", "1").output.split())
    assert re.match(
        r"allowed: decision \w+ for tenant-wide work \(no app or team\), holds ", tenant_wide
    )
    assert "None" not in tenant_wide
    by_team = " ".join(qm("decide", "request", "--team", world.team).output.split())
    assert re.match(rf"allowed: decision \w+ for team {world.team}, holds ", by_team)
    by_app = " ".join(qm("decide", "request", "--app", world.app).output.split())
    assert re.match(
        rf"allowed: decision \w+ for app {world.app} of team {world.team}, holds ", by_app
    )
    qm("quota", "limit-range", "gpu", "--max", "1")
    denied = qm("decide", "request", "--gpu", "2", expect=2).output
    assert denied.startswith("denied for tenant-wide work (no app or team):\n- limit_range: ")
