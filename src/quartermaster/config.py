"""Settings, read from `QM_*` environment variables and an optional `qm.toml`.

Nothing here is created at import time: call `load_settings()` where settings are needed.
"""

from __future__ import annotations

import json
import os
import secrets
import tomllib
import types
from datetime import date, time
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin
from urllib.parse import urlparse

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

SERVER_KEY_FILE = "server.key"


class ConfigurationError(RuntimeError):
    """The configuration is missing something or is unsafe; the message says what."""


# The severities `qm serve` may be asked to log from (serve_logging.py).
LogLevel = Literal["debug", "info", "warning", "error"]

AUDIT_SINK_FORMS = "file:///path/audit.jsonl or an http(s):// webhook"


def audit_sink_problem(url: str) -> str | None:
    """What is wrong with `url` as audit_sink_url, naming the forms it takes; None when it
    can be shipped to. Checked with the other settings, so that every command refuses it in
    one line: checked only when the audit shipper was built, it stopped `qm serve` after its
    background services had started, with a page of tracebacks, and the other commands took
    it silently."""
    use = f"use {AUDIT_SINK_FORMS}"
    if not url.strip():
        # Not "unset": it shipped to audit.jsonl in the data dir before it was checked.
        return f"is empty: unset it for no shipping, or {use}"
    try:
        parsed = urlparse(url)
        parsed.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        return f"is not a valid URL ({exc}): {use}"
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            return f"names the host {parsed.netloc!r} (a file URL has three slashes): {use}"
        if not parsed.path.startswith("/"):
            # A relative file would move with the directory `qm serve` is started in.
            return f"names no absolute path: {use}"
        return None
    if parsed.scheme in ("http", "https"):
        return None if parsed.hostname else f"names no host: {use}"
    if not parsed.scheme:
        return f"is not a URL{f' (file://{url}?)' if url.startswith('/') else ''}: {use}"
    return f"has the scheme {parsed.scheme!r}, which the audit log is not shipped to: {use}"


# What each kind of setting must be in qm.toml (TomlSettingsSource).
_TOML_EXPECTED = {
    "integer": "an integer",
    "number": "a number (an integer or a float)",
    "boolean": "a boolean (true or false)",
    "string": "a string (in quotes)",
}


def _toml_kind(annotation: Any) -> str | None:
    """The TOML type a setting of this annotation takes: integer, number, boolean or string;
    None for an annotation this does not know (left to pydantic)."""
    if get_origin(annotation) in (Union, types.UnionType):
        kinds = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(kinds) != 1:
            return None
        annotation = kinds[0]
    if get_origin(annotation) is Literal:
        return "string" if all(isinstance(v, str) for v in get_args(annotation)) else None
    if annotation is bool:
        return "boolean"
    if annotation is int:
        return "integer"
    if annotation is float:
        return "number"
    if annotation in (str, Path, SecretStr):
        return "string"
    return None


def _toml_type(value: object) -> str:
    if isinstance(value, bool):  # a bool is an int to Python, never to TOML
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, date | time):
        return "a date or time"
    return type(value).__name__


