"""Kill -9 soak: a real daemon killed at random moments, restarted, and its sinks checked.

Usage: python bench/soak.py [--kills N] [--seed S] [--workdir DIR] [--keep]
                            [--daemon COMMAND] [--jobs NAME,...]

Runs `python -m supervisor run` on four jobs whose records carry sequence
numbers: generate -> jsonl, generate -> processor (wide records) -> jsonl, a
followed file that a writer thread keeps appending numbered lines to -> jsonl,
and generate -> sqlite. The writer rotates the file (rename and create) every
`ROTATE_EVERY` lines. The daemon is stopped `--kills` times with SIGKILL
(and about one time in five with SIGTERM as well), each time after a random
delay drawn from `--seed`, and restarted. After each stop, with the process
dead, it reads every job's committed offset (the snapshot file, checksum
verified) and what every sink holds. At the end the daemon runs until every
job has everything, is stopped with SIGTERM, and the sinks are checked:

- no sequence number is missing, and every record is intact;
- each run of the daemon appended to a jsonl sink exactly the records from the
  offset committed at the previous stop onwards, in order;
- every repeated record lies in [committed offset, end of what the sink held)
  at some SIGKILL: records after the last checkpoint, at most
  `checkpoint.every_records` of them;
- a SIGTERM leaves nothing after the committed offset (so its restart repeats
  nothing), and the sqlite sink holds every record exactly once;
- the daemon logged no failed attempt, corrupt snapshot or shutdown timeout.

Prints a summary and exits 1 if any check failed. Importable: `run_soak`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from supervisor.errors import SnapshotError
from supervisor.snapshot import decode

DAEMON_COMMAND = (sys.executable, "-m", "supervisor")
"""How the daemon is started; `run -c FILE` follows. A test may start a broken build instead."""

LINE_BYTES = 64
"""Every line the file writer appends is this long, so a byte offset names a sequence number."""

ROTATE_EVERY = 10_000
"""Lines the file writer appends before it rotates the file (5 s at 2,000 lines a second)."""

SIGTERM_SHARE = 0.2
"""The share of stops that are a SIGTERM rather than a SIGKILL."""

MAX_DELAY = 2.0
"""The longest a daemon runs before it is stopped (the delay is uniform from 0.05 s)."""

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


def _generated_seq(offset: Any) -> int:
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
            _generated_seq,
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
            _generated_seq,
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
            _generated_seq,
        ),
    ]


# --- the daemon -----------------------------------------------------------------------------


class Daemon:
    """`supervisor run` in a subprocess; a thread copies its log to a file and keeps the events."""

    def __init__(self, command: Sequence[str], config: Path, log: IO[bytes]) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(name, None)
        self.process = subprocess.Popen(
            [*command, "run", "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.events: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._log = log
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._log.write(line)
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "raw", "text": line.decode(errors="replace")}
            with self._changed:
                self.events.append(event)
                self._changed.notify_all()
        with self._changed:
            self.events.append({"event": "(log closed)"})
            self._changed.notify_all()

    def wait_until(self, done: Callable[[list[dict[str, Any]]], bool], timeout: float) -> None:
        """Block until `done(events)` holds; AssertionError if the daemon exits or time runs out
        (the daemon is then killed, so a failed soak leaves no process behind)."""
        with self._changed:
            satisfied = self._changed.wait_for(
                lambda: done(self.events) or self.events[-1:] == [{"event": "(log closed)"}],
                timeout,
            )
            if not satisfied or not done(self.events):
                self.process.kill()
                raise AssertionError(
                    f"daemon (exit {self.process.poll()}) never got there; "
                    f"last events: {self.events[-5:]}"
                )

    def stop(self, sig: signal.Signals, timeout: float = 60) -> int:
        """Send `sig`, wait for the exit and the end of the log; the exit code."""
        self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        assert self.process.stderr is not None
        self.process.stderr.close()
        return code


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


# --- what the sinks held ---------------------------------------------------------------------


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


# --- the soak --------------------------------------------------------------------------------


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


def run_soak(
    kills: int,
    seed: int,
    workdir: Path,
    *,
    daemon_command: Sequence[str] = DAEMON_COMMAND,
    job_names: Sequence[str] | None = None,
) -> SoakResult:
    """Stop the daemon `kills` times with SIGKILL (and some SIGTERMs), then check every sink."""
    started = time.monotonic()
    rng = random.Random(seed)
    (workdir / "in").mkdir(parents=True, exist_ok=True)
    writer = FileWriter(workdir / "in" / "numbers.jsonl", rate=2000, rotate_every=ROTATE_EVERY)
    jobs = [
        job for job in soak_jobs(kills, writer.seq_at) if job_names is None or job.name in job_names
    ]
    for sub in ("jobs", "out", "in", "state"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    config = workdir / "supervisor.toml"
    config.write_text(DAEMON_TOML)
    for job in jobs:
        (workdir / "jobs" / f"{job.name}.toml").write_text(job.toml)
    violations: list[str] = []
    tracks = {
        job.name: JsonlTrack(job, workdir / "out" / f"{job.name}.jsonl", violations)
        for job in jobs
        if job.sink == "jsonl"
    }
    writer.start()
    stops: list[Stop] = []
    all_events: list[dict[str, Any]] = []
    try:
        with (workdir / "daemon.log").open("wb") as log:
            kills_done = 0
            while kills_done < kills:
                sig = signal.SIGTERM if rng.random() < SIGTERM_SHARE else signal.SIGKILL
                delay = rng.uniform(0.05, MAX_DELAY)
                daemon = Daemon(daemon_command, config, log)
                spawned = time.monotonic()
                if sig is signal.SIGTERM:
                    # A SIGTERM before the handler is installed kills like SIGKILL; send it
                    # once the daemon serves (the handler is installed before the socket).
                    daemon.wait_until(_seen("control.listening"), timeout=60)
                time.sleep(delay)  # the random moment: nothing to wait for
                code = daemon.stop(sig)
                all_events += daemon.events
                stop = Stop(len(stops) + 1, sig, time.monotonic() - spawned, code)
                stops.append(stop)
                kills_done += sig is signal.SIGKILL
                if code != (0 if sig is signal.SIGTERM else -signal.SIGKILL):
                    violations.append(f"stop {stop.number}: {sig.name} but exit code {code}")
                _observe(
                    stop, stops[-2] if len(stops) > 1 else None, jobs, tracks, workdir, violations
                )
            lines_written = writer.stop()
            # The end: run until every job has everything, then a clean stop.
            last = stops[-1].committed if stops else {}
            waiting = {
                job.name
                for job in jobs
                if _snapshot_state(workdir / "state", job) != "finished"
                and not (job.name == "file_jsonl" and last.get(job.name) == lines_written)
            }
            daemon = Daemon(daemon_command, config, log)
            daemon.wait_until(_all_done(waiting, lines_written, writer.seq_at), timeout=300)
            code = daemon.stop(signal.SIGTERM)
            all_events += daemon.events
            if code != 0:
                violations.append(f"final SIGTERM: exit code {code}, not 0")
    finally:
        writer.stop()  # also when a phase failed: no thread left writing
    final = Stop(len(stops) + 1, signal.SIGTERM, 0.0, code)
    _observe(final, stops[-1] if stops else None, jobs, tracks, workdir, violations)
    expected_files = {f"{job.name}.snapshot{kind}.toml" for job in jobs for kind in ("", ".prev")}
    stray = sorted({p.name for p in (workdir / "state").iterdir()} - expected_files)
    if stray:
        violations.append(f"state directory holds more than the snapshots: {stray}")
    totals = {job.name: lines_written if job.name == "file_jsonl" else _count(job) for job in jobs}
    result = SoakResult(
        kills=sum(stop.sig is signal.SIGKILL for stop in stops),
        sigterms=sum(stop.sig is signal.SIGTERM for stop in stops),
        records={},
        repeats={},
        max_window={},
        torn_lines_cut=sum(e.get("event") == "sink.jsonl.torn_line_removed" for e in all_events),
        rotations=writer.rotations,
        resumed_in_rotated_copy=sum(
            e.get("event") == "source.file.resumed_in_rotated_copy" for e in all_events
        ),
        wall_s=0.0,
        violations=violations,
    )
    for job in jobs:
        if job.sink == "jsonl":
            seqs = tracks[job.name].seqs
        else:
            seqs = sqlite_seqs(workdir / "out" / f"{job.name}.db")
        _check_final(job, seqs, totals[job.name], stops, result)
    for event in all_events:
        if event.get("event") in BAD_EVENTS or event.get("event") == "raw":
            violations.append(f"daemon logged {event}")
    result.wall_s = time.monotonic() - started
    return result


def _seen(name: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda events: any(event.get("event") == name for event in events)


def _count(job: SoakJob) -> int:
    source = tomllib.loads(job.toml)["source"]
    return int(source["count"])


def _snapshot_state(state_dir: Path, job: SoakJob) -> str | None:
    path = state_dir / f"{job.name}.snapshot.toml"
    try:
        return decode(path.read_bytes(), job=job.name, path=path).state.value
    except (OSError, SnapshotError):
        return None


def _all_done(
    waiting: set[str], lines: int, seq_at: Callable[[Any], int]
) -> Callable[[list[dict[str, Any]]], bool]:
    """Every job in `waiting` finished, or (the file job) checkpointed past the last line."""
    read = 0

    def finished(event: dict[str, Any]) -> bool:
        if event.get("event") == "job.state_changed":
            return event.get("to") == "finished"
        return event.get("event") == "job.checkpoint" and (
            event.get("job") == "file_jsonl" and seq_at(event.get("offset")) == lines
        )

    def done(events: list[dict[str, Any]]) -> bool:
        nonlocal read
        for event in events[read:]:
            if finished(event):
                waiting.discard(event.get("job", ""))
        read = len(events)
        return not waiting

    return done


def _observe(
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
            if _generated_seq(sink_offset) != rows:
                violations.append(
                    f"{job.name}: {rows} rows, but offset {sink_offset} committed with them "
                    f"({where})"
                )
            if committed > rows:
                violations.append(
                    f"{job.name}: snapshot offset {committed} ahead of the sink's {rows} ({where})"
                )
            committed = max(committed, _generated_seq(sink_offset))  # the sink's offset wins
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


def _check_final(
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs (default 20)")
    parser.add_argument("--seed", type=int, default=1, help="seeds the delays and signals")
    parser.add_argument("--workdir", type=Path, help="keep everything here (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir even on success")
    parser.add_argument(
        "--daemon",
        default=shlex.join(DAEMON_COMMAND),
        help="command that, followed by `run -c FILE`, runs the daemon (default: %(default)s)",
    )
    parser.add_argument(
        "--jobs", help="comma-separated subset of: gen_jsonl,wide_jsonl,file_jsonl,gen_sqlite"
    )
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="soak-"))
    result = run_soak(
        args.kills,
        args.seed,
        workdir,
        daemon_command=shlex.split(args.daemon),
        job_names=args.jobs.split(",") if args.jobs else None,
    )
    print(result.summary())
    if result.violations or args.keep or args.workdir:
        print(f"files: {workdir} (daemon.log, state/, out/)")
    else:
        shutil.rmtree(workdir)
    return 1 if result.violations else 0


if __name__ == "__main__":
    sys.exit(main())
