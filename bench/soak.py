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

Prints a summary and exits 1 if any check failed. Importable: `run_soak`. The jobs and the
followed file's writer are in `bench/soak_jobs.py`, the checks in `bench/soak_checks.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

if __package__ in (None, ""):  # run as a script: make `bench` and `supervisor` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.soak_checks import (
    JsonlTrack,
    SoakResult,
    Stop,
    check_final,
    check_log,
    check_state_dir,
    observe_stop,
    sqlite_seqs,
)
from bench.soak_jobs import DAEMON_TOML, FileWriter, SoakJob, soak_jobs
from supervisor.errors import SnapshotError
from supervisor.snapshot import decode

DAEMON_COMMAND = (sys.executable, "-m", "supervisor")
"""How the daemon is started; `run -c FILE` follows. A test may start a broken build instead."""

ROTATE_EVERY = 10_000
"""Lines the file writer appends before it rotates the file (5 s at 2,000 lines a second)."""

SIGTERM_SHARE = 0.2
"""The share of stops that are a SIGTERM rather than a SIGKILL."""

MAX_DELAY = 2.0
"""The longest a daemon runs before it is stopped (the delay is uniform from 0.05 s)."""


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
                observe_stop(
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
    observe_stop(final, stops[-1] if stops else None, jobs, tracks, workdir, violations)
    check_state_dir(workdir / "state", jobs, violations)
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
        check_final(job, seqs, totals[job.name], stops, result)
    check_log(all_events, violations)
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
