"""Run every benchmark workload; write bench/results/results.md and results.json.

Usage: python bench/run.py [--quick] [--only NAME ...] [--out DIR] [--scratch DIR]

Workloads (issue #6): throughput (JSON and pass-through, daemon vs plain loop
vs bytewax when installed), checkpoint (snapshot write vs raw durable write,
and an `every_records` sweep), scale (10 to 10,000 jobs, and restart with
snapshots), storm (1,000 jobs failing at once, `bench/storm.py`), nats (the NATS
JetStream source in both modes and the sink against plain nats-py loops,
`bench/nats_bench.py`; needs nats-server and the [nats] extra).
`--quick` runs small versions of all of them in about a minute: a smoke check.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `supervisor` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.checkpoint_cost import snapshot_write_cost
from bench.daemon_run import PRODUCT_ENV
from bench.dataset import records_file
from bench.measure import machine
from bench.report import markdown
from bench.scale import scale
from bench.throughput import (
    Contestant,
    bytewax_installed,
    compare,
    every_records_sweep,
    run_baseline,
    run_bytewax,
    run_daemon,
)

WORKLOADS = ("throughput", "checkpoint", "scale", "storm", "nats")


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
    nats_records: int
    nats_rounds: int


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
    200_000,
    3,
)
QUICK = Sizes(30_000, 3, 20_000, 1, 200, [10, 100], [100], 2, 5, 1, 100, 1, 20_000, 1)


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
    (args.out / "results.md").write_text(table)
    print(table)
    print(f"written: {args.out / 'results.md'}, {args.out / 'results.json'}")


def _sizes(sizes: Sizes) -> dict[str, Any]:
    return {name: getattr(sizes, name) for name in sizes.__slots__}


def _throughput(results: dict[str, Any], sizes: Sizes, scratch: Path, out: Path) -> None:
    data = records_file(out / "data", sizes.records)
    contestants: dict[str, Contestant] = {"daemon": run_daemon, "baseline": run_baseline}
    note = None
    if bytewax_installed():
        contestants["bytewax"] = run_bytewax
    else:
        note = "not installed (pip install -e '.[bench]')"
    for mode in ("json", "lines"):
        section = compare(
            data, contestants, mode=mode, every=10_000, rounds=sizes.rounds, scratch=scratch
        )
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


def _nats(results: dict[str, Any], sizes: Sizes, scratch: Path, out: Path) -> None:
    try:
        from bench.nats_bench import compare as nats_compare

        results["nats"] = nats_compare(sizes.nats_records, sizes.nats_rounds, scratch)
    except Exception as exc:  # noqa: BLE001 - reported in the results, the other workloads stand
        traceback.print_exc()
        results["nats"] = {"error": f"{type(exc).__name__}: {exc}"}


RUNNERS = {
    "throughput": _throughput,
    "checkpoint": _checkpoint,
    "scale": _scale,
    "storm": _storm,
    "nats": _nats,
}


if __name__ == "__main__":
    main()
