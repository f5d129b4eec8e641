"""The dynamic PostgreSQL engine's database side: real roles with `VALID UNTIL`, grants from a
structured template, and revocation that ends the role's sessions before dropping it.

Every statement is composed with `psycopg.sql` (Identifier / Literal); no name, password or
time is ever formatted into SQL text, and a role's password is sent only as its SCRAM-SHA-256
verifier, computed here (`scram_sha256_verifier`). A role that passed `VALID UNTIL` cannot log
in again, but sessions opened before keep working, so revocation and expiry both terminate the
role's backends (`pg_terminate_backend`) and drop the role. Disabling the login is committed first,
on its own (`revoke_role`): a drop that fails afterwards leaves a role nobody can use.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Literal, TypeVar

import psycopg
from psycopg import sql
from pydantic import BaseModel, Field, field_validator, model_validator

from quartermaster.errors import InvalidInputError

ObjectKind = Literal[
    "database", "schema", "table", "all_tables_in_schema", "all_sequences_in_schema", "role"
]
ALLOWED_PRIVILEGES: dict[str, frozenset[str]] = {
    "database": frozenset({"CONNECT", "TEMPORARY", "TEMP", "CREATE"}),
    "schema": frozenset({"USAGE", "CREATE"}),
    "table": frozenset(
        {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"}
    ),
    "all_tables_in_schema": frozenset(
        {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"}
    ),
    "all_sequences_in_schema": frozenset({"USAGE", "SELECT", "UPDATE"}),
    "role": frozenset(),
}
_TARGET_CLAUSE = {
    "database": "DATABASE",
    "schema": "SCHEMA",
    "table": "TABLE",
    "all_tables_in_schema": "ALL TABLES IN SCHEMA",
    "all_sequences_in_schema": "ALL SEQUENCES IN SCHEMA",
}
ROLE_PREFIX = "qm_"
# A revoked role's password expiry: long past, so no password login works even if LOGIN
# were given back by hand.
DISABLED_VALID_UNTIL = "1970-01-01T00:00:00+00:00"


class GrantSpec(BaseModel):
    """One grant of the role template, e.g. {"on": "all_tables_in_schema", "name": "public",
    "privileges": ["SELECT"]} or {"on": "role", "name": "app_readers"} (membership)."""

    on: ObjectKind
    name: str = Field(min_length=1, max_length=127)
    privileges: list[str] = Field(default_factory=list)

    @field_validator("privileges")
    @classmethod
    def _upper(cls, value: list[str]) -> list[str]:
        return [p.strip().upper() for p in value]

    @model_validator(mode="after")
    def _check(self) -> GrantSpec:
        allowed = ALLOWED_PRIVILEGES[self.on]
        if self.on == "role":
            if self.privileges:
                raise ValueError("a role grant (membership) takes no privileges")
            return self
        if not self.privileges:
            raise ValueError(f"a grant on {self.on} needs privileges, one of {sorted(allowed)}")
        bad = [p for p in self.privileges if p not in allowed]
        if bad:
            raise ValueError(
                f"privilege {bad[0]!r} does not apply to {self.on} (allowed: {sorted(allowed)})"
            )
        return self


def grant_statement(grant: GrantSpec, role: str) -> sql.Composed:
    grantee = sql.Identifier(role)
    if grant.on == "role":
        return sql.SQL("GRANT {} TO {}").format(sql.Identifier(grant.name), grantee)
    if grant.on == "table" and "." in grant.name:
        schema, _, table = grant.name.partition(".")
        target: sql.Composable = sql.Identifier(schema, table)
    else:
        target = sql.Identifier(grant.name)
    # Privileges come from a closed allow-list (checked by GrantSpec), so SQL() is safe here.
    privileges = sql.SQL(", ").join(sql.SQL(p) for p in grant.privileges)
    return sql.SQL("GRANT {} ON {} {} TO {}").format(
        privileges, sql.SQL(_TARGET_CLAUSE[grant.on]), target, grantee
    )


SCRAM_ITERATIONS = 4096  # PostgreSQL's and libpq's default (scram_iterations)
_SCRAM_SALT_BYTES = 16  # libpq's SCRAM_DEFAULT_SALT_LEN


def scram_sha256_verifier(
    password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS
) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for a password (RFC 5802 and 7677), as
    libpq's PQencryptPasswordConn and psql's \\password compute it on the client:
    `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, base64. Sent in place of the
    password, it never reaches the server's log (log_statement = ddl, or a failed statement).

    PostgreSQL SASLprep-normalizes a password first; for printable ASCII (every password
    `new_password` makes) that changes nothing, and other passwords are refused here."""
    if not (password.isascii() and password.isprintable()):
        raise ValueError("a dynamic role's password must be printable ASCII")
    salt = secrets.token_bytes(_SCRAM_SALT_BYTES) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
        f"${b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


