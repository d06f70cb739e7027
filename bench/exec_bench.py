"""Exec pass-through: `cat` of a file through an exec source, against the same pipe read
without the daemon.

Both sides start `cat INPUT` and read its stdout through a pipe. The daemon runs it as a
``[source] type = "exec"`` job into the jsonl sink, checkpointing every `every` records;
the baseline is a plain Python loop (`--baseline`) doing the same work at the same
cadence: split the pipe into lines, parse each with the daemon's own line parser (a
Singer message, or plain JSON), encode
the record as the jsonl sink does, and every `every` records write, fsync, then write the
offset durably (bench/baseline.py's cycle). Two protocols: "plain" (each line a JSON
record) and "singer" (RECORD messages, a STATE every 100). Rounds alternate; figures are
medians, the ratio the median of each round's ratio (bench/throughput.py's `compare`).

Usage: python bench/exec_bench.py [--records N] [--rounds R]
       python bench/exec_bench.py --baseline INPUT OUTPUT STATE_DIR --protocol P --every N
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `supervisor` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.baseline import durable_offset_write
from bench.daemon_run import job_span, run_until_idle, write_daemon
from bench.dataset import records_file
from bench.throughput import PipelineRun, _count_lines, _run_script, compare
from supervisor.connectors.exec.lines import parse_json_line

EVERY = 10_000
STATE_EVERY = 100
PROTOCOLS = ("plain", "singer")


def singer_file(records: Path) -> Path:
    """`records` as a Singer tap's output: a RECORD per line, a STATE every 100."""
    path = records.with_suffix(".singer")
    if path.exists():
        return path
    partial = path.with_suffix(".partial")
    with records.open("rb") as source, partial.open("wb") as out:
        for index, line in enumerate(source, 1):
            out.write(b'{"type":"RECORD","stream":"orders","record":' + line.rstrip() + b"}\n")
            if index % STATE_EVERY == 0:
                out.write(b'{"type":"STATE","value":{"id":%d}}\n' % index)
    partial.replace(path)
    return path


def daemon_job(source: Path, work: Path, protocol: str, every: int) -> str:
    return (
        f'[source]\ntype = "exec"\ncommand = ["cat", "{source}"]\nprotocol = "{protocol}"\n\n'
        f'[sink]\ntype = "jsonl"\npath = "{work / "out.jsonl"}"\n\n'
        f'[checkpoint]\nevery_records = {every}\ninterval = "1h"\n'
    )


def run_daemon(source: Path, work: Path, protocol: str, every: int) -> PipelineRun:
    config = write_daemon(work, {"exec": daemon_job(source, work, protocol, every)})
    log = work / "daemon.log"
    cost = run_until_idle(config, log)
    span = job_span(log, "exec")
    records = _count_lines(work / "out.jsonl")
    return PipelineRun(records, span.seconds, cost.cpu_s, cost.peak_rss_mb)


def run_baseline(source: Path, work: Path, protocol: str, every: int) -> PipelineRun:
    script = [str(Path(__file__).resolve()), "--baseline", str(source), str(work / "out")]
    return _run_script(
        [*script, str(work / "state"), "--protocol", protocol, "--every", str(every)], work
    )


def baseline(source: Path, target: Path, state: Path, *, protocol: str, every: int) -> int:
    """The plain loop: `cat` through a pipe, parsed and written as the daemon does."""
    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
    loads = parse_json_line  # the daemon's own line parser: the same work on both sides
    singer = protocol == "singer"
    count = 0
    offset: object = None
    pending: list[str] = []
    partial = b""
    with (
        subprocess.Popen(["cat", str(source)], stdout=subprocess.PIPE) as cat,
        target.open("ab") as writer,
    ):
        assert cat.stdout is not None
        fd = cat.stdout.fileno()
        while chunk := os.read(fd, 64 * 1024):
            lines = (partial + chunk).split(b"\n")
            partial = lines.pop()
            for line in lines:
                message = loads(line)
                if singer:
                    kind = message["type"]
                    if kind == "STATE":
                        offset = json.dumps(message["value"], separators=(",", ":"))
                        continue
                    record = message["record"]
                else:
                    record = message
                pending.append(encode(record))
                count += 1
                if count % every == 0:
                    _commit(writer, pending, state, offset)
        _commit(writer, pending, state, offset)
    return count


def _commit(writer: Any, pending: list[str], state: Path, offset: object) -> None:
    writer.write(("\n".join(pending) + "\n").encode() if pending else b"")
    pending.clear()
    writer.flush()
    os.fsync(writer.fileno())
    durable_offset_write(state, hash(str(offset)) & 0xFFFF)


def exec_compare(records: int, rounds: int, data_dir: Path, scratch: Path) -> dict[str, Any]:
    """Both protocols, daemon against baseline: bench/run.py's `exec` workload."""
    plain = records_file(data_dir, records)
    inputs = {"plain": plain, "singer": singer_file(plain)}
    contestants = {"daemon": run_daemon, "baseline": run_baseline}
    return {
        protocol: compare(
            inputs[protocol],
            contestants,
            mode=protocol,
            every=EVERY,
            rounds=rounds,
            scratch=scratch,
        )
        for protocol in PROTOCOLS
    }


def summary(results: dict[str, Any]) -> list[str]:
    """Markdown lines: records/s of each side and the ratio, per protocol."""
    lines = [
        "### Exec pass-through (`cat` through an exec source, against the same pipe)",
        "",
        "| protocol | daemon rec/s | baseline rec/s | ratio (target >= 0.8) |",
        "|---|---:|---:|---:|",
    ]
    for protocol, section in results.items():
        lines.append(
            f"| {protocol} | {section['daemon']['records_per_s']:,.0f} | "
            f"{section['baseline']['records_per_s']:,.0f} | "
            f"{section['ratio_daemon_to_baseline']:.2f}x |"
        )
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", nargs=3, type=Path, metavar=("INPUT", "OUTPUT", "STATE"))
    parser.add_argument("--protocol", choices=PROTOCOLS, default="plain")
    parser.add_argument("--every", type=int, default=EVERY)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.baseline:
        source, output, state = args.baseline
        state.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        count = baseline(source, output, state, protocol=args.protocol, every=args.every)
        print(json.dumps({"records": count, "seconds": time.perf_counter() - started}))
        return
    with tempfile.TemporaryDirectory(prefix="exec-bench-") as scratch:
        results = exec_compare(args.records, args.rounds, Path(scratch) / "data", Path(scratch))
    print(
        json.dumps(
            {
                name: {k: v for k, v in section.items() if k not in ("daemon", "baseline")}
                | {
                    "daemon_rps": section["daemon"]["records_per_s"],
                    "baseline_rps": section["baseline"]["records_per_s"],
                }
                for name, section in results.items()
            },
            indent=1,
        )
    )
    print("\n".join(summary(results)))


if __name__ == "__main__":
    main()
