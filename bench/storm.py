"""Failure storm under load: every job of a real daemon fails at once while a client polls `status`.

Usage: python bench/storm.py [--jobs N] [--rounds N] [--workdir DIR]

Starts `python -m supervisor run` with N jobs whose source
(`supervisor.testing:SwitchedSource`: one record every 5 s each, checkpointed
within a second) fails with `TransientError` while a switch file exists. The
daemon runs at `log_level = "info"`, as in production, with its event-loop
lag probe switched on (``SUPERVISOR_LOOP_LAG=1``: the ``daemon.loop_lag``
event); `BENCH_PRODUCT_SRC` picks another build, as `bench/run.py --product`
does. A client thread asks for `status` every `POLL_GAP` seconds throughout,
each request on a new connection, reading the whole answer. The run: wait
until every job is running; time `BASELINE_REQUESTS` quiet answers; create
the switch; wait until every job has failed `STORM_ATTEMPTS` attempts in a
row; remove it; wait until every job is running again; SIGTERM.

`run_storm(jobs, workdir)` returns the figures (milliseconds, seconds, counts)
and leaves the daemon's JSON log in `workdir/daemon.log`. Retry settings are
small (first backoff 100 ms, at most 1 s, healthy after 1 s) so recovery is
quick; attempts start at most 8 at a time (`max_starts_in_flight`, default).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `supervisor` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.daemon_run import daemon_env

POLL_GAP = 0.05
"""Seconds between the end of one `status` answer and the next request: 20 a second at most."""

STATUS_TIMEOUT = 60.0
"""A `status` request not answered within this is counted as unanswered."""

BASELINE_REQUESTS = 20
"""`status` answers timed with every job running, before the storm (`status_quiet_p50_ms`)."""

STORM_ATTEMPTS = 2
"""The switch stays on until every job has failed this many attempts in a row."""

PHASE_TIMEOUT = 300.0
"""The longest any phase may take before the run is declared stuck."""

DAEMON_TOML = """\
[supervisor]
jobs = "jobs/*.toml"
state_dir = "state"
control_socket = "supervisor.sock"
log_format = "json"
log_level = "info"
shutdown_timeout = "30s"
"""

JOB_TOML = """\
[source]
type = "python"
class = "supervisor.testing:SwitchedSource"
switch = "{switch}"
key = "{name}"
per_read = 1
interval = 5.0

[sink]
type = "null"

[checkpoint]
interval = "1s"

