"""Workload 2a: the daemon's snapshot write against the raw durable-write cycle of the same size.

The daemon's write is `JobLedger.write` on a real `SnapshotStore` (what an
attempt's checkpoint calls after the sink's flush): encode, checksum, a
worker-thread hop, temp file + fsync, previous generation kept, rename,
fsync of the directory. The raw cycle is `bench.baseline.durable_offset_write`'s
shape with the same number of bytes: write + fsync + rename + fsync(dir),
called directly. A third contestant does the raw cycle with what the daemon
may not leave out: the current file kept as ``prev`` first (SPEC §5), all in a
worker thread (fsync never runs on the event loop). The three alternate,
write for write, in one process.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from bench.measure import load_average, median, percentile
from supervisor.ledger import JobLedger
from supervisor.logs import configure_logging
from supervisor.snapshot import encode
from supervisor.snapshot_store import SnapshotStore

OFFSET: dict[str, int | str] = {
    "dev": 2049,
    "ino": 1_234_567,
    "pos": 141_592_419,
    "fingerprint": "0f" * 32,
    "fingerprint_len": 64,
}
"""A file source's offset (`FilePosition.to_offset`), the biggest the built-in sources write."""


def raw_cycle(directory: Path, data: bytes) -> None:
    """write + fsync + rename + fsync(dir): the least a durable replace can do."""
    temp = directory / "raw.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    temp.replace(directory / "raw")
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def raw_cycle_keeping_previous(directory: Path, data: bytes) -> None:
    """The raw cycle plus what SPEC §5 adds: the current file kept as ``prev`` (link + rename)."""
    current, previous, link = directory / "raw", directory / "raw.prev", directory / "raw.link"
    if current.exists():
        link.hardlink_to(current)
        link.replace(previous)
    raw_cycle(directory, data)


async def _measure(directory: Path, writes: int) -> dict[str, Any]:
    store_dir, raw_dir, kept_dir = directory / "state", directory / "raw", directory / "kept"
    raw_dir.mkdir()
    kept_dir.mkdir()
    store = SnapshotStore(store_dir)
    await store.prepare()
    ledger = JobLedger(store, "bench", None)
    await ledger.write(offset=OFFSET)  # the first write has no previous generation to keep
    size = len(encode(ledger.snapshot))
    payload = os.urandom(size // 2).hex().encode()[:size]
    daemon_ms: list[float] = []
    raw_ms: list[float] = []
    same_work_ms: list[float] = []
    for index in range(writes):
        started = time.perf_counter()
        await ledger.write(offset={**OFFSET, "pos": 141_592_419 + index})
        daemon_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        raw_cycle(raw_dir, payload)
        raw_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        await anyio.to_thread.run_sync(raw_cycle_keeping_previous, kept_dir, payload)
        same_work_ms.append((time.perf_counter() - started) * 1000)
    return {
        "writes": writes,
        "bytes": size,
        "daemon_ms_p50": median(daemon_ms),
        "daemon_ms_p99": percentile(daemon_ms, 0.99),
        "raw_ms_p50": median(raw_ms),
        "raw_ms_p99": percentile(raw_ms, 0.99),
        "ratio_daemon_to_raw": median(daemon_ms) / median(raw_ms),
        "same_work_ms_p50": median(same_work_ms),
        "same_work_ms_p99": percentile(same_work_ms, 0.99),
        "ratio_daemon_to_same_work": median(daemon_ms) / median(same_work_ms),
        "load_average_1m": load_average()[0],
    }


def snapshot_write_cost(writes: int, scratch: Path) -> dict[str, Any]:
    """Median time of a daemon snapshot write and of a raw cycle, alternating `writes` times."""
    with (
        tempfile.TemporaryDirectory(prefix="checkpoint-", dir=scratch) as directory,
        Path(os.devnull).open("w") as quiet,
    ):
        configure_logging("json", "info", stream=quiet)  # as the daemon logs by default
        result: dict[str, Any] = anyio.run(_measure, Path(directory), writes)
        return result
