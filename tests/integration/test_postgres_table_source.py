"""The ``postgres`` table source with the real daemon and a real server, while writers
commit out of order: two jobs read the same table, one into the ``postgres`` sink
(exactly-once end to end) and one into a ``jsonl`` file (at-least-once: repeats only
within one checkpoint per crash). A SIGTERM repeats nothing; a SIGKILL of the daemon
loses nothing; bad input fails the job with a clear error and no traceback.

The long runs (server SIGKILLed 10 times, daemon 20 times, 100,000 rows with
``SOAK_FULL=1``) are in tests/soak/test_postgres_table_soak.py.
"""

from __future__ import annotations

import collections
import json
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.daemon_process import DaemonProcess, write_config
from tests.helpers import run_cli
from tests.servers import PostgresServer

pytestmark = pytest.mark.slow

SOURCE_TABLE = """CREATE TABLE events (
    id bigserial PRIMARY KEY,
    seq bigint NOT NULL UNIQUE,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX events_xid_id ON events (xid, id);
CREATE TABLE copied (seq bigint)"""


def table_jobs(url: str, out: Path, *, every: int = 500) -> dict[str, str]:
    """Two jobs on the same source table: into the postgres sink and into a jsonl file."""
    source = f"""
        [source]
        type = "postgres"
        url = "{url}"
        table = "events"
        columns = ["seq"]
        poll_interval = "50ms"
        lag_interval = "200ms"

        [checkpoint]
        every_records = {every}
        interval = "1s"

        [retry]
        initial = "0.05s"
        max = "0.5s"
        max_attempts = 0
    """
    return {
        "topg": source
        + f"""
        [sink]
        type = "postgres"
        url = "{url}"
        table = "copied"
        columns = ["seq"]
        """,
        "tojsonl": source
        + f"""
        [sink]
        type = "jsonl"
        path = "{out}"
        """,
    }


class Writers:
    """`count` seqs inserted by `writers` threads, `block` rows a transaction, some
    transactions held open a moment so that a later one commits first; about `rate` rows
    a second in all. A writer whose server went away reconnects and does its block
    again (the seq is unique: a block that did commit is not written twice)."""

    def __init__(self, url: str, count: int, *, writers: int = 8, rate: float = 4000) -> None:
        self.url = url
        self.count = count
        self.block = 20
        self.pause = self.block * writers / rate
        self.threads = [
            threading.Thread(target=self._run, args=(n, writers), daemon=True)
            for n in range(writers)
        ]
        self.errors: list[BaseException] = []

    def start(self) -> Writers:
        for thread in self.threads:
            thread.start()
        return self

    def done(self) -> bool:
        return not any(thread.is_alive() for thread in self.threads)

    def join(self, timeout: float = 300) -> None:
        for thread in self.threads:
            thread.join(timeout)
        assert self.done() and not self.errors, self.errors

    def _run(self, number: int, writers: int) -> None:
        import psycopg

        rng = random.Random(number)
        starts = range(number * self.block, self.count, writers * self.block)
        connection: psycopg.Connection[object] | None = None
        try:
            for first in starts:
                last = min(first + self.block, self.count) - 1
                while True:
                    try:
                        if connection is None:
                            connection = psycopg.connect(self.url, connect_timeout=2)
                        middle = (first + last) // 2
                        insert = (
                            "INSERT INTO events (seq) SELECT generate_series(%s::bigint, %s) "
                            "ON CONFLICT (seq) DO NOTHING"
                        )
                        connection.execute(insert, (first, middle))
                        if rng.random() < 0.3:
                            connection.execute("SELECT pg_sleep(0.005)")  # others commit first
                        connection.execute(insert, (middle + 1, last))
                        connection.commit()
                        break
                    except psycopg.OperationalError:
                        if connection is not None:
                            connection.close()
                        connection = None
                        time.sleep(0.05)
                time.sleep(self.pause)
        except BaseException as exc:  # reported by join
            self.errors.append(exc)
        finally:
            if connection is not None:
                connection.close()


def copied_counts(server: PostgresServer) -> tuple[int, int]:
    """(rows, distinct seqs) in the postgres sink's table."""
    [(rows, distinct)] = server.query("SELECT count(*), count(DISTINCT seq) FROM copied")
    return rows, distinct


def jsonl_counts(path: Path) -> collections.Counter[int]:
    counts: collections.Counter[int] = collections.Counter()
    if path.exists():
        for line in path.read_text().splitlines():
            counts[json.loads(line)["seq"]] += 1
    return counts


def wait_copied(server: PostgresServer, out: Path, count: int, timeout: float = 120) -> None:
    """Until both jobs hold every seq (polling the tables and the file)."""
    deadline = time.monotonic() + timeout
    while True:
        if copied_counts(server)[1] == count and len(jsonl_counts(out)) == count:
            return
        assert time.monotonic() < deadline, (copied_counts(server), len(jsonl_counts(out)))
        time.sleep(0.1)


def test_sigterm_and_sigkill_under_out_of_order_writers_lose_nothing(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    count = 8_000
    postgres_server.execute(SOURCE_TABLE)
    out = tmp_path / "out.jsonl"
    config = write_config(tmp_path, table_jobs(postgres_server.url, out, every=300))
    writers = Writers(postgres_server.url, count, rate=3000).start()
    daemon = DaemonProcess(config)
    daemon.wait_for("job.checkpoint", count=4, job="tojsonl")
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.finish() == 0
    daemon = DaemonProcess(config)
    daemon.wait_for("job.checkpoint", count=4, job="tojsonl")
    daemon.kill()
    daemon = DaemonProcess(config)
    daemon.keep_draining()
    try:
        writers.join()
        wait_copied(postgres_server, out, count)
        [status] = [
            job
            for job in json.loads(run_cli(config, "status", "--json").stdout)
            if job["job"] == "topg"
        ]
    finally:
        daemon.stop()
    assert copied_counts(postgres_server) == (count, count)  # exactly once
    repeats = sum(n - 1 for n in jsonl_counts(out).values())
    assert repeats <= 300, repeats  # one SIGKILL: within one checkpoint; the SIGTERM: none
    assert status["state"] == "running"
    assert isinstance(status["source"]["position"], list), status
    assert status["source"]["lag"] == 0, status


def test_a_table_without_the_xid_column_fails_the_job_with_the_fix(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    postgres_server.execute("CREATE TABLE events (id bigserial PRIMARY KEY, seq bigint)")
    postgres_server.execute("CREATE TABLE copied (seq bigint)")
    jobs = table_jobs(postgres_server.url, tmp_path / "out.jsonl")
    config = write_config(tmp_path, {"topg": jobs["topg"]})
    daemon = DaemonProcess(config)
    try:
        daemon.wait_for("job.state_changed", job="topg", to="failed")
        [status] = json.loads(run_cli(config, "status", "--json").stdout)
    finally:
        daemon.stop()
    error = str(status.get("error") or status)
    assert "source.xid_column: table events on postgresql://" in error, status
    assert "ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id()" in error
    assert "Traceback" not in error


def test_check_refuses_a_bad_offset_and_keys(tmp_path: Path) -> None:
    jobs = table_jobs("postgresql://u@127.0.0.1:5432/db", tmp_path / "out.jsonl")
    config = write_config(
        tmp_path, {"topg": jobs["topg"].replace('"seq"]', '"seq"]\nid_column = "xid"')}
    )
    result = run_cli(config, "check")
    assert result.returncode == 2
    assert "source.id_column: must not be the xid column" in result.stdout + result.stderr
