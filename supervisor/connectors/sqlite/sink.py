"""The ``sqlite`` sink: rows and the job's offset committed in one transaction.

Because the offset commits atomically with the rows, a restart resumes from
exactly the last committed row: exactly-once delivery. On open the sink's
offset is returned and wins over the snapshot's.

The database must be a regular file, not a symlink; one the sink creates is
mode 0640 (SQLite gives its journal files the database's mode).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import anyio

from supervisor.codec import JSON, Codec
from supervisor.connectors.refusals import RefusesRecords, encode_each
from supervisor.connectors.sqlite.config import SqliteSinkConfig
from supervisor.errors import UnsafeFile
from supervisor.protocols import Offset, Record
from supervisor.safe_open import create_or_open

OFFSETS_TABLE = "stream_supervisor_offsets"


_encode_offset = JSON.dumps


class SqliteSink(RefusesRecords):
    """Table `table` gets one row per record: ``(id INTEGER PRIMARY KEY, record TEXT)``."""

    def __init__(self, config: SqliteSinkConfig, job: str, *, codec: Codec = JSON) -> None:
        self._path = config.path
        self._encode = codec.dumps
        self._table = config.table
        self._job = job
        if not config.table.isidentifier():
            raise ValueError(f"sqlite table name must be an identifier, got {config.table!r}")
        self._db: sqlite3.Connection | None = None
        self._pending: list[tuple[str]] = []

    async def open(self) -> Offset | None:
        self._db = await anyio.to_thread.run_sync(self._connect)
        return await anyio.to_thread.run_sync(self._committed_offset, self._db)

    async def write(self, records: Sequence[Record]) -> None:
        encoded, refused = encode_each(records, self._text)
        await self._refuse(refused)
        self._pending.extend((payload,) for payload in encoded)

    def _text(self, record: Record) -> str:
        """The record's JSON text; UnicodeEncodeError now, not at commit, for a lone
        surrogate (sqlite stores UTF-8: the whole transaction would fail on it)."""
        text = self._encode(record)
        if not text.isascii():
            text.encode()
        return text

    async def flush(self, offset: Offset | None) -> None:
        if self._db is None:
            raise RuntimeError("SqliteSink used before open()")
        rows, self._pending = self._pending, []
        await anyio.to_thread.run_sync(self._commit, self._db, rows, offset)

    async def close(self) -> None:
        db, self._db = self._db, None
        self._pending = []
        if db is not None:
            await anyio.to_thread.run_sync(db.close)

    def _connect(self) -> sqlite3.Connection:
        # SQLite opens the database by name and resolves a symlink there (it opens its
        # journal files with O_NOFOLLOW, but not the database), and a FIFO would stall
        # this thread in its first read. So the file is created (0640) or checked here,
        # without following a symlink or blocking, and what SQLite opened is compared
        # with it. The check's descriptor is closed before SQLite opens the file: closing
        # any descriptor of a file drops every POSIX lock the process holds on it.
        fd, _ = create_or_open(self._path, os.O_RDWR, role="sink.path")
        try:
            checked = os.fstat(fd)
        finally:
            os.close(fd)
        # Autocommit off at the driver level: we issue BEGIN/COMMIT ourselves.
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            _require_checked_file(db, checked, self._path)
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit that returned survives power loss, which is what
            # lets the offset in it be trusted.
            db.execute("PRAGMA synchronous=FULL")
            db.execute(
                f'CREATE TABLE IF NOT EXISTS "{self._table}" '
                "(id INTEGER PRIMARY KEY, record TEXT NOT NULL)"
            )
            db.execute(
                f"CREATE TABLE IF NOT EXISTS {OFFSETS_TABLE} "
                "(job TEXT PRIMARY KEY, offset TEXT NOT NULL)"
            )
        except BaseException:
            db.close()
            raise
        return db

    def _committed_offset(self, db: sqlite3.Connection) -> Offset | None:
        row = db.execute(
            f"SELECT offset FROM {OFFSETS_TABLE} WHERE job = ?", (self._job,)
        ).fetchone()
        if row is None:
            return None
        offset: Offset = json.loads(row[0])
        return offset

    def _commit(
        self, db: sqlite3.Connection, rows: list[tuple[str]], offset: Offset | None
    ) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(f'INSERT INTO "{self._table}" (record) VALUES (?)', rows)
            if offset is not None:
                db.execute(
                    f"INSERT INTO {OFFSETS_TABLE} (job, offset) VALUES (?, ?) "
                    "ON CONFLICT (job) DO UPDATE SET offset = excluded.offset",
                    (self._job, _encode_offset(offset)),
                )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise


def _require_checked_file(db: sqlite3.Connection, checked: os.stat_result, path: Path) -> None:
    """Refuse the connection unless SQLite opened the very file checked before."""
    name = next(row[2] for row in db.execute("PRAGMA database_list") if row[1] == "main")
    try:
        opened = Path(name).lstat()
    except OSError:
        opened = None
    if opened is None or (opened.st_dev, opened.st_ino) != (checked.st_dev, checked.st_ino):
        raise UnsafeFile(
            f"sink.path {path} was replaced while it was being opened (SQLite opened "
            f"{name}): refused; keep the sink's directory writable only by the "
            f"supervisor's user"
        )


def table_rows(path: Path, table: str = "records") -> list[str]:
    """Every record stored in `table`, in insertion order (for tests and tools)."""
    with closing(sqlite3.connect(path)) as db:
        return [row[0] for row in db.execute(f'SELECT record FROM "{table}" ORDER BY id')]
