"""What the soak checks: what every job committed and its sink held at each stop, and at the end.

With the daemon dead after each stop, `observe_stop` reads each job's committed
offset (checksum verified) and its sink (`JsonlTrack` for jsonl, `sqlite_state`
for sqlite) and records a `Stop`; at the end `check_final` finds missing records
and repeats outside every SIGKILL's uncheckpointed window, and `check_log` the
log events that must not happen. Violations are collected as sentences, and the
counts in a `SoakResult`.
"""

from __future__ import annotations

import json
import signal
import sqlite3
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.soak_jobs import SoakJob, generated_seq
from supervisor.errors import SnapshotError
from supervisor.snapshot import decode

BAD_EVENTS = frozenset(
    {
        "job.attempt_failed",
        "job.persist_failed",
        "job.snapshot_unreadable",
        "snapshot.corrupt",
        "snapshot.previous_used",
        "daemon.shutdown_timeout",
    }
)
"""Log events that must not happen in a soak: nothing here fails, only stops."""


@dataclass
class Stop:
    """One interruption of the daemon, and what every job had when it was dead."""

    number: int
    sig: signal.Signals
    ran_for: float
    exit_code: int
    committed: dict[str, int] = field(default_factory=dict)
    generation: dict[str, int] = field(default_factory=dict)
    held_end: dict[str, int] = field(default_factory=dict)
    """One past the highest sequence number the sink held (what a restart must not need)."""


class JsonlTrack:
    """Reads a jsonl sink as it grows and checks each daemon run's part of it.

    A run appends from the offset committed at the previous stop, in order; a
    torn last line left by a kill is cut off by the next run's sink, so only
    complete lines are read, from where the last complete one ended.
    """

    def __init__(self, job: SoakJob, path: Path, violations: list[str]) -> None:
        self.job = job
        self.path = path
        self.violations = violations
        self.seqs: list[int] = []
        self.held_end = 0
        self._cut = 0
        self._resume = 0
        self._next: int | None = None

    def read_run(self, where: str) -> None:
        """Read what the run since the last stop appended, and check it."""
        if not self.path.exists():
            return
        with self.path.open("rb") as file:
            file.seek(self._cut)
            data = file.read()
        complete = data[: data.rfind(b"\n") + 1]
        for line in complete.splitlines():
            try:
                record = json.loads(line)
                seq = int(record["seq"])
            except (ValueError, KeyError, TypeError):
                self.violations.append(f"{self.job.name}: unreadable line {line[:80]!r} ({where})")
                continue
            expected = self._resume if self._next is None else self._next
            if seq != expected:
                self.violations.append(
                    f"{self.job.name}: line {len(self.seqs) + 1} has seq {seq}, expected "
                    f"{expected}: a run must append from the committed offset, in order ({where})"
                )
            if record != self.job.record(seq):
                self.violations.append(f"{self.job.name}: seq {seq} damaged: {line[:80]!r}")
            self._next = seq + 1
            self.seqs.append(seq)
            self.held_end = max(self.held_end, seq + 1)
        self._cut += len(complete)

    @property
    def run_end(self) -> int:
        """One past the last sequence number the current run appended (its start if none)."""
        return self._resume if self._next is None else self._next

    def restarted_from(self, committed: int) -> None:
        """The next run resumes at `committed`."""
        self._resume, self._next = committed, None


def committed_offset(state_dir: Path, job: SoakJob, violations: list[str]) -> tuple[Any, int]:
    """(offset, generation) of the job's snapshot, checksum verified; (None, 0) before one."""
    path = state_dir / f"{job.name}.snapshot.toml"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, 0
    try:
        snapshot = decode(data, job=job.name, path=path)
    except SnapshotError as exc:
        violations.append(f"{job.name}: snapshot unreadable after a stop: {exc}")
        return None, 0
    return snapshot.offset, snapshot.generation


def sqlite_state(path: Path) -> tuple[int, Any]:
    """Rows in the sink's table and the offset committed with them."""
    if not path.exists():
        return 0, None
    with closing(sqlite3.connect(path, timeout=30)) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        if "records" not in tables:
            return 0, None
        rows = db.execute('SELECT count(*) FROM "records"').fetchone()[0]
        found = None
        if "stream_supervisor_offsets" in tables:
            found = db.execute(
                "SELECT offset FROM stream_supervisor_offsets WHERE job = 'gen_sqlite'"
            ).fetchone()
        return int(rows), None if found is None else json.loads(found[0])


def sqlite_seqs(path: Path) -> list[int]:
    with closing(sqlite3.connect(path)) as db:
        return [
            json.loads(row[0])["seq"]
            for row in db.execute("SELECT record FROM records ORDER BY id")
        ]


@dataclass
class SoakResult:
    kills: int
    sigterms: int
    records: dict[str, int]
    repeats: dict[str, int]
    max_window: dict[str, int]
    torn_lines_cut: int
    rotations: int
    resumed_in_rotated_copy: int
    """Restarts whose committed offset named a file that had been rotated away."""
    wall_s: float
    violations: list[str]

    def summary(self) -> str:
        lines = [
            f"soak: {self.kills} SIGKILL + {self.sigterms} SIGTERM restarts in "
            f"{self.wall_s:.1f} s; {self.rotations} rotations of the followed file, "
            f"{self.resumed_in_rotated_copy} restart(s) resumed in a rotated copy; "
            f"{self.torn_lines_cut} torn line(s) cut on restart",
        ]
        for name in self.records:
            lines.append(
                f"  {name:<11} {self.records[name]:>9} records, {self.repeats[name]:>6} repeated, "
                f"max repeat window {self.max_window[name]}"
            )
        if self.violations:
            lines.append(f"FAILED: {len(self.violations)} violation(s):")
            lines += [f"  - {v}" for v in self.violations[:50]]
        else:
            lines.append(
                "OK: nothing missing; every repeat was after the last checkpoint of a kill"
            )
        return "\n".join(lines)


