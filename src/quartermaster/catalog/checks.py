"""Publish-time checks of an app version (seed 001, "Governance: publish-time checks").

Each check gives one `CheckResult`, recorded on the version:
- `schema` and `data_scope` — the manifest is valid and declares who answers for shared data
  (fail blocks);
- `secrets` — detect-secrets over the package, the scanner `qm scan` uses (a finding blocks;
  only file, line and type are recorded, never the value);
- `pii` — emails, phones, Luhn-valid cards, mod-97-valid IBANs, national ids in the
  descriptions and the sample data (flags: recorded, does not block by itself; a policy may
  act on it);
- `bandit` — static analysis of the package's Python code (reports).

The same functions run offline in `qm app validate DIR` and on the server at publish."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from quartermaster.catalog.manifest import Manifest
from quartermaster.catalog.pii import find_pii, find_pii_in_lines
from quartermaster.errors import InvalidInputError, PayloadTooLargeError
from quartermaster.secrets.scanning import files_to_scan, scan_files

Outcome = Literal["pass", "fail", "flag", "report", "skipped"]
MAX_PACKAGE_BYTES = 20 * 1024 * 1024
MAX_PACKAGE_FILES = 5000
BANDIT_TIMEOUT_SECONDS = 120
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    outcome: Outcome
    blocking: bool
    summary: str
    findings: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_schema(errors: list[tuple[str, str]]) -> CheckResult:
    if errors:
        return CheckResult(
            "schema",
            "fail",
            True,
            f"{len(errors)} field error(s)",
            [{"field": f, "message": m} for f, m in errors],
        )
    return CheckResult("schema", "pass", False, "the manifest is valid")


def check_data_scope(manifest: Manifest) -> CheckResult:
    """Shared data needs someone who answers for it; exporting needs a declared scope beyond
    the user's own when the app writes (the seed's 'declares data access scopes & owners')."""
    problems: list[dict[str, Any]] = []
    shared = [s for s in manifest.data_scopes if s in ("team", "org")]
    if shared and not manifest.data_owner:
        problems.append(
            {
                "field": "data_owner",
                "message": f"data scope(s) {', '.join(shared)} need a data_owner",
            }
        )
    if "export" in manifest.capabilities and "read" not in manifest.capabilities:
        problems.append(
            {"field": "capabilities", "message": "'export' needs 'read' (what would it export?)"}
        )
    if problems:
        return CheckResult("data_scope", "fail", True, f"{len(problems)} problem(s)", problems)
    scopes = ", ".join(manifest.data_scopes)
    return CheckResult("data_scope", "pass", False, f"scopes declared: {scopes}")


def check_secrets(package: Path | None) -> CheckResult:
    if package is None:
        return CheckResult("secrets", "skipped", False, "no package submitted")
    findings = scan_files(files_to_scan([package]), relative_to=package)
    if findings:
        listed = [{"file": f.file, "line": f.line, "type": f.type} for f in findings]
        return CheckResult(
            "secrets", "fail", True, f"{len(findings)} secret(s) found in the package", listed
        )
    return CheckResult("secrets", "pass", False, "no secrets found")


def _sample_files(manifest: Manifest, package: Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """The sample files to scan (a directory's files), and the `sample_data` entries the
    package does not have."""
    found: list[tuple[str, Path]] = []
    missing: list[str] = []
    root = package.resolve()
    for name in manifest.sample_data:
        path = (package / name).resolve()
        if not path.is_relative_to(root):  # a symlink out of it: the schema refuses '..'
            missing.append(name)
        elif path.is_dir():
            found.extend(
                (str(p.relative_to(root)), p) for p in sorted(path.rglob("*")) if p.is_file()
            )
        elif path.is_file():
            found.append((name, path))
        else:
            missing.append(name)
    return found, missing


def check_pii(manifest: Manifest, package: Path | None) -> CheckResult:
    found = [
        *find_pii(manifest.title, where="title"),
        *find_pii(manifest.short_description, where="short_description"),
        *find_pii(manifest.long_description, where="long_description"),
    ]
    samples, missing = _sample_files(manifest, package) if package is not None else ([], [])
    for name, path in samples:
        found.extend(find_pii_in_lines(path.read_text(errors="replace"), file=name))
    listed = [{"kind": f.kind, "where": f.where, "sample": f.sample} for f in found]
    # A sample the package lacks was not scanned: flagged, so nobody reads the pass as clean.
    listed += [{"kind": "not in the package", "where": name, "sample": ""} for name in missing]
    unscanned = package is None and manifest.sample_data
    if listed:
        kinds = sorted({f.kind for f in found})
        parts = [f"possible PII: {', '.join(kinds)}"] if kinds else []
        if missing:
            parts.append(f"{len(missing)} sample_data path(s) not in the package")
        return CheckResult("pii", "flag", False, "; ".join(parts), listed)
    if unscanned:
        return CheckResult(
            "pii",
            "pass",
            False,
            "no PII found in descriptions; sample data not scanned (no package)",
        )
    return CheckResult("pii", "pass", False, "no PII found in descriptions or sample data")


def check_bandit(package: Path | None) -> CheckResult:
    """Bandit in a subprocess: its plugin loading emits deprecation warnings at import, and a
    crash in it must not take the server with it."""
    if package is None or not any(package.rglob("*.py")):
        return CheckResult("bandit", "skipped", False, "no Python code in the package")
    proc = subprocess.run(
        [sys.executable, "-m", "bandit", "-q", "-f", "json", "-r", str(package)],
        capture_output=True,
        text=True,
        timeout=BANDIT_TIMEOUT_SECONDS,
        check=False,
    )
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return CheckResult("bandit", "report", False, "bandit failed to run", [])
    listed = [
        {
            "file": str(Path(r["filename"]).resolve().relative_to(package.resolve())),
            "line": r["line_number"],
            "test_id": r["test_id"],
            "severity": r["issue_severity"].lower(),
            "confidence": r["issue_confidence"].lower(),
            # bandit quotes the offending literal (e.g. a hard-coded password): drop it.
            "text": _QUOTED.sub("'…'", r["issue_text"]),
        }
        for r in report.get("results", [])
    ]
    # A file bandit cannot parse (a syntax error, Python 2) is a file it did not check: said
    # so, not passed over as clean.
    unread = [
        {
            "file": str(Path(e["filename"]).resolve().relative_to(package.resolve())),
            "kind": "not checked",
            "text": str(e.get("reason", "")),
        }
        for e in report.get("errors", [])
    ]
    if not listed and not unread:
        return CheckResult("bandit", "pass", False, "no issues")
    high = sum(1 for f in listed if f["severity"] == "high")
    summary = f"{len(listed)} issue(s), {high} of high severity"
    if unread:
        summary += f"; {len(unread)} file(s) bandit could not parse"
    return CheckResult("bandit", "report", False, summary, [*unread, *listed])


def run_checks(manifest: Manifest, package: Path | None) -> list[CheckResult]:
    return [
        check_schema([]),
        check_data_scope(manifest),
        check_secrets(package),
        check_pii(manifest, package),
        check_bandit(package),
    ]


def blocking_failures(results: list[CheckResult]) -> list[CheckResult]:
    return [r for r in results if r.blocking and r.outcome == "fail"]


# --- packages --------------------------------------------------------------------------------


def safe_relative(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise InvalidInputError(f"package entry {name!r} leaves the package", field="package")
    return path


def check_package(data: bytes) -> None:
    """Refuse what unpacking would refuse (not a zip, too many files, too large unpacked, an
    entry leaving the package) from the archive's directory alone, before anything is stored
    or a version starts its checks."""
    with _open_package(data) as archive:
        _package_entries(archive)


def _open_package(data: bytes) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise InvalidInputError("package is not a zip archive", field="package") from None


def _package_entries(archive: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    entries = archive.infolist()
    if len(entries) > MAX_PACKAGE_FILES:
        raise PayloadTooLargeError(f"package has more than {MAX_PACKAGE_FILES} files")
    if sum(e.file_size for e in entries) > MAX_PACKAGE_BYTES:
        raise PayloadTooLargeError(f"package unpacks to more than {MAX_PACKAGE_BYTES} bytes")
    return [(entry, safe_relative(entry.filename)) for entry in entries]


def extract_zip(data: bytes, into: Path) -> Path:
    """Unpack a zip package into `into`, refusing path traversal, too many files and more
    than MAX_PACKAGE_BYTES unpacked (a zip bomb)."""
    with _open_package(data) as archive:
        for entry, relative in _package_entries(archive):
            target = into.joinpath(*relative.parts)
            if entry.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(entry))
    return into


def zip_directory(directory: Path) -> bytes:
    """The package of an app directory as a zip (what `qm app publish DIR` uploads)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files_to_scan([directory]):
            archive.write(path, path.relative_to(directory).as_posix())
    return buffer.getvalue()


def checks_for_zip(manifest: Manifest, package_zip: bytes | None) -> list[CheckResult]:
    if package_zip is None:
        return run_checks(manifest, None)
    with tempfile.TemporaryDirectory(prefix="qm-package-") as tmp:
        return run_checks(manifest, extract_zip(package_zip, Path(tmp)))
