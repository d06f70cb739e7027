"""Workloads 3 and 4: many jobs in one daemon, from a cold start and from a restart.

Every job is a `generate` source at a very low rate (one record per
`1 / IDLE_RATE` seconds, so none arrives while measured: the jobs are idle),
a `null` sink, and a checkpoint every second. The daemon runs at
``log_level = "info"`` with its event-loop lag probe switched on
(``SUPERVISOR_LOOP_LAG=1``, `supervisor.loop_lag`: the ``daemon.loop_lag`` event).

- time to all RUNNING: from just before the process is spawned to the last
  job's ``job.state_changed`` to ``running`` (the daemon's own timestamp);
- memory per job: (RSS with N jobs - RSS of a daemon with none) / N, once all run;
- idle CPU: CPU seconds the daemon used over `idle_seconds`, as % of one core;
- event-loop lag: the ``daemon.loop_lag`` probes of that same window;
- `status`: round trips of the full status (every job) on the control socket,
  with `bench.control_latency`;
- restart: the same jobs, each with a snapshot on disk, started again.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.control_latency import round_trips_ms
from bench.daemon_run import start_daemon, write_daemon
from bench.measure import cpu_seconds, load_average, median, percentile, rss_mb
from supervisor.snapshot import Snapshot, encode
from supervisor.states import JobState

IDLE_RATE = 0.0001
"""Records per second per job: the first is due after about three hours."""

START_TIMEOUT = 300.0

SETTLE_SECONDS = 3.0
"""Wait after all are RUNNING: each job's first checkpoint (offset 0) comes an interval in."""


def job_file() -> str:
    return (
        f'[source]\ntype = "generate"\nrate = {IDLE_RATE}\n\n[sink]\ntype = "null"\n\n'
        '[checkpoint]\ninterval = "1s"\n'
    )


def job_names(count: int) -> list[str]:
    return [f"job{index:05d}" for index in range(count)]


def write_snapshots(state: Path, names: list[str]) -> None:
    """A snapshot for each job, as the daemon writes them (`supervisor.snapshot.encode`)."""
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = datetime.now(UTC)
    for name in names:
        snapshot = Snapshot(
            job=name, generation=7, offset=0, state=JobState.RUNNING, written_at=now
        )
        (state / f"{name}.snapshot.toml").write_bytes(encode(snapshot))