[retry]
initial = "100ms"
max = "1s"
max_attempts = 0
reset_after = "1s"
"""


def write_config(jobs: int, workdir: Path) -> Path:
    """The daemon file and `jobs` switched jobs; returns the daemon file."""
    (workdir / "jobs").mkdir(parents=True, exist_ok=True)
    switch = workdir / "storm.switch"
    for index in range(jobs):
        name = f"job{index:04d}"
        (workdir / "jobs" / f"{name}.toml").write_text(JOB_TOML.format(switch=switch, name=name))
    config = workdir / "supervisor.toml"
    config.write_text(DAEMON_TOML)
    return config


def status_round_trip(path: Path) -> tuple[float, list[dict[str, Any]]]:
    """One `status` request on a fresh connection: (milliseconds to the whole answer, jobs).

    Like `bench/control_latency.py`'s round_trip_ms, but it reads up to the
    answer's end: with 1,000 jobs the answer (~200 KB) takes several reads.
    """
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(STATUS_TIMEOUT)
    try:
        client.connect(os.fspath(path))
        started = time.perf_counter()
        client.sendall(b'{"v":1,"verb":"status"}\n')
        chunks = []
        while True:
            chunk = client.recv(1 << 20)
            if not chunk:
                raise ConnectionError("the daemon closed the connection without answering")
            chunks.append(chunk)
            if chunk.endswith(b"\n"):
                break
        elapsed = time.perf_counter() - started
    finally:
        client.close()
    body = json.loads(b"".join(chunks))
    if not body.get("ok"):
        raise ConnectionError(f"status refused: {body.get('error')}")
    return elapsed * 1000, body["result"]


@dataclass
class Sample:
    at: float
    """time.monotonic() when the answer arrived."""
    latency_ms: float


@dataclass
class StatusPoller:
    """A thread asking for `status` in a loop; waiters are woken on every answer."""

    socket_path: Path
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    """The latest answer."""
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                latency, jobs = status_round_trip(self.socket_path)
            except (OSError, ValueError) as exc:
                with self._changed:
                    self.errors.append(repr(exc))
                    self._changed.notify_all()
            else:
                with self._changed:
                    self.samples.append(Sample(time.monotonic(), latency))
                    self.jobs = jobs
                    self._changed.notify_all()
            self._stop.wait(POLL_GAP)  # pacing: a monitoring client asking 20 times a second

    def wait_until(self, what: str, done: Callable[[list[dict[str, Any]]], bool]) -> float:
        """Block until an answer satisfies `done`; returns when (time.monotonic())."""
        with self._changed:
            if not self._changed.wait_for(
                lambda: bool(self.jobs) and done(self.jobs), PHASE_TIMEOUT
            ):
                states = sorted({(job["state"], job["attempt"]) for job in self.jobs})
                raise AssertionError(f"not {what} within {PHASE_TIMEOUT:g} s; states: {states}")
            return self.samples[-1].at


def all_running(jobs: list[dict[str, Any]]) -> bool:
    return all(job["state"] == "running" and job["attempt"] == 0 for job in jobs)


def all_failing(jobs: list[dict[str, Any]]) -> bool:
    return all(job["attempt"] >= STORM_ATTEMPTS for job in jobs)


class Daemon:
    """The daemon with its log copied to `workdir/daemon.log`; `listening` once it serves."""

    def __init__(self, config: Path, log: Path) -> None:
        env = {**daemon_env(), "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "supervisor", "run", "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.listening = threading.Event()
        self._reader = threading.Thread(target=self._copy_log, args=(log,), daemon=True)
        self._reader.start()

    def _copy_log(self, path: Path) -> None:
        assert self.process.stderr is not None
        # Big reads, not lines: a slow reader would block the daemon's logging on a full pipe.
        fd = self.process.stderr.fileno()
        tail = b""
        with path.open("wb") as log:
            while chunk := os.read(fd, 1 << 20):
                log.write(chunk)
                if b'"control.listening"' in tail + chunk:
                    self.listening.set()
                tail = chunk[-100:]
        self.listening.set()  # the daemon exited: nobody waits forever

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=120)
        self._reader.join(timeout=60)
        assert self.process.stderr is not None
        self.process.stderr.close()
        return code


def read_events(log: Path) -> list[dict[str, Any]]:
    """The daemon's JSON log, one event a line."""
    events = []
    with log.open("rb") as lines:
        for line in lines:
            try:
                events.append(json.loads(line))
            except ValueError:
                events.append({"event": "raw", "text": line.decode(errors="replace")})
    return events


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * share), len(ordered) - 1)]


