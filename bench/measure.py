"""Measuring a child process (wall time, CPU seconds, peak RSS) and summarising samples."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any


@dataclass(frozen=True, slots=True)
class ProcessCost:
    """What one finished child process cost, from `os.wait4`."""

    returncode: int
    wall_s: float
    cpu_s: float
    """User plus system CPU time of the process (its own children excluded)."""
    peak_rss_mb: float


def run_measured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdout: IO[bytes] | int | None = subprocess.DEVNULL,
    stderr: IO[bytes] | int | None = None,
    timeout: float = 600.0,
) -> ProcessCost:
    """Run `argv` to its end; raise if it fails or outlives `timeout`."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=stdout, stderr=stderr)
    return wait_measured(process, started, timeout=timeout, argv=argv)


def wait_measured(
    process: subprocess.Popen[bytes],
    started: float,
    *,
    timeout: float,
    argv: Sequence[str] = (),
) -> ProcessCost:
    """Reap `process` with its resource usage; kill it if it outlives `timeout`."""
    deadline = started + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            process.kill()
            pid, status, usage = os.wait4(process.pid, 0)
            raise TimeoutError(f"{_describe(argv, process)} took over {timeout:g}s")
        time.sleep(0.005)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    cost = ProcessCost(
        process.returncode, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024
    )
    if cost.returncode != 0:
        raise RuntimeError(f"{_describe(argv, process)} exited {cost.returncode}")
    return cost


def _describe(argv: Sequence[str], process: subprocess.Popen[bytes]) -> str:
    return " ".join(argv) or str(process.args)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a live process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of a live process now (VmRSS), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (`fraction` in 0..1) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))]


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kb = int(line.split()[1])
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(memory_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_average_at_start": load_average(),
    }
