"""A program run for a job: started, watched, read line by line, and stopped for sure.

What the source and the sink share. The program runs in a process group (a session) of
its own, with ``PR_SET_PDEATHSIG`` set to SIGKILL before it execs, so it dies with the
daemon even when the daemon is SIGKILLed (no orphan; the kernel reaps it when it is not
ours to reap). A stop is SIGTERM to the whole group, then SIGKILL after `stop_timeout`;
a sink's program first gets its stdin closed and `stop_timeout` to finish by itself.
After the program exits, what is left of its group is SIGKILLed.

Its stdout is read in bounded chunks from a pipe whose reader pauses when its buffer is
full, so a program that floods stdout waits for us (backpressure) instead of filling
memory; a line longer than `max_line_bytes` is cut to a short start and reported as a bad
line. Its stderr is read only while the connector is in a call (a read, a write, a
flush, a close), inside that call's task group; each line is logged with the job's name,
truncated, at most `stderr_lines_per_second` a second (the rest counted).

Spawning uses asyncio's subprocess support (the daemon's backend): anyio's
`open_process` cannot set the parent-death signal.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import anyio
import structlog

from supervisor.connectors.exec.config import ProgramConfig
from supervisor.errors import FatalError, TransientError

log = structlog.get_logger("supervisor.exec")

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1
CHUNK = 64 * 1024
"""Bytes asked of a pipe at once."""
_STDERR_LINE_CHARS = 1000
"""A stderr line is logged up to this many characters."""
_SHOWN = 80
"""Characters of a bad line shown in its error."""


class ProgramFailed(TransientError):
    """The job's program exited with a failure: retried."""


class ProgramFailedFatally(FatalError):
    """The job's program exited with one of its `fatal_exit_codes`: not retried."""


@dataclass(frozen=True, slots=True)
class LongLine:
    """A line longer than the limit: only its start is kept."""

    start: bytes


def shown(data: bytes) -> str:
    """The start of a line as shown in an error: decoded, at most `_SHOWN` characters."""
    text = data[:_SHOWN].decode("utf-8", "replace")
    return repr(text + ("..." if len(data) > _SHOWN else ""))


class LineSplitter:
    """Bytes in, complete lines out; what is held never exceeds the line limit."""

    def __init__(self, max_line_bytes: int) -> None:
        self._max = max_line_bytes
        self._partial = bytearray()
        self._discarding = False
        """Inside a long line already reported: dropped up to its newline."""

    def feed(self, chunk: bytes) -> list[bytes | LongLine]:
        lines: list[bytes | LongLine] = []
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            if newline < 0:
                break
            if self._discarding:
                self._discarding = False
            elif self._partial:
                self._partial += chunk[start:newline]
                lines.append(self._finish(bytes(self._partial)))
                self._partial.clear()
            else:
                lines.append(self._finish(chunk[start:newline]))
            start = newline + 1
        if start < len(chunk) and not self._discarding:
            self._partial += chunk[start:]
            if len(self._partial) > self._max:
                lines.append(LongLine(bytes(self._partial[:_SHOWN])))
                self._partial.clear()
                self._discarding = True
        return lines

    def _finish(self, line: bytes) -> bytes | LongLine:
        return line if len(line) <= self._max else LongLine(line[:_SHOWN])

    def rest(self) -> bytes | None:
        """What followed the last newline when the stream ended, if anything."""
        rest, self._partial = bytes(self._partial), bytearray()
        return rest if rest and not self._discarding else None


