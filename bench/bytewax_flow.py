"""The throughput workload as a bytewax dataflow, with recovery on (a snapshot every second).

Usage: python bench/bytewax_flow.py INPUT OUTPUT RECOVERY_DIR [--mode json|lines] [--batch N]
Prints one JSON line: {"records": n, "seconds": s}. Needs bytewax (the `bench` extra).
bytewax's FileSink fsyncs after every batch; batches of 10,000 lines match the
daemon's `every_records`. Its recovery database is SQLite, snapshotted at
each epoch (1 s).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op  # type: ignore[import-not-found,unused-ignore]
from bytewax.connectors.files import (  # type: ignore[import-not-found,unused-ignore]
    FileSink,
    FileSource,
)
from bytewax.dataflow import Dataflow  # type: ignore[import-not-found,unused-ignore]
from bytewax.recovery import (  # type: ignore[import-not-found,unused-ignore]
    RecoveryConfig,
    init_db_dir,
)
from bytewax.run import cli_main  # type: ignore[import-not-found,unused-ignore]

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def enrich_line(line: str) -> tuple[str, str]:
    """Parse, add the field `bench.plugins.enrich` adds, serialise; keyed for the sink."""
    record: dict[str, Any] = json.loads(line)
    record["n_items"] = len(record["items"])
    return "", _encode(record)


def keyed_line(line: str) -> tuple[str, str]:
    """The line as it is, keyed for the sink (bytewax routes output by key)."""
    return "", line


def build(source: Path, target: Path, *, mode: str, batch: int) -> Any:
    flow = Dataflow("bench_throughput")
    lines = op.input("read", flow, FileSource(source, batch_size=batch))
    keyed = op.map("enrich", lines, enrich_line if mode == "json" else keyed_line)
    op.output("write", keyed, FileSink(target))
    return flow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("recovery", type=Path)
    parser.add_argument("--mode", choices=("json", "lines"), default="json")
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args()
    args.recovery.mkdir(parents=True, exist_ok=True)
    init_db_dir(args.recovery, 1)  # type: ignore[no-untyped-call,unused-ignore]
    flow = build(args.input, args.output, mode=args.mode, batch=args.batch)
    recovery = RecoveryConfig(args.recovery)  # type: ignore[no-untyped-call,unused-ignore]
    started = time.perf_counter()
    cli_main(  # type: ignore[no-untyped-call,unused-ignore]
        flow, workers_per_process=1, epoch_interval=timedelta(seconds=1), recovery_config=recovery
    )
    seconds = time.perf_counter() - started
    with args.output.open("rb") as written:
        count = sum(1 for _ in written)
    print(json.dumps({"records": count, "seconds": seconds}))


if __name__ == "__main__":
    main()
