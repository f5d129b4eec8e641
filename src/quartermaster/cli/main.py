"""`qm`: local administration (init, serve, tenants) and API commands for everything else."""

from __future__ import annotations

import importlib
import signal
import tomllib
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import httpx
import typer
from pydantic import TypeAdapter, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from quartermaster.cli.client import (
    ApiKeyOption,
    UrlOption,
    err,
    fail,
    out,
    plain,
    request_timeout,
)
from quartermaster.cli.help_text import reflow_command_help
from quartermaster.cli.listen import bind_address, close_all, listen, run_server, url_host
from quartermaster.config import (
    SERVER_KEY_FILE,
    LogLevel,
    Settings,
    generate_server_key,
    load_server_key,
    load_settings,
)
from quartermaster.errors import QMError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from quartermaster.api.app import BackgroundStarter

app = typer.Typer(
    name="qm",
    help="Quartermaster: meter, attribute, price and govern micro-apps.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
tenant_app = typer.Typer(
    help="Tenants (local administration of the database).", no_args_is_help=True
)
app.add_typer(tenant_app, name="tenant")


def _installed_version() -> str:
    """The installed distribution's version (pyproject.toml's, as pip installed it)."""
    try:
        return metadata.version("quartermaster")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _print_version(given: bool) -> None:
    if given:
        out().print(f"qm {_installed_version()}", markup=False)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            is_eager=True,
            callback=_print_version,
            help="Print qm's version and exit.",
        ),
    ] = False,
) -> None:
    """Quartermaster: meter, attribute, price and govern micro-apps."""


# Feature command groups: (module, attribute, name). Each module exposes a Typer app.
COMMAND_GROUPS: tuple[tuple[str, str, str], ...] = (
    ("quartermaster.cli.tenancy", "team_app", "team"),
    ("quartermaster.cli.tenancy", "cost_center_app", "cost-center"),
    ("quartermaster.cli.tenancy", "principal_app", "principal"),
    ("quartermaster.cli.tenancy", "key_app", "key"),
    ("quartermaster.cli.apps", "app_app", "app"),
    ("quartermaster.cli.apps", "resource_app", "resource"),
    # Also adds validate/publish/search/versions/... to `qm app` when imported.
    ("quartermaster.cli.catalog_publish", "policy_app", "policy"),
    ("quartermaster.cli.catalog_publish", "approvals_app", "approvals"),
    ("quartermaster.cli.pricing", "pricebook_app", "pricebook"),
    ("quartermaster.cli.usage", "meter_app", "meter"),
    ("quartermaster.cli.usage", "environment_app", "environment"),
    ("quartermaster.cli.usage", "usage_app", "usage"),
    ("quartermaster.cli.usage", "pipeline_app", "pipeline"),
    ("quartermaster.cli.events", "app", "events"),
    ("quartermaster.cli.billing", "bill_app", "bill"),
    ("quartermaster.cli.secrets", "secret_app", "secret"),
    ("quartermaster.cli.secrets", "lease_app", "lease"),
    ("quartermaster.cli.secrets", "audit_app", "audit"),
    ("quartermaster.cli.guardrails", "budget_app", "budget"),
    ("quartermaster.cli.guardrails", "quota_app", "quota"),
    ("quartermaster.cli.guardrails", "alerts_app", "alerts"),
    ("quartermaster.cli.guardrails", "decide_app", "decide"),
)
# Feature top-level commands: (module, function, name).
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("quartermaster.cli.billing", "explain", "explain"),
    ("quartermaster.cli.secrets", "scan", "scan"),
    ("quartermaster.cli.events", "reconciliation", "reconciliation"),
)


DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory (default: QM_DATA_DIR or ./.qm).")
]


def _settings(data_dir: Path | None) -> Settings:
    return load_settings(data_dir=data_dir) if data_dir else load_settings()


