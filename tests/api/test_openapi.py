"""The OpenAPI document tells the truth about errors for every operation: a new route is
held to the same rules as the old ones."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from quartermaster.api.app import create_app
from quartermaster.api.openapi import complete
from quartermaster.billing.exports import CHARGEBACK_COLUMNS, document_summary
from quartermaster.billing.models import BillingDocument
from quartermaster.config import Settings

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
# The one error status whose body is not the error body: an ingest none of whose events
# was accepted answers the ingest report (with `error` beside `rejected`).
OWN_ERROR_BODIES = {("post", "/v1/events", "422"): {"$ref": "#/components/schemas/IngestResponse"}}


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data_dir: Path = tmp_path_factory.mktemp("qm")
    return create_app(Settings(data_dir=data_dir)).openapi()


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, p, op) for p, ops in spec["paths"].items() for m, op in ops.items()]


def test_no_operation_documents_fastapis_validation_error(spec: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in str(spec)
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert "ValidationError" not in spec["components"]["schemas"]


def test_every_error_response_is_the_error_body(spec: dict[str, Any]) -> None:
    operations = _operations(spec)
    assert len(operations) > 100
    for method, path, op in operations:
        for status, response in op["responses"].items():
            if not status.startswith(("4", "5")):
                continue
            schema = response.get("content", {}).get("application/json", {}).get("schema")
            expected = OWN_ERROR_BODIES.get((method, path, status), ERROR_REF)
            assert schema == expected, f"{method.upper()} {path} {status}"


def test_every_operation_lists_the_errors_of_its_kind(spec: dict[str, Any]) -> None:
    for method, path, op in _operations(spec):
        where = f"{method.upper()} {path}"
        statuses = set(op["responses"])
        if op.get("security"):
            assert {"401", "403"} <= statuses, where
        if "{" in path:
            assert "404" in statuses, where
        body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
        if "$ref" in body.get("schema", {}):  # read into a model by FastAPI
            assert {"400", "415", "422"} <= statuses, where


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/v1/budgets"),
        ("put", "/v1/secrets/data/{path}"),
        ("post", "/v1/leases/{lease_id}/renew"),
        ("delete", "/v1/keys/{key_id}"),
    ],
)
def test_routes_that_answer_409_document_it(spec: dict[str, Any], method: str, path: str) -> None:
    response = spec["paths"][path][method]["responses"]["409"]
    assert response["content"]["application/json"]["schema"] == ERROR_REF


def test_a_rate_limited_decision_documents_retry_after(spec: dict[str, Any]) -> None:
    response = spec["paths"]["/v1/decisions"]["post"]["responses"]["429"]
    assert "Retry-After" in response["headers"]


def test_every_tag_is_described_and_every_operation_tagged(spec: dict[str, Any]) -> None:
    described = {tag["name"]: tag["description"] for tag in spec["tags"]}
    assert all(described.values())
    for method, path, op in _operations(spec):
        assert op.get("tags"), f"{method.upper()} {path}"
        assert set(op["tags"]) <= set(described), f"{method.upper()} {path}"


def test_schema_names_are_plain_and_no_internal_notes_leak(spec: dict[str, Any]) -> None:
    names = list(spec["components"]["schemas"])
    assert [name for name in names if "__" in name] == []
    assert "seed 0" not in str(spec).lower()


def test_bodies_that_are_not_json_are_declared_as_what_they_are(spec: dict[str, Any]) -> None:
    redact = spec["paths"]["/v1/secrets/redact"]["post"]
    assert list(redact["requestBody"]["content"]) == ["text/plain"]
    assert list(redact["responses"]["200"]["content"]) == ["text/plain"]
    export = spec["paths"]["/v1/billing/runs/{run_id}/export"]["get"]["responses"]["200"]
    assert set(export["content"]) == {"text/csv", "application/json"}
    upload = spec["paths"]["/v1/price-books"]["post"]["responses"]
    assert upload["200"]["content"] == upload["201"]["content"]


def test_operation_ids_are_short_unique_names_a_client_can_use(spec: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in _operations(spec)]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    for operation_id in ids:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", operation_id), operation_id
        assert "_v1_" not in operation_id, operation_id
    # Stable: the route function's name, which generated clients' method names come from.
    assert spec["paths"]["/v1/cost-centers/{slug}"]["get"]["operationId"] == "get_cost_center"
    assert spec["paths"]["/healthz"]["get"]["operationId"] == "healthz"


def test_a_name_two_routes_share_is_told_apart_by_tag() -> None:
    spec = complete(
        {
            "paths": {
                "/a": {"get": {"operationId": "get_one", "tags": ["catalog publishing"]}},
                "/b": {"get": {"operationId": "get_one", "tags": ["pricing"]}},
                "/c": {"get": {"operationId": "list_all", "tags": ["pricing"]}},
            }
        }
    )
    ids = [op["operationId"] for _, _, op in _operations(spec)]
    assert ids == ["catalog_publishing_get_one", "pricing_get_one", "list_all"]


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        resolved: dict[str, Any] = spec["components"]["schemas"][schema["$ref"].split("/")[-1]]
        return resolved
    return schema


def _enum(spec: dict[str, Any], schema: dict[str, Any]) -> list[str] | None:
    """The values a (possibly optional, possibly referenced) string schema allows."""
    schema = _resolve(spec, schema)
    if "enum" in schema:
        return list(schema["enum"])
    for option in schema.get("anyOf", []) + schema.get("allOf", []):
        found = _enum(spec, option)
        if found is not None:
            return found
    return None


# Body fields and query parameters whose value is one of a fixed set the server checks.
CHOICE_FIELDS = {
    ("BudgetIn", "scope_kind"): ["tenant", "cost_center", "team", "app"],
    ("BudgetIn", "period"): ["month", "day"],
    ("BudgetIn", "action"): ["notify", "throttle", "halt"],
    ("BudgetOut", "action"): ["notify", "throttle", "halt"],
    ("DefaultCapIn", "applies_to"): ["ephemeral", "non_production"],
    ("DefaultCapIn", "period"): ["month", "day"],
    ("DefaultCapIn", "action"): ["throttle", "halt"],
    ("QuotaIn", "scope_kind"): ["tenant", "team"],
    ("QuotaIn", "resource"): ["concurrency", "cpu", "memory", "gpu", "jobs"],
    ("LimitRangeIn", "scope_kind"): ["tenant", "team"],
    ("LimitRangeIn", "resource"): ["concurrency", "cpu", "memory", "gpu", "runtime"],
    ("RateLimitIn", "scope_kind"): ["tenant", "app", "user"],
    ("WebhookIn", "format"): ["json", "slack"],
    ("WebhookIn", "min_severity"): ["info", "warning", "critical"],
    ("DeliveryOut", "status"): ["pending", "delivered", "dead"],
    ("AlertOut", "kind"): [
        "budget_threshold",
        "default_cap",
        "anomaly",
        "high_cost_event",
        "late_usage",
    ],
    ("DocumentOut", "status"): ["draft", "finalized"],
    ("DocumentOut", "kind"): ["invoice", "chargeback"],
    ("RunCreate", "kind"): ["invoice", "chargeback"],
    ("ApprovalOut", "status"): None,
    ("AppCreate", "lifecycle"): None,
    ("RevokeOut", "status"): ["revoked", "already_ended", "not_found"],
}
CHOICE_PARAMS = {
    ("/v1/alerts", "kind"): [
        "budget_threshold",
        "default_cap",
        "anomaly",
        "high_cost_event",
        "late_usage",
    ],
    ("/v1/webhook-deliveries", "status"): ["pending", "delivered", "dead"],
    ("/v1/billing/runs", "status"): ["draft", "finalized"],
    ("/v1/billing/runs", "kind"): ["invoice", "chargeback"],
    ("/v1/approvals", "status"): None,
    ("/v1/apps", "lifecycle"): None,
}


@pytest.mark.parametrize(("model", "field"), list(CHOICE_FIELDS))
def test_a_choice_field_lists_its_values(spec: dict[str, Any], model: str, field: str) -> None:
    values = _enum(spec, spec["components"]["schemas"][model]["properties"][field])
    assert values, f"{model}.{field}"
    expected = CHOICE_FIELDS[(model, field)]
    assert expected is None or values == expected, f"{model}.{field}"


@pytest.mark.parametrize(("path", "name"), list(CHOICE_PARAMS))
def test_a_choice_parameter_lists_its_values(spec: dict[str, Any], path: str, name: str) -> None:
    [param] = [p for p in spec["paths"][path]["get"]["parameters"] if p["name"] == name]
    values = _enum(spec, param["schema"])
    assert values, f"{path} {name}"
    expected = CHOICE_PARAMS[(path, name)]
    assert expected is None or values == expected, f"{path} {name}"


def test_no_choice_is_left_in_prose_only(spec: dict[str, Any]) -> None:
    """A description reading "a | b | c" is a choice a generated client should type."""
    prose = re.compile(r"^[a-z_]+( \| [a-z_]+)+")
    loose = [
        f"{name}.{field}"
        for name, schema in spec["components"]["schemas"].items()
        for field, prop in schema.get("properties", {}).items()
        if prose.match(prop.get("description", "")) and _enum(spec, prop) is None
    ]
    loose += [
        f"{method.upper()} {path} ?{param['name']}"
        for method, path, op in _operations(spec)
        for param in op.get("parameters", [])
        if prose.match(param.get("description", "")) and _enum(spec, param["schema"]) is None
    ]
    assert loose == []


def test_every_query_parameter_is_described(spec: dict[str, Any]) -> None:
    bare = [
        (method, path, param["name"])
        for method, path, op in _operations(spec)
        for param in op.get("parameters", [])
        if param["in"] == "query" and not param.get("description", "").strip()
    ]
    assert bare == []


def test_every_path_parameter_is_described(spec: dict[str, Any]) -> None:
    bare = [
        (method, path, param["name"])
        for method, path, op in _operations(spec)
        for param in op.get("parameters", [])
        if param["in"] == "path" and not param.get("description", "").strip()
    ]
    assert bare == []


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/v1/billing/runs/{run_id}", "run_id"),
        ("/v1/billing/lines/{line_id}/explain", "line_id"),
        ("/v1/approvals/{approval_id}/approve", "approval_id"),
        ("/v1/policy-exceptions/{exception_id}", "exception_id"),
        ("/v1/enforcements/{enforcement_id}/lift", "enforcement_id"),
        ("/v1/cost-previews/{preview_id}", "preview_id"),
    ],
)
def test_an_id_taken_by_prefix_says_so(spec: dict[str, Any], path: str, name: str) -> None:
    for op in spec["paths"][path].values():
        [param] = [p for p in op["parameters"] if p["name"] == name]
        assert "8 characters" in param["description"], f"{path} {name}"


def test_a_secret_path_parameter_says_it_may_hold_slashes(spec: dict[str, Any]) -> None:
    for method, path, op in _operations(spec):
        for param in op.get("parameters", []):
            if path.startswith("/v1/secrets/") and param["name"] == "path":
                assert "%2F" in param["description"], f"{method.upper()} {path}"


def test_a_fixed_choice_path_parameter_is_an_enum(spec: dict[str, Any]) -> None:
    [param] = spec["paths"]["/v1/default-caps/{applies_to}"]["delete"]["parameters"]
    assert _enum(spec, param["schema"]) == ["ephemeral", "non_production"]


def test_every_operation_has_one_tag(spec: dict[str, Any]) -> None:
    for method, path, op in _operations(spec):
        assert len(op["tags"]) == 1, f"{method.upper()} {path}"
    assert spec["paths"]["/v1/identity/token"]["post"]["tags"] == ["identity"]
    assert spec["paths"]["/v1/identity/jwks"]["get"]["tags"] == ["identity"]


def test_every_route_taking_a_body_documents_413(spec: dict[str, Any]) -> None:
    for method, path, op in _operations(spec):
        if "requestBody" in op:
            assert "413" in op["responses"], f"{method.upper()} {path}"


def test_every_401_and_429_documents_its_header(spec: dict[str, Any]) -> None:
    for method, path, op in _operations(spec):
        responses = op["responses"]
        if "401" in responses:
            assert "WWW-Authenticate" in responses["401"]["headers"], f"{method.upper()} {path}"
        if "429" in responses:
            assert "Retry-After" in responses["429"]["headers"], f"{method.upper()} {path}"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/v1/events"),  # budget throttle, rate limit
        ("post", "/v1/decisions"),
        ("get", "/v1/secrets/data/{path}"),  # the holder's lease quota
        ("post", "/v1/secrets/creds/{path}"),
    ],
)
def test_routes_that_answer_429_document_it(spec: dict[str, Any], method: str, path: str) -> None:
    response = spec["paths"][path][method]["responses"]["429"]
    assert response["content"]["application/json"]["schema"] == ERROR_REF


def test_a_token_for_an_unknown_app_documents_404(spec: dict[str, Any]) -> None:
    assert "404" in spec["paths"]["/v1/identity/token"]["post"]["responses"]


def test_the_export_documents_its_file_name_and_json(spec: dict[str, Any]) -> None:
    response = spec["paths"]["/v1/billing/runs/{run_id}/export"]["get"]["responses"]["200"]
    assert "Content-Disposition" in response["headers"]
    schema = _resolve(spec, response["content"]["application/json"]["schema"])
    assert set(schema["required"]) == {"documents", "lines"}
    line = _resolve(spec, schema["properties"]["lines"]["items"])
    assert list(line["properties"]) == list(CHARGEBACK_COLUMNS)
    document = BillingDocument(
        id="d" * 32,
        doc_type="run",
        kind="invoice",
        corrects_id=None,
        status="draft",
        period_start=datetime(2026, 10, 1, tzinfo=UTC),
        period_end=datetime(2026, 11, 1, tzinfo=UTC),
        as_of=datetime(2026, 11, 1, tzinfo=UTC),
        price_book="p",
        price_book_versions="1",
        currency="USD",
        total=Decimal(0),
        line_count=0,
    )
    header = _resolve(spec, schema["properties"]["documents"]["items"])
    assert set(header["properties"]) == set(document_summary(document, []))
