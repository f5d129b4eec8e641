"""The `qm` console script's own error handling: one line and exit status 1, no traceback."""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.main import get_command
from typer.testing import CliRunner

from quartermaster.cli.main import _register_groups, app
from tests.conftest import LiveServer, free_port
from tests.usage.store_holder import held_by_another_process

QM = [sys.executable, "-c", "from quartermaster.cli.main import main; main()"]


def _env(**extra: str) -> dict[str, str]:
    """The test process's environment without its QM_* settings (a PostgreSQL URL, say)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("QM_")}
    return {**clean, "COLUMNS": "200", **extra}


def test_a_server_that_cannot_be_reached_is_named_in_one_line() -> None:
    port = free_port()
    env = _env(QM_URL=f"http://127.0.0.1:{port}", QM_API_KEY="qm_x_y")
    result = subprocess.run(
        [*QM, "team", "list"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert f"error: cannot reach the server at http://127.0.0.1:{port}" in result.stderr
    assert "Is `qm serve` running there" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_server_that_takes_the_request_but_answers_late_is_not_called_unreachable() -> None:
    """A long request (a month's bill run for thousands of apps) outlasting the wait: the
    server is fine and may still be working, which the message must not deny."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # accepts connections, never answers
        port = listener.getsockname()[1]
        env = _env(QM_URL=f"http://127.0.0.1:{port}", QM_API_KEY="qm_x_y", QM_TIMEOUT="0.5")
        result = subprocess.run(
            [*QM, "team", "list"], env=env, capture_output=True, text=True, timeout=120
        )
    assert result.returncode == 1
    said = " ".join(result.stderr.split())
    assert f"error: the server at http://127.0.0.1:{port} did not answer within 0.5 s" in said
    assert "it may still be working on the request" in said
    assert "QM_TIMEOUT=SECONDS waits longer" in said
    assert "cannot reach" not in said

    env["QM_TIMEOUT"] = "soon"
    bad = subprocess.run([*QM, "team", "list"], env=env, capture_output=True, text=True)
    assert bad.returncode != 0
    assert "QM_TIMEOUT='soon': expected a number of seconds above 0" in " ".join(bad.stderr.split())


def test_a_second_server_on_one_data_dir_stops_at_once_naming_the_holder(tmp_path: Path) -> None:
    data_dir = tmp_path / "qm"
    env = _env(QM_DATA_DIR=str(data_dir))
    subprocess.run([*QM, "init"], env=env, check=True, capture_output=True, timeout=120)
    store = data_dir / "usage.duckdb"
    with held_by_another_process(store) as pid:
        result = subprocess.run(
            [*QM, "serve", "--port", str(free_port())],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 1
    assert f"error: the usage store {store} is in use by another process (process {pid})" in (
        " ".join(result.stderr.split())
    )
    assert "Traceback" not in result.stderr


def test_a_path_that_cannot_be_used_is_named_in_one_line(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    env = _env(QM_DATA_DIR=str(not_a_dir / "qm"))
    result = subprocess.run([*QM, "init"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert f"error: Not a directory: {not_a_dir / 'qm'}" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            {},
            "error: no server key at {data_dir}/server.key: run `qm init` (with "
            "QM_DATA_DIR={data_dir}) for a new installation; restoring a backup, copy "
            "server.key from it instead",
        ),
        (
            {"QM_PORT": "abc", "QM_LOG_LEVEL": "loud"},
            "error: invalid setting in the environment: QM_PORT='abc': Input should be a "
            "valid integer, unable to parse string as an integer; QM_LOG_LEVEL='loud': Input "
            "should be 'debug', 'info', 'warning' or 'error'",
        ),
        (
            {"QM_DATABASE_URL": "foo://x"},
            "error: cannot use QM_DATABASE_URL: Can't load plugin: sqlalchemy.dialects:foo",
        ),
        (
            {"QM_DATABASE_URL": "postgresql+psycopg://qm@127.0.0.1:{port}/qm"},
            "error: cannot open the database (QM_DATABASE_URL, by default qm.db in the data "
            "dir): connection failed: connection "
            'to server at "127.0.0.1", port {port} failed: Connection refused',
        ),
        (
            {"QM_DATABASE_URL": "postgres://qm@127.0.0.1/qm"},
            "error: cannot use QM_DATABASE_URL: Can't load plugin: sqlalchemy.dialects:postgres "
            "(for PostgreSQL write postgresql+psycopg://…)",
        ),
        (
            {"QM_DATABASE_URL": "postgresql+psycopg2://qm@127.0.0.1/qm"},
            "error: cannot use QM_DATABASE_URL: its driver 'psycopg2' is not installed; for "
            "PostgreSQL write postgresql+psycopg://… (psycopg 3, installed with Quartermaster)",
        ),
        (
            {"QM_DATABASE_URL": "mysql://qm@127.0.0.1/qm"},
            "error: cannot use QM_DATABASE_URL: its driver 'MySQLdb' is not installed",
        ),
        (
            {"QM_DATABASE_URL": "postgresql+psycopg://qm:s3cret@127.0.0.1:notaport/qm"},
            "error: QM_DATABASE_URL is not a usable database URL: invalid literal for int() "
            "with base 10: 'notaport'",
        ),
        (
            {"QM_DATABASE_URL": "postgresql+psycopg://qm:s3cret@127.0.0.1:{port}/qm?sslmod=x"},
            'error: cannot use QM_DATABASE_URL: invalid connection option "sslmod"',
        ),
        (
            # taken silently: only `qm serve` built the sink, and stopped in tracebacks
            {"QM_AUDIT_SINK_URL": "gopher://x"},
            "error: invalid setting in the environment: QM_AUDIT_SINK_URL='gopher://x': "
            "has the scheme 'gopher', which the audit log is not shipped to: use "
            "file:///path/audit.jsonl or an http(s):// webhook",
        ),
    ],
    ids=[
        "not initialized",
        "unparsable settings",
        "unknown database",
        "database unreachable",
        "postgres scheme",
        "psycopg2 not installed",
        "mysql driver not installed",
        "port not a number",
        "misspelt option",
        "audit sink scheme",
    ],
)
def test_a_setup_that_cannot_work_is_named_in_one_line(
    tmp_path: Path, settings: dict[str, str], expected: str
) -> None:
    data_dir, port = tmp_path / "qm", str(free_port())
    filled = {name: value.replace("{port}", port) for name, value in settings.items()}
    env = _env(QM_DATA_DIR=str(data_dir), **filled)
    # `qm init` reaches the database; `qm tenant list` first needs the data dir's key.
    command = "init" if "QM_DATABASE_URL" in settings else "tenant"
    result = subprocess.run(
        [*QM, command, *(["list"] if command == "tenant" else [])],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    wanted = expected.replace("{data_dir}", str(data_dir)).replace("{port}", port)
    assert wanted in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr
    assert "s3cret" not in result.stderr


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        (
            "INSERT INTO alembic_version VALUES ('9999_future')",
            "error: the database (QM_DATABASE_URL, by default qm.db in the data dir) was "
            "migrated by a newer Quartermaster "
            "(Can't locate revision identified by '9999_future'): run that version, or restore "
            "the backup taken before it",
        ),
        (
            "CREATE TABLE tenants (x INTEGER)",
            "error: the database (QM_DATABASE_URL, by default qm.db in the data dir) already "
            "holds a table of the name of one of Quartermaster's, which Quartermaster did not "
            "create (table tenants already exists): point QM_DATABASE_URL at a database without "
            "such tables (an empty one)",
        ),
    ],
    ids=["newer schema", "another application's tables"],
)
def test_a_database_this_version_cannot_migrate_is_named_in_one_line(
    tmp_path: Path, statement: str, expected: str
) -> None:
    database = tmp_path / "other.db"
    with sqlite3.connect(database) as connection:
        if "alembic_version" in statement:
            connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32))")
        connection.execute(statement)
    env = _env(QM_DATA_DIR=str(tmp_path / "qm"), QM_DATABASE_URL=f"sqlite:///{database}")
    result = subprocess.run([*QM, "init"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert expected in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr


def test_a_qm_toml_that_is_not_toml_is_named_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "qm.toml").write_text("port = 8080\nmax_batch_events = \n")
    env = _env(QM_DATA_DIR=str(tmp_path / "qm"))
    result = subprocess.run(
        [*QM, "tenant", "list"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert "error: qm.toml is not valid TOML: Invalid value (at line 2, column 20)" in (
        " ".join(result.stderr.split())
    ), result.stderr
    assert "Traceback" not in result.stderr


def test_a_qm_toml_value_of_another_type_is_named_in_one_line(tmp_path: Path) -> None:
    """TOML is typed: `port = true` made `qm serve` bind port 1 (pydantic's lax mode)."""
    (tmp_path / "qm.toml").write_text('port = true\nauth_cache_seconds = "5"\n')
    env = _env(QM_DATA_DIR=str(tmp_path / "qm"))
    for command in (["serve"], ["tenant", "list"]):
        result = subprocess.run(
            [*QM, *command], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 1
        assert " ".join(result.stderr.split()) == (
            "error: invalid setting in qm.toml: port = true: expected an integer, not a "
            'boolean; auth_cache_seconds = "5": expected a number (an integer or a float), '
            "not a string"
        ), result.stderr


def test_serve_refuses_an_audit_sink_url_in_one_line_before_starting(tmp_path: Path) -> None:
    """It was ~150 lines: the sink's error in uvicorn's startup, then the background
    services' tracebacks, exit status 3."""
    data_dir = tmp_path / "qm"
    env = _env(QM_DATA_DIR=str(data_dir))
    subprocess.run([*QM, "init"], env=env, check=True, capture_output=True, timeout=120)
    result = subprocess.run(
        [*QM, "serve", "--port", str(free_port())],
        env={**env, "QM_AUDIT_SINK_URL": "/tmp/audit.jsonl"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert " ".join(result.stderr.split()) == (
        "error: invalid setting in the environment: QM_AUDIT_SINK_URL='/tmp/audit.jsonl': "
        "is not a URL (file:///tmp/audit.jsonl?): use file:///path/audit.jsonl or an http(s):// "
        "webhook"
    )


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (
            {"QM_URL": "127.0.0.1:abc"},
            "error: QM_URL='127.0.0.1:abc' is not a valid URL (Invalid port: 'abc'): write it "
            "as http://HOST:PORT",
        ),
        (
            {"--url": "http://[::1"},
            "error: --url='http://[::1' is not a valid URL (Invalid port: ':1'): write it as "
            "http://HOST:PORT (an IPv6 address in brackets: http://[::1]:8080)",
        ),
        (
            {"QM_URL": "ftp://qm.example"},
            "error: QM_URL='ftp://qm.example' has the scheme 'ftp'; the server speaks http or "
            "https: write it as http://HOST:PORT",
        ),
        (
            {"QM_URL": "http://"},
            "error: QM_URL='http://' names no host: write it as http://HOST:PORT",
        ),
        (
            {"QM_URL": "127.0.0.1:99999"},
            "error: QM_URL='127.0.0.1:99999' names the port 99999, above 65535: write it as "
            "http://HOST:PORT",
        ),
        (
            {"QM_URL": "http://127.0.0.1:8000?x=1"},
            "error: QM_URL='http://127.0.0.1:8000?x=1' has a query or a fragment, which a "
            "server URL cannot have: write it as http://HOST:PORT",
        ),
        (
            {"--url": "http://127.0.0.1:8000/v1/"},
            "error: --url='http://127.0.0.1:8000/v1/' ends with /v1, which the CLI adds to each "
            "route itself: write it as http://HOST:PORT",
        ),
    ],
    ids=["port not a number", "unclosed bracket", "scheme", "no host", "port", "query", "/v1"],
)
def test_a_server_url_that_cannot_be_used_is_named_in_one_line(
    given: dict[str, str], expected: str
) -> None:
    """httpx's InvalidURL was a traceback from every command that talks to a server."""
    url = given.get("--url")
    env = _env(QM_API_KEY="qm_x_y", **{k: v for k, v in given.items() if k.startswith("QM_")})
    result = subprocess.run(
        [*QM, "team", "list", *(["--url", url] if url else [])],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert " ".join(result.stderr.split()) == expected, result.stderr


def test_a_server_url_without_a_scheme_means_http(live_server: LiveServer) -> None:
    """The help writes the default as `127.0.0.1:8080`, so users write QM_URL that way."""
    bare = live_server.url.removeprefix("http://")
    env = _env(QM_URL=bare, QM_API_KEY="qm_x_y")
    result = subprocess.run(
        [*QM, "team", "list"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert "error 401" in result.stderr, result.stderr


def test_every_command_has_a_one_line_summary() -> None:
    """Typer prints the first paragraph of a command's help in its parent's command list,
    line breaks included: a summary wrapped in the docstring showed there as broken lines."""
    if not any(group.name == "bill" for group in app.registered_groups):
        _register_groups()
    root = get_command(app)
    wrapped: list[str] = []

    def walk(command: Any, path: str) -> None:
        summary = (command.help or "").strip().split("\n\n")[0]
        if not summary or "\n" in summary:
            wrapped.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(root, "qm")
    assert wrapped == []


def test_version_prints_the_installed_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output == f"qm {metadata.version('quartermaster')}\n"
    # Before any command, as eager: a command after it is not run.
    assert CliRunner().invoke(app, ["--version", "init"]).output == result.output


def _serve_once(tmp_path: Path, *options: str, workers: str = "0") -> str:
    """Start `qm serve` with `options`, ask /healthz once, stop it (SIGTERM, as service
    managers do); its stderr."""
    data_dir = tmp_path / "qm"
    env = _env(QM_DATA_DIR=str(data_dir), QM_INGEST_WORKERS=workers)
    subprocess.run([*QM, "init"], env=env, check=True, capture_output=True, timeout=120)
    port = free_port()
    with subprocess.Popen(
        [*QM, "serve", "--port", str(port), *options],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as server:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).is_success:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        server.terminate()
        _, stderr = server.communicate(timeout=60)
    assert f"qm serve: http://127.0.0.1:{port} (data dir {data_dir}, database sqlite)" in stderr
    assert server.returncode == 0, stderr
    return stderr


def test_serve_stopped_by_sigterm_closes_its_databases(tmp_path: Path) -> None:
    """A service manager's stop must leave the databases whole in their files: the SQLite and
    DuckDB write-ahead logs merged, so that a copy of qm.db alone is a complete backup."""
    stderr = _serve_once(tmp_path, workers="1")
    assert stderr.rstrip().endswith("qm serve: stopped")
    data_dir = tmp_path / "qm"
    assert (data_dir / "qm.db").exists()
    assert not (data_dir / "qm.db-wal").exists()
    assert not (data_dir / "usage.duckdb.wal").exists()


STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def test_serve_logs_utc_stamped_lines_and_each_request_when_asked(tmp_path: Path) -> None:
    stderr = _serve_once(tmp_path, "--access-log")
    assert re.search(
        rf"^{STAMP} access 127\.0\.0\.1:\d+ \"GET /healthz HTTP/1\.1\" 200", stderr, re.M
    )
    # The services' own lines, at the default level (info), with their time and source.
    assert re.search(
        rf"^{STAMP} INFO quartermaster\.background: background service pipeline started$",
        stderr,
        re.M,
    )
    assert "Uvicorn running" not in stderr  # `qm serve` says where it listens itself


def test_serve_at_warning_without_access_log_writes_only_where_it_listens(tmp_path: Path) -> None:
    stderr = _serve_once(tmp_path, "--log-level", "warning")
    lines = stderr.strip().splitlines()
    # said at once, so a slow start does not look hung; then where it listens
    assert lines[0] == "qm serve: starting (database schema, keys, usage store, pipeline) ..."
    assert lines[1].startswith("qm serve: http://127.0.0.1:")
    assert " access " not in stderr
    assert " INFO " not in stderr


def test_serve_on_port_0_says_the_port_it_listens_on(tmp_path: Path) -> None:
    """It said `http://127.0.0.1:0`, which no client can use."""
    data_dir = tmp_path / "qm"
    env = _env(QM_DATA_DIR=str(data_dir), QM_INGEST_WORKERS="0")
    subprocess.run([*QM, "init"], env=env, check=True, capture_output=True, timeout=120)
    with subprocess.Popen(
        [*QM, "serve", "--port", "0", "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as server:
        assert server.stderr is not None
        assert server.stderr.readline().startswith("qm serve: starting")
        ready = server.stderr.readline()
        found = re.match(r"qm serve: http://127\.0\.0\.1:(\d+) \(data dir ", ready)
        assert found, ready
        port = int(found[1])
        assert port != 0
        # Said once it listens: the first request after the line is answered.
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).is_success
        server.terminate()
        _, rest = server.communicate(timeout=60)
    assert server.returncode == 0, rest


@pytest.mark.parametrize("cause", ["port in use", "host that does not resolve"])
def test_serve_that_cannot_listen_says_so_alone_before_starting(cause: str) -> None:
    """The ready line came first, then uvicorn's error, once the services had started."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        host = "127.0.0.1" if cause == "port in use" else "qm-test.invalid"
        result = subprocess.run(
            [*QM, "serve", "--host", host, "--port", str(port)],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
    said = " ".join(result.stderr.split())
    where = f"error: cannot listen on {host}:{port} (--host/--port, QM_HOST/QM_PORT): "
    assert result.returncode == 1
    if cause == "port in use":
        assert said == where + "address already in use"
    else:
        assert said.startswith(where + "the host 'qm-test.invalid' does not resolve ("), said


def test_serve_whose_port_another_server_listened_on_first_says_so(tmp_path: Path) -> None:
    """Two servers may bind one port (SO_REUSEADDR); the first to listen has it. Under uvloop
    the second's listening failed without a word, and it said it was ready."""
    data_dir = tmp_path / "qm"
    env = _env(QM_DATA_DIR=str(data_dir), QM_INGEST_WORKERS="0")
    subprocess.run([*QM, "init"], env=env, check=True, capture_output=True, timeout=120)
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", 0))
        port = other.getsockname()[1]
        with subprocess.Popen(
            [*QM, "serve", "--port", str(port), "--log-level", "warning"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        ) as server:
            assert server.stderr is not None
            # bound by then: it binds before it says it starts
            assert server.stderr.readline().startswith("qm serve: starting")
            other.listen()
            _, rest = server.communicate(timeout=120)
    assert server.returncode == 1
    assert "qm serve: http://" not in rest
    assert " ".join(rest.split()) == (
        f"error: cannot listen on 127.0.0.1:{port} (--host/--port, QM_HOST/QM_PORT): address "
        "already in use qm serve: stopped"
    )


def test_init_says_which_keys_it_created_and_that_a_second_run_kept_them(tmp_path: Path) -> None:
    data_dir = tmp_path / "qm"
    env = _env(QM_DATA_DIR=str(data_dir))

    def init(*options: str) -> str:
        result = subprocess.run(
            [*QM, "init", *options], env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        return " ".join(result.stdout.split())

    first = init()
    assert "created the server key, the root keyring and the identity key" in first
    assert "created the sqlite database's schema" in first
    server_key = (data_dir / "server.key").read_bytes()

    again = init()
    assert "already initialized: its keys are kept as they were" in again
    assert "the sqlite database is at the latest schema" in again
    assert "created" not in again
    assert (data_dir / "server.key").read_bytes() == server_key

    # A lost identity key: the new one is not the database's, so it is refused until the
    # user says it replaces the lost one.
    (data_dir / "identity-ed25519.pem").unlink()
    refused = subprocess.run([*QM, "init"], env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1
    said = " ".join(refused.stderr.split())
    assert "this data dir lacks the identity key (identity-ed25519.pem)" in said
    assert "copy identity-ed25519.pem from the backup" in said
    assert "`qm init --replace-identity-key` makes a new one the database's" in said
    assert not (data_dir / "identity-ed25519.pem").exists()  # nothing written
    repaired = init("--replace-identity-key")
    assert "identity-ed25519.pem is now the database's identity key" in repaired
    assert "kept as they were" in init()

    # a database a release behind: init says it migrated it (it had said "at the latest")
    with sqlite3.connect(data_dir / "qm.db") as connection:
        connection.execute("DROP TABLE key_checks")
        connection.execute("DROP TABLE event_log_identity")
        connection.execute(
            "UPDATE alembic_version SET version_num = '0013' WHERE version_num = '0028'"
        )
    upgraded = init()
    assert "kept as they were; migrated the sqlite database to the latest schema" in upgraded


def test_init_makes_the_data_dir_private_and_warns_of_one_that_is_not(tmp_path: Path) -> None:
    data_dir = tmp_path / "qm"
    env = _env(QM_DATA_DIR=str(data_dir))
    made = subprocess.run([*QM, "init"], env=env, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    assert data_dir.stat().st_mode & 0o777 == 0o700
    assert "warning" not in made.stderr
    data_dir.chmod(0o755)
    again = subprocess.run([*QM, "init"], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0
    assert f"warning: {data_dir} is open to other users (mode 755)" in " ".join(
        again.stderr.split()
    )
    assert f"chmod 700 {data_dir}" in " ".join(again.stderr.split())


def test_serve_refuses_an_unknown_log_level_naming_the_ones_it_takes() -> None:
    result = CliRunner().invoke(app, ["serve", "--log-level", "loud"], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "'loud' is not one of debug, info, warning, error" in result.output


def test_serve_refuses_a_port_out_of_range() -> None:
    result = subprocess.run(
        [*QM, "serve", "--port", "99999"], env=_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "Invalid value for '--port'" in result.stderr
    assert "65535" in result.stderr  # worded by Click: "<= 65535" or "0<=x<=65535"


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (
            {"QM_SECRETS_KEY_PROVIDER": "env"},
            "error: QM_SECRETS_ROOT_KEYS is not set: it must hold id:hex[,id:hex...]",
        ),
        ({"chmod": "644"}, "root-keys.json is readable by other users: chmod 600 it"),
    ],
    ids=["env provider without keys", "keyring open to others"],
)
def test_serve_with_unusable_secrets_keys_stops_in_one_line(
    tmp_path: Path, setup: dict[str, str], expected: str
) -> None:
    data_dir = tmp_path / "qm"
    env = _env(QM_DATA_DIR=str(data_dir))
    subprocess.run([*QM, "init"], env=env, check=True, capture_output=True, timeout=120)
    if "chmod" in setup:
        (data_dir / "root-keys.json").chmod(int(setup["chmod"], 8))
    settings = {name: value for name, value in setup.items() if name.startswith("QM_")}
    result = subprocess.run(
        [*QM, "serve", "--port", str(free_port())],
        env={**env, **settings},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert expected in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr
    assert "background service" not in result.stderr  # refused before anything started


def test_serve_without_qm_init_says_so_alone_before_starting(tmp_path: Path) -> None:
    """It printed `qm serve: starting (…) ...`, then the missing key."""
    data_dir = tmp_path / "qm"
    result = subprocess.run(
        [*QM, "serve", "--port", str(free_port())],
        env=_env(QM_DATA_DIR=str(data_dir)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    said = " ".join(result.stderr.split())
    assert said.startswith(f"error: no server key at {data_dir}/server.key: run `qm init`"), said
    assert "starting" not in said
    assert "stopped" not in said


@pytest.mark.parametrize(
    ("toml", "settings", "expected"),
    [
        (
            "",
            {"QM_DATA_DIR": ""},
            "error: invalid setting in the environment: QM_DATA_DIR='': is empty: unset it for "
            "the default (.qm), or name a directory (. for the current one)",
        ),
        (
            'data_dir = ""\n',
            {},
            'error: invalid setting in qm.toml: data_dir = "": is empty: unset it for the '
            "default (.qm), or name a directory (. for the current one)",
        ),
        (
            "port = 70000\n",
            {},
            "error: invalid setting in qm.toml: port = 70000: Input should be less than or "
            "equal to 65535",
        ),
    ],
    ids=["empty QM_DATA_DIR", "empty data_dir", "qm.toml port out of range"],
)
def test_a_setting_is_refused_naming_where_it_was_set(
    tmp_path: Path, toml: str, settings: dict[str, str], expected: str
) -> None:
    """`QM_DATA_DIR= qm init` put the keys and qm.db in the working directory; a range error
    of qm.toml named QM_PORT, which nobody had set."""
    if toml:
        (tmp_path / "qm.toml").write_text(toml)
    result = subprocess.run(
        [*QM, "init"], env=_env(**settings), cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert " ".join(result.stderr.split()) == expected, result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == (["qm.toml"] if toml else [])


def test_serve_help_names_where_host_and_port_come_from() -> None:
    shown = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).output
    words = " ".join(shown.replace("│", " ").split())
    assert "Bind address (default: QM_HOST or 127.0.0.1)." in words
    assert "(default: QM_PORT or 8080)." in words