def _die_with_parent(parent: int) -> Callable[[], None]:
    """The child's last step before exec: SIGKILL it when the daemon dies. Everything it
    calls is looked up here, before the fork."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    kill, getppid, getpid = os.kill, os.getppid, os.getpid

    def in_child() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if getppid() != parent:  # the daemon died before the line above: go with it
            kill(getpid(), signal.SIGKILL)

    return in_child


class Program:
    """One run of a job's program. `start` it, use its pipes inside `attended`, `close`."""

    def __init__(self, config: ProgramConfig, job: str, role: str) -> None:
        self._config = config
        self._job = job
        self._role = role
        self._process: asyncio.subprocess.Process | None = None
        self._stderr = LineSplitter(_STDERR_LINE_CHARS * 4)
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=5)
        self._window_start = 0.0
        self._window_lines = 0
        self._suppressed = 0
        self.stdout = LineSplitter(config.max_line_bytes)

    @property
    def name(self) -> str:
        return self._config.command[0]

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def start(
        self, arguments: Sequence[str] = (), environment: Mapping[str, str] | None = None
    ) -> None:
        config = self._config
        env = {**os.environ, **config.environment, **(environment or {})}
        stdin = asyncio.subprocess.PIPE if self._role == "sink" else asyncio.subprocess.DEVNULL
        try:
            self._process = await asyncio.create_subprocess_exec(
                *config.command,
                *arguments,
                stdin=stdin,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=config.working_directory,
                env=env,
                user=config.user,
                start_new_session=True,
                preexec_fn=_die_with_parent(os.getpid()),
                limit=CHUNK,
            )
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            raise ProgramFailed(f"{self._role}.command: cannot start {self.name}: {exc}") from exc
        log.info(
            "exec.started", job=self._job, role=self._role, pid=self._process.pid, program=self.name
        )

    def _running(self) -> asyncio.subprocess.Process:
        if self._process is None:
            raise RuntimeError("the program is used before start()")
        return self._process

    async def attended(self, work: Callable[[], Awaitable[T]]) -> T:
        """`work()`, with the program's stderr read (and logged) while it runs."""
        async with anyio.create_task_group() as group:
            group.start_soon(self._pump_stderr)
            result = await work()
            group.cancel_scope.cancel()
        return result

    async def receive(self) -> bytes:
        """Up to `CHUNK` bytes of stdout; b"" at its end."""
        stdout = self._running().stdout
        assert stdout is not None
        return await stdout.read(CHUNK)

    async def send(self, data: bytes) -> None:
        """Write to the program's stdin, waiting while its pipe is full."""
        stdin = self._running().stdin
        assert stdin is not None
        try:
            stdin.write(data)
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise await self.exit_failure("stopped reading its stdin") from exc

    async def exit_failure(self, what: str) -> Exception:
        """The program ended or broke its protocol: the error for it, by its exit code.
        Waits (at most `stop_timeout`) for the exit code, with stderr still read."""
        process = self._running()
        with anyio.move_on_after(self._config.stop_timeout):
            await self.attended(process.wait)
        return self.failure(process.returncode, what)

    def failure(self, code: int | None, what: str) -> Exception:
        """The error for the program's exit `code` (None: still running)."""
        if code is None:
            ended = "is still running"
        elif code < 0:
            ended = f"was killed by {signal.Signals(-code).name}"
        else:
            ended = f"exited with code {code}"
        tail = "; its stderr ended: " + " | ".join(self._stderr_tail) if self._stderr_tail else ""
        message = f"{self._role}.command: {self.name} {what} and {ended}{tail}"
        if code is not None and code in self._config.fatal_exit_codes:
            return ProgramFailedFatally(f"{message} (a fatal_exit_codes code: not retried)")
        return ProgramFailed(message)

    async def wait(self) -> int:
        return await self.attended(self._running().wait)

    async def close(self) -> None:
        """Stop the program for sure: stdin closed (a sink's), SIGTERM, SIGKILL; then
        SIGKILL whatever is left of its process group."""
        process = self._process
        if process is None:
            return
        timeout = self._config.stop_timeout
        try:
            if process.stdin is not None:
                process.stdin.close()
                with anyio.move_on_after(timeout):
                    await self.wait()
            if process.returncode is None:
                self._signal(signal.SIGTERM)
                with anyio.move_on_after(timeout):
                    await self.wait()
            if process.returncode is None:
                self._signal(signal.SIGKILL)
                with anyio.move_on_after(timeout):
                    await process.wait()
        finally:
            # Even when the close itself is cut short: nothing of the group outlives us.
            self._signal(signal.SIGKILL)
            transport = getattr(process, "_transport", None)
            if transport is not None:
                transport.close()
            if self._suppressed:
                self._log_suppressed()
            log.info(
                "exec.stopped",
                job=self._job,
                role=self._role,
                pid=process.pid,
                returncode=process.returncode,
            )

    def _signal(self, number: signal.Signals) -> None:
        process = self._process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, number)

    async def _pump_stderr(self) -> None:
        stderr = self._running().stderr
        assert stderr is not None
        while chunk := await stderr.read(CHUNK):
            for line in self._stderr.feed(chunk):
                self._log_stderr(line)

    def _log_stderr(self, line: bytes | LongLine) -> None:
        data = line.start if isinstance(line, LongLine) else line
        text = data.decode("utf-8", "replace").rstrip("\r")
        if len(text) > _STDERR_LINE_CHARS or isinstance(line, LongLine):
            text = text[:_STDERR_LINE_CHARS] + "..."
        self._stderr_tail.append(text[:200])
        now = anyio.current_time()
        if now - self._window_start >= 1.0:
            if self._suppressed:
                self._log_suppressed()
            self._window_start, self._window_lines = now, 0
        if self._window_lines >= self._config.stderr_lines_per_second:
            self._suppressed += 1
            return
        self._window_lines += 1
        log.info("exec.stderr", job=self._job, role=self._role, line=text)

    def _log_suppressed(self) -> None:
        log.warning(
            "exec.stderr_suppressed", job=self._job, role=self._role, lines=self._suppressed
        )
        self._suppressed = 0
