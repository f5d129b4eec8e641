"""The OpenAPI document, completed in one place: every error response is the error body
(FastAPI's own 422 schema is not what the server sends), and each operation lists the
errors any route of its kind can give, so a new route cannot forget them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from quartermaster.api.errors import ErrorBody
from quartermaster.api.responses import MEANING

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
_FASTAPI_ERROR_SCHEMAS = ("HTTPValidationError", "ValidationError")
_JSON = "application/json"

# One line per tag, in the order /docs shows them.
TAGS: tuple[tuple[str, str], ...] = (
    ("system", "Liveness of the server."),
    ("tenancy", "The tenant, its cost centers, teams, principals and API keys."),
    ("catalog", "Apps, their signing keys, shared resources and resource leases."),
    ("catalog publishing", "App versions: manifest checks, publishing, approvals, search."),
    ("pricing", "Price books: versioned rates for meters."),
    ("metering", "Ingesting CloudEvents, the event log and reconciliation."),
    ("usage", "Meters, environment overrides, rated usage and the pipeline."),
    ("billing", "Billing runs, adjustments, invoices and exports."),
    ("secrets", "The secrets broker: versioned KV, dynamic credentials, access rules."),
    ("leases", "Leases on secrets and credentials: renew and revoke."),
    ("identity", "Workload identity tokens for the secrets broker."),
    ("audit", "The tamper-evident audit log."),
    ("policy", "Rego policies, their exceptions and the decision log."),
    ("guardrails", "Budgets, quotas, rate limits, admission decisions, alerts and webhooks."),
)


def operation_id(route: APIRoute) -> str:
    """The route function's name: a generated client's method names (`get_cost_center`, not
    FastAPI's `get_cost_center_v1_cost_centers__slug__get`), stable while the function keeps
    its name. Two functions of one name are told apart by tag in `complete`."""
    return route.name


def _tag_prefix(operation: dict[str, Any]) -> str:
    tags: list[str] = operation.get("tags") or ["untagged"]
    return tags[0].replace(" ", "_")


def _unique_operation_ids(operations: list[dict[str, Any]]) -> None:
    """A name two routes share (in two packages) is prefixed with each one's tag, so no id
    depends on which route was included first."""
    seen: dict[str, int] = {}
    for operation in operations:
        seen[operation["operationId"]] = seen.get(operation["operationId"], 0) + 1
    for operation in operations:
        if seen[operation["operationId"]] > 1:
            operation["operationId"] = f"{_tag_prefix(operation)}_{operation['operationId']}"


def _error(status: int) -> dict[str, Any]:
    return {"description": MEANING[status], "content": {_JSON: {"schema": dict(ERROR_REF)}}}


def _parses_a_model(operation: dict[str, Any]) -> bool:
    """FastAPI reads the body into a model: it can be malformed JSON (400) or sent as another
    type (415; curl -d sends form-urlencoded). Routes reading their body themselves (events,
    price books) declare their own errors."""
    body = operation.get("requestBody", {}).get("content", {}).get(_JSON, {})
    return "$ref" in body.get("schema", {})


def _complete_operation(path: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for response in responses.values():
        schema = response.get("content", {}).get(_JSON, {}).get("schema", {})
        if schema.get("$ref", "").endswith("/HTTPValidationError"):
            response["content"][_JSON]["schema"] = dict(ERROR_REF)
            response["description"] = MEANING[422]
    wanted: list[int] = []
    if operation.get("security"):
        wanted += [401, 403]
    if "{" in path:
        wanted.append(404)
    if _parses_a_model(operation):
        wanted += [400, 415, 422]
    for status in wanted:
        responses.setdefault(str(status), _error(status))
    operation["responses"] = dict(sorted(responses.items()))


def complete(spec: dict[str, Any]) -> dict[str, Any]:
    """`spec` with the error model applied to every operation and its id made unique
    (changed in place)."""
    every: list[dict[str, Any]] = []
    for path, operations in spec.get("paths", {}).items():
        for operation in operations.values():
            _complete_operation(path, operation)
            every.append(operation)
    _unique_operation_ids([op for op in every if "operationId" in op])
    schemas: dict[str, Any] = spec.setdefault("components", {}).setdefault("schemas", {})
    for name in _FASTAPI_ERROR_SCHEMAS:
        schemas.pop(name, None)
    body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(body.pop("$defs", {}))
    schemas.setdefault("ErrorBody", body)
    spec["tags"] = [{"name": name, "description": text} for name, text in TAGS]
    return spec


def install_openapi(app: FastAPI) -> None:
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
