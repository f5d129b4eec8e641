"""docs/api.md lists every error code the server can answer."""

from __future__ import annotations

from pathlib import Path

from quartermaster import errors
from quartermaster.api.errors import STATUS_BY_ERROR

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
# Codes written outside the exception classes: the HTTP layer's, the last-resort 500's and
# the ingest report's.
OTHER_CODES = ("not_found", "method_not_allowed", "http_error", "internal_error", "all_rejected")


def test_every_error_code_is_documented_with_its_status() -> None:
    text = DOC.read_text()
    for cls, status in STATUS_BY_ERROR.items():
        assert f"| {status} | `{cls.code}` |" in text, cls.code
    for code in OTHER_CODES:
        assert f"`{code}`" in text, code
    assert errors.MalformedBodyError in STATUS_BY_ERROR
