"""The tenancy and catalog routes are fully described in OpenAPI: typed bodies and errors."""

from __future__ import annotations

from pathlib import Path

from quartermaster.api.app import create_app
from quartermaster.config import Settings


def test_every_tenancy_and_catalog_operation_documents_its_bodies_and_errors(
    tmp_path: Path,
) -> None:
    spec = create_app(Settings(data_dir=tmp_path)).openapi()
    operations = [
        (method, path, op)
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        if {"tenancy", "catalog"} & set(op.get("tags", []))
    ]
    assert len(operations) >= 24
    for method, path, op in operations:
        where = f"{method.upper()} {path}"
        success = [code for code in op["responses"] if code.startswith("2")]
        assert len(success) == 1, where
        schema = op["responses"][success[0]]["content"]["application/json"]["schema"]
        assert "$ref" in schema or schema.get("type") == "array", where
        for code in ("401", "403"):
            error = op["responses"][code]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/ErrorBody"}, where
        if method in ("post", "patch", "put"):
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            if path.endswith("/signing-keys"):
                continue  # no body: the key is generated
            assert "$ref" in body.get("schema", {}), f"{where} has no typed request body"
    created = spec["paths"]["/v1/apps"]["post"]["responses"]
    assert set(created) >= {"201", "409", "422"}
