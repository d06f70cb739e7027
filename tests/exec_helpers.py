"""Building exec connectors in tests, and the programs they run (tests/exec_programs/)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from supervisor.connectors.exec.config import ExecSinkConfig, ExecSourceConfig
from supervisor.connectors.exec.sink import ExecSink
from supervisor.connectors.exec.source import ExecSource
from supervisor.protocols import Batch, Record, Rejected

PROGRAMS = Path(__file__).resolve().parent / "exec_programs"
PYTHON = sys.executable
TAP = str(PROGRAMS / "counter_tap.py")
TARGET = str(PROGRAMS / "file_target.py")
SHELL_TAP = str(PROGRAMS / "counter.sh")


def source(*command: str, **keys: Any) -> ExecSource:
    return ExecSource(ExecSourceConfig(command=command, **keys), "test")


def sink(*command: str, **keys: Any) -> ExecSink:
    return ExecSink(ExecSinkConfig(command=command, **keys), "test")


async def read_all(
    source: ExecSource, max_records: int = 4096
) -> tuple[list[Record], list[Rejected], list[Batch]]:
    """Every batch until the end (the source must end)."""
    records: list[Record] = []
    rejects: list[Rejected] = []
    batches: list[Batch] = []
    while True:
        batch = await source.read(max_records, 10.0)
        batches.append(batch)
        records.extend(batch.records)
        rejects.extend(batch.rejects)
        if batch.end:
            return records, rejects, batches


def process_state(pid: int) -> str | None:
    """The state letter of process `pid` (R, S, Z, ...), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]