class _LogTail:
    """The daemon's JSON log, read as it grows."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._done = b""
        self._read = 0
        self.events: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        with self._path.open("rb") as log:
            log.seek(self._read)
            data = log.read()
        self._read += len(data)
        data = self._done + data
        lines = data.split(b"\n")
        self._done = lines.pop()
        new = []
        for line in lines:
            with contextlib.suppress(ValueError):
                new.append(json.loads(line))
        self.events += new
        return new


def _epoch(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


def _wait_all_running(
    process: subprocess.Popen[bytes], tail: _LogTail, jobs: int, socket: Path
) -> float:
    """Wall-clock time the last job went RUNNING (or the socket answered, with no jobs)."""
    deadline = time.monotonic() + START_TIMEOUT
    running: set[str] = set()
    last = 0.0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daemon exited {process.returncode} while starting")
        for event in tail.poll():
            if event.get("event") == "job.state_changed" and event.get("to") == "running":
                running.add(str(event["job"]))
                last = _epoch(event)
        if jobs and len(running) >= jobs:
            return last
        if not jobs and socket.exists():
            round_trips_ms(str(socket), 1)
            return time.time()
        time.sleep(0.02)
    raise TimeoutError(f"{len(running)} of {jobs} jobs RUNNING after {START_TIMEOUT:g}s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_daemon_once(
    directory: Path, jobs: int, *, idle_seconds: float, status_requests: int, label: str
) -> dict[str, Any]:
    """Start the daemon on `directory` (jobs already written), measure, stop it."""
    log = directory / f"daemon-{label}.log"
    socket = directory / "supervisor.sock"
    spawned_at = time.time()
    process = start_daemon(directory / "supervisor.toml", log)
    tail = _LogTail(log)
    try:
        all_running_at = _wait_all_running(process, tail, jobs, socket)
        time.sleep(SETTLE_SECONDS)
        rss = rss_mb(process.pid)
        cpu_before, window_start = cpu_seconds(process.pid), time.time()
        time.sleep(idle_seconds)
        cpu_used, window_end = cpu_seconds(process.pid) - cpu_before, time.time()
        statuses = round_trips_ms(str(socket), status_requests)
        tail.poll()
    finally:
        _stop(process)
    lags = [
        lag
        for event in tail.events
        if event.get("event") == "daemon.loop_lag" and window_start <= _epoch(event) <= window_end
        for lag in event["lags_ms"]
    ]
    return {
        "jobs": jobs,
        "all_running_s": all_running_at - spawned_at,
        "rss_mb": rss,
        "idle_cpu_percent_of_core": 100 * cpu_used / (window_end - window_start),
        "loop_lag_p50_ms": median(lags) if lags else None,
        "loop_lag_p99_ms": percentile(lags, 0.99) if lags else None,
        "loop_lag_max_ms": max(lags) if lags else None,
        "status_p50_ms": median(statuses),
        "status_p99_ms": percentile(statuses, 0.99),
        "status_requests": status_requests,
        "load_average_1m": load_average()[0],
    }


def scale(
    counts: list[int],
    restart_counts: list[int],
    *,
    idle_seconds: float,
    status_requests: int,
    scratch: Path,
    rounds: int = 1,
) -> dict[str, Any]:
    """Workload 3 for each of `counts` jobs, and workload 4 for each of `restart_counts`,
    `rounds` times each: each figure is the median of the rounds (`median_row`)."""
    results: dict[str, Any] = {"idle_rate": IDLE_RATE, "idle_seconds": idle_seconds}
    results["rounds"] = rounds
    empty = _fresh(scratch, 0)
    try:
        base = run_daemon_once(
            empty, 0, idle_seconds=idle_seconds, status_requests=status_requests, label="cold"
        )
    finally:
        shutil.rmtree(empty, ignore_errors=True)
    results["no_jobs"] = base
    results["cold"] = []
    results["restart"] = []
    for count in sorted(set(counts) | set(restart_counts)):
        colds, warms = [], []
        for _ in range(rounds):
            cold, warm = _one_round(
                count, counts, restart_counts, idle_seconds, status_requests, scratch
            )
            if cold is not None:
                cold["kb_per_job"] = (cold["rss_mb"] - base["rss_mb"]) * 1024 / count
                colds.append(cold)
            if warm is not None:
                warms.append(warm)
        if colds:
            results["cold"].append(median_row(colds))
        if warms:
            results["restart"].append(median_row(warms))
    return results


def _one_round(
    count: int,
    counts: list[int],
    restart_counts: list[int],
    idle_seconds: float,
    status_requests: int,
    scratch: Path,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """A cold start of `count` jobs (if in `counts`), then a restart with their snapshots."""
    cold = warm = None
    directory = _fresh(scratch, count)
    try:
        if count in counts:
            cold = run_daemon_once(
                directory,
                count,
                idle_seconds=idle_seconds,
                status_requests=status_requests,
                label="cold",
            )
        if count in restart_counts:
            write_snapshots(directory / "state", job_names(count))
            warm = run_daemon_once(
                directory,
                count,
                idle_seconds=min(idle_seconds, 2.0),
                status_requests=min(status_requests, 3),
                label="restart",
            )
            warm["snapshots"] = count
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return cold, warm


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per field, the median of the rounds' numbers (the first round's value otherwise), and
    each round's time to all RUNNING, so a reader sees the spread."""
    row: dict[str, Any] = {}
    for key, first in rows[0].items():
        values = [r[key] for r in rows if isinstance(r.get(key), int | float)]
        varies = (
            isinstance(first, int | float) and len(values) == len(rows) and len(set(values)) > 1
        )
        row[key] = median(values) if varies else first
    row["all_running_s_per_round"] = [r["all_running_s"] for r in rows]
    return row


def _fresh(scratch: Path, count: int) -> Path:
    directory = Path(tempfile.mkdtemp(prefix=f"scale-{count}-", dir=scratch))
    directory.chmod(0o700)
    write_daemon(
        directory,
        {name: job_file() for name in job_names(count)},
        log_level="info",
    )
    return directory