@app.command()
def init(
    data_dir: DataDirOption = None,
    replace_identity_key: Annotated[
        bool,
        typer.Option(
            "--replace-identity-key",
            help="Make this data dir's identity key the database's (when the one the database "
            "recorded is lost; workload tokens issued under it stop verifying).",
        ),
    ] = False,
) -> None:
    """Create the data dir, generate the server, root and identity keys, apply migrations."""
    from sqlalchemy.orm import sessionmaker

    from quartermaster.cli.init_keys import (
        copy_keys_refusal,
        key_files,
        key_problems,
        missing_recorded_keys,
        present,
        refusal,
    )
    from quartermaster.secrets.identity import generate_identity_key, identity_key_path
    from quartermaster.secrets.keys import generate_root_keyring
    from quartermaster.storage import create_db_engine, upgrade_database
    from quartermaster.storage.key_checks import recorded_key
    from quartermaster.storage.migrate import applied_revisions

    settings = _settings(data_dir)
    files = key_files(settings)
    # Every key that is there but cannot be used is named before anything is written: new
    # key files beside a bad one (or over it) would lose what it sealed or signed.
    problems = key_problems(settings, files)
    if problems:
        fail(refusal(problems))
    # A second `qm init` must say that it kept the keys: "initialized" again reads as if
    # they had been replaced, which would orphan every secret sealed under them.
    kept = [key.name for key in files if present(key.path)]
    # Private: the databases in it hold every tenant's data and are created with the umask.
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    engine = create_db_engine(settings.resolved_database_url)
    try:
        before = applied_revisions(engine)
        upgrade_database(engine)
        migrated = applied_revisions(engine) != before
        dialect = engine.dialect.name
        # A restored database (or one another server created) already has its keys: new
        # key files would be refused below, and left in the data dir to be overwritten.
        session_factory = sessionmaker(engine)
        missing = missing_recorded_keys(
            files,
            lambda kind: recorded_key(kind, session_factory=session_factory) is not None,
            replace_identity_key=replace_identity_key,
        )
        if missing:
            fail(copy_keys_refusal(missing))
        key_path = generate_server_key(settings)
        if settings.secrets_key_provider != "env":
            generate_root_keyring(settings)
        generate_identity_key(settings)
        # A data dir whose keys are not the ones the database's secrets are sealed with (a
        # second server's fresh `qm init` on a shared database) is said now, not as 500s.
        try:
            _check_keys_match_database(
                settings, session_factory, replace_identity_key=replace_identity_key
            )
        except BaseException:
            # Another `qm init` on the same new database recorded its keys first: the ones
            # made here are no one's, and left behind they are refused at every start.
            for key in files:
                if key.name not in kept:
                    key.path.unlink(missing_ok=True)
            raise
    finally:
        engine.dispose()
    schema = (
        f"created the {dialect} database's schema"
        if not before
        else f"migrated the {dialect} database to the latest schema"
        if migrated
        else f"the {dialect} database is at the latest schema"
    )
    where = escape(str(settings.data_dir))
    mode = settings.data_dir.stat().st_mode & 0o777
    if mode & 0o077:
        err().print(
            f"[yellow]warning:[/] {where} is open to other users (mode {mode:o}); its databases "
            f"hold every tenant's data: chmod 700 {where}"
        )
    if replace_identity_key:
        schema += (
            f"; {escape(str(identity_key_path(settings)))} is now the database's identity key "
            "(workload tokens issued under the one before no longer verify)"
        )
    if len(kept) == len(files):
        out().print(f"{where} was already initialized: its keys are kept as they were; {schema}")
        return
    created = [key.name for key in files if key.name not in kept]
    out().print(
        f"[green]initialized[/] {where}: created {_the_list(created)}"
        + (f" (kept {_the_list(kept)})" if kept else "")
        + f"; {schema} (server key: {escape(str(key_path))})"
    )


def _check_keys_match_database(
    settings: Settings,
    session_factory: sessionmaker[Session],
    *,
    replace_identity_key: bool = False,
) -> None:
    from quartermaster.catalog.signing_keys import check_server_key
    from quartermaster.secrets.context import (
        check_identity_key_matches_database,
        check_root_keys_match_database,
    )

    key_path = settings.data_dir / SERVER_KEY_FILE
    check_server_key(
        load_server_key(settings), session_factory=session_factory, key_source=str(key_path)
    )
    check_root_keys_match_database(settings, session_factory=session_factory)
    check_identity_key_matches_database(
        settings, session_factory=session_factory, replace=replace_identity_key
    )


