"""What upload and `qm policy test` refuse because regopy would evaluate it silently wrong or it
could never object (docs/policy.md "What upload refuses"; walkthrough findings 2, 3, 4, 6, 9
and the BOM): each refusal names what is wrong and where."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from quartermaster.errors import InvalidInputError
from quartermaster.policy.engine import CompiledPolicy
from tests.catalog.publish_support import add_team, manifest, submit
from tests.conftest import TenantHandle
from tests.guardrails.support import ok

WALK = Path("/tmp/walk/policy/pol")
CPU_MAX = (
    "package acme.publish.cpu_max\n"
    "import rego.v1\n"
    "\n"
    "cpus := to_number(input.manifest.estimated_compute_profile.cpu)\n"
    "\n"
    "deny contains msg if {\n"
    "\tcpus > 8\n"
    '\tmsg := sprintf("app %s asks for %d CPUs; at most 8: lower estimated_compute_profile.cpu",'
    " [input.manifest.app_id, cpus])\n"
    "}\n"
)


def _refusal(source: str) -> str:
    with pytest.raises(InvalidInputError) as refused:
        CompiledPolicy(source)
    return refused.value.message


def _v1(body: str) -> str:
    return f"package t\nimport rego.v1\n{body}\n"


# --- sprintf (finding 2) ---


def test_percent_d_of_a_value_that_may_be_a_float_is_refused_naming_the_line() -> None:
    message = _refusal(CPU_MAX)
    assert message.startswith("sprintf at line 8: %d of cpus is undefined in regopy")
    assert "use %v" in message
    # the same policy with %v decides on 9.5 CPUs, as OPA would
    fixed = CompiledPolicy(CPU_MAX.replace("%d CPUs", "%v CPUs"))
    document = {"manifest": {"app_id": "cpu95", "estimated_compute_profile": {"cpu": "9.5"}}}
    assert fixed.evaluate(document).deny == [
        "app cpu95 asks for 9.5 CPUs; at most 8: lower estimated_compute_profile.cpu"
    ]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('deny contains sprintf("few %s %s", ["one"]) if true', "has 2 verbs for 1 argument"),
        ('deny contains sprintf("many %s", ["a", "b"]) if true', "has 1 verb for 2 arguments"),
        ('deny contains sprintf("none", [1]) if true', "has 0 verbs for 1 argument"),
        ('deny contains sprintf("d-float %d", [1.5]) if true', "%d of 1.5 is undefined"),
        ('deny contains sprintf("x %x", [input.n]) if true', "%x of input.n is undefined"),
        (
            'deny contains sprintf("owner %q of app %s", [input.o, input.a]) if true',
            "regopy does not support %q",
        ),
        ('deny contains sprintf("%T", [1]) if true', "regopy does not support %T"),
        ('deny contains sprintf("%b", [5]) if true', "regopy does not support %b"),
        ('deny contains sprintf("%[1]s", ["a"]) if true', "an argument index"),
    ],
)
def test_sprintf_that_regopy_gets_wrong_is_refused(body: str, expected: str) -> None:
    message = _refusal(_v1(body))
    assert "sprintf at line 3" in message
    assert expected in message


@pytest.mark.parametrize(
    "body",
    [
        'deny contains sprintf("%s has %d of %d (%v, 100%%)", ["a", 2, count(input.x), 1.5])'
        " if true",
        'max_gpu := 2\ndeny contains sprintf("at most %d", [max_gpu]) if true',
        'deny contains sprintf("%s", ["%d in a string is no verb"]) if true',
        'deny contains msg if { f := "%s %s"; msg := sprintf(f, ["a"]) }',  # not a literal
        'deny contains sprintf("%.2f %e %g %t %o %X", [1.5, 1.5, 1.5, true, 8, 255]) if true',
        '# sprintf("%d", [1.5]) in a comment\ndeny contains "x" if true',
    ],
)
def test_sprintf_regopy_formats_like_opa_is_accepted(body: str) -> None:
    CompiledPolicy(_v1(body))


# --- built-ins (finding 3) ---


@pytest.mark.parametrize(
    ("body", "name"),
    [
        (
            'deny contains "fired" if { time.parse_rfc3339_ns("2026-12-04T17:00:00Z") > 0 }',
            "time.parse_rfc3339_ns (line 3)",
        ),
        (
            'deny contains "x" if { not net.cidr_contains("10.0.0.0/8", "8.8.8.8") }',
            "net.cidr_contains (line 3)",
        ),
        ('deny contains "x" if { count(json.match_schema({}, {})) >= 0 }', "json.match_schema"),
        (
            'deny contains "x" if { is_string(strings.render_template("{{.a}}", {"a": 1})) }',
            "strings.render_template (line 3)",
        ),
        ('x := net . cidr_merge (["10.0.0.0/8"])\ndeny contains "x" if x', "net.cidr_merge"),
        ('deny contains "x" if { urlquery.encode("a b") == "a+b" }', "urlquery.encode"),
    ],
)
def test_a_builtin_regopy_does_not_implement_is_refused_naming_it_and_its_line(
    body: str, name: str
) -> None:
    message = _refusal(_v1(body))
    assert message.startswith("the policy calls a built-in regopy does not implement")
    assert name in message


def test_a_function_that_does_not_exist_is_refused() -> None:
    message = _refusal(
        _v1('deny contains "x" if { nosuch.builtin(1) }\nwarn contains "y" if {\n  frob(2)\n}')
    )
    assert "neither defined in the policy nor a built-in known to work in regopy" in message
    assert "nosuch.builtin (line 3), frob (line 5)" in message


def test_the_policys_own_functions_and_keywords_are_no_unknown_calls() -> None:
    CompiledPolicy(
        _v1(
            "f(x) := y if { y := lower(x) }\n"
            "default g(_) := false\n"
            'g(x) if { startswith(x, "a") }\n'
            "deny contains f(input.a) if { g(input.a); not (input.b == 1) }\n"
            'warn contains data.t.f("B") if { every x in [1] { x > 0 } }'
        )
    )
    CompiledPolicy('package t\nwarn contains "net.cidr_contains(1) in a string" if true\n')


# --- rule sets and messages (finding 4) ---


@pytest.mark.parametrize(
    ("source", "defines"),
    [
        (
            'package acme.publish.gk\nimport rego.v1\nviolation contains {"msg": "gk"} if true\n',
            "it defines: violation (a Gatekeeper `violation` is a `deny` here)",
        ),
        ('package acme.publish.t\nimport rego.v1\nDeny contains "all denied" if true\n', "Deny"),
        ("package t\nallow := true\n", "it defines: allow"),
        ("package t\n", "it defines: none"),
    ],
)
def test_a_policy_with_none_of_the_rule_sets_is_refused_naming_them(
    source: str, defines: str
) -> None:
    message = _refusal(source)
    assert message.startswith(
        "the policy defines none of the rule sets the server reads"
        " (deny, require_approval, quarantine, warn)"
    )
    assert defines in message


def test_a_gatekeeper_style_object_message_shows_its_msg() -> None:
    source = _v1(
        'deny contains {"msg": "gatekeeper style", "details": {"k": "v"}} if true\n'
        'warn contains {"code": 7} if true\ndeny contains "" if true'
    )
    verdict = CompiledPolicy(source).evaluate({})
    assert verdict.deny == ["deny (empty message)", "gatekeeper style"]
    assert verdict.warn == ['{"code": 7}']


# --- data of other policies (finding 6) ---


def test_data_of_another_package_is_refused() -> None:
    body = (
        'deny contains "too many" if {\n'
        "  input.manifest.estimated_compute_profile.gpu > data.acme.publish.limits.max_gpu\n"
        "}\n"
        'warn contains "w" if data["acme"]'
    )
    message = _refusal(_v1(body))
    assert message.startswith(
        "the policy reads data outside its own package (data.acme.publish.limits.max_gpu"
        " (line 4), data[…] (line 6)): each policy is evaluated alone, and policies cannot"
        " share data"
    )
    assert "write the values it needs into this policy" in message
    # its own package is fine
    own = CompiledPolicy(_v1('limit := 1\ndeny contains "x" if { input.n > data.t.limit }'))
    assert own.evaluate({"n": 2}).deny == ["x"]


# --- the BOM (finding 15) ---


def test_a_source_starting_with_a_byte_order_mark_compiles() -> None:
    source = '\ufeffpackage acme.publish.bom\r\nimport rego.v1\r\ndeny contains "b" if true\r\n'
    policy = CompiledPolicy(source)
    assert policy.package == "acme.publish.bom"
    assert policy.evaluate({}).deny == ["b"]


# --- over HTTP: upload and test (and the trial evaluation, finding 9) ---


def test_upload_and_test_refuse_with_a_422_naming_the_problem(
    client: TestClient, tenant: TenantHandle
) -> None:
    cases = {
        "cpu-max": (CPU_MAX, "sprintf at line 8: %d of cpus"),
        "cidr": (
            _v1('deny contains "x" if net.cidr_contains("10.0.0.0/8", input.ip)'),
            "net.cidr_contains (line 3)",
        ),
        "gk": (_v1('violation contains {"msg": "m"} if true'), "rule sets"),
        "uses": (_v1('deny contains "x" if data.other.x'), "data.other.x (line 3)"),
    }
    for name, (source, expected) in cases.items():
        for path, body in (
            ("/v1/policies", {"name": name, "source": source}),
            ("/v1/policies/test", {"source": source, "input": {}}),
        ):
            response = client.post(path, json=body, headers=tenant.headers)
            assert response.status_code == 422, (path, response.text)
            error = response.json()["error"]
            assert error["field"] == "source"
            assert expected in error["message"]
    listed = ok(client.get("/v1/policies", headers=tenant.headers))
    assert listed == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "package acme.publish.bad\n\nallow := true\nallow := false\n"
            'deny contains "x" if allow\n',
            "eval_conflict_error: complete rules must not produce multiple outputs",
        ),
        (
            'package t\nimport rego.v1\ndeny contains "x" if { io.jwt.decode("a.b.c") }\n',
            "the policy fails",
        ),
    ],
)
def test_upload_refuses_a_policy_that_fails_on_an_empty_input(
    client: TestClient, tenant: TenantHandle, source: str, expected: str
) -> None:
    body = {"name": "bad", "source": source}
    response = client.post("/v1/policies", json=body, headers=tenant.headers)
    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert message.startswith(
        "the policy fails when evaluated on an empty input, so it would fail on every input"
    )
    assert expected in message
    add_team(client, tenant)
    assert submit(client, tenant, manifest())["state"] == "published"


def test_a_bom_policy_uploads_and_decides(client: TestClient, tenant: TenantHandle) -> None:
    source = '\ufeffpackage acme.publish.bom\nimport rego.v1\ndeny contains "bom" if true\n'
    stored = ok(
        client.post("/v1/policies", json={"name": "bom", "source": source}, headers=tenant.headers),
        201,
    )
    assert stored["package"] == "acme.publish.bom"
    add_team(client, tenant)
    version = submit(client, tenant, manifest())
    assert version["state"] == "rejected"
    assert "bom" in version["state_reason"]


@pytest.mark.skipif(not WALK.is_dir(), reason="the walkthrough's policy files")
def test_the_walkthroughs_policies_are_refused_or_accepted_as_they_should() -> None:
    refused = {
        "cpu-max.rego": "%d of cpus",
        "cidr.rego": "net.cidr_contains",
        "b.rego": "time.parse_rfc3339_ns",
        "nosuch.rego": "nosuch.builtin",
        "gk.rego": "violation",
        "typo.rego": "Deny",
        "uses.rego": "data.acme.publish.limits.max_gpu",
        "owner.rego": "%q",
    }
    for file, expected in refused.items():
        assert expected in _refusal((WALK / file).read_text(encoding="utf-8")), file
    for file in ("advice.rego", "adm-advice.rego", "pii.rego", "bom.rego", "crlf.rego", "uni.rego"):
        CompiledPolicy((WALK / file).read_text(encoding="utf-8"))