def _epoch(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def run_storm(jobs: int, workdir: Path) -> dict[str, Any]:
    """Run the storm with `jobs` jobs in `workdir`; the figures, with the log left behind."""
    config = write_config(jobs, workdir)
    switch = workdir / "storm.switch"
    switch.unlink(missing_ok=True)
    wall_to_mono = time.time() - time.monotonic()
    started = time.monotonic()
    daemon = Daemon(config, workdir / "daemon.log")
    poller = StatusPoller(workdir / "supervisor.sock")
    try:
        daemon.listening.wait(PHASE_TIMEOUT)
        poller.start()
        all_up = poller.wait_until("all running", all_running)
        baseline = len(poller.samples) + BASELINE_REQUESTS
        poller.wait_until("baseline", lambda _: len(poller.samples) >= baseline)
        switch.touch()
        flipped = time.monotonic()
        storm_seen = poller.wait_until("all failing", all_failing)
        switch.unlink()
        cleared = time.monotonic()
        recovered = poller.wait_until("all recovered", all_running)
    finally:
        poller.stop()
        exit_code = daemon.stop()
    events = read_events(workdir / "daemon.log")
    storm = [s.latency_ms for s in poller.samples if flipped <= s.at <= recovered]
    quiet = [s.latency_ms for s in poller.samples if all_up < s.at < flipped]
    lags = [
        lag
        for event in events
        if event.get("event") == "daemon.loop_lag"
        and flipped <= _epoch(event) - wall_to_mono <= recovered
        for lag in event["lags_ms"]
    ]
    return {
        "jobs": float(jobs),
        "startup_s": all_up - started,
        "storm_s": storm_seen - flipped,
        "recovery_s": recovered - cleared,
        "status_requests": float(len(poller.samples)),
        "status_errors": float(len(poller.errors)),
        "status_quiet_p50_ms": _percentile(quiet, 0.5),
        "status_p50_ms": _percentile(storm, 0.5),
        "status_p99_ms": _percentile(storm, 0.99),
        "status_max_ms": max(storm, default=float("nan")),
        "status_mean_ms": statistics.fmean(storm) if storm else float("nan"),
        "loop_lag_p50_ms": _percentile(lags, 0.5),
        "loop_lag_p99_ms": _percentile(lags, 0.99),
        "loop_lag_max_ms": max(lags, default=float("nan")),
        "attempts_failed": float(sum(e.get("event") == "job.attempt_failed" for e in events)),
        "overlaps": float(sum(e.get("event") == "testing.source_overlap" for e in events)),
        "exit_code": float(exit_code),
        "loop_lags_ms": lags,
        "status_ms": storm,
    }


def pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several storms as one: percentiles over every run's samples pooled (one storm gives
    only ~70 lag samples, so its p99 is about its single worst stall), medians of the rest."""
    lags = [lag for run in runs for lag in run["loop_lags_ms"]]
    status = [latency for run in runs for latency in run["status_ms"]]
    return {
        "jobs": runs[0]["jobs"],
        "rounds": len(runs),
        **{
            name: statistics.median(run[name] for run in runs)
            for name in ("startup_s", "storm_s", "recovery_s", "status_quiet_p50_ms")
        },
        "status_requests": sum(run["status_requests"] for run in runs),
        "status_errors": sum(run["status_errors"] for run in runs),
        "status_p50_ms": _percentile(status, 0.5),
        "status_p99_ms": _percentile(status, 0.99),
        "status_max_ms": max(status, default=float("nan")),
        "loop_lag_p50_ms": _percentile(lags, 0.5),
        "loop_lag_p99_ms": _percentile(lags, 0.99),
        "loop_lag_max_ms": max(lags, default=float("nan")),
        "loop_lag_samples": len(lags),
        "loop_lag_p99_ms_per_round": [run["loop_lag_p99_ms"] for run in runs],
        "attempts_failed": sum(run["attempts_failed"] for run in runs),
        "overlaps": sum(run["overlaps"] for run in runs),
        "exit_codes": [run["exit_code"] for run in runs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1, help="storms, pooled (default 1)")
    parser.add_argument("--workdir", type=Path, help="default: a new temporary directory")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="storm-"))
    runs = [run_storm(args.jobs, workdir / f"round{n}") for n in range(1, args.rounds + 1)]
    figures = pooled(runs) if args.rounds > 1 else runs[0]
    for name, value in figures.items():
        if isinstance(value, list) and len(value) > 10:
            continue  # the raw samples
        print(f"{name:<26} {f'{value:.2f}' if isinstance(value, float) else value}")
    print(f"logs: {workdir}/round*/daemon.log")


if __name__ == "__main__":
    main()
