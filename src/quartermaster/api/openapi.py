"""The OpenAPI document, completed in one place: every error response is the error body
(FastAPI's own 422 schema is not what the server sends), and each operation lists the
errors any route of its kind can give, so a new route cannot forget them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from quartermaster.api.errors import ErrorBody
from quartermaster.api.responses import MEANING, RETRY_AFTER, WWW_AUTHENTICATE

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


# An operation's `openapi_extra` may bring named schemas under this key (a route reading its
# body itself refers to them with `$ref`s): they are moved into `components.schemas`.
OPERATION_SCHEMAS = "x-schemas"

_ID_PREFIX = (
    ", or a unique prefix of it of 8 characters or more (a shorter prefix, or one several "
    "share, is a 422)"
)
_SECRET_PATH = "; it may hold `/` (`apps/invoice-bot/db`), sent as is or each `/` encoded as `%2F`"
# Descriptions of path parameters a route leaves undescribed, by the path's start and the
# parameter's name (the longest matching start wins): every path parameter has one.
PATH_PARAMETERS: dict[tuple[str, str], str] = {
    ("/v1/cost-centers/", "slug"): "The cost center's slug.",
    ("/v1/teams/", "slug"): "The team's slug.",
    ("/v1/principals/", "principal_id"): "The principal's id, or its name (unique in the tenant).",
    ("/v1/keys/", "key_id"): "The API key's id, as `GET /v1/keys` lists it.",
    ("/v1/apps/", "app_id"): "The app's id (its slug).",
    ("/v1/apps/", "version"): "The app version, a semantic version such as `1.2.0`.",
    ("/v1/apps/", "key_id"): "The signing key's id, as the app's signing-key list shows it.",
    ("/v1/approvals/", "approval_id"): "The approval request's id" + _ID_PREFIX + ".",
    ("/v1/resource-leases/", "lease_id"): "The resource lease's id.",
    ("/v1/price-books/", "version"): "The version's number (1, 2, ...).",
    ("/v1/environment-overrides/", "environment"): "The environment's name (`staging`).",
    ("/v1/billing/lines/", "line_id"): "The billing line's id" + _ID_PREFIX + ".",
    ("/v1/secrets/", "path"): "The secret's path" + _SECRET_PATH + ".",
    ("/v1/secrets/engines/", "path"): "The engine's mount path" + _SECRET_PATH + ".",
    ("/v1/secrets/creds/", "path"): "The dynamic engine's mount path" + _SECRET_PATH + ".",
    ("/v1/leases/", "lease_id"): "The secret lease's id, as the read or credential gave it.",
    ("/v1/policies/", "name"): "The policy's name.",
    ("/v1/policy-exceptions/", "exception_id"): "The policy exception's id" + _ID_PREFIX + ".",
    ("/v1/budgets/", "name"): "The budget's name.",
    ("/v1/enforcements/", "enforcement_id"): "The enforcement's id" + _ID_PREFIX + ".",
    ("/v1/quotas/", "quota_id"): "The quota's id.",
    ("/v1/rate-limits/", "rate_limit_id"): "The rate limit's id.",
    ("/v1/decisions/", "decision_id"): "The decision's id, as `POST /v1/decisions` answered it"
    + _ID_PREFIX
    + ".",
    ("/v1/webhooks/", "webhook_id"): "The webhook's id.",
    ("/v1/webhook-deliveries/", "delivery_id"): "The delivery's id.",
    ("/v1/cost-previews/", "preview_id"): "The cost preview's id" + _ID_PREFIX + ".",
}


def _describe_path_parameters(path: str, operation: dict[str, Any]) -> None:
    for parameter in operation.get("parameters", []):
        if parameter.get("in") != "path" or parameter.get("description"):
            continue
        starts = [
            start
            for start, name in PATH_PARAMETERS
            if name == parameter["name"] and path.startswith(start)
        ]
        if starts:
            parameter["description"] = PATH_PARAMETERS[(max(starts, key=len), parameter["name"])]


def _error(status: int) -> dict[str, Any]:
    return {"description": MEANING[status], "content": {_JSON: {"schema": dict(ERROR_REF)}}}


def _parses_a_model(operation: dict[str, Any]) -> bool:
    """FastAPI reads the body into a model: it can be malformed JSON (400) or sent as another
    type (415; curl -d sends form-urlencoded). Routes reading their body themselves (events,
    price books) declare their own errors."""
    body = operation.get("requestBody", {}).get("content", {}).get(_JSON, {})
    return "$ref" in body.get("schema", {})


def _complete_operation(path: str, operation: dict[str, Any]) -> None:
    # One tag each, so /docs and a generated client file an operation once: a route's own
    # tag (FastAPI puts it after its router's) wins.
    if len(operation.get("tags", [])) > 1:
        operation["tags"] = operation["tags"][-1:]
    _describe_path_parameters(path, operation)
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
    if "requestBody" in operation:
        wanted.append(413)  # QM_MAX_BODY_BYTES holds on every route (api/body_limit.py)
    if _parses_a_model(operation):
        wanted += [400, 415, 422]
    for status in wanted:
        responses.setdefault(str(status), _error(status))
    # The headers these statuses always carry (api/errors.py), wherever they are declared.
    for code, header in (("401", WWW_AUTHENTICATE), ("429", RETRY_AFTER)):
        if code in responses:
            responses[code].setdefault("headers", {}).setdefault(*header)
    operation["responses"] = dict(sorted(responses.items()))


def _add_schemas(schemas: dict[str, Any], brought: dict[str, Any]) -> None:
    for name, schema in brought.items():
        if schemas.setdefault(name, schema) != schema:
            raise ValueError(f"two different OpenAPI schemas are named {name!r}")


def complete(spec: dict[str, Any]) -> dict[str, Any]:
    """`spec` with the error model applied to every operation and its id made unique
    (changed in place)."""
    every: list[dict[str, Any]] = []
    schemas: dict[str, Any] = spec.setdefault("components", {}).setdefault("schemas", {})
    for path, operations in spec.get("paths", {}).items():
        for operation in operations.values():
            _add_schemas(schemas, operation.pop(OPERATION_SCHEMAS, {}))
            _complete_operation(path, operation)
            every.append(operation)
    _unique_operation_ids([op for op in every if "operationId" in op])
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
