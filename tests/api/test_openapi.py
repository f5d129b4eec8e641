"""The OpenAPI document tells the truth about errors for every operation: a new route is
held to the same rules as the old ones."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from quartermaster.api.app import create_app
from quartermaster.api.openapi import complete
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
