"""Processors in worker processes and batch processors (issue #20, items 2 and 3).

Every run is the real daemon: a file source of JSON orders, the processor, the jsonl sink
fsynced at each checkpoint (every 10,000 records), timed from the job's `running` to its
`finished` (bench/throughput.py's way). Three comparisons, each side by side in one run,
the variants alternating round by round; ratios are the median of each round's own ratio:

- **cpu**: `bench.plugins:burn` (a pure-Python loop of about 200 µs a record, measured
  here in-process and reported) in the daemon, and with ``workers = 1, 2, 4``. Target:
  ``workers = 2`` >= 1.7x ``workers = 1`` on a 2-core machine.
- **trivial**: `bench.plugins:enrich` (one field added) in the daemon and with
  ``workers = 1, 2``: what the trip to a worker costs when the processor costs nothing.
- **batch**: the same work as a per-record ``function`` and as a ``batch_function``
  (`enrich` / `enrich_batch`, `burn` / `burn_batch`), in the daemon.

The peak memory of each worker is what the daemon logs when it stops them
(`processor.workers_memory`, VmHWM).

Usage: python bench/processors.py [--cpu-records N] [--records N] [--rounds R] [--cpu-only]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `supervisor` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.daemon_run import events, job_span, run_until_idle, write_daemon
from bench.dataset import records_file
from bench.measure import load_average, median
from bench.plugins import burn

EVERY = 10_000

Variant = tuple[str, str]
"""(name, the ``[processor]`` table's body)."""

CPU: list[Variant] = [
    ("in daemon", 'function = "bench.plugins:burn"'),
    ("workers = 1", 'function = "bench.plugins:burn"\nworkers = 1'),
    ("workers = 2", 'function = "bench.plugins:burn"\nworkers = 2'),
    ("workers = 4", 'function = "bench.plugins:burn"\nworkers = 4'),
]
TRIVIAL: list[Variant] = [
    ("in daemon", 'function = "bench.plugins:enrich"'),
    ("workers = 1", 'function = "bench.plugins:enrich"\nworkers = 1'),
    ("workers = 2", 'function = "bench.plugins:enrich"\nworkers = 2'),
]
BATCH: list[Variant] = [
    ("enrich, function", 'function = "bench.plugins:enrich"'),
    ("enrich, batch_function", 'batch_function = "bench.plugins:enrich_batch"'),
    ("burn, function", 'function = "bench.plugins:burn"'),
    ("burn, batch_function", 'batch_function = "bench.plugins:burn_batch"'),
]


def job(source: Path, work: Path, processor: str) -> str:
    return (
        f'[source]\ntype = "file"\npath = "{source}"\nformat = "jsonl"\nfollow = false\n\n'
        f"[processor]\n{processor}\n\n"
        f'[sink]\ntype = "jsonl"\npath = "{work / "out.jsonl"}"\n\n'
        f'[checkpoint]\nevery_records = {EVERY}\ninterval = "1h"\n'
    )


def run_variant(source: Path, records: int, processor: str, scratch: Path) -> dict[str, Any]:
    """One daemon run: records/s, CPU seconds (the daemon and its reaped workers), and each
    worker's peak memory."""
    work = Path(tempfile.mkdtemp(prefix="processors-", dir=scratch))
    try:
        config = write_daemon(work, {"p": job(source, work, processor)})
        log = work / "daemon.log"
        cost = run_until_idle(config, log)
        span = job_span(log, "p")
        memory = [
            kib / 1024
            for event in events(log)
            if event.get("event") == "processor.workers_memory"
            for kib in event.get("peak_rss_kib", [])
            if kib
        ]
        return {
            "records_per_s": records / span.seconds,
            "seconds": span.seconds,
            "cpu_s": cost.cpu_s,
            "daemon_peak_rss_mb": cost.peak_rss_mb,
            "worker_peak_rss_mb": max(memory) if memory else None,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def compare(
    source: Path, records: int, variants: list[Variant], rounds: int, scratch: Path
) -> dict[str, Any]:
    """Each variant once per round, in turn; medians, and each one's paired ratio to the
    first and to ``workers = 1`` when there is one."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in variants}
    loads = []
    for _ in range(rounds):
        for name, processor in variants:
            runs[name].append(run_variant(source, records, processor, scratch))
        loads.append(load_average()[0])
    first = variants[0][0]
    result: dict[str, Any] = {"records": records, "rounds": rounds, "load_average_1m": loads}
    for name, samples in runs.items():
        memory = [s["worker_peak_rss_mb"] for s in samples if s["worker_peak_rss_mb"]]
        result[name] = {
            "records_per_s": median([s["records_per_s"] for s in samples]),
            "cpu_s": median([s["cpu_s"] for s in samples]),
            "daemon_peak_rss_mb": median([s["daemon_peak_rss_mb"] for s in samples]),
            "worker_peak_rss_mb": median(memory) if memory else None,
            f"ratio_to_{first}": _paired(samples, runs[first]),
            "samples": samples,
        }
        if "workers = 1" in runs:
            result[name]["ratio_to_workers_1"] = _paired(samples, runs["workers = 1"])
    return result


def _paired(samples: list[dict[str, Any]], against: list[dict[str, Any]]) -> float:
    return median(
        [a["records_per_s"] / b["records_per_s"] for a, b in zip(samples, against, strict=True)]
    )


def burn_cost_us(calls: int = 2000) -> float:
    """What `bench.plugins:burn` costs a record here, in µs (median of 5 timings)."""
    record = {"items": [1]}
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(calls):
            burn(record)
        timings.append((time.perf_counter() - started) / calls * 1e6)
    return median(timings)


def processors_compare(
    cpu_records: int, records: int, rounds: int, data_dir: Path, scratch: Path
) -> dict[str, Any]:
    """bench/run.py's `processors` workload."""
    cpu_data = records_file(data_dir, cpu_records)
    data = records_file(data_dir, records)
    return {
        "burn_us_per_record": burn_cost_us(),
        "cpu": compare(cpu_data, cpu_records, CPU, rounds, scratch),
        "trivial": compare(data, records, TRIVIAL, rounds, scratch),
        "batch": compare(data, records, BATCH[:2], rounds, scratch)
        | {"burn": compare(cpu_data, cpu_records, BATCH[2:], rounds, scratch)},
    }


def summary(results: dict[str, Any]) -> list[str]:
    """Markdown: the curve, the overhead, the batch ratio, memory per worker."""
    cpu, trivial, batch = results["cpu"], results["trivial"], results["batch"]
    lines = [
        f"### Processors in workers (`burn`: {results['burn_us_per_record']:.0f} µs of CPU "
        f"a record; {cpu['records']:,} records; load {_loads(cpu)})",
        "",
        "| processor | records/s | / workers = 1 | / in daemon | CPU s | worker peak RSS |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, _ in CPU:
        row = cpu[name]
        lines.append(
            f"| burn, {name} | {row['records_per_s']:,.0f} | {row['ratio_to_workers_1']:.2f}x | "
            f"{row['ratio_to_in daemon']:.2f}x | {row['cpu_s']:.1f} | {_mb(row)} |"
        )
    for name, _ in TRIVIAL:
        row = trivial[name]
        lines.append(
            f"| enrich, {name} | {row['records_per_s']:,.0f} | "
            f"{row['ratio_to_workers_1']:.2f}x | {row['ratio_to_in daemon']:.2f}x | "
            f"{row['cpu_s']:.1f} | {_mb(row)} |"
        )
    target = cpu["workers = 2"]["ratio_to_workers_1"]
    verdict = "met" if target >= 1.7 else "missed"
    lines += [
        "",
        f"Target `workers = 2` >= 1.7x `workers = 1`: {target:.2f}x, {verdict}.",
        "",
        "| same work | function rec/s | batch_function rec/s | batch / function |",
        "|---|---:|---:|---:|",
    ]
    for label, section in (("enrich", batch), ("burn", batch["burn"])):
        per_record = section[f"{label}, function"]
        whole = section[f"{label}, batch_function"]
        lines.append(
            f"| {label} | {per_record['records_per_s']:,.0f} | {whole['records_per_s']:,.0f} | "
            f"{whole[f'ratio_to_{label}, function']:.2f}x |"
        )
    return [*lines, ""]


def _mb(row: dict[str, Any]) -> str:
    value = row["worker_peak_rss_mb"]
    return "" if value is None else f"{value:.1f} MB"


def _loads(section: dict[str, Any]) -> str:
    return ", ".join(f"{load:.2f}" for load in section["load_average_1m"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-records", type=int, default=40_000)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpu-only", action="store_true", help="only the burn curve")
    args = parser.parse_args()
    if args.cpu_only:
        with tempfile.TemporaryDirectory(prefix="processors-bench-") as scratch:
            data = records_file(Path(scratch) / "data", args.cpu_records)
            cpu = compare(data, args.cpu_records, CPU, args.rounds, Path(scratch))
        print(f"burn: {burn_cost_us():.0f} µs a record; load {_loads(cpu)}")
        for name, _ in CPU:
            row = cpu[name]
            print(
                f"{name}: {row['records_per_s']:,.0f} records/s, "
                f"{row['ratio_to_workers_1']:.2f}x workers = 1, worker peak {_mb(row)}"
            )
        return
    with tempfile.TemporaryDirectory(prefix="processors-bench-") as scratch:
        results = processors_compare(
            args.cpu_records, args.records, args.rounds, Path(scratch) / "data", Path(scratch)
        )
    print("\n".join(summary(results)))


if __name__ == "__main__":
    main()
