"""Processors the worker tests run, in the daemon and in worker processes (which import
them by name, as a job file names them)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any


def double(record: dict[str, Any]) -> Any:
    """Drop odd numbers, fan out multiples of 3, double the rest; fail on a non-number."""
    n = record["n"]
    if not isinstance(n, int):
        raise ValueError(f"not a number: {n!r}")
    if n % 2:
        return None
    if n % 3 == 0:
        return [{"n": n}, {"n": n, "copy": True}]
    return {"n": n * 2}


async def double_async(record: dict[str, Any]) -> Any:
    """`double`, as ``async def``."""
    return double(record)


def double_all(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Batch: double every number, drop odd ones; a non-number fails the whole call."""
    out = []
    for record in records:
        if not isinstance(record["n"], int):
            raise ValueError(f"not a number: {record['n']!r}")
        if record["n"] % 2 == 0:
            out.append({"n": record["n"] * 2})
    return out


async def double_all_async(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`double_all`, as ``async def``."""
    return double_all(records)


def not_a_list(records: list[Any]) -> Any:
    """Batch: breaks the contract (a dict, not a list)."""
    return {"count": len(records)}


class NeedsTwo(Exception):
    """An exception whose class takes other arguments than it gives Exception: pickles,
    but cannot be unpickled."""

    def __init__(self, what: str, why: str) -> None:
        super().__init__(f"{what}: {why}")


def odd_errors(record: dict[str, Any]) -> Any:
    """Fail a negative number with an exception that cannot cross back; return a value that
    cannot be pickled for n == 7; else the record."""
    if record["n"] < 0:
        raise NeedsTwo("negative", str(record["n"]))
    if record["n"] == 7:
        return {"n": 7, "lock": threading.Lock()}
    return record


def crash_on(record: dict[str, Any]) -> Any:
    """SIGKILL the worker at ``{"die": "kill"}``, exit 3 (after a line on stderr) at
    ``{"die": "exit"}``."""
    if record.get("die") == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if record.get("die") == "exit":
        print("worker says: giving up", file=sys.stderr, flush=True)
        os._exit(3)
    return record


def stall_once(record: dict[str, Any]) -> Any:
    """At ``{"seq": 150}``, the first time (no file at $WORKER_TEST_MARKER yet): make the
    file, say so on stderr with its pid (the daemon logs it) and block until killed. Else
    the record."""
    if record.get("seq") == 150:
        marker = Path(os.environ["WORKER_TEST_MARKER"])
        if not marker.exists():
            marker.touch()
            print(f"stalled in {os.getpid()}", file=sys.stderr, flush=True)
            threading.Event().wait()
    return record


def where_am_i(record: Any) -> Any:
    """The record and the pid of the process that handled it."""
    return {"record": record, "pid": os.getpid()}
