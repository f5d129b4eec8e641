"""`qm app …` and `qm resource …` against a live server over real HTTP."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServer, TenantHandle
from tests.tenancy.cli_support import Qm, make_qm
from tests.tenancy.support import make_cost_center, make_team


@pytest.fixture
def qm(
    live_server: LiveServer,
    tenant: TenantHandle,
    http: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> Qm:
    make_cost_center(http, tenant, "shop-cc")
    make_cost_center(http, tenant, "lab-cc")
    make_team(http, tenant, "web", cost_center="shop-cc")
    make_team(http, tenant, "data")
    return make_qm(live_server, tenant, monkeypatch)


def test_apps_ownership_and_signing_keys_from_the_command_line(
    qm: Qm, http: httpx.Client, tenant: TenantHandle
) -> None:
    created = qm("app", "create", "shop", "--owner", "ann@example.com", "--team", "web")
    assert "registered app shop (team web, cost center shop-cc)" in created.output
    no_owner = qm("app", "create", "nope", "--team", "web", expect=1)
    assert "error 422: owner: Field required" in no_owner.output
    no_cost_center = qm("app", "create", "nope", "--owner", "x", "--team", "data", expect=1)
    assert "cost_center is missing and team 'data' has no default cost center" in (
        no_cost_center.output
    )
    assert (
        "error 409: app 'shop' already exists"
        in qm("app", "create", "shop", "--owner", "x", "--team", "web", expect=1).output
    )
    qm("app", "create", "etl", "--owner", "bo", "--team", "data", "--cost-center", "lab-cc",
       "--lifecycle", "ephemeral", "--owned-since", "2025-01-01T00:00:00Z")  # fmt: skip
    shown_etl = qm("app", "show", "etl").output
    assert re.search(r"data\s+.*lab-cc\s+.*2025-01-01 00:00:00Z", shown_etl)
    assert re.search(r"team\s+┃ cost center\s+┃ valid from\s+┃ valid to", shown_etl)

    listed = qm("app", "list", "--team", "web").output
    # An app over its title, its owner over its team and cost center, lifecycle over
    # environment.
    assert re.search(r"│ shop\s+│ ann@example\.com\s+│ persistent\s+│\n", listed)
    assert re.search(r"│\s+│ web\s+│ production\s+│\n│\s+│ shop-cc\s+│\s+│\n", listed)
    assert "etl" not in listed
    assert "etl" in qm("app", "list", "--lifecycle", "ephemeral").output

    moved = qm("app", "update", "shop", "--title", "The shop", "--cost-center", "lab-cc").output
    assert "title: The shop" in moved
    # The ownership table: the old span closed, the new one open.
    spans = {
        cells[1]: cells[2:]
        for line in moved.splitlines()
        if len(cells := [c.strip() for c in line.split("│")[1:-1]]) == 4
    }
    # Shown to the second: a create and a move within one second show the same moment.
    assert spans["shop-cc"][0] <= spans["shop-cc"][1] == spans["lab-cc"][0]
    assert spans["lab-cc"][1] == ""
    shop = http.get("/v1/apps/shop", headers=tenant.headers).json()
    since_move = shop["ownership"][-1]["valid_from"]  # the open span's start, in the past
    backdated = qm(
        "app", "update", "shop", "--team", "data", "--effective-at", "2000-01-01T00:00:00Z",
        expect=1,
    )  # fmt: skip
    assert "effective_at 2000-01-01 00:00 UTC is earlier than the current ownership" in (
        backdated.output
    )
    assert "nothing to change" in qm("app", "update", "shop", expect=1).output
    moved_back = qm("app", "update", "shop", "--team", "data", "--effective-at", since_move).output
    text = " ".join(moved_back.split())
    assert "back-dated: usage of app 'shop' since" in text
    assert "stays with team 'web' (cost center 'lab-cc') until `qm pipeline replay`" in text
    qm("app", "update", "shop", "--team", "web")  # as the rest of this test expects
    shown = qm("app", "show", "shop").output
    assert "created_by: admin" in shown
    assert "cost_center: lab-cc" in shown
    qm("app", "update", "shop", "--require-signatures")
    assert "require_signatures: yes" in qm("app", "show", "shop").output
    qm("app", "update", "shop", "--allow-unsigned")
    assert "require_signatures: no" in qm("app", "show", "shop").output

    issued = qm("app", "key", "create", "shop")
    secret = issued.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", secret), issued.stdout
    assert "shown once" in issued.stderr
    match = re.search(r"created signing key (sk_\w+)", issued.stderr)
    assert match is not None
    key_id = match.group(1)
    keys = qm("app", "key", "list", "shop").output
    assert re.search(rf"{key_id}\s+.*active", keys)
    assert secret not in keys
    retired = qm("app", "key", "retire", "shop", key_id).output.strip()
    assert re.fullmatch(
        rf"retired signing key {key_id} at \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\dZ", retired
    )
    assert re.search(rf"{key_id}\s+.*retired", qm("app", "key", "list", "shop").output)
    assert "error 404: app 'ghost' not found" in qm("app", "show", "ghost", expect=1).output


def test_resources_and_leases_from_the_command_line(qm: Qm) -> None:
    qm("app", "create", "shop", "--owner", "ann", "--team", "web")
    bound = qm(
        "resource", "create", "vm-1", "--app", "shop", "--valid-from", "2025-01-01T00:00:00Z"
    )
    assert "bound vm-1 to shop over [2025-01-01 00:00:00Z, open)" in bound.output
    clash = qm("resource", "create", "vm-1", "--app", "shop", expect=1)
    assert "error 409: resource 'vm-1' is already bound to app 'shop'" in clash.output
    qm("resource", "create", "vm-2", "--app", "shop", "--valid-from", "2025-01-01T00:00:00Z")
    ended_binding = qm("resource", "end", "vm-2", "--at", "2999-01-01T00:00:00Z").output
    assert "vm-2 is bound to shop until 2999-01-01 00:00:00Z (from 2025-01-01 00:00:00Z)" in (
        ended_binding
    )
    past = qm("resource", "end", "vm-2", "--at", "2025-02-01T00:00:00Z", expect=1).output
    assert "is before" in past
    assert "already accepted and rated under the binding" in " ".join(past.split())

    leased = qm("resource", "lease", "job-1", "--app", "shop", "--ttl", "600")
    assert leased.stdout.strip().startswith("rl1.")
    match = re.search(r"leased job-1 to shop as (\w+) until", leased.stderr)
    assert match is not None, leased.stderr
    lease_id = match.group(1)
    listed = qm("resource", "list", "--app", "shop").output
    # A resource over its app and environment; its validity from over until; its lease.
    assert re.search(r"│ vm-1\s+│ from 2025-01-01 00:00:00Z\s+│\s+│\n│ shop, production ", listed)
    assert re.search(rf"│ job-1\s+│ from [^│]+│ {lease_id} │\n│ shop, production ", listed)
    ended = qm("resource", "end-lease", lease_id).output
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ"
    assert re.fullmatch(
        rf"lease {lease_id} ended at {stamp}\njob-1 stays bound to shop until {stamp} for events "
        "already accepted; it may be bound to another app from then",
        ended.strip(),
    ), ended
    soonest = qm("resource", "end", "vm-1")
    assert re.search(rf"vm-1 is bound to shop until {stamp} \(from 2025-01-01", soonest.output)
    assert "the soonest end: now plus the time ahead the server accepts" in " ".join(
        soonest.output.split()
    )
    earlier = qm("resource", "lease", "job-0", "--app", "shop", "--ttl", "60",
                 "--issued-at", "2025-03-01T00:00:00Z")  # fmt: skip
    assert "until 2025-03-01 00:01:00Z" in earlier.stderr
    too_long = qm("resource", "lease", "job-2", "--app", "shop", "--ttl", "9999999", expect=1)
    assert "ttl_seconds" in too_long.output


def test_app_import_registers_a_file_of_apps_and_lists_what_it_refused(
    qm: Qm, tmp_path: Path, http: httpx.Client, tenant: TenantHandle
) -> None:
    inventory = tmp_path / "apps.csv"
    inventory.write_text(
        "app_id,owner,team,cost_center,title,lifecycle,require_signatures\n"
        "shop,ann@example.com,web,,The shop,,true\n"
        "etl,bo@example.com,data,lab-cc,,ephemeral,\n"
        "nobody,,web,,,,\n"  # the server refuses a missing owner
        "odd,cy@example.com,web,,,,maybe\n"  # refused before sending
        "shop,ann@example.com,web,,,,\n"  # named twice: exists by then
    )
    keys = tmp_path / "keys.jsonl"
    first = qm("app", "import", str(inventory), "--signing-keys", str(keys), expect=1)
    table = " ".join(first.output.split())
    assert "registered │ 2" in table
    assert "existed already (left as they are) │ 1" in table
    assert "refused │ 2" in table
    assert "2 signing key(s) written to" in table
    assert re.search(r"│ 4\s+│ nobody\s+│ owner: Field required", first.output)
    assert re.search(r"│ 5\s+│ odd\s+│ require_signatures must be true or false", first.output)

    apps = {a["app_id"]: a for a in http.get("/v1/apps", headers=tenant.headers).json()}
    assert set(apps) == {"shop", "etl"}
    assert apps["shop"]["cost_center"] == "shop-cc"
    assert apps["shop"]["require_signatures"] is True
    assert apps["etl"]["lifecycle"] == "ephemeral"
    assert keys.stat().st_mode & 0o777 == 0o600
    written = [json.loads(line) for line in keys.read_text().splitlines()]
    assert sorted(k["app_id"] for k in written) == ["etl", "shop"]
    assert all(len(bytes.fromhex(k["secret"])) == 32 for k in written)

    # Fixed lines imported again: nothing registered twice, the secrets file is never reused.
    inventory.write_text("app_id,owner,team\nshop,x,web\nnobody,nobody@example.com,web\n")
    again = qm("app", "import", str(inventory))
    assert "registered │ 1" in " ".join(again.output.split())
    reused = qm("app", "import", str(inventory), "--signing-keys", str(keys), expect=1)
    assert "exists: the signing secrets go to a new file" in reused.output

    lines = tmp_path / "apps.jsonl"
    lines.write_text(
        '{"app_id": "api", "owner": "di", "team": "web"}\n{"app_id": "x", "colour": 1}\n'
    )
    mixed = qm("app", "import", str(lines), expect=1)
    assert re.search(r"│ 2\s+│ x\s+│ unknown field\(s\) colour", mixed.output)
    bad_header = tmp_path / "bad.csv"
    bad_header.write_text("app_id,colour\nx,red\n")
    assert "unknown column(s) colour" in qm("app", "import", str(bad_header), expect=2).output
