"""The ``postgres-cdc`` source with the real daemon and a real server (wal_level=logical):
inserts, updates and deletes arrive in commit order; the daemon SIGKILLed mid-stream
repeats at most one checkpoint per kill and loses nothing; the slot's confirmed
position never passes the job's snapshot; bad setups fail the job with a clear error.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from supervisor.connectors.postgres.pgoutput import lsn_value
from tests.daemon_process import DaemonProcess, write_config
from tests.helpers import run_cli
from tests.servers import PostgresServer

pytestmark = pytest.mark.slow

SCHEMA = """CREATE TABLE items (id int PRIMARY KEY, version int NOT NULL);
CREATE PUBLICATION capture FOR TABLE items"""


def cdc_job(url: str, out: Path, *, every: int = 200, extra: str = "") -> str:
    return f"""
        [source]
        type = "postgres-cdc"
        url = "{url}"
        slot = "capture_slot"
        publication = "capture"
        poll_interval = "50ms"
        heartbeat_interval = "1s"
        {extra}

        [sink]
        type = "jsonl"
        path = "{out}"

        [checkpoint]
        every_records = {every}
        interval = "500ms"

        [retry]
        initial = "0.05s"
        max = "0.5s"
        max_attempts = 0
    """


def expected_changes(count: int) -> list[tuple[str, int, int | None]]:
    """What `ChangeWriter` commits, in order: (op, id, version)."""
    changes: list[tuple[str, int, int | None]] = []
    for n in range(count):
        changes.append(("insert", n, 0))
        if n % 3 == 1:
            changes.append(("update", n - 1, 1))
        if n % 5 == 4:
            changes.append(("delete", n - 2, None))
    return changes


class ChangeWriter(threading.Thread):
    """Inserts `count` rows, one transaction each, with updates and deletes among them,
    about `rate` transactions a second; reconnects (and redoes its step) if the server
    goes away."""

    def __init__(self, url: str, count: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.url, self.count, self.pause = url, count, 1 / rate
        self.error: BaseException | None = None

    def run(self) -> None:
        import psycopg

        connection: psycopg.Connection[Any] | None = None
        try:
            for n in range(self.count):
                while True:
                    try:
                        if connection is None:
                            connection = psycopg.connect(self.url, connect_timeout=2)
                        with connection.transaction():
                            done = connection.execute(
                                "SELECT 1 FROM items WHERE id = %s", (n,)
                            ).fetchone()
                            if done is not None:
                                break  # committed before the server went away
                            connection.execute("INSERT INTO items VALUES (%s, 0)", (n,))
                            if n % 3 == 1:
                                connection.execute(
                                    "UPDATE items SET version = 1 WHERE id = %s", (n - 1,)
                                )
                            if n % 5 == 4:
                                connection.execute("DELETE FROM items WHERE id = %s", (n - 2,))
                        break
                    except psycopg.OperationalError:
                        if connection is not None:
                            connection.close()
                        connection = None
                        time.sleep(0.05)
                time.sleep(self.pause)
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            if connection is not None:
                connection.close()


def read_changes(out: Path) -> list[tuple[str, int, int | None]]:
    changes = []
    for line in out.read_text().splitlines() if out.exists() else []:
        record = json.loads(line)
        version = record.get("values", {}).get("version")
        changes.append((record["op"], record["key"]["id"], version))
    return changes


def first_occurrences(changes: list[Any]) -> list[Any]:
    seen: set[Any] = set()
    return [c for c in changes if not (c in seen or seen.add(c))]  # type: ignore[func-returns-value]


def wait_all(out: Path, expected: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(set(read_changes(out))) < expected:
        assert time.monotonic() < deadline, (len(set(read_changes(out))), expected)
        time.sleep(0.1)


def slot_never_passes_the_snapshot(server: PostgresServer, config: Path) -> bool:
    """The slot's confirmed position, then the snapshot's offset (asked of the running
    daemon): the first is never past the second (the slot moves only after the snapshot
    is durable). True if compared."""
    rows = server.query(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
        ("capture_slot",),
    )
    shown = run_cli(config, "offset", "cdc")
    if not rows or shown.returncode != 0 or shown.stdout.strip() in ("", "null"):
        return False
    offset = json.loads(shown.stdout)
    assert lsn_value(rows[0][0]) <= lsn_value(offset[0]), (rows, offset)
    return True


def test_changes_in_commit_order_across_sigkills_and_the_slot_behind_the_snapshot(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    count, every = 900, 200
    postgres_server.execute(SCHEMA)
    out = tmp_path / "out.jsonl"
    config = write_config(tmp_path, {"cdc": cdc_job(postgres_server.url, out, every=every)})
    daemon = DaemonProcess(config)
    daemon.wait_for("job.state_changed", job="cdc", to="running")  # the slot exists
    writer = ChangeWriter(postgres_server.url, count, rate=300)
    writer.start()
    kills = compared = 0
    for _ in range(3):
        daemon.wait_for("job.checkpoint", count=2, job="cdc")
        compared += slot_never_passes_the_snapshot(postgres_server, config)
        daemon.kill()
        kills += 1
        daemon = DaemonProcess(config)
        daemon.wait_for("job.state_changed", job="cdc", to="running")  # `offset` asks it
        compared += slot_never_passes_the_snapshot(postgres_server, config)
    daemon.keep_draining()
    try:
        writer.join(120)
        assert writer.error is None, writer.error
        expected = expected_changes(count)
        wait_all(out, len(set(expected)))
        compared += slot_never_passes_the_snapshot(postgres_server, config)
        [status] = json.loads(run_cli(config, "status", "--json").stdout)
    finally:
        daemon.stop()
    changes = read_changes(out)
    assert first_occurrences(changes) == expected  # commit order, nothing lost
    assert len(changes) - len(expected) <= kills * every  # repeats: one checkpoint per kill
    assert compared == 7
    assert status["state"] == "running"
    assert status["source"]["slot"] == "capture_slot"
    assert isinstance(status["source"]["retained_wal_bytes"], int), status


def test_sigterm_repeats_nothing(tmp_path: Path, postgres_server: PostgresServer) -> None:
    postgres_server.execute(SCHEMA)
    out = tmp_path / "out.jsonl"
    config = write_config(tmp_path, {"cdc": cdc_job(postgres_server.url, out)})
    daemon = DaemonProcess(config)
    daemon.wait_for("job.state_changed", job="cdc", to="running")
    writer = ChangeWriter(postgres_server.url, 600, rate=400)
    writer.start()
    daemon.wait_for("job.checkpoint", count=3, job="cdc")
    daemon.stop()
    daemon = DaemonProcess(config)
    daemon.keep_draining()
    try:
        writer.join(60)
        wait_all(out, len(expected_changes(600)))
    finally:
        daemon.stop()
    assert read_changes(out) == expected_changes(600)


def test_a_missing_publication_fails_the_job_with_the_fix(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    postgres_server.execute("CREATE TABLE items (id int PRIMARY KEY, version int)")
    config = write_config(tmp_path, {"cdc": cdc_job(postgres_server.url, tmp_path / "o")})
    daemon = DaemonProcess(config)
    try:
        daemon.wait_for("job.state_changed", job="cdc", to="failed")
        [status] = json.loads(run_cli(config, "status", "--json").stdout)
    finally:
        daemon.stop()
    error = str(status.get("error") or status)
    assert "source.publication: no publication capture on postgresql://" in error, status
    assert "CREATE PUBLICATION capture FOR TABLE" in error
    assert "Traceback" not in error
