"""Settings, read from `QM_*` environment variables and an optional `qm.toml`.

Nothing here is created at import time: call `load_settings()` where settings are needed.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

SERVER_KEY_FILE = "server.key"


class ConfigurationError(RuntimeError):
    """The configuration is missing something or is unsafe; the message says what."""


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
    max_batch_events: int = Field(default=10_000, ge=1, description="Most events per request.")
    max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1, description="Largest request body.")
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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'qm.db').resolve()}"

    @property
    def usage_store_path(self) -> Path:
        return self.data_dir / "usage.duckdb"


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]


def generate_server_key(settings: Settings) -> Path:
    """Create the server's own key in the data dir once; never overwrite an existing one."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
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
            f"no server key at {path}: run `qm init` (with QM_DATA_DIR={settings.data_dir})"
        )
    if path.stat().st_mode & 0o077:
        raise ConfigurationError(f"{path} is readable by other users: chmod 600 it")
    key = bytes.fromhex(path.read_text().strip())
    if len(key) < 32:
        raise ConfigurationError(f"{path} holds a key shorter than 32 bytes")
    return key
