"""The soak's workload: the daemon's configuration, its four jobs, and the followed file.

Every record the jobs produce carries a sequence number, so a sink can be checked
against `SoakJob.record`. Each job says how to read its sink and how to map a
committed offset to the first sequence number after it; the followed file's lines
are all `LINE_BYTES` long, so `FileWriter.seq_at` turns a byte offset (and the inode
of the rotated copy it names) into a sequence number.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LINE_BYTES = 64
"""Every line the file writer appends is this long, so a byte offset names a sequence number."""

WIDE_PAD = "p" * 400
"""What `supervisor.testing:pad_record` adds: wide records fill the jsonl sink's 1 MiB buffer
between checkpoints, so a kill often finds records in the file after the committed offset."""

DAEMON_TOML = """\
[supervisor]
jobs = "jobs/*.toml"
state_dir = "state"
control_socket = "supervisor.sock"
log_format = "json"
log_level = "debug"
shutdown_timeout = "20s"
"""
"""The daemon's own configuration (`supervisor.toml`); each job's TOML goes in `jobs/`."""


@dataclass(frozen=True)
class SoakJob:
    """One job of the soak: its TOML, how to read its sink, and what it must end with."""

    name: str
    toml: str
    sink: str
    """`jsonl` or `sqlite`."""
    every_records: int
    record: Callable[[int], dict[str, Any]]
    """The record with sequence number n, as the sink must hold it."""
    seq_of_offset: Callable[[Any], int]
    """The first sequence number after a committed offset."""


def generated_seq(offset: Any) -> int:
    """The first sequence number after a generate source's offset (None: 0)."""
    return 0 if offset is None else int(offset)


def file_line(seq: int) -> bytes:
    """Line `seq` of the followed file: a JSON document padded to LINE_BYTES."""
    head = f'{{"seq":{seq},"pad":"'
    return (head + "f" * (LINE_BYTES - len(head) - 3) + '"}\n').encode()


def _file_record(seq: int) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(file_line(seq))
    return record


def soak_jobs(kills: int, file_seq: Callable[[Any], int]) -> list[SoakJob]:
    """The jobs, sized so the bounded ones end around the last stop.

    `file_seq` maps the file job's offset to a sequence number (`FileWriter.seq_at`).
    """
    checkpoint = '[checkpoint]\nevery_records = {every}\ninterval = "{interval}"\n'
    generate = '[source]\ntype = "generate"\ncount = {count}\nrate = {rate}\n'
    return [
        SoakJob(
            "gen_jsonl",
            generate.format(count=kills * 3000, rate=5000)
            + '[sink]\ntype = "jsonl"\npath = "../out/gen_jsonl.jsonl"\n'
            + checkpoint.format(every=1000, interval="1s"),
            "jsonl",
            1000,
            lambda seq: {"seq": seq},
            generated_seq,
        ),
        SoakJob(
            "wide_jsonl",
            generate.format(count=kills * 2500, rate=4000)
            + '[processor]\nfunction = "supervisor.testing:pad_record"\n'
            + '[sink]\ntype = "jsonl"\npath = "../out/wide_jsonl.jsonl"\n'
            + checkpoint.format(every=4000, interval="2s"),
            "jsonl",
            4000,
            lambda seq: {"seq": seq, "pad": WIDE_PAD},
            generated_seq,
        ),
        SoakJob(
            "file_jsonl",
            '[source]\ntype = "file"\npath = "../in/numbers.jsonl"\nformat = "jsonl"\n'
            'follow = true\nstart = "beginning"\npoll_interval = "50ms"\n'
            '[sink]\ntype = "jsonl"\npath = "../out/file_jsonl.jsonl"\n'
            + checkpoint.format(every=1000, interval="1s"),
            "jsonl",
            1000,
            _file_record,
            file_seq,
        ),
        SoakJob(
            "gen_sqlite",
            generate.format(count=kills * 3000, rate=5000)
            + '[sink]\ntype = "sqlite"\npath = "../out/gen_sqlite.db"\n'
            + checkpoint.format(every=1000, interval="1s"),
            "sqlite",
            1000,
            lambda seq: {"seq": seq},
            generated_seq,
        ),
    ]


class FileWriter:
    """A thread appending numbered lines to the followed file at `rate` lines a second.

    Every `rotate_every` lines it rotates the file as logrotate's default does:
    renames it to ``<name>.<n>`` (never reused) and creates a new one, so the
    file source must finish the renamed file, also after a kill, before it
    reads the new one.
    """

    def __init__(self, path: Path, rate: float, rotate_every: int) -> None:
        self.path = path
        self.rate = rate
        self.rotate_every = rotate_every
        self.written = 0
        self.rotations = 0
        path.touch()
        self._first_seq = {path.stat().st_ino: 0}
        """Inode of each file the writer made -> the sequence number of its first line."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write, daemon=True)

    def seq_at(self, offset: Any) -> int:
        """The sequence number of the line at a file source offset (None: 0)."""
        if offset is None:
            return 0
        pos = int(offset["pos"])
        if pos % LINE_BYTES:
            raise ValueError(f"file offset {pos} is not at the start of a line")
        with self._lock:
            first = self._first_seq[int(offset["ino"])]
        return first + pos // LINE_BYTES

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> int:
        """Stop writing; the number of lines in the file."""
        self._stop.set()
        self._thread.join()
        return self.written

    def _write(self) -> None:
        started = time.monotonic()
        file = self.path.open("ab")
        try:
            first = 0
            while not self._stop.wait(0.01):  # pacing: a writer that appends every 10 ms
                due = int((time.monotonic() - started) * self.rate)
                file.write(b"".join(file_line(seq) for seq in range(self.written, due)))
                file.flush()
                self.written = max(due, self.written)
                if self.written - first >= self.rotate_every:
                    file.close()
                    self.rotations += 1
                    self.path.rename(self.path.with_name(f"{self.path.name}.{self.rotations}"))
                    file = self.path.open("ab")
                    first = self.written
                    with self._lock:
                        self._first_seq[os.fstat(file.fileno()).st_ino] = first
        finally:
            file.close()
