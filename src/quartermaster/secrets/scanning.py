"""Secret scanning with detect-secrets over files, directories and git work trees.

A finding keeps the matched text only in memory, to fingerprint it with the tenant's keyed
HMAC for comparison with what the broker holds; it is never printed, logged or sent anywhere.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from detect_secrets.core import scan as ds_scan
from detect_secrets.settings import default_settings

from quartermaster.secrets.envelope import fingerprint

_TOKEN = re.compile(r"[^\s'\"`=:,;()\[\]{}<>]{8,}")
SKIPPED_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", ".venv", "node_modules"})


@dataclass(frozen=True, slots=True)
class Finding:
    file: str
    line: int
    type: str
    secret: str = field(repr=False, compare=False)
    # Other tokens on the finding's line: a plugin sometimes captures only part of a value
    # (e.g. a token's prefix), so the whole line's tokens are fingerprinted too.
    line_tokens: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def candidates(self) -> set[str]:
        return {t for t in (self.secret, *self.line_tokens) if t}


def _git_files(directory: Path) -> list[Path] | None:
    """Tracked and untracked-but-not-ignored files of the work tree holding `directory`."""
    try:
        inside = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "--is-inside-work-tree"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        return None
    listing = subprocess.run(
        [
            "git",
            "-C",
            str(directory),
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ],
        capture_output=True,
        check=True,
        timeout=120,
    )
    names = [n for n in listing.stdout.decode().split("\0") if n]
    return [directory / n for n in sorted(set(names))]


def _walk(directory: Path) -> list[Path]:
    found: list[Path] = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        found.extend(Path(root) / name for name in sorted(files))
    return found


def files_to_scan(paths: Sequence[Path]) -> list[Path]:
    """Files named directly, and every file under a directory: in a git work tree the files
    git knows (ignored ones are skipped), elsewhere all files except VCS/cache directories."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            listed = _git_files(path)
            out.extend(listed if listed is not None else _walk(path))
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"{path} does not exist")
    return [p for p in dict.fromkeys(out) if p.is_file() and not p.is_symlink()]


def scan_files(files: Iterable[Path], *, relative_to: Path | None = None) -> list[Finding]:
    findings: list[Finding] = []
    with default_settings():
        for path in files:
            shown = str(path)
            if relative_to is not None:
                try:
                    shown = str(path.resolve().relative_to(relative_to.resolve()))
                except ValueError:
                    shown = str(path)
            potentials = list(ds_scan.scan_file(str(path)))
            if not potentials:
                continue
            lines = path.read_text(errors="replace").splitlines()
            for potential in potentials:
                number = int(potential.line_number)
                line_text = lines[number - 1] if 0 < number <= len(lines) else ""
                findings.append(
                    Finding(
                        file=shown,
                        line=number,
                        type=str(potential.type),
                        secret=potential.secret_value or "",
                        line_tokens=tuple(_TOKEN.findall(line_text)),
                    )
                )
    findings.sort(key=lambda f: (f.file, f.line, f.type))
    return findings


def scan_paths(paths: Sequence[Path]) -> list[Finding]:
    base = paths[0] if len(paths) == 1 and paths[0].is_dir() else Path.cwd()
    return scan_files(files_to_scan(paths), relative_to=base)


def fingerprints(findings: Iterable[Finding], key: bytes) -> dict[str, list[Finding]]:
    """Keyed HMACs of the findings' text, for matching against the broker's fingerprints."""
    by_fp: dict[str, list[Finding]] = {}
    for finding in findings:
        for candidate in finding.candidates():
            by_fp.setdefault(fingerprint(key, candidate), []).append(finding)
    return by_fp
