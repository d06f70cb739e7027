"""PostgreSQL sources: postgres (table) and postgres-cdc -> null through the daemon,
against plain psycopg loops doing the same reads and durable offset writes.

Table: a table of N rows (``id bigserial, seq bigint, payload text, xid xid8``, an index
on ``(xid, id)``) written 1,000 rows a transaction. The loop runs the source's query
(``row_to_json`` of the rows after the cursor whose xid is below
``pg_snapshot_xmin(pg_current_snapshot())``, LIMIT the attempt's batch), and every
`every` rows writes its offset durably (bench.baseline's temp file, fsync, rename).

CDC: the same N rows inserted after two pgoutput slots were made, one for the loop and
one for the daemon. The loop peeks (`pg_logical_slot_peek_binary_changes`, 20,000
messages at a time, as the source), decodes with the project's pgoutput decoder (a
plain loop has to decode pgoutput somehow: the daemon's overhead is what is measured),
and every `every` changes writes its offset durably and advances its slot.

Records/s: the daemon from the job's `running` to the checkpoint at the last row (its
log's timestamps); the loop as it times itself. Usage (alone):
python bench/postgres_source_bench.py [--records N] [--rounds R] [--every E]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.baseline import durable_offset_write
from bench.daemon_run import events, start_daemon, write_daemon
from bench.measure import load_average, median

BATCH = 4096
PEEK = 20_000
TABLE = """CREATE TABLE events (id bigserial PRIMARY KEY, seq bigint NOT NULL,
    payload text NOT NULL, xid xid8 NOT NULL DEFAULT pg_current_xact_id());
