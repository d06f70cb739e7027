"""The real daemon as the benchmarks run it: config files, the subprocess, its JSON log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.measure import ProcessCost, wait_measured

ROOT = Path(__file__).resolve().parent.parent
"""The checkout: put on the daemon's PYTHONPATH so job files can name `bench.plugins`."""


def write_daemon(
    directory: Path,
    jobs: Mapping[str, str],
    *,
    log_level: str = "info",
    max_starts_in_flight: int = 8,
    defaults: str = "",
) -> Path:
    """A daemon file and one job file per entry (TOML bodies) under `directory`."""
    jobs_dir = directory / "jobs"
    jobs_dir.mkdir(parents=True, exist_ok=True)
    daemon = directory / "supervisor.toml"
    daemon.write_text(
        "[supervisor]\n"
        'jobs = "jobs/*.toml"\n'
        'state_dir = "state"\n'
        'control_socket = "supervisor.sock"\n'
        'log_format = "json"\n'
        f'log_level = "{log_level}"\n'
        f"max_starts_in_flight = {max_starts_in_flight}\n"
        'shutdown_timeout = "60s"\n' + (f"\n[defaults]\n{defaults}" if defaults else "")
    )
    for name, body in jobs.items():
        (jobs_dir / f"{name}.toml").write_text(body)
    return daemon


PRODUCT_ENV = "BENCH_PRODUCT_SRC"
"""A directory holding another `supervisor` package for the daemon to run (before/after runs)."""


def daemon_env() -> dict[str, str]:
    """The daemon's environment: the product chosen, systemd's variables dropped, and the
    loop-lag probe on (`supervisor.loop_lag`), so the daemon runs at `info` as in production."""
    paths = [os.environ[PRODUCT_ENV]] if os.environ.get(PRODUCT_ENV) else []
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([*paths, str(ROOT)]),
        "SUPERVISOR_LOOP_LAG": "1",
    }
    # SUPERVISOR_CRASH_AT: builds before issue 16 (a "before" product) read it as a crash point.
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "SUPERVISOR_CRASH_AT"):
        env.pop(name, None)
    return env


EVENT_LOOP_ENV = "BENCH_EVENT_LOOP"
"""``uvloop``: run the daemon on uvloop's event loop (`bench/uvloop_daemon.py`), to measure it."""


def start_daemon(config: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """`python -m supervisor run -c CONFIG` with its log (stderr) going to `log`."""
    main = ["-m", "supervisor"]
    if os.environ.get(EVENT_LOOP_ENV) == "uvloop":
        main = [str(ROOT / "bench" / "uvloop_daemon.py")]
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, *main, "run", "-c", str(config), *extra],
            env=daemon_env(),
            cwd=config.parent,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def run_until_idle(config: Path, log: Path, *, timeout: float = 900.0) -> ProcessCost:
    """Run the daemon with `--exit-when-idle` to its end, measured."""
    started = time.perf_counter()
    process = start_daemon(config, log, "--exit-when-idle")
    return wait_measured(process, started, timeout=timeout, argv=["supervisor run", str(config)])


def events(log: Path) -> Iterator[dict[str, Any]]:
    """The daemon's JSON log events."""
    with log.open("rb") as lines:
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                yield event


@dataclass(frozen=True, slots=True)
class JobSpan:
    """When one job went RUNNING and when it went FINISHED, by the daemon's own clock."""

    running_at: float
    finished_at: float

    @property
    def seconds(self) -> float:
        return self.finished_at - self.running_at


def job_span(log: Path, job: str) -> JobSpan:
    """The first RUNNING to the FINISHED of `job`, from its `job.state_changed` events."""
    running = finished = None
    for event in events(log):
        if event.get("event") != "job.state_changed" or event.get("job") != job:
            continue
        if event.get("to") == "running" and running is None:
            running = _epoch(event["timestamp"])
        elif event.get("to") == "finished":
            finished = _epoch(event["timestamp"])
    if running is None or finished is None:
        raise RuntimeError(f"no running -> finished of {job} in {log}; its end:\n{_tail(log)}")
    return JobSpan(running, finished)


def _tail(log: Path, lines: int = 15) -> str:
    """The last lines of a log, for an error: the scratch directory holding it is removed."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(unreadable: {exc})"


def _epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
