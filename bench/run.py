"""Run every benchmark workload; write bench/results/results.md and results.json.

Usage: python bench/run.py [--quick] [--only NAME ...] [--out DIR] [--scratch DIR]

Workloads (issue #6, and the connectors'): throughput (JSON and pass-through, daemon vs plain loop
vs bytewax when installed), checkpoint (snapshot write vs raw durable write,
and an `every_records` sweep), scale (10 to 10,000 jobs, and restart with
snapshots), storm (1,000 jobs failing at once, `bench/storm.py`), metrics (issue #19), and one
workload per connector against a plain client loop: amqp (`bench/amqp_bench.py`; a node
of its own unless BENCH_AMQP_URL names one), exec (`bench/exec_bench.py`), nats
(`bench/nats_bench.py`), postgres
(the sink, `bench/postgres_bench.py`; the table and CDC sources,
`bench/postgres_source_bench.py`), redis (`bench/redis_bench.py`), processors (issue #20: workers
and batch functions, `bench/processors.py`). A connector workload needs its
server and extra installed, else its results say why not.
`--quick` runs small versions of all of them in about a minute: a smoke check.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `supervisor` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.checkpoint_cost import snapshot_write_cost
from bench.daemon_run import PRODUCT_ENV
from bench.dataset import records_file
from bench.exec_bench import exec_compare
from bench.exec_bench import summary as exec_summary
from bench.measure import machine
from bench.processors import processors_compare
from bench.processors import summary as processors_summary
from bench.report import markdown
from bench.scale import scale
from bench.throughput import (
    Contestant,
    bytewax_installed,
    compare,
    every_records_sweep,
    msgspec_installed,
    run_baseline,
    run_bytewax,
    run_daemon,
)

WORKLOADS = (
    "throughput", "checkpoint", "scale", "storm", "metrics",
    "amqp", "exec", "nats", "postgres", "redis", "processors",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Sizes:
    """How big each workload is: the full run, or `--quick`."""

    records: int
    rounds: int
    sweep_records: int
    sweep_rounds: int
    snapshot_writes: int
    job_counts: list[int]
    restart_counts: list[int]
    idle_seconds: float
    status_requests: int
    scale_rounds: int
    storm_jobs: int
    storm_rounds: int
    metrics_records: int = 1_000_000
    metrics_rounds: int = 5
    metrics_jobs: int = 10_000
    metrics_scrapes: int = 10
    metrics_idle_seconds: float = 60
    # One workload per connector: keyword sizes, the full run's by default.
    postgres_records: int = 1_000_000
    postgres_rounds: int = 3
    redis_records: int = 200_000
    redis_rounds: int = 3
    exec_records: int = 1_000_000
    amqp_records: int = 100_000
    amqp_rounds: int = 3
    nats_records: int = 200_000
    nats_rounds: int = 3
    # Processors in workers, batch processors (bench/processors.py): the CPU-bound one costs
    # about 200 µs a record, so its input is small.
    processor_cpu_records: int = 40_000
    processor_records: int = 300_000


FULL = Sizes(
    1_000_000,
    5,
    300_000,
    3,
    1000,
    [10, 100, 1000, 10_000],
    [1000, 10_000],
    10,
    20,
    3,
    1000,
    3,
)
QUICK = Sizes(
    30_000, 3, 20_000, 1, 200, [10, 100], [100], 2, 5, 1, 100, 1,
    metrics_records=30_000, metrics_rounds=2, metrics_jobs=100, metrics_scrapes=3,
    metrics_idle_seconds=2,
    postgres_records=50_000, postgres_rounds=1,
    redis_records=20_000, redis_rounds=1,
    exec_records=30_000,
    amqp_records=10_000, amqp_rounds=1,
    nats_records=20_000, nats_rounds=1,
    processor_cpu_records=2_000, processor_records=20_000,
)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke check")
    parser.add_argument("--only", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--scratch", type=Path, help="work directory (default: a temporary one)")
    parser.add_argument(
        "--product",
        type=Path,
        help="run the daemon from the `supervisor` package in this directory instead of the "
        "checkout's, for before/after comparisons (the in-process checkpoint workload still "
        "uses the checkout's)",
    )
    args = parser.parse_args()
    if args.product:
        os.environ[PRODUCT_ENV] = str(args.product.resolve())
    sizes = QUICK if args.quick else FULL
    # Absolute (and --scratch too): data and work files are made under them, and a job
    # file's relative path is taken relative to the job file, not to this directory.
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "bench/run.py", *sys.argv[1:]])
    started = time.perf_counter()
    results: dict[str, Any] = {
        "command": command,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "product": str(args.product.resolve()) if args.product else "this checkout",
        "sizes": _sizes(sizes),
    }
    scratch_parent = args.scratch.resolve() if args.scratch else None
    with tempfile.TemporaryDirectory(prefix="bench-", dir=scratch_parent) as scratch_dir:
        scratch = Path(scratch_dir)
        for name in args.only:
            print(f"== {name}", flush=True)
            stage = time.perf_counter()
            RUNNERS[name](results, sizes, scratch, args.out)
            print(f"   {time.perf_counter() - stage:.1f} s", flush=True)
    results["duration_s"] = time.perf_counter() - started
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    if "exec" in results:
        table += "\n" + "\n".join(exec_summary(results["exec"]))
    if "processors" in results:
        table += "\n" + "\n".join(processors_summary(results["processors"]))
    (args.out / "results.md").write_text(table)
    print(table)
    print(f"written: {args.out / 'results.md'}, {args.out / 'results.json'}")


def _sizes(sizes: Sizes) -> dict[str, Any]:
    return {name: getattr(sizes, name) for name in sizes.__slots__}


def _throughput(results: dict[str, Any], sizes: Sizes, scratch: Path, out: Path) -> None:
    """JSON: the daemon with each codec and the plain loop with each library (issue #20);
    pass-through: the daemon and the plain loop (no JSON anywhere)."""
    data = records_file(out / "data", sizes.records)
    fast = msgspec_installed()
    contestants: dict[str, Contestant] = {
        "daemon": run_daemon,  # codec "auto": msgspec when installed
        "daemon_json": partial(run_daemon, codec="json"),
        "baseline": partial(run_baseline, codec="json"),
    }
    if fast:
        contestants["baseline_msgspec"] = partial(run_baseline, codec="msgspec")
    note = None
    if bytewax_installed():
        contestants["bytewax"] = run_bytewax
    else:
        note = "not installed (pip install -e '.[bench]')"
    for mode in ("json", "lines"):
        chosen = dict(contestants)
        if mode == "lines":  # no JSON: one daemon and one plain loop
            del chosen["daemon_json"]
            chosen.pop("baseline_msgspec", None)
        section = compare(
            data,
            chosen,
            mode=mode,
            every=10_000,
            rounds=sizes.rounds,
            scratch=scratch,
            pairs=(("daemon_json", "baseline"),) if mode == "json" else (),
        )
        section["codec"] = "msgspec" if fast and mode == "json" else "json"
        if not fast:
            section["msgspec_note"] = "not installed (pip install -e '.[fast]')"
        if note:
            section["bytewax_note"] = note
        results[f"throughput_{mode}"] = section


def _checkpoint(results: dict[str, Any], sizes: Sizes, scratch: Path, out: Path) -> None:
    results["checkpoint"] = snapshot_write_cost(sizes.snapshot_writes, scratch)
    data = records_file(out / "data", sizes.sweep_records)
    sweep = every_records_sweep(
        data, [100, 1000, 10_000, 100_000], rounds=sizes.sweep_rounds, scratch=scratch
    )
    results["sweep"] = {"records": sizes.sweep_records, **sweep}


def _scale(results: dict[str, Any], sizes: Sizes, scratch: Path, out: Path) -> None:
    results["scale"] = scale(
        sizes.job_counts,
        sizes.restart_counts,
        idle_seconds=sizes.idle_seconds,
        status_requests=sizes.status_requests,
        scratch=scratch,
        rounds=sizes.scale_rounds,
    )


def _storm(results: dict[str, Any], sizes: Sizes, scratch: Path, out: Path) -> None:
    try:
        from bench.storm import pooled, run_storm

        runs = []
        for _ in range(sizes.storm_rounds):
            workdir = Path(tempfile.mkdtemp(prefix="storm-", dir=scratch))
            runs.append(run_storm(sizes.storm_jobs, workdir))
        results["storm"] = pooled(runs)
    except Exception as exc:  # noqa: BLE001 - reported in the results, the other workloads stand
        traceback.print_exc()
        results["storm"] = {"error": f"{type(exc).__name__}: {exc}"}


def _metrics(results: dict[str, Any], sizes: Sizes, scratch: Path, out: Path) -> None:
    from bench.metrics_bench import metrics_on_off, scrape_at_scale

    if importlib.util.find_spec("prometheus_client") is None:
        results["metrics"] = {"error": "not installed (pip install -e '.[metrics]')"}
        return
    data = records_file(out / "data", sizes.metrics_records)
    results["metrics"] = {
        "throughput_json": metrics_on_off(data, rounds=sizes.metrics_rounds, scratch=scratch),
        "scrape": scrape_at_scale(
            sizes.metrics_jobs,
            scrapes=sizes.metrics_scrapes,
            idle_seconds=sizes.metrics_idle_seconds,
            scratch=scratch,
        ),
    }


def _postgres(results: dict[str, Any], sizes: Sizes, scratch: Path, out: Path) -> None:
    """The PostgreSQL sink against a plain psycopg loop (bench/postgres_bench.py); needs
    PostgreSQL's binaries and the [postgres] extra, else the results say why not."""
    try:
        from bench.postgres_bench import compare as postgres_compare

        results["postgres"] = postgres_compare(
            records=sizes.postgres_records,
            rounds=sizes.postgres_rounds,
            every=10_000,
            scratch=scratch,
        )
    except Exception as exc:  # noqa: BLE001 - reported in the results, the rest stand
        traceback.print_exc()
        results["postgres"] = {"error": f"{type(exc).__name__}: {exc}"}
    try:
        from bench.postgres_source_bench import compare as sources_compare

        results["postgres_sources"] = sources_compare(
            records=max(10_000, sizes.postgres_records // 20_000 * 10_000),  # whole checkpoints
            rounds=sizes.postgres_rounds,
            every=10_000,
            scratch=scratch,
        )
    except Exception as exc:  # noqa: BLE001 - reported in the results, the rest stand
        traceback.print_exc()
        results["postgres_sources"] = {"error": f"{type(exc).__name__}: {exc}"}


def _redis(results: dict[str, Any], sizes: Sizes, scratch: Path, out: Path) -> None:
    try:
        from bench.redis_bench import redis_bench

        results["redis"] = redis_bench(sizes.redis_records, sizes.redis_rounds, scratch)
    except Exception as exc:  # noqa: BLE001 - e.g. no redis-server: the others stand
        traceback.print_exc()
        results["redis"] = {"error": f"{type(exc).__name__}: {exc}"}


def _exec(results: dict[str, Any], sizes: Sizes, scratch: Path, out: Path) -> None:
    """`cat` through an exec source against the same pipe read by a plain loop."""
    results["exec"] = exec_compare(sizes.exec_records, sizes.rounds, out / "data", scratch)


def _amqp(results: dict[str, Any], sizes: Sizes, scratch: Path, out: Path) -> None:
    try:
        from bench.amqp_bench import with_broker

        results["amqp"] = with_broker(
            scratch,
            os.environ.get("BENCH_AMQP_URL"),
            records=sizes.amqp_records,
            rounds=sizes.amqp_rounds,
            every=10_000,
        )
    except Exception as exc:  # noqa: BLE001 - reported in the results, the other workloads stand
        traceback.print_exc()
        results["amqp"] = {"error": f"{type(exc).__name__}: {exc}"}


def _nats(results: dict[str, Any], sizes: Sizes, scratch: Path, out: Path) -> None:
    try:
        from bench.nats_bench import compare as nats_compare

        results["nats"] = nats_compare(sizes.nats_records, sizes.nats_rounds, scratch)
    except Exception as exc:  # noqa: BLE001 - reported in the results, the other workloads stand
        traceback.print_exc()
        results["nats"] = {"error": f"{type(exc).__name__}: {exc}"}


def _processors(results: dict[str, Any], sizes: Sizes, scratch: Path, out: Path) -> None:
    """A CPU-bound processor in the daemon and in 1, 2, 4 workers; a trivial one; batch vs
    per-record (bench/processors.py)."""
    results["processors"] = processors_compare(
        sizes.processor_cpu_records, sizes.processor_records, sizes.rounds, out / "data", scratch
    )


RUNNERS = {
    "throughput": _throughput,
    "checkpoint": _checkpoint,
    "scale": _scale,
    "storm": _storm,
    "metrics": _metrics,
    "postgres": _postgres,
    "redis": _redis,
    "exec": _exec,
    "amqp": _amqp,
    "nats": _nats,
    "processors": _processors,
}


if __name__ == "__main__":
    main()
