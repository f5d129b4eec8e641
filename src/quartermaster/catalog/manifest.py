"""The app manifest: the metadata every catalog entry carries (seed 001, "Metadata-first
catalog"), its published JSON Schema, and validation with one error per field.

A creator keeps the manifest in the app directory as `qm-app.json` (or `qm-app.yaml`); the
same model validates it offline (`qm app validate DIR`) and on the server at publish."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from quartermaster.domain.display_text import display_text_problem
from quartermaster.domain.yaml_documents import StringTimestampLoader
from quartermaster.errors import InvalidInputError, utf8_problem

MANIFEST_FILES = ("qm-app.json", "qm-app.yaml", "qm-app.yml")
SLUG = r"^[a-z0-9][a-z0-9-]{0,62}[a-z0-9]$|^[a-z0-9]$"
TAG = r"^[a-z0-9][a-z0-9-]{0,39}$"
# Semantic Versioning 2.0.0 (the regex the spec itself suggests, without build metadata).
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?$"
)

RESERVED_APP_IDS = frozenset({"search", "manifest-schema", "validate"})
Capability = Literal["read", "write", "export"]
DataScope = Literal["user", "team", "org"]
PricingModelName = Literal["free", "subscription", "usage_by_unit", "payg"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class RuntimeDescriptor(_Strict):
    """How the app runs: a WASM module, a serverless handler, a container, or just a link."""

    type: Literal["wasm", "serverless", "container", "link"]
    handler: str | None = Field(default=None, max_length=200)
    url: str | None = Field(default=None, max_length=500, pattern=r"^https?://")
    image: str | None = Field(default=None, max_length=300)

    @model_validator(mode="after")
    def _needs(self) -> RuntimeDescriptor:
        needed = {"serverless": "handler", "link": "url", "container": "image"}.get(self.type)
        if needed is not None and getattr(self, needed) is None:
            raise ValueError(f"a {self.type} runtime needs '{needed}'")
        return self


class ComputeProfile(_Strict):
    """The creator's estimate of what one instance needs; `tier: gpu` or `gpu > 0` asks for
    GPUs (the seed's GPU rule applies)."""

    tier: Literal["nano", "small", "medium", "large", "gpu"] = "small"
    cpu: Decimal = Field(default=Decimal("0.25"), gt=0, le=64)
    memory_mb: int = Field(default=256, gt=0, le=524288)
    gpu: int = Field(default=0, ge=0, le=16)


class PricingTemplate(_Strict):
    model: PricingModelName
    unit: str | None = Field(default=None, max_length=64)
    price_per_unit: Decimal | None = Field(default=None, ge=0)
    monthly_fee: Decimal | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _needs(self) -> PricingTemplate:
        if self.model in ("usage_by_unit", "payg") and (
            self.unit is None or self.price_per_unit is None
        ):
            raise ValueError(f"pricing model {self.model!r} needs 'unit' and 'price_per_unit'")
        if self.model == "subscription" and self.monthly_fee is None:
            raise ValueError("pricing model 'subscription' needs 'monthly_fee'")
        return self


class Manifest(_Strict):
    """One version of an app as its creator describes it."""

    schema_version: Literal[1] = 1
    app_id: str = Field(pattern=SLUG, description="Stable slug, unique in the tenant.")
    version: str = Field(description="Semantic version, e.g. 1.4.0 or 2.0.0-rc.1.")
    title: str = Field(min_length=1, max_length=200)
    short_description: str = Field(min_length=1, max_length=280)
    long_description: str = Field(default="", max_length=20000)
    owner: str = Field(min_length=1, max_length=200, description="Accountable person.")
    team: str = Field(pattern=SLUG)
    cost_center: str | None = Field(default=None, pattern=SLUG)
    lifecycle: Literal["ephemeral", "persistent"] = "persistent"
    tags: list[str] = Field(default_factory=list, max_length=20)
    domain_labels: list[str] = Field(default_factory=list, max_length=20)
    capabilities: list[Capability] = Field(min_length=1)
    data_scopes: list[DataScope] = Field(min_length=1)
    data_owner: str | None = Field(
        default=None, max_length=200, description="Who answers for the data (team/org scope)."
    )
    runtime_descriptor: RuntimeDescriptor
    estimated_compute_profile: ComputeProfile = Field(default_factory=ComputeProfile)
    pricing_template: PricingTemplate = Field(default_factory=lambda: PricingTemplate(model="free"))
    sample_data: list[str] = Field(
        default_factory=list, max_length=50, description="Package paths of sample data files."
    )

    @field_validator("app_id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_APP_IDS:
            raise ValueError(f"{value!r} is reserved for a catalog route")
        return value

    @field_validator("title", "owner")
    @classmethod
    def _displayable(cls, value: str, info: ValidationInfo) -> str:
        problem = display_text_problem(value, field=str(info.field_name))
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("version")
    @classmethod
    def _semver(cls, value: str) -> str:
        if not SEMVER.match(value):
            raise ValueError(f"{value!r} is not a semantic version (MAJOR.MINOR.PATCH[-pre])")
        return value

    @field_validator("tags", "domain_labels")
    @classmethod
    def _tags(cls, values: list[str]) -> list[str]:
        cleaned = []
        for value in values:
            tag = value.strip().lower()
            if not re.match(TAG, tag):  # named as written: 'Café' is what the author finds
                raise ValueError(f"{value!r} must be 1-40 characters of a-z, 0-9 and '-'")
            cleaned.append(tag)
        return list(dict.fromkeys(cleaned))

    @field_validator("sample_data")
    @classmethod
    def _inside_the_package(cls, values: list[str]) -> list[str]:
        for value in values:
            path = PurePosixPath(value)
            if not value or path.is_absolute() or ".." in path.parts:
                raise ValueError(
                    f"{value!r} is not a path inside the package (relative, without '..')"
                )
        return values

    @field_validator("capabilities", "data_scopes")
    @classmethod
    def _unique(cls, values: list[str]) -> list[str]:
        return list(dict.fromkeys(values))

    @property
    def wants_gpu(self) -> bool:
        profile = self.estimated_compute_profile
        return profile.tier == "gpu" or profile.gpu > 0


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str


def manifest_json_schema() -> dict[str, Any]:
    schema = Manifest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://quartermaster.dev/schemas/app-manifest-1.json"
    return schema


def field_errors(error: ValidationError) -> list[FieldError]:
    out: list[FieldError] = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "manifest"
        message = str(item["msg"]).removeprefix("Value error, ")
        given = item.get("input")
        if item["type"] == "string_type" and isinstance(given, bool | int | float):
            # YAML reads `version: 1.0` as a number and `no`, `on` as booleans.
            kind = "a boolean" if isinstance(given, bool) else "a number"
            message += f", got {json.dumps(given)} ({kind}): quote it to make it text"
        out.append(FieldError(field=where, message=message))
    return out


def parse_manifest(data: Any) -> tuple[Manifest | None, list[FieldError]]:
    """The manifest, or None with every field error (never raises on bad input)."""
    if not isinstance(data, dict):
        return None, [FieldError("manifest", "the manifest must be a JSON object")]
    try:
        return Manifest.model_validate(data), []
    except ValidationError as exc:
        return None, field_errors(exc)


def require_manifest(data: Any) -> Manifest:
    """For the API: a manifest, or a 422 naming every field that is wrong."""
    manifest, errors = parse_manifest(data)
    if manifest is None:
        text = "; ".join(f"{e.field}: {e.message}" for e in errors)
        raise InvalidInputError(f"invalid manifest: {text}", field=errors[0].field)
    return manifest


def read_manifest_file(directory: Path) -> Any:
    """The raw manifest document of an app directory (JSON or YAML)."""
    for name in MANIFEST_FILES:
        path = directory / name
        if path.is_file():
            data = path.read_bytes()
            problem = utf8_problem(data)
            if problem is not None:
                raise InvalidInputError(f"{path}: {problem}: save it as UTF-8", field="manifest")
            text = data.decode().removeprefix("\ufeff")  # the byte-order mark some editors write
            try:
                if name.endswith(".json"):
                    return json.loads(text)
                document = yaml.load(text, Loader=StringTimestampLoader)
                # The CLI sends the document as JSON: a YAML set or binary would fail there.
                json.dumps(document)
                return document
            except (json.JSONDecodeError, yaml.YAMLError) as exc:
                raise InvalidInputError(f"{path}: not valid {path.suffix[1:]}: {exc}") from None
            except (ValueError, TypeError) as exc:  # an explicit tag's refusal, e.g. !!int x
                raise InvalidInputError(
                    f"{path}: not a JSON-like document: {_json_like_problem(exc)}"
                ) from None
    raise InvalidInputError(
        f"{directory}: no manifest (expected one of {', '.join(MANIFEST_FILES)})",
        field="manifest",
    )


def _json_like_problem(exc: Exception) -> str:
    """What in a YAML document JSON cannot hold, in YAML's words: `!!set {a, b}` is a set,
    `!!binary` bytes (Python said `Object of type set is not JSON serializable`)."""
    found = re.search(r"Object of type (\w+) is not JSON serializable", str(exc))
    if found is None:
        return str(exc)
    kinds = {"set": "a set (!!set): write a list, [a, b]", "bytes": "binary data (!!binary)"}
    return kinds.get(found[1], f"a value of type {found[1]}") + " is not a JSON value"


def version_key(version: str) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
    """Sort key in semver precedence: a pre-release sorts before its release."""
    match = SEMVER.match(version)
    if match is None:
        raise InvalidInputError(f"{version!r} is not a semantic version", field="version")
    major, minor, patch, pre = match.groups()
    if pre is None:
        return int(major), int(minor), int(patch), 1, ()
    parts = tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split("."))
    return int(major), int(minor), int(patch), 0, parts