def create_role_statement(role: str, password: str, valid_until: datetime) -> sql.Composed:
    """`CREATE ROLE … PASSWORD` with the password's SCRAM verifier, never the password."""
    return sql.SQL("CREATE ROLE {} WITH LOGIN PASSWORD {} VALID UNTIL {}").format(
        sql.Identifier(role),
        sql.Literal(scram_sha256_verifier(password)),
        sql.Literal(valid_until.isoformat()),
    )


def new_role_name() -> str:
    return f"{ROLE_PREFIX}{secrets.token_hex(12)}"


def new_password() -> str:
    return secrets.token_urlsafe(30)


def libpq_url(url: str) -> str:
    """Accept SQLAlchemy-style URLs too (postgresql+psycopg://…)."""
    if url.startswith("postgresql+"):
        return "postgresql://" + url.split("://", 1)[1]
    if url.startswith("postgres://"):
        return "postgresql://" + url.split("://", 1)[1]
    return url


def validate_connection_url(url: str) -> str:
    normalized = libpq_url(url.strip())
    if not normalized.startswith("postgresql://"):
        raise InvalidInputError(
            "connection_url must be a postgresql:// URL", field="connection_url"
        )
    return normalized


class EngineError(Exception):
    """The target database refused or could not be reached; the message is PostgreSQL's."""


class EngineUnreachableError(EngineError):
    """The target database could not be reached (or dropped the connection): an outage,
    not a refusal, so asking again later may work."""


T = TypeVar("T")


class PostgresConnections:
    """A few idle admin connections per target, reused across issue/renew/revoke."""

    def __init__(self, *, max_idle_per_target: int = 4, connect_timeout: int = 10) -> None:
        self._idle: dict[str, list[psycopg.Connection]] = {}
        self._lock = threading.Lock()
        self._max_idle = max_idle_per_target
        self._connect_timeout = connect_timeout

    @contextmanager
    def _checkout(self, conninfo: str) -> Iterator[tuple[psycopg.Connection, bool]]:
        conn: psycopg.Connection | None = None
        with self._lock:
            pool = self._idle.get(conninfo, [])
            while pool and conn is None:
                candidate = pool.pop()
                if not candidate.closed:
                    conn = candidate
        reused = conn is not None
        if conn is None:
            conn = psycopg.connect(conninfo, connect_timeout=self._connect_timeout)
        healthy = False
        try:
            yield conn, reused
            healthy = True
        finally:
            if not healthy or conn.closed or conn.info.transaction_status != 0:
                conn.close()
            else:
                with self._lock:
                    pool = self._idle.setdefault(conninfo, [])
                    if len(pool) < self._max_idle:
                        pool.append(conn)
                        conn = None
                if conn is not None:
                    conn.close()

    def run(self, conninfo: str, work: Callable[[psycopg.Connection], T]) -> T:
        """Run `work` in one transaction. A reused connection that turns out dead is retried
        once on a fresh one (the work had not committed, so nothing happens twice)."""
        for attempt in (1, 2):
            try:
                with self._checkout(conninfo) as (conn, reused):
                    try:
                        with conn.transaction():
                            return work(conn)
                    except psycopg.OperationalError:
                        if reused and attempt == 1:
                            raise _Retry() from None
                        raise
            except _Retry:
                continue
            except psycopg.OperationalError as exc:
                if _outage(exc):
                    raise EngineUnreachableError(_describe(exc)) from None
                raise EngineError(_describe(exc)) from None
            except psycopg.Error as exc:
                raise EngineError(_describe(exc)) from None
        raise EngineError("no connection to the target database")  # pragma: no cover

    def close(self) -> None:
        with self._lock:
            pools, self._idle = self._idle, {}
        for pool in pools.values():
            for conn in pool:
                conn.close()


class _Retry(Exception):
    pass


# SQLSTATE classes of an outage: connection exceptions (08), operator intervention such as a
# shutdown (57), insufficient resources such as too many connections (53). A refused login
# (28) or a privilege (42) is the database answering: a refusal.
_OUTAGE_CLASSES = ("08", "53", "57")
# A failed connect carries no SQLSTATE, only the server's FATAL message when it answered at
# all; these answers say it cannot serve now, any other (no such role, a wrong password) is
# a refusal.
_OUTAGE_ANSWERS = ("the database system is", "too many clients", "remaining connection slots")


