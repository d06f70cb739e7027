"""The ``exec`` source: a program that writes records on stdout, one JSON line each.

Singer protocol (the default): ``{"type": "RECORD", "record": ...}`` is a record,
``{"type": "STATE", "value": ...}`` is the position after the records before it, and
SCHEMA, ACTIVATE_VERSION and BATCH messages are passed over. The offset is the last
STATE's value as JSON text; on the next start the program gets it in a file (the
`state_argument`, ``--state FILE`` by default, and/or the variable `state_env`).

Records are handed on only up to the last STATE the program wrote: a batch ends at a
STATE, so a stop checkpoints exactly what the sink got and the program resumes from
there with nothing repeated. Records after the last STATE are held until the next one,
but never more than a batch's worth (then they go on uncovered: at-least-once) and not
past the program's successful exit.

Plain protocol: each line is a record (parsed as JSON, or kept as text); the program
has no position, the offset stays unset, and a restart starts it afresh.

A line that is not what the protocol expects is a bad record (`Rejected`) whose error
names the line's start; the job's ``[records]`` policy decides. The program exiting 0
ends the job (FINISHED); any other exit fails the attempt (retried with backoff, or at
once fatal for `fatal_exit_codes`).
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import anyio

from supervisor.codec import JSON, Codec
from supervisor.connectors.exec.config import ExecSourceConfig
from supervisor.connectors.exec.lines import LongLine, json_line_parser, shown
from supervisor.connectors.exec.program import Program, user_id
from supervisor.protocols import Batch, Offset, Record, Rejected

_IGNORED = frozenset({"SCHEMA", "ACTIVATE_VERSION", "BATCH"})
"""Singer messages that say nothing a job needs."""


class BadLine(ValueError):
    """A line from the program that the protocol does not allow."""


class ExecSource:
    """Runs the program on `open`, reads its stdout on `read`, stops it on `close`."""

    replayable = False
    """A program need not repeat itself when restarted at a state."""

    def __init__(self, config: ExecSourceConfig, job: str, *, codec: Codec = JSON) -> None:
        self._config = config
        self._parse_json = json_line_parser(codec)
        self._singer = config.protocol == "singer"
        self._program = Program(config, job, "source")
        self._offset: str | None = None
        self._ready: list[Record] = []
        """Records ready to go: up to the last STATE (or released without one)."""
        self._ready_total = 0
        """Records ever made ready: the position just after ``_ready[-1]``."""
        self._states: collections.deque[tuple[int, str]] = collections.deque()
        """The STATEs not yet handed on: (position among the ready records, offset)."""
        self._rejects: list[Rejected] = []
        """Bad lines, handed on with the next batch."""
        self._held: list[Record] = []
        """Records after the last STATE, waiting for the next one."""
        self._ended: Exception | bool = False
        """False while stdout is open; then True (exited 0) or the exit's failure."""
        self._state_dir: Path | None = None
        self._lines = 0

    @staticmethod
    def check_offset(offset: Offset, protocol: str = "singer") -> None:
        if protocol != "singer":
            raise ValueError(
                "a plain exec source has no position (its offset stays unset); "
                'use protocol = "singer" for a program that has one'
            )
        if not isinstance(offset, str):
            raise ValueError(  # noqa: TRY004 (what `offset --set` reports)
                f"an exec source's offset is the program's last STATE as JSON text, got {offset!r}"
            )
        try:
            json.loads(offset)
        except ValueError as exc:
            raise ValueError(f"an exec source's offset must be JSON text: {exc}") from None

    async def open(self, offset: Offset | None) -> None:
        arguments: list[str] = []
        environment: dict[str, str] = {}
        if offset is not None:
            self.check_offset(offset, self._config.protocol)
            assert isinstance(offset, str)
            self._offset = offset
            self._state_dir = await anyio.to_thread.run_sync(
                _write_state, offset, self._config.user
            )
            state_file = str(self._state_dir / "state.json")
            argument = self._config.state_argument
            if argument.endswith("="):
                arguments = [argument + state_file]
            elif argument:
                arguments = [argument, state_file]
            if self._config.state_env:
                environment[self._config.state_env] = state_file
        await self._program.start(arguments, environment)

    async def read(self, max_records: int, wait: float) -> Batch:
        return await self._program.attended(lambda: self._read(max_records, wait))

    async def _read(self, max_records: int, wait: float) -> Batch:
        with anyio.move_on_after(wait):
            while not (self._ready or self._states or self._rejects):
                if self._ended is not False:
                    break
                chunk = await self._program.receive()
                if chunk:
                    self._add(self._program.stdout.feed(chunk))
                    if len(self._held) >= max_records or not self._singer:
                        self._release()
                else:
                    await self._end()
        if self._ready or self._states or self._rejects:
            return self._take(max_records)
        if isinstance(self._ended, Exception):
            raise self._ended
        return Batch((), self._offset, end=self._ended is True)

    async def close(self) -> None:
        try:
            await self._program.close()
        finally:
            if self._state_dir is not None:
                await anyio.to_thread.run_sync(shutil.rmtree, self._state_dir, True)

    def progress(self) -> Mapping[str, object] | None:
        return {"pid": self._program.pid, "lines": self._lines, "held": len(self._held)}

    async def _end(self) -> None:
        """Stdout closed: the program's exit code decides what the held records become."""
        rest = self._program.stdout.rest()
        if rest is not None:
            self._add([rest])
        code = await self._program.wait()
        if code == 0:
            self._release()
            self._ended = True
        else:
            # Uncovered records of a failed run: its next run, from the last STATE,
            # writes them again.
            self._held.clear()
            self._ended = self._program.failure(code, "closed its stdout")

    def _release(self) -> None:
        self._ready += self._held
        self._ready_total += len(self._held)
        self._held.clear()

    def _add(self, lines: list[bytes | LongLine]) -> None:
        self._lines += len(lines)
        if not self._singer:
            self._add_plain(lines)
            return
        held, loads = self._held, self._parse_json
        for line in lines:
            if type(line) is not bytes:
                self._too_long(line)
                continue
            try:
                value = loads(line)
            except ValueError as exc:  # UnicodeDecodeError too
                self._rejects.append(self._bad(line, f"not JSON ({exc})"))
                continue
            if type(value) is not dict:
                self._rejects.append(self._bad(line, "not a Singer message (a JSON object)"))
                continue
            kind = value.get("type")
            if kind == "RECORD" and "record" in value:
                held.append(value["record"])
            elif kind == "STATE" and "value" in value:
                self._release()
                state = json.dumps(value["value"], separators=(",", ":"))
                self._states.append((self._ready_total, state))
            elif kind not in _IGNORED:
                self._rejects.append(self._bad(line, "not a Singer RECORD or STATE message"))

    def _add_plain(self, lines: list[bytes | LongLine]) -> None:
        ready = self._ready
        before = len(ready)
        text = self._config.format == "lines"
        parse = self._parse_json
        for line in lines:
            if type(line) is not bytes:
                self._too_long(line)
                continue
            try:
                ready.append(line.decode().rstrip("\r") if text else parse(line))
            except UnicodeDecodeError as exc:
                self._rejects.append(self._bad(line, f"not UTF-8 ({exc.reason})"))
            except ValueError as exc:
                self._rejects.append(self._bad(line, f"not JSON ({exc})"))
        self._ready_total += len(ready) - before

    def _too_long(self, line: bytes | LongLine) -> None:
        start = line.start if isinstance(line, LongLine) else line
        limit = self._config.max_line_bytes
        self._rejects.append(self._bad(start, f"a line longer than {limit} bytes"))

    def _bad(self, line: bytes, what: str) -> Rejected:
        return Rejected(
            line.decode("utf-8", "replace"),
            BadLine(f"source.command: {self._program.name} wrote {what}: {shown(line)}"),
        )

    def _take(self, max_records: int) -> Batch:
        """Up to `max_records` ready records, ending at a STATE when one is in reach."""
        ready, states = self._ready, self._states
        count = min(len(ready), max_records)
        start = self._ready_total - len(ready)
        last = None
        while states and states[0][0] <= start + count:
            last = states.popleft()
        if last is not None:
            self._offset = last[1]
            if count < len(ready):
                count = last[0] - start  # cut short: end the batch at its last STATE
        records = ready[:count]
        del ready[:count]
        rejects, self._rejects = self._rejects, []
        done = not ready and not states and self._ended is True
        return Batch(records, self._offset, end=done, rejects=rejects)


def _write_state(offset: str, user: str | None) -> Path:
    """A private directory holding ``state.json`` for the program (blocking)."""
    directory = Path(tempfile.mkdtemp(prefix="supervisor-exec-"))
    path = directory / "state.json"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(offset + "\n")
    if user is not None:
        shutil.chown(directory, user_id(user))
        shutil.chown(path, user_id(user))
    return directory
