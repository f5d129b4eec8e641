"""Settings: qm.toml values keep their TOML types; the audit sink URL is checked with them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from quartermaster.config import ConfigurationError, Settings, load_settings, settings_problem


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory for qm.toml, with no QM_* variable of the test run's set."""
    for name in [name for name in os.environ if name.startswith("QM_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _load(workdir: Path, toml: str) -> Settings:
    (workdir / "qm.toml").write_text(toml)
    return load_settings()


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        # pydantic's lax mode made these port 1, 1 event per batch and no auth cache
        ("port = true", "port = true: expected an integer, not a boolean"),
        ("max_batch_events = true", "max_batch_events = true: expected an integer, not a boolean"),
        (
            "auth_cache_seconds = false",
            "auth_cache_seconds = false: expected a number (an integer or a float), not a boolean",
        ),
        ('port = "9000"', 'port = "9000": expected an integer, not a string'),
        ("port = 9000.0", "port = 9000.0: expected an integer, not a float"),
        ("ingest_workers = 1.0", "ingest_workers = 1.0: expected an integer, not a float"),
        (
            'auth_cache_seconds = "5"',
            'auth_cache_seconds = "5": expected a number (an integer or a float), not a string',
        ),
        ("access_log = 1", "access_log = 1: expected a boolean (true or false), not an integer"),
        (
            'pipeline_enabled = "false"',
            'pipeline_enabled = "false": expected a boolean (true or false), not a string',
        ),
        ("data_dir = 5", "data_dir = 5: expected a string (in quotes), not an integer"),
        ("log_level = 1", "log_level = 1: expected a string (in quotes), not an integer"),
        ("port = [8080]", "port = […]: expected an integer, not an array"),
        ("PORT = true", "port = true: expected an integer, not a boolean"),  # keys ignore case
    ],
)
def test_a_qm_toml_value_of_another_type_is_refused_naming_it(
    workdir: Path, toml: str, expected: str
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        _load(workdir, toml)
    assert str(refused.value) == f"invalid setting in qm.toml: {expected}"


def test_every_wrongly_typed_qm_toml_value_is_named_at_once(workdir: Path) -> None:
    with pytest.raises(ConfigurationError) as refused:
        _load(workdir, 'port = true\naccess_log = 0\nhost = "0.0.0.0"\n')
    assert str(refused.value) == (
        "invalid setting in qm.toml: port = true: expected an integer, not a boolean; "
        "access_log = 0: expected a boolean (true or false), not an integer"
    )


def test_a_wrongly_typed_qm_toml_value_is_refused_also_where_the_environment_overrides_it(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QM_PORT", "9000")
    with pytest.raises(ConfigurationError, match="port = true: expected an integer"):
        _load(workdir, "port = true")


def test_qm_toml_values_of_their_settings_types_are_read(workdir: Path) -> None:
    settings = _load(
        workdir,
        'data_dir = "state"\nport = 9000\nauth_cache_seconds = 5\n'
        "pipeline_interval_seconds = 0.25\n"
        'access_log = true\nlog_level = "warning"\nsecrets_postgres_url = "postgresql://x/y"\n'
        "unknown_key = true\n",
    )
    assert settings.data_dir == Path("state")
    assert settings.port == 9000
    assert settings.auth_cache_seconds == 5.0  # an integer is a number of seconds
    assert settings.pipeline_interval_seconds == 0.25
    assert settings.access_log is True
    assert settings.log_level == "warning"


def test_the_environment_still_parses_its_text(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Environment values are all strings: "9000" and "1" are how they are written.
    monkeypatch.setenv("QM_PORT", "9000")
    monkeypatch.setenv("QM_ACCESS_LOG", "1")
    monkeypatch.setenv("QM_AUTH_CACHE_SECONDS", "0")
    settings = load_settings()
    assert (settings.port, settings.access_log, settings.auth_cache_seconds) == (9000, True, 0.0)
    monkeypatch.setenv("QM_PORT", "true")
    with pytest.raises(ValidationError):
        load_settings()


USE = "use file:///path/audit.jsonl or an http(s):// webhook"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("gopher://x", f"has the scheme 'gopher', which the audit log is not shipped to: {USE}"),
        ("/tmp/audit.jsonl", f"is not a URL (file:///tmp/audit.jsonl?): {USE}"),
        ("audit.jsonl", f"is not a URL: {USE}"),
        (
            "file://audit.jsonl",
            f"names the host 'audit.jsonl' (a file URL has three slashes): {USE}",
        ),
        ("file:audit.jsonl", f"names no absolute path: {USE}"),
        ("http://", f"names no host: {USE}"),
        (
            "http://sink:abc/audit",
            f"is not a valid URL (Port could not be cast to integer value as 'abc'): {USE}",
        ),
        ("", f"is empty: unset it for no shipping, or {USE}"),
    ],
)
def test_an_audit_sink_url_that_cannot_be_shipped_to_is_refused_with_the_settings(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, url: str, problem: str
) -> None:
    monkeypatch.setenv("QM_AUDIT_SINK_URL", url)
    with pytest.raises(ValidationError) as refused:
        load_settings()
    (error,) = refused.value.errors()
    assert error["loc"] == ("audit_sink_url",)
    assert error["msg"] == problem


@pytest.mark.parametrize(
    "url",
    [
        "file:///var/log/qm/audit.jsonl",
        "file://localhost/var/log/qm/audit.jsonl",
        "http://127.0.0.1:9000/audit",
        "https://audit.example/ingest?token={abc}",
    ],
)
def test_an_audit_sink_url_of_the_accepted_forms_is_kept(workdir: Path, url: str) -> None:
    assert load_settings(audit_sink_url=url).audit_sink_url == url


EMPTY_DATA_DIR = (
    "is empty: unset it for the default (.qm), or name a directory (. for the current one)"
)


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_data_dir_is_refused_not_read_as_the_current_directory(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """`QM_DATA_DIR= qm init` put the keys and qm.db in the directory it was run in."""
    monkeypatch.setenv("QM_DATA_DIR", value)
    with pytest.raises(ValidationError) as refused:
        load_settings()
    assert settings_problem(refused.value) == (
        f"invalid setting in the environment: QM_DATA_DIR={value!r}: {EMPTY_DATA_DIR}"
    )
    monkeypatch.delenv("QM_DATA_DIR")
    with pytest.raises(ValidationError) as refused:
        _load(workdir, f'data_dir = "{value}"')
    assert settings_problem(refused.value) == (
        f'invalid setting in qm.toml: data_dir = "{value}": {EMPTY_DATA_DIR}'
    )


def test_a_data_dir_named_is_kept(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QM_DATA_DIR", ".")
    assert load_settings().data_dir == Path(".")
    assert load_settings(data_dir=Path("/srv/qm")).data_dir == Path("/srv/qm")


def test_a_setting_out_of_range_is_named_where_it_was_set(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A range error of qm.toml named QM_PORT, which nobody had set."""
    above = "Input should be less than or equal to 65535"
    with pytest.raises(ValidationError) as refused:
        _load(workdir, "PORT = 70000\n")
    assert settings_problem(refused.value) == f"invalid setting in qm.toml: PORT = 70000: {above}"
    # The environment overrides the file: its value is the one refused.
    monkeypatch.setenv("QM_PORT", "70001")
    with pytest.raises(ValidationError) as refused:
        load_settings()
    assert settings_problem(refused.value) == (
        f"invalid setting in the environment: QM_PORT='70001': {above}"
    )
    # Each source with its own.
    (workdir / "qm.toml").write_text('port = 70000\nlog_level = "loud"\n')
    with pytest.raises(ValidationError) as refused:
        load_settings()
    assert settings_problem(refused.value) == (
        f"invalid setting in the environment: QM_PORT='70001': {above}; invalid setting in "
        "qm.toml: log_level = \"loud\": Input should be 'debug', 'info', 'warning' or 'error'"
    )
    # A value given in code, over both.
    with pytest.raises(ValidationError) as refused:
        load_settings(port=-1)
    assert settings_problem(refused.value).startswith(
        "invalid setting as given: port=-1: Input should be greater than or equal to 0; "
    )
