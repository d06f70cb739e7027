"""Does uvloop make the daemon faster? asyncio's loop and uvloop's, side by side (issue #20).

Each round runs the same daemon job twice, once on each event loop, alternating, on the same
input: the throughput workload's JSON and pass-through jobs (file source, `bench/throughput.py`),
and the Redis and NATS JetStream replay source and sink jobs (`bench/redis_bench.py`,
`bench/nats_bench.py`, each against a server of its own). The figure is the median of each
round's ratio, uvloop's records/s over asyncio's: above 1.0, uvloop is faster.

Usage: python bench/event_loop.py [--records N] [--rounds R] [--only NAME ...]
Needs `uvloop` (`pip install uvloop`); the broker rows need redis-server / nats-server and the
`[redis]` / `[nats]` extras.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import nats_bench, redis_bench
from bench.daemon_run import EVENT_LOOP_ENV
from bench.dataset import records_file
from bench.measure import load_average, median
from bench.throughput import run_daemon

Run = Callable[[Path], float]
"""A work directory -> the daemon's records/s there."""

WORKLOADS = ("json", "lines", "redis-replay", "redis-sink", "nats-replay", "nats-sink")


@contextmanager
def event_loop(name: str) -> Iterator[None]:
    """Daemons started inside run on `name`'s loop ("asyncio" or "uvloop")."""
    before = os.environ.pop(EVENT_LOOP_ENV, None)
    if name == "uvloop":
        os.environ[EVENT_LOOP_ENV] = "uvloop"
    try:
        yield
    finally:
        os.environ.pop(EVENT_LOOP_ENV, None)
        if before is not None:
            os.environ[EVENT_LOOP_ENV] = before


def side_by_side(run: Run, rounds: int, scratch: Path) -> dict[str, Any]:
    rates: dict[str, list[float]] = {"asyncio": [], "uvloop": []}
    for _ in range(rounds):
        for loop in rates:
            work = Path(tempfile.mkdtemp(prefix=f"{loop}-", dir=scratch))
            try:
                with event_loop(loop):
                    rates[loop].append(run(work))
            finally:
                shutil.rmtree(work, ignore_errors=True)
    paired = [u / a for a, u in zip(rates["asyncio"], rates["uvloop"], strict=True)]
    return {
        "asyncio_records_per_s": median(rates["asyncio"]),
        "uvloop_records_per_s": median(rates["uvloop"]),
        "ratio_uvloop_to_asyncio": median(paired),
        "ratio_per_round": paired,
        "load_average_1m": load_average()[0],
    }


def measure(records: int, rounds: int, only: set[str], scratch: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"records": records, "rounds": rounds}
    data = records_file(scratch, records)
    for mode in ("json", "lines"):
        if mode in only:
            results[mode] = side_by_side(
                lambda work, mode=mode: (
                    run_daemon(data, work, mode, 10_000).records_per_s  # type: ignore[misc]
                ),
                rounds,
                scratch,
            )
    if only & {"redis-replay", "redis-sink"}:
        server = redis_bench.Server(Path(tempfile.mkdtemp(prefix="redis-", dir=scratch)))
        try:
            last = server.fill("s", records)
            if "redis-replay" in only:
                results["redis-replay"] = side_by_side(
                    lambda work: (
                        records
                        / redis_bench._daemon_source(server.url, "replay", records, last, work)
                    ),
                    rounds,
                    scratch,
                )
            if "redis-sink" in only:

                def sink(work: Path) -> float:
                    server.client().delete("out")
                    return records / redis_bench._daemon_sink(server.url, records, work)

                results["redis-sink"] = side_by_side(sink, rounds, scratch)
        finally:
            server.stop()
    if only & {"nats-replay", "nats-sink"}:
        nats = nats_bench.Server(scratch / "nats-store")
        try:
            asyncio.run(nats_bench._fill(nats.url, "IN", ["in.records"], records))
            runs = iter(range(1_000_000))
            if "nats-replay" in only:
                results["nats-replay"] = side_by_side(
                    lambda work: nats_bench.run_daemon(
                        "replay", nats.url, "IN", f"replay{next(runs)}", records, work
                    ),
                    rounds,
                    scratch,
                )
            if "nats-sink" in only:

                def nats_sink(work: Path) -> float:
                    n = next(runs)
                    stream = f"OUT{n}"
                    asyncio.run(nats_bench._fresh_out_stream(nats.url, stream))
                    return nats_bench.run_daemon(
                        "sink", nats.url, stream, f"sink{n}", records, work
                    )

                results["nats-sink"] = side_by_side(nats_sink, rounds, scratch)
        finally:
            nats.stop()
    return results


def markdown(results: dict[str, Any]) -> list[str]:
    lines = [
        f"{results['records']:,} records, {results['rounds']} rounds, alternating",
        "",
        "| workload | asyncio rec/s | uvloop rec/s | uvloop / asyncio | per round | load 1m |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for name in WORKLOADS:
        row = results.get(name)
        if row is None:
            continue
        rounds = " ".join(f"{r:.2f}" for r in row["ratio_per_round"])
        lines.append(
            f"| {name} | {row['asyncio_records_per_s']:,.0f} | {row['uvloop_records_per_s']:,.0f}"
            f" | {row['ratio_uvloop_to_asyncio']:.2f}x | {rounds} | {row['load_average_1m']:.2f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", nargs="*", choices=WORKLOADS, default=list(WORKLOADS))
    args = parser.parse_args()
    if args.records < 10_000:
        # The broker jobs checkpoint every 10,000 records and are timed to their last one.
        parser.error("--records: at least 10000")
    scratch = Path(tempfile.mkdtemp(prefix="event-loop-"))
    try:
        results = measure(args.records, args.rounds, set(args.only), scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print("\n".join(markdown(results)))
    print(json.dumps(results), file=sys.stderr)


if __name__ == "__main__":
    main()
