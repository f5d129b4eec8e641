"""Every billing operation is described in OpenAPI: typed bodies, files and errors."""

from __future__ import annotations

from pathlib import Path

from quartermaster.api.app import create_app
from quartermaster.config import Settings


def test_every_billing_operation_documents_its_bodies_and_errors(tmp_path: Path) -> None:
    spec = create_app(Settings(data_dir=tmp_path)).openapi()
    operations = [
        (method, path, op)
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        if "billing" in op.get("tags", [])
    ]
    assert len(operations) == 15  # GET /v1/billing/costs and /late included
    for method, path, op in operations:
        where = f"{method.upper()} {path}"
        success = [code for code in op["responses"] if code.startswith("2")]
        assert success, where
        for code in success:
            content = op["responses"][code].get("content", {})
            if code == "204":
                continue
            if path.endswith("/export"):
                assert {"text/csv", "application/json"} <= set(content), where
                continue
            schema = content["application/json"]["schema"]
            assert "$ref" in schema or schema.get("type") == "array", where
        for code in ("401", "403"):
            error = op["responses"][code]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/ErrorBody"}, where
        if method == "post" and not path.endswith("/finalize"):
            body = op["requestBody"]["content"]["application/json"]["schema"]
            assert "$ref" in body, f"{where} has no typed request body"
    runs = spec["paths"]["/v1/billing/runs"]["post"]["responses"]
    assert set(runs) >= {"200", "201", "409", "422"}
