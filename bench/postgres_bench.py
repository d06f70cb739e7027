"""PostgreSQL sink: generate -> postgres through the daemon, against a plain psycopg loop.

The plain loop does the same work the sink does, with none of the daemon's machinery:
records ``{"seq": n}`` made in batches of 4096 (the attempt's batch), and every
`every` records one transaction holding the rows (COPY in insert mode, a pipelined
``executemany`` of ``INSERT ... ON CONFLICT DO UPDATE`` in upsert mode) and the job's
offset (an upsert into the offsets table). The daemon also writes its own snapshot
(fsync) at each checkpoint; the loop does not.

A third contestant, the plain loop with ``executemany`` in insert mode, is what the
choice of COPY for insert mode was measured against.

Records/s: for the daemon, the job's `running` to `finished` (its log's timestamps);
for the loop, as it times itself (first record to the last commit). Each round has a
fresh table; ratios are paired per round, as in bench/throughput.py.

Usage (alone): python bench/postgres_bench.py [--records N] [--rounds R] [--every E]
The server is started by the bench (tests/servers.py's PostgresServer: initdb in a
temporary directory), so it needs PostgreSQL's binaries and the ``[postgres]`` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.daemon_run import job_span, run_until_idle, write_daemon
from bench.measure import load_average, median, run_measured

BENCH = Path(__file__).resolve().parent
BATCH = 4096
OFFSETS = "stream_supervisor_offsets"

TABLES = {
    "insert": "CREATE TABLE IF NOT EXISTS bench_rows (seq bigint, v bigint)",
    "upsert": "CREATE TABLE IF NOT EXISTS bench_rows (seq bigint PRIMARY KEY, v bigint)",
}


def daemon_job(url: str, count: int, every: int, mode: str) -> str:
    key = 'key = ["seq"]\n' if mode == "upsert" else ""
    return (
        f'[source]\ntype = "generate"\ncount = {count}\n\n'
        f'[sink]\ntype = "postgres"\nurl = "{url}"\ntable = "bench_rows"\n'
        f'columns = {{ seq = "seq", v = "seq" }}\nmode = "{mode}"\n{key}\n'
        f'[checkpoint]\nevery_records = {every}\ninterval = "1h"\n'
    )


def run_daemon(url: str, work: Path, count: int, every: int, mode: str) -> dict[str, float]:
    config = write_daemon(work, {"pg": daemon_job(url, count, every, mode)})
    log = work / "daemon.log"
    cost = run_until_idle(config, log)
    span = job_span(log, "pg")
    return {"records": count, "seconds": span.seconds, "cpu_s": cost.cpu_s}


def run_loop(url: str, work: Path, count: int, every: int, method: str) -> dict[str, float]:
    out = work / "loop.json"
    argv = [sys.executable, str(Path(__file__).resolve()), "--loop", method, "--url", url]
    argv += ["--records", str(count), "--every", str(every)]
    with out.open("wb") as stdout:
        cost = run_measured(argv, stdout=stdout)
    said = json.loads(out.read_text().strip().splitlines()[-1])
    return {"records": said["records"], "seconds": said["seconds"], "cpu_s": cost.cpu_s}


async def plain_loop(url: str, count: int, every: int, method: str) -> dict[str, float]:
    """The loop itself (in its own process): what the sink does, written out by hand."""
    import psycopg
    from psycopg.types.json import Jsonb

    connection = await psycopg.AsyncConnection.connect(url, autocommit=True)
    offset_sql = (
        f"INSERT INTO {OFFSETS} (job, job_offset) VALUES (%s, %s) ON CONFLICT (job) "
        "DO UPDATE SET job_offset = EXCLUDED.job_offset, updated_at = now()"
    )
    if method == "upsert":
        insert = (
            "INSERT INTO bench_rows (seq, v) VALUES (%s, %s) ON CONFLICT (seq) "
            "DO UPDATE SET v = EXCLUDED.v"
        )
    else:
        insert = "INSERT INTO bench_rows (seq, v) VALUES (%s, %s)"
    started = time.perf_counter()
    pending: list[tuple[Any, ...]] = []
    fields = ("seq", "seq")
    next_seq = 0

    async def commit(offset: int) -> None:
        nonlocal pending
        rows, pending = pending, []
        async with connection.transaction(), connection.cursor() as cursor:
            if method == "copy":
                async with cursor.copy("COPY bench_rows (seq, v) FROM STDIN") as copy:
                    for row in rows:
                        await copy.write_row(row)
            else:
                await cursor.executemany(insert, rows)
            await cursor.execute(offset_sql, ("pg", Jsonb(offset)))

    while next_seq < count:
        size = min(BATCH, count - next_seq, every - len(pending))
        records = [{"seq": seq} for seq in range(next_seq, next_seq + size)]
        next_seq += size
        pending.extend(tuple(map(record.get, fields)) for record in records)
        if len(pending) >= every:
            await commit(next_seq)
    if pending:
        await commit(next_seq)
    seconds = time.perf_counter() - started
    await connection.close()
    return {"records": count, "seconds": seconds}


CONTESTANTS = {
    # name: (mode of the table, how it runs)
    "daemon insert (COPY)": "insert",
    "loop insert (COPY)": "insert",
    "loop insert (executemany)": "insert",
    "daemon upsert": "upsert",
    "loop upsert (executemany)": "upsert",
}


def compare(
    *,
    records: int,
    rounds: int,
    every: int,
    scratch: Path,
    modes: tuple[str, ...] = ("insert", "upsert"),
) -> dict[str, Any]:
    """Every contestant once per round, in turn, each on a fresh table; medians and the
    paired ratios of the daemon to the loop doing the same statements."""
    from tests.servers import PostgresServer

    server = PostgresServer()
    server.start()
    try:
        url = server.url
        contestants = {name: mode for name, mode in CONTESTANTS.items() if mode in modes}
        samples: dict[str, list[dict[str, float]]] = {name: [] for name in contestants}
        loads = []
        for _ in range(rounds):
            for name, mode in contestants.items():
                server.execute("DROP TABLE IF EXISTS bench_rows")
                server.execute(f"DROP TABLE IF EXISTS {OFFSETS}")
                server.execute(TABLES[mode])
                server.execute(
                    f"CREATE TABLE {OFFSETS} (job text PRIMARY KEY, job_offset jsonb NOT NULL, "
                    "updated_at timestamptz NOT NULL DEFAULT now())"
                )
                server.execute("CHECKPOINT")
                work = Path(tempfile.mkdtemp(prefix="pg-bench-", dir=scratch))
                try:
                    if name.startswith("daemon"):
                        run = run_daemon(url, work, records, every, mode)
                    else:
                        method = "copy" if "COPY" in name else mode
                        method = "executemany" if method == "insert" else method
                        run = run_loop(url, work, records, every, method)
                finally:
                    shutil.rmtree(work, ignore_errors=True)
                [(rows,)] = server.query("SELECT count(*) FROM bench_rows")
                if rows != records:
                    raise RuntimeError(f"{name}: {rows} rows in the table, not {records}")
                samples[name].append({**run, "records_per_s": run["records"] / run["seconds"]})
            loads.append(load_average()[0])
    finally:
        server.cleanup()
    result: dict[str, Any] = {
        "records": records,
        "every_records": every,
        "rounds": rounds,
        "load_average_1m": loads,
    }
    for name, runs in samples.items():
        result[name] = {
            "records_per_s": median([run["records_per_s"] for run in runs]),
            "cpu_s": median([run["cpu_s"] for run in runs]),
            "samples": runs,
        }
    for daemon, loop, key in (
        ("daemon insert (COPY)", "loop insert (COPY)", "ratio_insert"),
        ("daemon upsert", "loop upsert (executemany)", "ratio_upsert"),
    ):
        if daemon not in samples:
            continue
        paired = [
            a["records_per_s"] / b["records_per_s"]
            for a, b in zip(samples[daemon], samples[loop], strict=True)
        ]
        result[key] = median(paired)
        result[f"{key}_per_round"] = paired
    if "insert" in modes:
        copy = result["loop insert (COPY)"]["records_per_s"]
        executemany = result["loop insert (executemany)"]["records_per_s"]
        result["copy_over_executemany"] = copy / executemany
    return result


def markdown(section: dict[str, Any]) -> list[str]:
    lines = [
        "### PostgreSQL sink (generate -> postgres)",
        "",
        f"{section['records']:,} records, a transaction (rows + offset) every "
        f"{section['every_records']:,}, median of {section['rounds']} round(s).",
        "",
        "| contestant | records/s | CPU s |",
        "|---|---|---|",
    ]
    for name in CONTESTANTS:
        row = section[name]
        lines.append(f"| {name} | {row['records_per_s']:,.0f} | {row['cpu_s']:.2f} |")
    lines += [
        "",
        f"daemon / loop, insert (COPY): {section['ratio_insert']:.2f}x (target >= 0.9x); "
        f"upsert: {section['ratio_upsert']:.2f}x (target >= 0.9x); "
        f"COPY / executemany in the plain loop: {section['copy_over_executemany']:.1f}x.",
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--every", type=int, default=10_000)
    parser.add_argument(
        "--modes", nargs="+", choices=["insert", "upsert"], default=["insert", "upsert"]
    )
    parser.add_argument("--loop", choices=["copy", "executemany", "upsert"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loop:
        print(json.dumps(asyncio.run(plain_loop(args.url, args.records, args.every, args.loop))))
        return
    with tempfile.TemporaryDirectory(prefix="pg-bench-") as scratch:
        section = compare(
            records=args.records,
            rounds=args.rounds,
            every=args.every,
            scratch=Path(scratch),
            modes=tuple(args.modes),
        )
    print(json.dumps(section, indent=2))
    print("\n".join(markdown(section)))


if __name__ == "__main__":
    main()
