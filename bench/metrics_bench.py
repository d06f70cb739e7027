"""Workload `metrics` (issue #19): what the HTTP listener and its scrapes cost.

1. Throughput with metrics on vs off, side by side: the JSON throughput workload
   (file source -> `bench.plugins:enrich` -> jsonl sink), each round once without the
   listener and once with it and a scrape of ``/metrics`` every `SCRAPE_EVERY` seconds
   (15 times Prometheus's usual rate); the ratio is on/off, paired per round.
2. A scrape at scale: N idle jobs (as in `bench.scale`), the wall time of a scrape as
   Prometheus asks for it (OpenMetrics), and the daemon's CPU over an idle window with a
   scrape every 15 s, against the same window of a daemon without the listener.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.daemon_run import job_span, run_until_idle, start_daemon, write_daemon
from bench.measure import cpu_seconds, load_average, median, percentile
from bench.scale import SETTLE_SECONDS, _LogTail, _stop, _wait_all_running, job_file, job_names
from bench.throughput import daemon_job

SCRAPE_EVERY = 1.0
"""Seconds between scrapes during the throughput runs."""
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
"""The Accept header Prometheus 2.x sends."""


def _with_listener(config: Path, port: int) -> None:
    text = config.read_text()
    config.write_text(
        text.replace("[supervisor]\n", f'[supervisor]\nhttp_listen = "127.0.0.1:{port}"\n', 1)
    )


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int) -> tuple[float, int]:
    """One scrape as Prometheus makes it: (seconds, bytes)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    request.add_header("Accept", PROMETHEUS_ACCEPT)
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        body = response.read()
    return time.perf_counter() - started, len(body)


def _scrape_until(port: int, done: threading.Event, every: float, seen: list[float]) -> None:
    while not done.wait(every):
        with contextlib.suppress(OSError):  # not listening yet, or gone
            seen.append(scrape(port)[0])


def _run_json(data: Path, work: Path, *, metrics: bool) -> tuple[float, float]:
    """(records/s over the job's own span, the daemon's CPU seconds)."""
    config = write_daemon(work, {"throughput": daemon_job(data, work, "json", 10_000)})
    scrapes: list[float] = []
    done = threading.Event()
    scraper = None
    if metrics:
        port = _free_port()
        _with_listener(config, port)
        scraper = threading.Thread(target=_scrape_until, args=(port, done, SCRAPE_EVERY, scrapes))
        scraper.start()
    try:
        cost = run_until_idle(config, work / "daemon.log")
    finally:
        done.set()
        if scraper is not None:
            scraper.join()
    span = job_span(work / "daemon.log", "throughput")
    with data.open("rb") as lines:
        records = sum(1 for _ in lines)
    return records / span.seconds, cost.cpu_s


def metrics_on_off(data: Path, *, rounds: int, scratch: Path) -> dict[str, Any]:
    """The JSON throughput workload without and with the listener, rounds interleaved."""
    off: list[float] = []
    on: list[float] = []
    cpu: dict[bool, list[float]] = {False: [], True: []}
    for index in range(rounds):
        pair = ((False, off), (True, on))
        for metrics, samples in pair if index % 2 == 0 else pair[::-1]:  # neither always first
            work = Path(tempfile.mkdtemp(prefix=f"metrics-{metrics}-", dir=scratch))
            try:
                rate, cpu_s = _run_json(data, work, metrics=metrics)
                samples.append(rate)
                cpu[metrics].append(cpu_s)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    paired = [a / b for a, b in zip(on, off, strict=True)]
    return {
        "rounds": rounds,
        "scrape_every_s": SCRAPE_EVERY,
        "off_records_per_s": median(off),
        "on_records_per_s": median(on),
        "ratio_on_to_off": median(paired),
        "ratio_per_round": paired,
        "off_cpu_s": median(cpu[False]),
        "on_cpu_s": median(cpu[True]),
        "cpu_ratio_on_to_off": median([a / b for a, b in zip(cpu[True], cpu[False], strict=True)]),
        "load_average_1m": load_average()[0],
    }


def scrape_at_scale(
    jobs: int, *, scrapes: int, idle_seconds: float, scratch: Path
) -> dict[str, Any]:
    """`jobs` idle jobs: scrape time, and idle CPU with a scrape every 15 s vs no listener."""
    result: dict[str, Any] = {"jobs": jobs, "idle_seconds": idle_seconds}
    for metrics in (True, False):
        directory = Path(tempfile.mkdtemp(prefix=f"scrape-{jobs}-", dir=scratch))
        try:
            config = write_daemon(directory, dict.fromkeys(job_names(jobs), job_file()))
            port = _free_port()
            if metrics:
                _with_listener(config, port)
            log = directory / "daemon.log"
            process = start_daemon(config, log)
            try:
                _wait_all_running(process, _LogTail(log), jobs, directory / "supervisor.sock")
                time.sleep(SETTLE_SECONDS)
                if metrics:
                    timed = [scrape(port) for _ in range(scrapes)]
                    seconds = [seconds for seconds, _ in timed]
                    result["scrape_ms_median"] = 1000 * median(seconds)
                    result["scrape_ms_max"] = 1000 * max(seconds)
                    result["scrape_ms_p90"] = 1000 * percentile(seconds, 0.9)
                    result["scrape_bytes"] = timed[-1][1]
                cpu_before, started = cpu_seconds(process.pid), time.monotonic()
                while (left := started + idle_seconds - time.monotonic()) > 0:
                    if metrics:
                        scrape(port)
                    time.sleep(min(15.0, max(left, 0.0)))
                cpu = cpu_seconds(process.pid) - cpu_before
                used = 100 * cpu / (time.monotonic() - started)
                result["idle_cpu_percent_with_scrapes" if metrics else "idle_cpu_percent_off"] = (
                    used
                )
            finally:
                _stop(process)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    result["load_average_1m"] = load_average()[0]
    return result