CREATE INDEX events_xid_id ON events (xid, id);
CREATE PUBLICATION bench FOR TABLE events"""
READ = (
    "SELECT t.xid::text, t.id, row_to_json(t) FROM events AS t "
    "WHERE t.xid < pg_snapshot_xmin(pg_current_snapshot()){after} "
    "ORDER BY t.xid, t.id LIMIT %s"
)


def fill(url: str, count: int) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        for start in range(0, count, 1000):
            connection.execute(
                "INSERT INTO events (seq, payload) SELECT n, 'payload-' || n "
                "FROM generate_series(%s::bigint, %s) AS n",
                (start, min(start + 1000, count) - 1),
            )


def loop_table(url: str, count: int, every: int, state: Path) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        started = time.perf_counter()
        cursor: tuple[str, int] | None = None
        done = uncommitted = 0
        while done < count:
            limit = min(BATCH, every - uncommitted)
            if cursor is None:
                rows = connection.execute(READ.format(after=""), (limit,)).fetchall()
            else:
                after = " AND (t.xid, t.id) > (%s::text::xid8, %s)"
                rows = connection.execute(READ.format(after=after), (*cursor, limit)).fetchall()
            records = [row[2] for row in rows]
            cursor = (rows[-1][0], rows[-1][1])
            done += len(records)
            uncommitted += len(records)
            if uncommitted >= every or done >= count:
                durable_offset_write(state, done)
                uncommitted = 0
        return {"seconds": time.perf_counter() - started, "offset": [int(cursor[0]), cursor[1]]}


def loop_cdc(url: str, count: int, every: int, state: Path) -> dict[str, Any]:
    import psycopg

    from supervisor.connectors.postgres.pgoutput import Decoder, Transaction, lsn_text

    peek = (
        "SELECT data FROM pg_logical_slot_peek_binary_changes('loop_slot', NULL, %s, "
        "'proto_version', '1', 'publication_names', 'bench', 'messages', 'true')"
    )
    with psycopg.connect(url, autocommit=True) as connection:
        started = time.perf_counter()
        done = uncommitted = 0
        lsn = index = complete = advanced = 0
        pending: deque[Transaction] = deque()
        while done < count:
            if not pending:
                decoder = Decoder()
                for (data,) in connection.execute(peek, (PEEK,)).fetchall():
                    txn = decoder.feed(data)
                    if txn is None or txn.end_lsn < lsn:
                        continue
                    if txn.end_lsn == lsn:
                        del txn.changes[:index]
                        if not txn.changes:
                            continue
                    pending.append(txn)
            batch: list[Any] = []
            limit = min(BATCH, every - uncommitted)
            while pending and len(batch) < limit:
                txn = pending[0]
                if txn.end_lsn != lsn:
                    lsn, index = txn.end_lsn, 0
                taken = txn.changes[: limit - len(batch)]
                del txn.changes[: len(taken)]
                batch.extend(taken)
                index += len(taken)
                if not txn.changes:
                    pending.popleft()
                    complete = txn.end_lsn
            done += len(batch)
            uncommitted += len(batch)
            if uncommitted >= every or done >= count:
                durable_offset_write(state, done)
                if complete > advanced:
                    connection.execute(
                        "SELECT pg_replication_slot_advance('loop_slot', %s::pg_lsn)",
                        (lsn_text(complete),),
                    )
                    advanced = complete
                uncommitted = 0
        return {"seconds": time.perf_counter() - started, "offset": [lsn_text(lsn), index]}


def run_daemon(url: str, kind: str, every: int, last: Any, work: Path) -> float:
    if kind == "table":
        source = f'type = "postgres"\nurl = "{url}"\ntable = "events"\n'
    else:
        source = (
            f'type = "postgres-cdc"\nurl = "{url}"\nslot = "daemon_slot"\n'
            'publication = "bench"\ncreate_slot = false\n'
        )
    job = (
        f'[source]\n{source}\n[sink]\ntype = "null"\n\n'
        f'[checkpoint]\nevery_records = {every}\ninterval = "1h"\n'
    )
    config = write_daemon(work, {"pg": job}, log_level="debug")
    log = work / "daemon.log"
    process = start_daemon(config, log)
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            running = end = None
            for event in events(log):
                if event.get("event") == "job.state_changed" and event.get("to") == "running":
                    running = running or _seconds(event["timestamp"])
                if event.get("event") == "job.checkpoint" and event.get("offset") == last:
                    end = _seconds(event["timestamp"])
            if running and end:
                return end - running
            if process.poll() is not None:
                raise RuntimeError(f"the daemon exited: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"the daemon did not reach {last}")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def _seconds(timestamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def _loop(kind: str, url: str, count: int, every: int, work: Path) -> dict[str, Any]:
    state = work / "loop-state"
    state.mkdir()
    argv = [sys.executable, __file__, "--loop", kind, "--url", url, "--records", str(count)]
    argv += ["--every", str(every), "--state", str(state)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def compare(*, records: int, rounds: int, every: int, scratch: Path) -> dict[str, Any]:
    """Per round and source: a fresh table (and slots), the loop, then the daemon; medians
    and the paired ratios daemon / loop."""
    from tests.servers import PostgresServer

    if records < every or records % every:
        # The daemon's last checkpoint comes at `every` records (the interval is 1 h): the
        # run's end is the checkpoint at the last row, so the rows must fill checkpoints.
        raise ValueError(f"records ({records}) must be a multiple of every ({every})")
    server = PostgresServer()
    server.start()
    samples: dict[str, list[float]] = {"table": [], "cdc": []}
    ratios: dict[str, list[float]] = {"table": [], "cdc": []}
    loads = []
    try:
        for _ in range(rounds):
            for kind in ("table", "cdc"):
                server.execute("DROP TABLE IF EXISTS events")
                server.execute("DROP PUBLICATION IF EXISTS bench")
                for (slot,) in server.query("SELECT slot_name FROM pg_replication_slots"):
                    server.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                server.execute(TABLE)
                if kind == "cdc":
                    for slot in ("loop_slot", "daemon_slot"):
                        server.execute(
                            "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,)
                        )
                fill(server.url, records)
                server.execute("CHECKPOINT")
                work = Path(tempfile.mkdtemp(prefix="pg-source-bench-", dir=scratch))
                try:
                    loop = _loop(kind, server.url, records, every, work)
                    seconds = run_daemon(server.url, kind, every, loop["offset"], work)
                finally:
                    shutil.rmtree(work, ignore_errors=True)
                daemon_rate, loop_rate = records / seconds, records / loop["seconds"]
                samples[kind] += [daemon_rate, loop_rate]
                ratios[kind].append(daemon_rate / loop_rate)
            loads.append(load_average()[0])
    finally:
        server.cleanup()
    result: dict[str, Any] = {"records": records, "every_records": every, "rounds": rounds}
    result["load_average_1m"] = loads
    for kind in ("table", "cdc"):
        result[f"{kind}_daemon_records_per_s"] = median(samples[kind][0::2])
        result[f"{kind}_loop_records_per_s"] = median(samples[kind][1::2])
        result[f"ratio_{kind}"] = median(ratios[kind])
        result[f"ratio_{kind}_per_round"] = ratios[kind]
    return result


def markdown(section: dict[str, Any]) -> list[str]:
    lines = [
        "### PostgreSQL sources (postgres table, postgres-cdc -> null)",
        "",
        f"{section['records']:,} rows, a checkpoint every {section['every_records']:,}, "
        f"median of {section['rounds']} round(s).",
        "",
        "| source | daemon records/s | plain loop records/s | daemon / loop (target >= 0.9x) |",
        "|---|---|---|---|",
    ]
    for kind, name in (("table", "table (xid8, id) cursor"), ("cdc", "CDC (pgoutput slot)")):
        lines.append(
            f"| {name} | {section[f'{kind}_daemon_records_per_s']:,.0f} | "
            f"{section[f'{kind}_loop_records_per_s']:,.0f} | {section[f'ratio_{kind}']:.2f}x |"
        )
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--every", type=int, default=10_000)
    parser.add_argument("--loop", choices=["table", "cdc"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--state", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loop:
        run = loop_table if args.loop == "table" else loop_cdc
        print(json.dumps(run(args.url, args.records, args.every, args.state)))
        return
    with tempfile.TemporaryDirectory(prefix="pg-source-bench-") as scratch:
        section = compare(
            records=args.records, rounds=args.rounds, every=args.every, scratch=Path(scratch)
        )
    print(json.dumps(section, indent=2))
    print("\n".join(markdown(section)))


if __name__ == "__main__":
    main()
