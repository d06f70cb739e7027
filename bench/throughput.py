"""Workloads 1 and 2b: records through file source -> processor -> sink, against the limits.

Each round runs every contestant once, in turn (daemon, plain loop, bytewax),
on the same input, each in a fresh directory; figures are medians over the
rounds, and ratios are taken between medians of the same run.

Records/s is records over the pipeline's own time: for the daemon, from the
job's `running` to its `finished` state change (its log's timestamps, so
interpreter start and imports are left out, as they are for the others);
for the plain loop and bytewax, as the script times itself. CPU seconds and
peak RSS are the whole process's (`os.wait4`).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.daemon_run import job_span, run_until_idle, write_daemon
from bench.measure import load_average, median, run_measured

BENCH = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class PipelineRun:
    """One contestant's run over the whole input."""

    records: int
    seconds: float
    cpu_s: float
    peak_rss_mb: float

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds


Contestant = Callable[[Path, Path, str, int], PipelineRun]
"""(input, empty work directory, mode "json" | "lines", every_records) -> its run."""


def daemon_job(source: Path, work: Path, mode: str, every: int, codec: str = "auto") -> str:
    """The job file (TOML) of a throughput job; `codec` is the job's ``codec`` key (left
    out when "auto", its default, so a product from before the key runs the same file)."""
    if mode == "json":
        middle = '[processor]\nfunction = "bench.plugins:enrich"\n\n'
        sink = f'[sink]\ntype = "jsonl"\npath = "{work / "out.jsonl"}"\n'
        fmt = "jsonl"
    else:
        middle = ""
        sink = (
            '[sink]\ntype = "python"\nclass = "bench.plugins:LineFileSink"\n'
            f'path = "{work / "out.txt"}"\n'
        )
        fmt = "lines"
    head = f'codec = "{codec}"\n\n' if codec != "auto" else ""
    return head + (
        f'[source]\ntype = "file"\npath = "{source}"\nformat = "{fmt}"\nfollow = false\n\n'
        f"{middle}{sink}\n"
        f'[checkpoint]\nevery_records = {every}\ninterval = "1h"\n'
    )


def run_daemon(source: Path, work: Path, mode: str, every: int, codec: str = "auto") -> PipelineRun:
    config = write_daemon(work, {"throughput": daemon_job(source, work, mode, every, codec)})
    log = work / "daemon.log"
    cost = run_until_idle(config, log)
    span = job_span(log, "throughput")
    return PipelineRun(_count_lines(source), span.seconds, cost.cpu_s, cost.peak_rss_mb)


def run_baseline(
    source: Path, work: Path, mode: str, every: int, codec: str = "json"
) -> PipelineRun:
    script = [str(BENCH / "baseline.py"), str(source), str(work / "out"), str(work / "state")]
    return _run_script([*script, "--mode", mode, "--every", str(every), "--codec", codec], work)


def msgspec_installed() -> bool:
    """Whether the ``[fast]`` extra is installed, so the msgspec contestants can run."""
    return importlib.util.find_spec("msgspec") is not None


def run_bytewax(source: Path, work: Path, mode: str, every: int) -> PipelineRun:
    script = [str(BENCH / "bytewax_flow.py"), str(source), str(work / "out"), str(work / "rec")]
    return _run_script([*script, "--mode", mode, "--batch", str(every)], work)


def bytewax_installed() -> bool:
    probe = subprocess.run(
        [sys.executable, "-c", "import bytewax.run"], capture_output=True, check=False
    )
    return probe.returncode == 0


def _run_script(argv: list[str], work: Path) -> PipelineRun:
    out = work / "stdout.json"
    with out.open("wb") as stdout, (work / "stderr.log").open("wb") as stderr:
        cost = run_measured([sys.executable, *argv], stdout=stdout, stderr=stderr)
    said = json.loads(out.read_text().strip().splitlines()[-1])
    return PipelineRun(said["records"], said["seconds"], cost.cpu_s, cost.peak_rss_mb)


def _count_lines(path: Path) -> int:
    with path.open("rb") as lines:
        return sum(1 for _ in lines)


def compare(
    source: Path,
    contestants: dict[str, Contestant],
    *,
    mode: str,
    every: int,
    rounds: int,
    scratch: Path,
    pairs: tuple[tuple[str, str], ...] = (),
) -> dict[str, Any]:
    """Alternate the contestants for `rounds` rounds: each one's medians, and the median of
    each round's ratio of the daemon to it (and of each of `pairs`, first to second)."""
    runs: dict[str, list[PipelineRun]] = {name: [] for name in contestants}
    loads = []
    for _ in range(rounds):
        for name, contestant in contestants.items():
            work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=scratch))
            try:
                runs[name].append(contestant(source, work, mode, every))
            finally:
                shutil.rmtree(work, ignore_errors=True)
        loads.append(load_average()[0])
    result: dict[str, Any] = {
        "mode": mode,
        "every_records": every,
        "rounds": rounds,
        "load_average_1m": loads,
    }
    for name, samples in runs.items():
        result[name] = {
            "records": samples[0].records,
            "records_per_s": median([run.records_per_s for run in samples]),
            "cpu_s": median([run.cpu_s for run in samples]),
            "peak_rss_mb": median([run.peak_rss_mb for run in samples]),
            "samples": [asdict(run) for run in samples],
        }
    ratios = [("daemon", name) for name in contestants if name != "daemon"]
    for first, second in [*ratios, *pairs]:
        # Paired: each round's daemon against the same round's other run, which met the
        # same phase of a shared machine; the median of those, not median / median.
        paired = [
            one.records_per_s / other.records_per_s
            for one, other in zip(runs[first], runs[second], strict=True)
        ]
        result[f"ratio_{first}_to_{second}"] = median(paired)
        result[f"ratio_{first}_to_{second}_per_round"] = paired
    return result


def every_records_sweep(
    source: Path, values: list[int], *, rounds: int, scratch: Path
) -> dict[str, Any]:
    """Daemon throughput (JSON workload) for each `every_records`, rounds interleaved."""
    samples: dict[int, list[float]] = {every: [] for every in values}
    for _ in range(rounds):
        for every in values:
            work = Path(tempfile.mkdtemp(prefix=f"sweep-{every}-", dir=scratch))
            try:
                samples[every].append(run_daemon(source, work, "json", every).records_per_s)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    return {
        "rounds": rounds,
        "records_per_s": {str(every): median(samples[every]) for every in values},
        "samples": {str(every): samples[every] for every in values},
        "load_average_1m": load_average()[0],
    }
