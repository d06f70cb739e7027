"""Connecting to PostgreSQL, and psycopg's exceptions turned into ours.

`connect` reads the password (in a worker thread: it may be a file) and opens an
autocommit `psycopg.AsyncConnection` (transactions are explicit), with TCP
keepalives and ``tcp_user_timeout`` so a server that vanishes from the network
shows as a broken connection instead of a hang. `translate` maps psycopg's
exceptions onto `BrokerUnavailable` (the connection, a server starting or shutting
down, too many clients: retried) and `BrokerRefused` (credentials, a missing
database, table or column, permissions: fatal), naming the job's key and the
server's URL without its password. `is_record_error` tells the errors that belong
to one record (a constraint violation, a value of the wrong type) from the rest.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import anyio

from supervisor import secrets
from supervisor.connectors.postgres.config import PostgresConnectionConfig
from supervisor.errors import BrokerRefused, BrokerUnavailable, JobError
from supervisor.secrets import SecretRef

if TYPE_CHECKING:
    from psycopg import AsyncConnection

_TRANSIENT_CLASSES = ("08", "40", "53", "57", "58", "XX")
"""Connection exception, transaction rollback (serialization, deadlock), insufficient
resources (disk full, too many connections), operator intervention (shutdown,
starting up), system error, internal error: the next attempt may succeed."""

_RECORD_STATES = ("22", "23", "42804", "P0001")
"""Data exception (a value that does not parse or fit), integrity constraint violation
(not null, unique, foreign key, check), datatype mismatch, and an exception raised by a
trigger: each is about the row, not the connection or the table."""

_REFUSED_MARKERS = (
    "authentication failed",
    "no password supplied",
    "password is required",
    "pg_hba.conf",
    "does not exist",
    "permission denied",
    "ssl",
    "certificate",
)
"""libpq reports a failure to connect without an SQLSTATE; these phrases mean that
trying again cannot help (wrong credentials, no such role or database, TLS setup)."""


def server_name(config: PostgresConnectionConfig) -> str:
    """The server as messages show it: the URL with no password."""
    return secrets.redact_url(config.url)


async def connect(config: PostgresConnectionConfig, role: str) -> AsyncConnection[Any]:
    """An open autocommit connection; `BrokerUnavailable` / `BrokerRefused` otherwise."""
    import psycopg

    password = await anyio.to_thread.run_sync(secrets.read, SecretRef.of(config, "password"))
    seconds = max(2, math.ceil(config.timeout))
    options: dict[str, Any] = {
        "autocommit": True,
        "connect_timeout": seconds,
        "application_name": "stream-supervisor",
        "keepalives": 1,
        "keepalives_idle": seconds,
        "keepalives_interval": max(1, seconds // 3),
        "keepalives_count": 3,
        "tcp_user_timeout": seconds * 1000,
    }
    if password is not None:
        options["password"] = password
    if config.sslmode is not None:
        options["sslmode"] = config.sslmode
    for key in ("sslrootcert", "sslcert", "sslkey"):
        path = getattr(config, key)
        if path is not None:
            options[key] = str(path)
    try:
        return await psycopg.AsyncConnection.connect(config.url, **options)
    except psycopg.Error as exc:
        raise translate(exc, config, role, connecting=True) from None


def table_identifier(name: str) -> Any:
    """A table name (``table`` or ``schema.table``) as a composable SQL identifier."""
    from psycopg import sql

    return sql.Identifier(*name.split("."))


def regclass(name: str) -> str:
    """`name` as to_regclass reads it: each part quoted, as the statements use it."""
    return ".".join('"' + part + '"' for part in name.split("."))


def is_record_error(exc: BaseException) -> bool:
    """True when `exc` is about one row's values, not the connection or the table."""
    import psycopg

    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate
    if state is None:
        # Raised by psycopg itself while adapting a value (a NUL character in a string).
        return isinstance(exc, psycopg.DataError)
    return state.startswith(_RECORD_STATES)


def translate(
    exc: BaseException, config: PostgresConnectionConfig, role: str, *, connecting: bool = False
) -> JobError:
    """Our error for a psycopg exception, naming the key at fault and the server."""
    import psycopg

    server = server_name(config)
    message = _message(exc)
    state = getattr(exc, "sqlstate", None)
    if state is None:
        if isinstance(exc, psycopg.ProgrammingError) and connecting:
            # The URL or a libpq option libpq itself refuses.
            return BrokerRefused(f"{role}.url: {server}: {message}")
        if connecting:
            message = _connect_message(message)
        lowered = message.lower()
        if connecting and any(marker in lowered for marker in _REFUSED_MARKERS):
            key = "url"
            if "password" in lowered or "authentication" in lowered:
                key = "password"
            elif "ssl" in lowered or "certificate" in lowered:
                key = "sslmode"
            return BrokerRefused(f"{role}.{key}: {server}: {message}")
        return BrokerUnavailable(f"{role}: {server} unavailable: {message}")
    if state.startswith(_TRANSIENT_CLASSES):
        return BrokerUnavailable(f"{role}: {server} unavailable: {message} (SQLSTATE {state})")
    if state.startswith("28"):
        return BrokerRefused(f"{role}.password: {server} refused the login: {message}")
    if state == "3D000":
        return BrokerRefused(f"{role}.url: {server}: {message}")
    return BrokerRefused(f"{role}: {server}: {message} (SQLSTATE {state})")


_SERVER_AT = re.compile(
    r'connection to server (?:at|on socket) "[^"]*"(?: \([^)]*\))?(?:, port \d+)? failed: '
)


def _connect_message(message: str) -> str:
    """libpq's failure to connect without the address (the URL is shown already)."""
    message = message.removeprefix("connection failed: ")
    message = _SERVER_AT.sub("", message)
    return re.sub(r"FATAL:\s+", "", message)


def _message(exc: BaseException) -> str:
    """The server's primary message, or libpq's text on one line."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if getattr(exc, "sqlstate", None) else None
    if primary:
        return str(primary)
    text = str(exc).strip() or type(exc).__name__
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())
