"""What a policy's rules produce reaches the builder as the policy wrote it: regopy 1.5 writes a
string that `sprintf` made from a computed string (`lower(x)`, `concat(…)`) with that string's
quotes inside it, which is no JSON; the engine reads the result from regopy's nodes instead, so
a warn rule never blocks and a deny keeps its message (docs/policy.md, "Strings")."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from quartermaster.policy.engine import CompiledPolicy, InputBatch, rego_string
from tests.catalog.publish_support import add_team, manifest, submit
from tests.conftest import TenantHandle
from tests.guardrails.support import build_world, ok

# The walkthrough's policies (/tmp/walk/policy/REPORT.md, finding 1), as written.
ADVICE = (
    "package acme.publish.advice\n"
    "import rego.v1\n"
    "# advisory only: suggest a lowercase team tag\n"
    'warn contains sprintf("app %s: consider adding the tag team-%s",'
    " [input.manifest.app_id, lower(input.manifest.team)]) if true\n"
)
ADM_ADVICE = (
    "package qm.admission.advice\n"
    "import rego.v1\n"
    'warn contains sprintf("%s: consider a smaller %s", [input.app, upper("cpu")]) if true\n'
)
PII = (
    "package acme.publish.pii\n"
    "import rego.v1\n"
    'deny contains sprintf("app %s ships personal data (%s) in its samples or descriptions:'
    ' remove it", [input.manifest.app_id, concat(", ", input.pii_kinds)])'
    " if count(input.pii_kinds) > 0\n"
)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('sprintf("%s %s", ["a", upper("e")])', "a E"),
        ('sprintf("team %s", [lower("A")])', "team a"),
        ('sprintf("%s!", [lower("A")])', "a!"),
        ('sprintf("%s", [lower("A")])', "a"),
        ('sprintf("x %s y", [concat(", ", ["a", "b"])])', "x a, b y"),
        ('sprintf("x %s", [replace("a-b", "-", "_")])', "x a_b"),
        ('sprintf("n=%s", [format_int(255, 16)])', "n=ff"),
        ('sprintf("j=%s", [json.marshal({"a": lower("X")})])', 'j={"a":"x"}'),
        ('sprintf("%v and %s", [lower("A"), upper("b")])', "a and B"),
        ('concat(" ", ["app", "x", lower("Y")])', "app x y"),
        ('"lit \\"q\\" é \\u00e9 \\\\ \\n"', 'lit "q" é é \\ \n'),
        ('"\\ud83d\\ude00"', "\U0001f600"),
    ],
)
def test_computed_strings_in_messages_read_as_opa_writes_them(
    expression: str, expected: str
) -> None:
    source = f"package t\nimport rego.v1\nwarn contains msg if {{ msg := {expression} }}\n"
    assert CompiledPolicy(source).evaluate({}).warn == [expected]


def test_input_strings_with_quotes_newlines_and_unicode_match_and_read_back() -> None:
    # regopy keeps strings in their JSON spelling: the input is given as JSON text, so an input
    # string equals the policy's literal and reads back as it was sent.
    source = (
        "package t\nimport rego.v1\n"
        'deny contains sprintf("title %s (%s)", [input.t, upper(input.u)])'
        ' if input.t == "a\\"b\\\\c\\né"\n'
    )
    title = 'a"b\\c\né'
    assert CompiledPolicy(source).evaluate({"t": title, "u": 'q"'}).deny == [f'title {title} (Q")']
    assert CompiledPolicy(source).evaluate({"t": "other"}).deny == []


def test_the_walkthroughs_policies_give_their_messages() -> None:
    document = {"manifest": {"app_id": "cpu95", "team": "Data"}, "pii_kinds": ["email", "phone"]}
    batch = InputBatch(document)
    assert batch.evaluate(CompiledPolicy(ADVICE)).warn == [
        "app cpu95: consider adding the tag team-data"
    ]
    assert batch.evaluate(CompiledPolicy(PII)).deny == [
        "app cpu95 ships personal data (email, phone) in its samples or descriptions: remove it"
    ]
    assert CompiledPolicy(ADM_ADVICE).evaluate({"app": "cpu95"}).warn == [
        "cpu95: consider a smaller CPU"
    ]


def test_a_warn_with_a_computed_string_does_not_block_a_publish(
    client: TestClient, tenant: TenantHandle
) -> None:
    body = {"name": "advice", "source": ADVICE}
    ok(client.post("/v1/policies", json=body, headers=tenant.headers), 201)
    ok(
        client.post("/v1/policies", json={"name": "pii", "source": PII}, headers=tenant.headers),
        201,
    )
    add_team(client, tenant)
    version = submit(client, tenant, manifest())
    assert version["state"] == "published", version
    tried = ok(
        client.post(
            "/v1/policies/test",
            json={"source": PII, "input": {"manifest": {"app_id": "p"}, "pii_kinds": ["email"]}},
            headers=tenant.headers,
        )
    )
    assert tried["deny"] == [
        "app p ships personal data (email) in its samples or descriptions: remove it"
    ]


def test_an_admission_warn_with_a_computed_string_is_logged_not_denied(
    client: TestClient, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    body = {"name": "adm-advice", "source": ADM_ADVICE}
    ok(client.post("/v1/policies", json=body, headers=tenant.headers), 201)
    decided = client.post(
        "/v1/decisions",
        json={"app": world.app, "resources": {"cpu": "100m"}},
        headers=world.headers,
    )
    assert decided.status_code == 200, decided.text
    assert decided.json()["allowed"] is True, decided.text


def test_rego_string_keeps_what_is_no_json_escape() -> None:
    assert rego_string('a \\"b\\" "c"') == 'a "b" c'
    assert rego_string("x\\N") == "x\\N"  # upper() of an escaped newline
    assert rego_string("trailing \\") == "trailing \\"