def _the_list(names: list[str]) -> str:
    named = [f"the {name}" for name in names]
    return " and ".join(named) if len(named) < 3 else f"{', '.join(named[:-1])} and {named[-1]}"


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Bind address (default: QM_HOST or 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="Port, 0 for a free one (default: QM_PORT or 8080)."),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option(
            help="Least severity logged: debug, info, warning or error (default: QM_LOG_LEVEL "
            "or info)."
        ),
    ] = None,
    access_log: Annotated[
        bool | None,
        typer.Option(
            "--access-log/--no-access-log",
            help="A line per HTTP request (default: QM_ACCESS_LOG or off).",
        ),
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Run the API and the pipeline workers in one process (the embedded default).

    Ingestion's validation runs in a worker process where there is a second CPU
    (QM_INGEST_WORKERS)."""
    import uvicorn

    from quartermaster.api.app import create_app
    from quartermaster.gc_tuning import tune_gc_for_serving
    from quartermaster.guardrails.ratelimit import check_rate_limit_backend
    from quartermaster.runtime import build_runtime
    from quartermaster.secrets.context import check_secrets_keys
    from quartermaster.serve_logging import server_log_config
    from quartermaster.usage.pipeline import check_log_binding

    settings = _settings(data_dir)
    level = settings.log_level if log_level is None else _log_level(log_level)
    # The validation workers take their level from the settings they are started with.
    settings = settings.model_copy(update={"log_level": level})
    bind_host = host or settings.host
    # Bound before anything starts: a port in use or a host that does not resolve is one
    # line, not the ready line followed by uvicorn's error once the services had started;
    # and port 0's real port is known for the ready line.
    listeners = listen(bind_host, port if port is not None else settings.port)
    bound_port = listeners[0].getsockname()[1]
    try:
        # Cheap and certain, so checked before the starting line: a data dir without `qm init`
        # was that line, then its error. The secrets broker's keys too: a missing or open
        # keyring was a background service's startup traceback, after the pipeline had started.
        load_server_key(settings)
        check_secrets_keys(settings)
    except BaseException:
        close_all(listeners)
        raise
    # Starting takes seconds (migrations, the usage store's recovery, the validation worker):
    # said at once, so a restart does not look hung until the ready line.
    Console(stderr=True, highlight=False).print(
        "qm serve: starting (database schema, keys, usage store, pipeline) ...", soft_wrap=True
    )
    try:
        runtime = build_runtime(settings)
    except BaseException:
        close_all(listeners)
        raise

    def ready() -> None:
        Console(stderr=True, highlight=False).print(
            f"qm serve: http://{url_host(bind_host)}:{bound_port} (data dir "
            f"{escape(str(settings.data_dir))}, database {runtime.engine.dialect.name}); "
            "Ctrl-C stops",
            soft_wrap=True,
        )

    try:
        # Opened before anything starts: a second server on the same data directory is then
        # told so in one line, not in the startup traceback of a background service.
        # A usage store of another database's event log would skip this log's first events
        # as rated: refused here in one line.
        check_log_binding(
            runtime.usage_store, runtime.event_log, store_name=str(settings.usage_store_path)
        )
        check_rate_limit_backend(settings)
        _check_keys_match_database(settings, runtime.session_factory)
        application = create_app(
            settings,
            runtime=runtime,
            background=_background_services(),
            on_started=tune_gc_for_serving,
        )
        log_config = server_log_config(
            level,
            access_log=settings.access_log if access_log is None else access_log,
        )
        # uvicorn shuts down gracefully on SIGTERM, then raises the signal again for the
        # handler it found, by default the one that kills the process: the `finally` below
        # never ran, and SQLite's WAL and DuckDB's were left unmerged, so a backup of the
        # database file alone (docs/operations.md) lost the last writes.
        signal.signal(signal.SIGTERM, _exit_after_shutdown)
        run_server(
            # log_level=None: the levels are log_config's, which uvicorn would otherwise
            # override.
            uvicorn.Config(
                application, host=bind_host, port=bound_port, log_config=log_config, log_level=None
            ),
            listeners,
            on_listening=ready,
            where=bind_address(bind_host, bound_port),
        )
    finally:
        close_all(listeners)
        runtime.close()
        Console(stderr=True, highlight=False).print("qm serve: stopped")


def _exit_after_shutdown(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _log_level(text: str) -> LogLevel:
    """`--log-level` checked here rather than by a Literal annotation, which older Typer
    releases within the supported range do not read."""
    try:
        return TypeAdapter(LogLevel).validate_python(text)
    except ValidationError:
        raise typer.BadParameter(
            f"{text!r} is not one of debug, info, warning, error", param_hint="--log-level"
        ) from None


def _background_services() -> tuple[BackgroundStarter, ...]:
    from quartermaster.audit.shipping import build_audit_shipper
    from quartermaster.background import service_starter
    from quartermaster.catalog.search_signals import SearchSignalsJob
    from quartermaster.guardrails.anomaly_service import build_anomaly_detector
    from quartermaster.guardrails.late_usage import LateUsageWatch
    from quartermaster.guardrails.notifier import build_webhook_notifier
    from quartermaster.guardrails.service import build_guardrail_evaluator
    from quartermaster.metering.offload import start_validation_pool
    from quartermaster.secrets.reaper import build_lease_reaper
    from quartermaster.usage.maintenance import UsageMaintenance
    from quartermaster.usage.pipeline import pipeline_worker

    return (
        start_validation_pool,
        service_starter(pipeline_worker),
        service_starter(UsageMaintenance),
        service_starter(build_lease_reaper),
        service_starter(build_audit_shipper),
        service_starter(SearchSignalsJob),
        service_starter(build_guardrail_evaluator),
        service_starter(build_anomaly_detector),
        service_starter(LateUsageWatch),
        service_starter(build_webhook_notifier),
    )


@tenant_app.command("create")
def tenant_create(
    tenant_id: Annotated[str, typer.Argument(help="Slug of the new tenant, e.g. acme.")],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    timezone: Annotated[
        str,
        typer.Option(
            help="IANA time zone of its months, budget days and caps, e.g. Europe/Berlin."
        ),
    ] = "UTC",
    data_dir: DataDirOption = None,
) -> None:
    """Create a tenant with its default cost center and an admin key (shown once)."""
    from quartermaster.errors import QMError
    from quartermaster.runtime import build_runtime
    from quartermaster.tenancy.service import CLI_ACTOR, bootstrap_tenant

    settings = _settings(data_dir)
    runtime = build_runtime(settings)
    try:
        with runtime.session_factory() as session:
            issued = bootstrap_tenant(
                tenant_id, name=name, timezone=timezone, actor=CLI_ACTOR, session=session
            )
    except QMError as exc:
        fail(exc.message)
    finally:
        runtime.close()
    out().print(f"[green]created tenant[/] {tenant_id} (time zone {timezone})")
    out().print("admin API key (shown once, store it now):")
    out().print(issued.token, soft_wrap=True, highlight=False)


@tenant_app.command("admin-key")
def tenant_admin_key(
    tenant_id: Annotated[str, typer.Argument(help="Slug of the tenant, e.g. acme.")],
    name: Annotated[
        str, typer.Option("--name", help="Admin principal to issue it to (created if absent).")
    ] = "admin",
    data_dir: DataDirOption = None,
) -> None:
    """Issue a new admin key for a tenant whose admin keys are all lost (shown once).

    Break glass: it needs the database (QM_DATABASE_URL or the data dir), not a key. The
    key goes to the admin principal NAME, which is created if the tenant has none of that
    name, and the tenant's audit chain records it (`issue-key` by `system:cli`). Revoke the
    lost keys afterwards with `qm key revoke`.
    """
    from quartermaster.errors import QMError
    from quartermaster.runtime import build_runtime
    from quartermaster.tenancy.service import CLI_ACTOR, issue_recovery_admin_key

    settings = _settings(data_dir)
    runtime = build_runtime(settings)
    try:
        with runtime.session_factory() as session:
            issued = issue_recovery_admin_key(
                tenant_id, admin_name=name, actor=CLI_ACTOR, session=session
            )
    except QMError as exc:
        fail(exc.message)
    finally:
        runtime.close()
    out().print(f"[green]new admin key[/] for {escape(name)} in tenant {escape(tenant_id)}")
    out().print("API key (shown once, store it now):")
    out().print(issued.token, soft_wrap=True, highlight=False)


@tenant_app.command("update")
def tenant_update(
    timezone: Annotated[
        str,
        typer.Option(
            help="IANA time zone of the tenant's months, budget days and caps, e.g. "
            "Europe/Berlin (future periods only; finalized invoices keep theirs)."
        ),
    ],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Change the caller's tenant over the API (PATCH /v1/tenant; an admin key)."""
    from quartermaster.cli.client import request

    tenant = request("PATCH", "/v1/tenant", json={"timezone": timezone}, url=url, api_key=api_key)
    out().print(f"tenant {escape(tenant['tenant_id'])}: time zone {escape(tenant['timezone'])}")


@tenant_app.command("list")
def tenant_list(data_dir: DataDirOption = None) -> None:
    """List the tenants in the database (QM_DATABASE_URL, by default qm.db in the data dir)."""
    from quartermaster.runtime import build_runtime
    from quartermaster.tenancy.service import list_tenants

    settings = _settings(data_dir)
    runtime = build_runtime(settings)
    try:
        with runtime.session_factory() as session:
            tenants = list_tenants(session=session)
    finally:
        runtime.close()
    table = Table("tenant", "name", "timezone", "created")
    for tenant in tenants:
        table.add_row(tenant.id, plain(tenant.name), tenant.timezone, plain(tenant.created_at))
    out().print(table)


def _register_groups() -> None:
    for module, attribute, name in COMMAND_GROUPS:
        app.add_typer(getattr(importlib.import_module(module), attribute), name=name)
    for module, attribute, name in COMMANDS:
        app.command(name)(getattr(importlib.import_module(module), attribute))
    reflow_command_help(app)


def main() -> None:
    """The `qm` console script. An error the code knows (a QMError), a file that cannot be
    read or written, or a server that cannot be reached ends the command with one line saying
    so and exit status 1, not a traceback."""
    _register_groups()
    try:
        app()
    except QMError as exc:
        fail(exc.message)
    except OSError as exc:  # a file that cannot be read or written
        where = f": {exc.filename}" if exc.filename else ""
        fail(f"{exc.strerror or exc}{where}")
    except httpx.ReadTimeout as exc:
        # The server took the request: it may well still be working on it (a long bill run),
        # so "cannot reach" would send the user to restart a server that is fine.
        fail(
            f"the server{_target(exc)} did not answer within {request_timeout():g} s; it may "
            "still be working on the request, so look at the result (a list command) before "
            "sending it again. QM_TIMEOUT=SECONDS waits longer"
        )
    except httpx.TransportError as exc:
        fail(
            f"cannot reach the server{_target(exc)}: {exc}. "
            "Is `qm serve` running there (QM_URL or --url)?"
        )
    except Exception as exc:
        message = _setup_failure(exc)
        if message is None:
            raise
        fail(message)


# The DBAPI modules SQLAlchemy imports for URLs people paste (postgresql+psycopg2://,
# postgresql://, mysql://): not installed, they failed as a traceback.
_DATABASE_DRIVERS = frozenset(
    {"psycopg2", "asyncpg", "pg8000", "MySQLdb", "pymysql", "oracledb", "cx_Oracle", "pyodbc"}
)
# Said where the database is named: without QM_DATABASE_URL it is the data dir's SQLite file.
_DATABASE = "the database (QM_DATABASE_URL, by default qm.db in the data dir)"


def _setup_failure(exc: Exception) -> str | None:
    """One line for what stops a command before it does anything: settings that do not
    parse, a data dir without `qm init`, a database URL that cannot be used or reached."""
    from alembic.util.exc import CommandError
    from pydantic import ValidationError
    from sqlalchemy.exc import ArgumentError, OperationalError, ProgrammingError

    from quartermaster.config import ConfigurationError, settings_problem

    if isinstance(exc, ConfigurationError):
        return str(exc)
    if isinstance(exc, tomllib.TOMLDecodeError):
        return f"qm.toml is not valid TOML: {exc}"
    if isinstance(exc, ValidationError) and exc.title == "Settings":
        return settings_problem(exc)
    if isinstance(exc, ModuleNotFoundError) and exc.name in _DATABASE_DRIVERS:
        return (
            f"cannot use QM_DATABASE_URL: its driver {exc.name!r} is not installed; for "
            "PostgreSQL write postgresql+psycopg://… (psycopg 3, installed with Quartermaster)"
        )
    if isinstance(exc, ArgumentError):  # NoSuchModuleError too: an unknown URL scheme
        hint = ""
        if str(exc).endswith("sqlalchemy.dialects:postgres"):
            hint = " (for PostgreSQL write postgresql+psycopg://…)"
        return f"cannot use QM_DATABASE_URL: {exc}{hint}"
    if isinstance(exc, OperationalError | ProgrammingError):
        reason = _first_line(exc.orig or exc)
        # PostgreSQL's DuplicateTable, SQLite's "table … already exists": a first migration
        # meeting another application's tables
        if type(exc.orig).__name__ == "DuplicateTable" or reason.endswith("already exists"):
            return (
                f"{_DATABASE} already holds a table of the name of one of Quartermaster's, "
                f"which Quartermaster did not create ({reason}): point QM_DATABASE_URL at a "
                "database without such tables (an empty one)"
            )
        if isinstance(exc, OperationalError):
            return f"cannot open {_DATABASE}: {reason}"
        if "connection option" in reason:  # a misspelt query parameter (sslmod=…)
            return f"cannot use QM_DATABASE_URL: {reason}"
        return None
    if isinstance(exc, CommandError) and "Can't locate revision" in str(exc):
        return (
            f"{_DATABASE} was migrated by a newer Quartermaster "
            f"({_first_line(exc)}): run that version, or restore the backup taken before it"
        )
    return None


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0]


def _target(exc: httpx.TransportError) -> str:
    try:
        return f" at {exc.request.url.scheme}://{exc.request.url.netloc.decode()}"
    except RuntimeError:  # raised before a request existed
        return ""
