"""The ``postgres`` connector's settings: the keys of its tables, kinds, defaults and docs.

Apart from the declaration so that the implementation can import them without
importing its package's `__init__` back. Nothing here imports the client library.
`PostgresConnectionConfig` holds what every role shares (the server, the password,
TLS), so a table source and a change-data-capture source can extend it later.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias, get_args
from urllib.parse import parse_qsl, urlsplit

from supervisor import secrets
from supervisor.connectors import kinds, setting
from supervisor.connectors.credentials import PasswordKeys
from supervisor.secrets import SecretRef

SinkMode: TypeAlias = Literal["insert", "upsert"]
StartAt: TypeAlias = Literal["beginning", "end"]
SslMode: TypeAlias = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]

OFFSETS_TABLE = "stream_supervisor_offsets"

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_$]{0,62}"
IDENTIFIER = re.compile(_IDENTIFIER, re.ASCII)
"""A column name: used as written (quoted), so upper case is kept."""
TABLE_NAME = re.compile(rf"(?:{_IDENTIFIER}\.)?{_IDENTIFIER}", re.ASCII)
"""A table, optionally with its schema: ``orders`` or ``sales.orders``."""


def postgres_url() -> kinds.Convert:
    """``postgresql://[user[:password]@][host][:port][/database][?param=value&...]``. A
    password in it is remembered as a secret at once, so no later message shows it."""

    def convert(value: Any, _base: Path) -> str:
        if not isinstance(value, str):
            raise kinds.Invalid(f"expected a postgresql:// URL, got {kinds.describe(value)}")
        shown = secrets.redact_url(value)
        try:
            parts = urlsplit(value)
            port = parts.port  # ValueError when not a number in range
            query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
        except ValueError as exc:
            raise kinds.Invalid(f"expected a postgresql:// URL, got {shown!r} ({exc})") from None
        if parts.password:
            secrets.remember(parts.password)
        if parts.scheme not in {"postgresql", "postgres"}:
            raise kinds.Invalid(f"expected a postgresql:// URL, got {shown!r}")
        if port == 0:
            raise kinds.Invalid(f"expected a port from 1 to 65535, got {shown!r}")
        if any(name == "password" for name, _ in query):
            for name, item in query:
                if name == "password":
                    secrets.remember(item)
            raise kinds.Invalid(
                "expected no password in the URL's parameters (use password_file, "
                "password_env or password_credential)"
            )
        if parts.fragment:
            raise kinds.Invalid(f"expected no #fragment in the URL, got {shown!r}")
        return value

    return convert


def column_mapping() -> kinds.Convert:
    """An array of column names (each filled from the record field of the same name), or
    a table ``column = "field"``; kept as ``((column, field), ...)`` in order."""

    def convert(value: Any, _base: Path) -> tuple[tuple[str, str], ...]:
        if isinstance(value, list):
            pairs = [(item, item) for item in value]
        elif isinstance(value, dict):
            pairs = list(value.items())
        else:
            raise kinds.Invalid(
                'expected an array of column names or a table of column = "field", '
                f"got {kinds.describe(value)}"
            )
        if not pairs:
            raise kinds.Invalid("expected at least one column")
        for column, record_field in pairs:
            if not isinstance(column, str) or not IDENTIFIER.fullmatch(column):
                raise kinds.Invalid(
                    "expected column names (letters, digits, _ and $), "
                    f"got {kinds.describe(column)}"
                )
            if not isinstance(record_field, str) or not record_field:
                raise kinds.Invalid(
                    f"expected a record field name for column {column!r}, "
                    f"got {kinds.describe(record_field)}"
                )
        names = [column for column, _ in pairs]
        if len(set(names)) != len(names):
            raise kinds.Invalid("expected each column once")
        return tuple(pairs)

    return convert


def column_names() -> kinds.Convert:
    def convert(value: Any, _base: Path) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            raise kinds.Invalid(
                f"expected a non-empty array of column names, got {kinds.describe(value)}"
            )
        for item in value:
            if not isinstance(item, str) or not IDENTIFIER.fullmatch(item):
                raise kinds.Invalid(f"expected column names, got {kinds.describe(item)}")
        if len(set(value)) != len(value):
            raise kinds.Invalid("expected each column once")
        return tuple(value)

    return convert


@dataclass(frozen=True, slots=True, kw_only=True)
class PostgresConnectionConfig(PasswordKeys):
    """The keys every role shares: where the server is, how to log in, TLS."""

    url: str = field(
        metadata=setting(
            postgres_url(),
            "The server: postgresql://user@host:port/database (libpq's URL; ?params "
            "allowed, except password). A password in it is a secret too, but prefer "
            "password_file or password_credential.",
        )
    )
    sslmode: SslMode | None = field(
        default=None,
        metadata=setting(
            kinds.choice(*get_args(SslMode)),
            "libpq's sslmode; verify-full checks the server's certificate and name. "
            "Absent: libpq's default (prefer) or the URL's.",
        ),
    )
    sslrootcert: Path | None = field(
        default=None,
        metadata=setting(kinds.path(), "The CA certificates the server is checked against."),
    )
    sslcert: Path | None = field(
        default=None, metadata=setting(kinds.path(), "A client certificate (PEM).")
    )
    sslkey: Path | None = field(
        default=None, metadata=setting(kinds.path(), "The client certificate's key.")
    )
    timeout: float = field(
        default=10.0,
        metadata=setting(
            kinds.duration(positive=True),
            "Connecting (libpq connect_timeout, whole seconds, at least 2), and a server "
            "that stops answering (TCP keepalives and tcp_user_timeout): longer is a "
            "broken connection. A slow statement is not cut short.",
        ),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class PostgresSinkConfig(PostgresConnectionConfig):
    """``type = "postgres"`` as a ``[sink]``: one row per record, committed with the
    job's offset in one transaction (exactly-once)."""

    table: str = field(
        metadata=setting(
            kinds.text(TABLE_NAME, "a table name (schema.table or table)"),
            "The table rows go to (it must exist). Names are used as written.",
        )
    )
    columns: tuple[tuple[str, str], ...] = field(
        metadata=setting(
            column_mapping(),
            'The columns written: ["id", "name"] (from the record fields of the same '
            'names) or { id = "order_id", name = "customer" } (column = record field). '
            "A missing field is NULL.",
        )
    )
    mode: SinkMode = field(
        default="insert",
        metadata=setting(
            kinds.choice(*get_args(SinkMode)),
            "insert: every record a new row (COPY). upsert: insert, or update the row with "
            "the same key (INSERT ... ON CONFLICT (key) DO UPDATE).",
        ),
    )
    key: tuple[str, ...] = field(
        default=(),
        metadata=setting(
            column_names(),
            "upsert: the columns of the table's primary key or a unique index; they must "
            "be among `columns`.",
        ),
    )
    offsets_table: str = field(
        default=OFFSETS_TABLE,
        metadata=setting(
            kinds.text(TABLE_NAME, "a table name (schema.table or table)"),
            "Where the job's offset is kept, one row per job (created if absent).",
        ),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class PostgresTableSourceConfig(PostgresConnectionConfig):
    """``type = "postgres"`` as a ``[source]``: the rows of a table in the order their
    transactions committed, never skipping one (cursor ``(xid_column, id_column)``)."""

    table: str = field(
        metadata=setting(
            kinds.text(TABLE_NAME, "a table name (schema.table or table)"),
            "The table read (it must exist, with the xid8 column: see docs/postgres.md).",
        )
    )
    xid_column: str = field(
        default="xid",
        metadata=setting(
            kinds.text(IDENTIFIER, "a column name"),
            "The table's column of type xid8, NOT NULL DEFAULT pg_current_xact_id(): the "
            "transaction that wrote the row.",
        ),
    )
    id_column: str = field(
        default="id",
        metadata=setting(
            kinds.text(IDENTIFIER, "a column name"),
            "A unique column (an integer or text key): orders the rows of one transaction.",
        ),
    )
    columns: tuple[str, ...] = field(
        default=(),
        metadata=setting(
            column_names(),
            "The columns each record holds (a JSON object, column = key); absent: all.",
        ),
    )
    start: StartAt = field(
        default="beginning",
        metadata=setting(
            kinds.choice(*get_args(StartAt)),
            "Where a job without a snapshot starts: the first row, or after the rows "
            "committed when it first opens.",
        ),
    )
    notify_channel: str | None = field(
        default=None,
        metadata=setting(
            kinds.text(IDENTIFIER, "a channel name"),
            "LISTEN on this channel and read at once when notified (a trigger sends "
            "NOTIFY); polling every poll_interval goes on.",
        ),
    )
    poll_interval: float = field(
        default=1.0,
        metadata=setting(
            kinds.duration(positive=True),
            "How often the table is read again when there was nothing new.",
        ),
    )
    lag_interval: float = field(
        default=5.0,
        metadata=setting(
            kinds.duration(positive=True),
            "How often `status`'s lag (rows not yet read, counted up to lag_limit) is "
            "counted again.",
        ),
    )
    lag_limit: int = field(
        default=100_000,
        metadata=setting(
            kinds.integer(1), "The lag is counted up to this many rows (more shows as this)."
        ),
    )


def check_connection(config: PostgresConnectionConfig) -> Iterable[tuple[str, str]]:
    """Problems of the shared keys that each key alone cannot show."""
    ref = SecretRef.of(config, "password")
    conflict = secrets.conflicts(ref)
    if conflict is not None:
        yield "password", conflict
    elif ref.is_set() and urlsplit(config.url).password:
        yield "password", "the URL has a password already: set it in one place"


def check_sink(config: PostgresSinkConfig) -> Iterable[tuple[str, str]]:
    yield from check_connection(config)
    columns = {column for column, _ in config.columns}
    if config.mode == "upsert":
        if not config.key:
            yield "key", 'mode "upsert" needs the key columns (those of a unique index)'
        missing = [column for column in config.key if column not in columns]
        if missing:
            yield "key", f"{', '.join(missing)} not among `columns`: the key must be written"
        elif config.key and columns <= set(config.key):
            yield "columns", "upsert needs a column besides the key (one to update)"
    elif config.key:
        yield "key", 'only for mode = "upsert"'
    if config.offsets_table == config.table:
        yield "offsets_table", "must not be the table the rows go to"


def check_table_source(config: PostgresTableSourceConfig) -> Iterable[tuple[str, str]]:
    yield from check_connection(config)
    if config.xid_column == config.id_column:
        yield "id_column", "must not be the xid column"