def _toml_text(value: object) -> str:
    """`value` as qm.toml writes it (an array or a table elided: it may be long, or a secret)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[…]"
    if isinstance(value, dict):
        return "{…}"
    return str(value)


# The TOML types (`_toml_type`) each kind of setting takes.
_TOML_ACCEPTS = {
    "integer": {"an integer"},
    "number": {"an integer", "a float"},
    "boolean": {"a boolean"},
    "string": {"a string"},
}


class TomlSettingsSource(TomlConfigSettingsSource):
    """qm.toml, whose values must have their setting's type. TOML is typed, but pydantic
    validates every source leniently, as it must the environment's strings: `port = true`
    became port 1, `auth_cache_seconds = false` 0 and `access_log = 1` true, silently. So an
    integer setting takes a TOML integer (not a boolean, a float or a string), a seconds
    setting that takes fractions an integer or a float, a boolean setting true or false (not
    1 or "true"), and every other setting a string. Each value in the file is checked, also
    one an environment variable overrides: the file is wrong either way."""

    def __call__(self) -> dict[str, Any]:
        fields = {
            name.lower(): (name, info) for name, info in self.settings_cls.model_fields.items()
        }
        problems = []
        for key, value in self.toml_data.items():
            name, info = fields.get(key.lower(), (key, None))
            kind = None if info is None else _toml_kind(info.annotation)
            if kind is not None and _toml_type(value) not in _TOML_ACCEPTS[kind]:
                problems.append(
                    f"{name} = {_toml_text(value)}: expected {_TOML_EXPECTED[kind]}, "
                    f"not {_toml_type(value)}"
                )
        if problems:
            raise ConfigurationError(f"invalid setting in qm.toml: {'; '.join(problems)}")
        return super().__call__()


class Settings(BaseSettings):
    """Every setting is documented in docs/configuration.md (a test checks it)."""

    model_config = SettingsConfigDict(
        env_prefix="QM_", toml_file="qm.toml", extra="ignore", frozen=True
    )

    data_dir: Path = Field(default=Path(".qm"), description="Where local state lives.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the control-plane database."
    )
    host: str = Field(default="127.0.0.1", description="Address `qm serve` binds to.")
    port: int = Field(default=8080, ge=0, le=65535, description="Port `qm serve` binds to.")
    log_level: LogLevel = Field(
        default="info",
        description="Least severity `qm serve` writes to stderr, as UTC-stamped lines.",
    )
    access_log: bool = Field(
        default=False, description="Whether `qm serve` writes a line per HTTP request."
    )
    auth_cache_seconds: float = Field(
        default=10.0,
        ge=0,
        description="How long a verified API key is trusted without a database check, per "
        "server process (0: check every request). Revocation through the same process applies "
        "at once; through another process, within this time.",
    )
    max_batch_events: int = Field(default=10_000, ge=1, description="Most events per request.")
    max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1, description="Largest request body.")
    ingest_workers: int | None = Field(
        default=None,
        ge=0,
        le=64,
        description="Processes `qm serve` parses and validates ingest batches in (0: in the "
        "server's own process; unset: one where the machine has a second CPU).",
    )
    max_future_skew_seconds: int = Field(
        default=300, ge=0, description="How far in the future an event time may be."
    )
    late_after_seconds: int = Field(
        default=3600, ge=0, description="Events older than this when received are marked late."
    )
    reconciliation_window_hours: int = Field(
        default=24, ge=0, description="How long an unowned event waits for its metadata."
    )
    raw_retention_days: int = Field(default=90, ge=1, description="Days raw events are kept.")
    event_bus: Literal["embedded"] = Field(default="embedded", description="Event log backend.")
    usage_store: Literal["duckdb"] = Field(default="duckdb", description="Usage store backend.")
    pipeline_enabled: bool = Field(
        default=True, description="Run the pipeline workers inside `qm serve`."
    )
    pipeline_interval_seconds: float = Field(
        default=0.5, gt=0, description="Pause between pipeline polls when the log is drained."
    )
    pipeline_batch_size: int = Field(
        default=1_000_000,
        ge=1,
        le=2_000_000,
        description="Most events the pipeline reads from the log and commits in one transaction.",
    )
    usage_maintenance_interval_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="Pause between usage-store maintenance passes (raw-row purge, rollup folding).",
    )
    bench_routes_enabled: bool = Field(
        default=False,
        description="Mount the benchmark floor route POST /v1/_bench/parse (unauthenticated; "
        "for `make bench` only, never in production).",
    )
    # --- secrets broker and audit log (docs/secrets.md) ---
    secrets_key_provider: Literal["file", "env"] = Field(
        default="file",
        description="Root-key source: `file` (root-keys.json in the data dir, made by `qm init`) "
        "or `env` (the variable named by secrets_root_key_env).",
    )
    secrets_root_key_env: str = Field(
        default="QM_SECRETS_ROOT_KEYS",
        description="Environment variable holding root keys as id:hex[,id:hex...] (env provider).",
    )
    secrets_lease_ttl_seconds: int = Field(
        default=900, ge=1, description="Default lease TTL of a secret read or credential."
    )
    secrets_lease_max_ttl_seconds: int = Field(
        default=86_400, ge=1, description="Longest a lease may live, renewals included."
    )
    secrets_max_leases_per_app: int = Field(
        default=200,
        ge=1,
        description="Live leases one app (or one principal) may hold; more are refused (429).",
    )
    secrets_max_value_bytes: int = Field(
        default=65_536, ge=1, description="Largest secret value accepted, in UTF-8 bytes."
    )
    secrets_reaper_interval_seconds: float = Field(
        default=5.0, gt=0, description="Pause between reaper passes over expired leases."
    )
    secrets_postgres_url: SecretStr | None = Field(
        default=None,
        description="Admin connection (postgresql://…) the dynamic PostgreSQL engine uses when "
        "an engine is configured without its own connection_url.",
    )
    secrets_identity_audience: str = Field(
        default="quartermaster-secrets", description="`aud` of workload identity tokens."
    )
    secrets_identity_issuer: str = Field(
        default="quartermaster", description="`iss` of workload identity tokens."
    )
    secrets_identity_ttl_seconds: int = Field(
        default=600, ge=1, description="Default lifetime of a workload identity token."
    )
    secrets_identity_max_ttl_seconds: int = Field(
        default=3600, ge=1, description="Longest lifetime a workload identity token may ask for."
    )
    audit_sink_url: str | None = Field(
        default=None,
        description="Where the audit log is shipped: file:///path/audit.jsonl or http(s)://… "
        "(a webhook receiving JSON batches). Unset: not shipped.",
    )
    audit_ship_interval_seconds: float = Field(
        default=2.0, gt=0, description="Pause between audit shipping passes when caught up."
    )
    audit_ship_batch: int = Field(
        default=500, ge=1, description="Most audit records shipped per sink write."
    )
    guardrails_enabled: bool = Field(
        default=True, description="Run the guardrail evaluator and notifier beside the API."
    )
    guardrails_interval_seconds: float = Field(
        default=15.0, gt=0, le=30, description="Pause between budget and anomaly evaluations."
    )
    anomalies_enabled: bool = Field(
        default=True, description="Run the cost-anomaly detector beside the API."
    )
    anomalies_interval_seconds: float = Field(
        default=15.0, gt=0, le=60, description="Pause between cost-anomaly scans."
    )
    anomalies_max_hours_per_pass: int = Field(
        default=48, ge=1, description="Most hours of one tenant a cost-anomaly scan scores."
    )
    late_usage_enabled: bool = Field(
        default=True,
        description="Alert when a finalized run's period receives usage (late_usage alerts).",
    )
    late_usage_interval_seconds: float = Field(
        default=300.0, gt=0, le=86400, description="Pause between late-usage checks."
    )
    rate_limit_backend: Literal["memory", "redis"] = Field(
        default="memory", description="Where rate-limit counters live: this process or Redis."
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", description="Redis for the redis rate-limit backend."
    )
    webhook_max_attempts: int = Field(
        default=6, ge=1, description="Delivery attempts per alert and webhook before dead-letter."
    )
    webhook_backoff_seconds: float = Field(
        default=2.0, gt=0, description="First retry delay of a webhook; doubles per attempt."
    )
    webhook_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Hard wall-clock deadline of one webhook delivery attempt, answer included.",
    )
    webhook_allow_private: bool = Field(
        default=False,
        description="Let webhooks reach loopback, private and link-local addresses.",
    )

    # An empty QM_DATA_DIR= (or data_dir = "") was Path(""), the current directory: `qm init`
    # put the keys and qm.db wherever it was run.
    @field_validator("data_dir", mode="before")
    @classmethod
    def _data_dir_is_named(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            raise PydanticCustomError(
                "data_dir",
                "is empty: unset it for the default (.qm), or name a directory (. for the "
                "current one)",
            )
        return value

    # With the other settings, not when the shipper is built: see audit_sink_problem.
    @field_validator("audit_sink_url")
    @classmethod
    def _audit_sink_url_is_usable(cls, url: str | None) -> str | None:
        problem = None if url is None else audit_sink_problem(url)
        if problem is not None:
            # The problem as context, not as the template: a brace in the URL is not a field.
            raise PydanticCustomError("audit_sink_url", "{problem}", {"problem": problem})
        return url

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlSettingsSource(settings_cls))

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'qm.db').resolve()}"

    @property
    def resolved_ingest_workers(self) -> int:
        if self.ingest_workers is not None:
            return self.ingest_workers
        return 1 if (os.cpu_count() or 1) >= 2 else 0

    @property
    def usage_store_path(self) -> Path:
        return self.data_dir / "usage.duckdb"


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]


def settings_problem(exc: ValidationError) -> str:
    """One line for settings that do not validate (the ValidationError of `Settings`), each
    named where its value came from: the environment variable (`QM_PORT='abc'`), the qm.toml
    key as the file writes it (`port = 70000`), or the name, for a value given in code (an
    option). A range error of qm.toml named QM_PORT, a variable nobody had set."""
    environment = {name.upper(): name for name in os.environ}
    toml = {key.lower(): (key, value) for key, value in _toml_values().items()}
    where: dict[str, list[str]] = {}
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"])
        value, problem = error["input"], error["msg"]
        variable = environment.get(f"QM_{name.upper()}")
        key, written = toml.get(name.lower(), (None, None))
        # Each source by its value, too: one given in code overrides both.
        if variable is not None and os.environ[variable] == value:
            source, said = "in the environment", f"{variable}={value!r}"
        elif key is not None and written == value:
            source, said = "in qm.toml", f"{key} = {_toml_text(value)}"
        else:
            source, said = "as given", f"{name}={value!r}"
        where.setdefault(source, []).append(f"{said}: {problem}")
    return "; ".join(
        f"invalid setting {source}: {'; '.join(problems)}" for source, problems in where.items()
    )


def _toml_values() -> dict[str, Any]:
    """qm.toml in the working directory, as read (empty when there is no such file; one that
    does not parse was refused before any value was validated)."""
    try:
        with Path("qm.toml").open("rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def generate_server_key(settings: Settings) -> Path:
    """Create the server's own key in the data dir once; never overwrite an existing one."""
    # Private: the databases in it hold every tenant's data and are created with the umask.
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = settings.data_dir / SERVER_KEY_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return path


def load_server_key(settings: Settings) -> bytes:
    """The server's key; there is no default, so a missing key is an error, not a weak fallback."""
    path = settings.data_dir / SERVER_KEY_FILE
    if not path.exists():
        raise ConfigurationError(
            f"no server key at {path}: run `qm init` (with QM_DATA_DIR={settings.data_dir}) "
            "for a new installation; restoring a backup, copy server.key from it instead (a "
            "new key cannot open what the database has sealed)"
        )
    return read_server_key(path)


def read_server_key(path: Path) -> bytes:
    """The key in an existing server key file; ConfigurationError naming the file and what is
    wrong with it (readable by others, not hexadecimal, too short)."""
    if path.stat().st_mode & 0o077:
        raise ConfigurationError(f"{path} is readable by other users: chmod 600 it")
    try:
        key = bytes.fromhex(path.read_text().strip())
    except (ValueError, UnicodeDecodeError):
        raise ConfigurationError(
            f"{path} does not hold a server key (64 hexadecimal digits)"
        ) from None
    if len(key) < 32:
        raise ConfigurationError(f"{path} holds a key shorter than 32 bytes")
    return key
