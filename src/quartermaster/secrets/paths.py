"""Secret paths (pure): `apps/<app>/<name...>` or `teams/<team>/<name...>`.

The first two segments are the scope that owns the secret (an app or a team of the tenant);
access rules and authorization are decided on them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase

from quartermaster.errors import InvalidInputError

SCOPE_KINDS = ("apps", "teams")
MAX_PATH_CHARS = 512
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_OWNER = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


@dataclass(frozen=True, slots=True)
class SecretPath:
    path: str
    scope_kind: str  # "apps" | "teams"
    owner: str  # the app or team slug

    @property
    def scope_prefix(self) -> str:
        return f"{self.scope_kind}/{self.owner}/"


def parse_path(raw: str, *, field: str = "path") -> SecretPath:
    """Validate a secret path; the error names the offending segment and the rule."""
    path = raw.strip().strip("/")
    if not path:
        raise InvalidInputError(f"{field} is empty", field=field)
    if len(path) > MAX_PATH_CHARS:
        raise InvalidInputError(
            f"{field} is {len(path)} characters; at most {MAX_PATH_CHARS}", field=field
        )
    segments = path.split("/")
    if segments[0] not in SCOPE_KINDS:
        raise InvalidInputError(
            f"{field} {path!r} must start with apps/<app>/ or teams/<team>/", field=field
        )
    if len(segments) < 3:
        raise InvalidInputError(
            f"{field} {path!r} needs a name after {segments[0]}/<slug>/, "
            f"e.g. {segments[0]}/example/db-password",
            field=field,
        )
    if not _OWNER.match(segments[1]):
        raise InvalidInputError(
            f"{field} {path!r}: {segments[1]!r} is not an app or team slug "
            "(a-z, 0-9, '-', at most 63)",
            field=field,
        )
    for index, segment in enumerate(segments[2:], start=3):
        if not _SEGMENT.match(segment):
            raise InvalidInputError(
                f"{field} {path!r}: segment {index} {segment!r} must be 1-128 characters of "
                "A-Z, a-z, 0-9, '.', '_', '-', starting with a letter or digit",
                field=field,
            )
    return SecretPath(path=path, scope_kind=segments[0], owner=segments[1])


def normalize_prefix(raw: str, *, field: str = "prefix") -> str:
    """A path prefix for listing or revoking; matched segment by segment (see under_prefix)."""
    prefix = raw.strip()
    if prefix.startswith("/"):
        prefix = prefix.lstrip("/")
    if not prefix:
        return ""
    body = prefix.rstrip("/")
    for index, segment in enumerate(body.split("/"), start=1):
        if not _SEGMENT.match(segment):
            raise InvalidInputError(
                f"{field} {raw!r}: segment {index} {segment!r} is not a valid path segment",
                field=field,
            )
    return prefix


def under_prefix(path: str, prefix: str) -> bool:
    """`apps/a` covers `apps/a` and `apps/a/x`, not `apps/ab`; `apps/a/` covers `apps/a/x`."""
    if not prefix:
        return True
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")


def pattern_matches(pattern: str, path: str) -> bool:
    """Access-rule patterns: `*` matches within one segment, a trailing `/*` the whole subtree
    (`apps/billing/*` covers `apps/billing/db/password`)."""
    if pattern.endswith("/*"):
        base = pattern[:-2]
        if "*" not in base and "?" not in base and "[" not in base:
            return path.startswith(base + "/")
        base_segments = base.split("/")
        path_segments = path.split("/")
        if len(path_segments) <= len(base_segments):
            return False
        return all(
            fnmatchcase(seg, pat) for seg, pat in zip(path_segments, base_segments, strict=False)
        )
    pattern_segments = pattern.split("/")
    path_segments = path.split("/")
    if len(pattern_segments) != len(path_segments):
        return False
    return all(
        fnmatchcase(seg, pat) for seg, pat in zip(path_segments, pattern_segments, strict=True)
    )