def observe_stop(
    stop: Stop,
    last: Stop | None,
    jobs: list[SoakJob],
    tracks: dict[str, JsonlTrack],
    workdir: Path,
    violations: list[str],
) -> None:
    """With the daemon dead: what each job committed, and what its sink held."""
    where = f"stop {stop.number}, {stop.sig.name} after {stop.ran_for:.2f} s"
    for job in jobs:
        offset, generation = committed_offset(workdir / "state", job, violations)
        if last is not None and generation < last.generation.get(job.name, 0):
            violations.append(
                f"{job.name}: snapshot generation went back from "
                f"{last.generation[job.name]} to {generation} ({where})"
            )
        stop.generation[job.name] = generation
        try:
            committed = job.seq_of_offset(offset)
        except (ValueError, KeyError, TypeError) as exc:
            violations.append(f"{job.name}: bad committed offset {offset!r} ({where}): {exc}")
            continue
        if job.sink == "jsonl":
            track = tracks[job.name]
            track.read_run(where)
            held_end = track.held_end
        else:
            rows, sink_offset = sqlite_state(workdir / "out" / f"{job.name}.db")
            held_end = rows
            if generated_seq(sink_offset) != rows:
                violations.append(
                    f"{job.name}: {rows} rows, but offset {sink_offset} committed with them "
                    f"({where})"
                )
            if committed > rows:
                violations.append(
                    f"{job.name}: snapshot offset {committed} ahead of the sink's {rows} ({where})"
                )
            committed = max(committed, generated_seq(sink_offset))  # the sink's offset wins
        previous = last.committed.get(job.name, 0) if last is not None else 0
        if committed < previous:
            violations.append(
                f"{job.name}: committed offset went back from {previous} to {committed} ({where})"
            )
        if committed > held_end:
            violations.append(
                f"{job.name}: seq {held_end}..{committed - 1} committed but never reached the "
                f"sink: lost ({where})"
            )
        # A clean stop commits all this run wrote (what a kill left before it is that kill's).
        run_end = tracks[job.name].run_end if job.sink == "jsonl" else held_end
        if stop.sig is signal.SIGTERM and run_end != committed:
            violations.append(
                f"{job.name}: the run wrote up to seq {run_end - 1} but its clean stop committed "
                f"{committed}: its restart repeats or skips records ({where})"
            )
        if held_end - committed > job.every_records:
            violations.append(
                f"{job.name}: {held_end - committed} records after the last checkpoint, more than "
                f"every_records = {job.every_records} ({where})"
            )
        stop.committed[job.name] = committed
        stop.held_end[job.name] = held_end
        if job.sink == "jsonl":
            tracks[job.name].restarted_from(committed)


def check_final(
    job: SoakJob, seqs: list[int], total: int, stops: list[Stop], result: SoakResult
) -> None:
    """Nothing missing; every repeat within the uncheckpointed window of some SIGKILL."""
    counts = Counter(seqs)
    missing = [seq for seq in range(total) if seq not in counts]
    if missing:
        result.violations.append(
            f"{job.name}: {len(missing)} of {total} records missing (first: {missing[:10]})"
        )
    extra = sorted(set(counts) - set(range(total)))
    if extra:
        result.violations.append(f"{job.name}: records beyond the end: {extra[:10]}")
    # How many SIGKILL windows [committed, held_end) cover each sequence number.
    windows = [
        (stop.committed[job.name], stop.held_end[job.name])
        for stop in stops
        if stop.sig is signal.SIGKILL and job.name in stop.committed
    ]
    cover: Counter[int] = Counter()
    for low, high in windows:
        for seq in range(low, high):
            cover[seq] += 1
    unexplained = [seq for seq, n in counts.items() if n - 1 > cover[seq]]
    if unexplained:
        result.violations.append(
            f"{job.name}: {len(unexplained)} record(s) repeated outside every kill's window "
            f"[committed, held): e.g. {sorted(unexplained)[:10]}"
        )
    if job.sink == "sqlite" and len(seqs) != len(counts):
        result.violations.append(f"{job.name}: {len(seqs) - len(counts)} repeats in sqlite")
    result.records[job.name] = len(counts)
    result.repeats[job.name] = len(seqs) - len(counts)
    result.max_window[job.name] = max((high - low for low, high in windows), default=0)


def check_state_dir(state_dir: Path, jobs: list[SoakJob], violations: list[str]) -> None:
    """The state directory holds each job's snapshot and its previous copy (and the daemon's
    lock file), nothing else."""
    expected_files = {f"{job.name}.snapshot{kind}.toml" for job in jobs for kind in ("", ".prev")}
    expected_files.add("supervisor.lock")
    stray = sorted({p.name for p in state_dir.iterdir()} - expected_files)
    if stray:
        violations.append(f"state directory holds more than the snapshots: {stray}")


def check_log(events: list[dict[str, Any]], violations: list[str]) -> None:
    """No event in BAD_EVENTS, and no line that is not a JSON log event."""
    for event in events:
        if event.get("event") in BAD_EVENTS or event.get("event") == "raw":
            violations.append(f"daemon logged {event}")