def _outage(exc: psycopg.OperationalError) -> bool:
    """No answer from the server (refused, timed out, gone), or one saying it cannot serve."""
    if exc.sqlstate is not None:
        return exc.sqlstate[:2] in _OUTAGE_CLASSES
    message = str(exc)
    if "FATAL:" not in message:
        return True
    return any(answer in message for answer in _OUTAGE_ANSWERS)


def _describe(exc: psycopg.Error) -> str:
    # Only the server's primary message: never the statement, which may carry a password.
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    if primary:
        return f"{type(exc).__name__}: {primary}"
    first_line = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__


def create_role(
    conn: psycopg.Connection,
    *,
    role: str,
    password: str,
    valid_until: datetime,
    grants: list[GrantSpec],
) -> None:
    """One round trip: the statements carry no parameters (every value is a sql.Literal), so
    they go to the server as one multi-statement query."""
    statements = [create_role_statement(role, password, valid_until)]
    statements.extend(grant_statement(grant, role) for grant in grants)
    conn.execute(sql.SQL("; ").join(statements))


def extend_role(conn: psycopg.Connection, *, role: str, valid_until: datetime) -> bool:
    """Move VALID UNTIL; False when the role no longer exists."""
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    if exists is None:
        return False
    conn.execute(
        sql.SQL("ALTER ROLE {} VALID UNTIL {}").format(
            sql.Identifier(role), sql.Literal(valid_until.isoformat())
        )
    )
    return True


def disable_role(conn: psycopg.Connection, *, role: str) -> bool:
    """Make the credential unusable: no login, and a password expired long ago. False when
    the role no longer exists. Committed on its own, before anything that might fail."""
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    if exists is None:
        return False
    conn.execute(
        sql.SQL("ALTER ROLE {} NOLOGIN VALID UNTIL {}").format(
            sql.Identifier(role), sql.Literal(DISABLED_VALID_UNTIL)
        )
    )
    return True


def terminate_sessions(conn: psycopg.Connection, *, role: str) -> int:
    """End the role's open sessions (a role that can no longer log in keeps the sessions it
    opened before). Returns how many were terminated."""
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
        "FROM pg_stat_activity WHERE usename = %s",
        (role,),
    ).fetchone()
    return int(row[0]) if row else 0


def drop_role(conn: psycopg.Connection, *, role: str) -> None:
    """Hand the role's objects to the engine's admin, revoke its privileges and drop it; a
    role already gone is success.

    `REASSIGN OWNED` and `DROP OWNED` need the privileges of the role, so the admin first
    makes itself a member: with `CREATEROLE` on PostgreSQL 15 and older, through the
    `ADMIN OPTION` its creator holds on PostgreSQL 16 and newer (there, `WITH INHERIT TRUE`,
    whatever `createrole_self_grant` says)."""
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    if exists is None:
        return
    ident = sql.Identifier(role)
    member = conn.execute("SELECT pg_has_role(CURRENT_USER, %s, 'USAGE')", (role,)).fetchone()
    statements: list[sql.Composable] = []
    if not (member and member[0]):
        if conn.info.server_version >= 160000:
            statements.append(sql.SQL("GRANT {} TO CURRENT_USER WITH INHERIT TRUE").format(ident))
        else:
            statements.append(sql.SQL("GRANT {} TO CURRENT_USER").format(ident))
    statements += [
        sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(ident),
        sql.SQL("DROP OWNED BY {}").format(ident),
        sql.SQL("DROP ROLE IF EXISTS {}").format(ident),
    ]
    conn.execute(sql.SQL("; ").join(statements))


def revoke_role(connections: PostgresConnections, conninfo: str, *, role: str) -> int:
    """Revoke a dynamic credential in three committed steps, so that a later failure cannot
    undo an earlier one: disable the login, end the role's sessions, drop the role. Returns
    the sessions terminated; raises EngineError naming the step that failed (the credential
    is unusable once the first step has succeeded, even if the drop has not)."""
    try:
        if not connections.run(conninfo, functools.partial(disable_role, role=role)):
            return 0
    except EngineError as exc:
        raise EngineError(f"login of role {role} NOT disabled: {exc}") from None
    try:
        terminated = connections.run(conninfo, functools.partial(terminate_sessions, role=role))
    except EngineError as exc:
        raise EngineError(
            f"login of role {role} disabled, but its sessions were not ended: {exc}"
        ) from None
    try:
        connections.run(conninfo, functools.partial(drop_role, role=role))
    except EngineError as exc:
        raise EngineError(
            f"login of role {role} disabled and its sessions ended, but it was not dropped: {exc}"
        ) from None
    return terminated
