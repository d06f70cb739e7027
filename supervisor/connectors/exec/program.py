"""A program run for a job: started, watched, read line by line, and stopped for sure.

What the exec source, sink and co-processes share, and the processor workers
(`supervisor.workers`). The program runs in a process group (a session) of its own, with
``PR_SET_PDEATHSIG`` set to SIGKILL before it execs, so it dies with the daemon even when
the daemon is SIGKILLed (no orphan; init reaps it then). A stop is SIGTERM to the whole
group, then SIGKILL after `stop_timeout`; a sink's program (and a co-process, and a worker)
first gets its stdin closed and `stop_timeout` to finish by itself. After the program
exits, what is left of its group is SIGKILLed, and it is reaped (no zombie).

Its pipes are read and written without blocking, a chunk at a time, only when the
connector asks: the kernel's pipe buffer is the only buffer, so a program that floods
stdout waits for us (backpressure) instead of filling memory. Its exit is seen through a
pidfd, and it is reaped here, not by a child watcher, so that waiting for it does not
depend on its pipes being closed (a grandchild may hold them). Its stderr is read only
while the connector is in a call (a read, a write, a flush, a close), inside that call's
task group; each line is logged with the job's name, truncated, at most
`stderr_lines_per_second` a second (the rest counted).

The fork happens on the event loop's thread, as asyncio's and anyio's own subprocess
support do: the parent-death signal is tied to the thread that forked, and a worker
thread may end before the program does.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import IO, Any, TypeVar

import anyio
import structlog

from supervisor.connectors.exec.config import ProgramConfig
from supervisor.connectors.exec.lines import LineSplitter, LongLine
from supervisor.errors import FatalError, TransientError

log = structlog.get_logger("supervisor.exec")

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1
CHUNK = 64 * 1024
"""Bytes read from a pipe at once."""
_STDERR_LINE_CHARS = 1000
"""A stderr line is logged up to this many characters."""


class ProgramFailed(TransientError):
    """The job's program exited with a failure: retried."""


class ProgramFailedFatally(FatalError):
    """The job's program exited with one of its `fatal_exit_codes`: not retried."""


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


def _spawn(
    config: ProgramConfig, arguments: Sequence[str], env: Mapping[str, str], stdin: int
) -> subprocess.Popen[bytes]:
    """Fork and exec, on the loop's thread (see the module's doc)."""
    return subprocess.Popen(
        [*config.command, *arguments],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=config.working_directory,
        env=env,
        user=None if config.user is None else user_id(config.user),
        start_new_session=True,
        preexec_fn=_die_with_parent(os.getpid()),
    )


def _exit_code(pidfd: int) -> int | None:
    """Reap the exited program: its exit code, or minus the signal that killed it."""
    try:
        result = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
    except ChildProcessError:
        return None
    if result is None:
        return None
    if result.si_code == os.CLD_EXITED:
        return result.si_status
    return -result.si_status


class Program:
    """One run of a job's program. `start` it, use its pipes inside `attended`, `close`."""

    def __init__(
        self,
        config: ProgramConfig,
        job: str,
        role: str,
        *,
        where: str | None = None,
        events: str = "exec",
    ) -> None:
        """`where` names the program in failures (default: ``"{role}.command: NAME"``);
        `events` prefixes its log events (``exec.started``, ``exec.stderr``, ...)."""
        self._config = config
        self._job = job
        self._role = role
        self._where = where or f"{role}.command: {config.command[0]}"
        self._cannot_start = (
            f"{role}.command: cannot start {config.command[0]}"
            if where is None
            else f"{where} cannot start"
        )
        self._events = events
        self._popen: subprocess.Popen[bytes] | None = None
        self._pidfd: int | None = None
        self._stdin: int | None = None
        self._stdout: int | None = None
        self._stderr: int | None = None
        self.returncode: int | None = None
        self._attending = False
        self._stderr_lines = LineSplitter(_STDERR_LINE_CHARS * 4)
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=5)
        self._window_start = -1.0
        self._window_lines = 0
        self._suppressed = 0
        self.stdout = LineSplitter(config.max_line_bytes)

    @property
    def name(self) -> str:
        return self._config.command[0]

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    async def start(
        self, arguments: Sequence[str] = (), environment: Mapping[str, str] | None = None
    ) -> None:
        config = self._config
        env = {**os.environ, **config.environment, **(environment or {})}
        stdin = subprocess.DEVNULL if self._role == "source" else subprocess.PIPE
        try:
            popen = self._popen = _spawn(config, arguments, env, stdin)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            raise ProgramFailed(f"{self._cannot_start}: {exc}") from exc
        self._pidfd = os.pidfd_open(popen.pid)
        self._stdin = _raw(popen.stdin)
        self._stdout = _raw(popen.stdout)
        self._stderr = _raw(popen.stderr)
        started, job, role = f"{self._events}.started", self._job, self._role
        log.info(started, job=job, role=role, pid=popen.pid, program=self.name)

    async def attended(self, work: Callable[[], Awaitable[T]]) -> T:
        """`work()`, with the program's stderr read (and logged) while it runs."""
        if self._attending or self._stderr is None:
            return await work()
        self._attending = True
        try:
            return await alongside(self._pump_stderr, work)
        finally:
            self._attending = False

    async def receive(self) -> bytes:
        """Up to `CHUNK` bytes of stdout, waiting for some; b"" at its end."""
        fd = self._stdout
        if fd is None:
            return b""
        while True:
            try:
                return os.read(fd, CHUNK)
            except BlockingIOError:
                await anyio.wait_readable(fd)

    def receive_nowait(self) -> bytes | None:
        """What stdout holds now, without waiting: None when it holds nothing yet."""
        if self._stdout is None:
            return b""
        try:
            return os.read(self._stdout, CHUNK)
        except BlockingIOError:
            return None

    async def send(self, data: bytes) -> None:
        """Write to the program's stdin, waiting while its pipe is full."""
        fd = self._stdin
        if fd is None:
            raise await self.exit_failure("has its stdin closed")
        view = memoryview(data)
        try:
            while view:
                try:
                    view = view[os.write(fd, view) :]
                except BlockingIOError:
                    await anyio.wait_writable(fd)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise await self.exit_failure("stopped reading its stdin") from exc

    def close_stdin(self) -> None:
        fd, self._stdin = self._stdin, None
        if fd is not None:
            os.close(fd)

    async def wait(self) -> int:
        """Wait for the program to exit (with its stderr read), reap it: its exit code."""
        return await self.attended(self._wait)

    async def _wait(self) -> int:
        pidfd = self._pidfd
        while self.returncode is None:
            if pidfd is None:
                raise RuntimeError("the program is waited for before start()")
            code = _exit_code(pidfd)
            if code is None:
                await anyio.wait_readable(pidfd)
            else:
                self._reaped(code)
        return self.returncode

    def _reaped(self, code: int) -> None:
        self._take_stderr()  # what it wrote before it exited, for its failure's message
        self.returncode = code
        if self._popen is not None:
            self._popen.returncode = code  # so that Popen never waits for it again

    async def exit_failure(self, what: str) -> Exception:
        """The program ended or broke its protocol: the error for it, by its exit code.
        Waits (at most `stop_timeout`) for the exit code, with stderr still read."""
        with anyio.move_on_after(self._config.stop_timeout):
            await self.wait()
        return self.failure(self.returncode, what)

    def failure(self, code: int | None, what: str) -> Exception:
        """The error for the program's exit `code` (None: still running)."""
        if code is None:
            ended = "is still running"
        elif code < 0:
            ended = f"was killed by {signal.Signals(-code).name}"
        else:
            ended = f"exited with code {code}"
        tail = "; its stderr ended: " + " | ".join(self._stderr_tail) if self._stderr_tail else ""
        message = f"{self._where} {what} and {ended}{tail}"
        if code is not None and code in self._config.fatal_exit_codes:
            return ProgramFailedFatally(f"{message} (a fatal_exit_codes code: not retried)")
        return ProgramFailed(message)

    async def close(self) -> None:
        """Stop the program for sure: stdin closed (a sink's), SIGTERM, SIGKILL; then
        SIGKILL whatever is left of its process group, and reap the program."""
        if self._popen is None:
            return
        timeout = self._config.stop_timeout
        try:
            if self._stdin is not None:
                self.close_stdin()
                with anyio.move_on_after(timeout):
                    await self.wait()
            for number in (signal.SIGTERM, signal.SIGKILL):
                if self.returncode is None:
                    self._signal(number)
                    with anyio.move_on_after(timeout):
                        await self.wait()
        finally:
            # Even when the close itself is cut short: nothing of the group outlives us.
            self._signal(signal.SIGKILL)
            await self._release()

    async def _release(self) -> None:
        if self.returncode is None and self._pidfd is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await self._wait()  # SIGKILLed: promptly
        for fd in (self._stdin, self._stdout, self._stderr, self._pidfd):
            if fd is not None:
                os.close(fd)
        self._stdin = self._stdout = self._stderr = self._pidfd = None
        if self._suppressed:
            self._log_suppressed()
        stopped, job, role = f"{self._events}.stopped", self._job, self._role
        log.info(stopped, job=job, role=role, pid=self.pid, returncode=self.returncode)

    def kill(self) -> None:
        """SIGKILL whatever is left of the program's group, now, without waiting."""
        self._signal(signal.SIGKILL)

    def _signal(self, number: signal.Signals) -> None:
        if self._popen is None or (self.returncode is not None and number != signal.SIGKILL):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, number)

    async def _pump_stderr(self) -> None:
        fd = self._stderr
        if fd is None:
            return
        while True:
            try:
                chunk = os.read(fd, CHUNK)
            except BlockingIOError:
                await anyio.wait_readable(fd)
                continue
            except OSError:
                return  # stderr is only logged: never a reason to fail
            if not chunk:
                return
            for line in self._stderr_lines.feed(chunk):
                self._log_stderr(line)

    def _take_stderr(self) -> None:
        """Log what the stderr pipe holds now, without waiting for more."""
        fd = self._stderr
        with contextlib.suppress(OSError):
            while fd is not None and (chunk := os.read(fd, CHUNK)):
                for line in self._stderr_lines.feed(chunk):
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
        log.info(f"{self._events}.stderr", job=self._job, role=self._role, line=text)

    def _log_suppressed(self) -> None:
        suppressed, job, role = f"{self._events}.stderr_suppressed", self._job, self._role
        log.warning(suppressed, job=job, role=role, lines=self._suppressed)
        self._suppressed = 0


def _raw(file: IO[bytes] | None) -> int | None:
    """The pipe's descriptor, detached from its file object and set non-blocking."""
    if file is None:
        return None
    fd = os.dup(file.fileno())
    file.close()
    os.set_blocking(fd, False)
    return fd


async def alongside(
    background: Callable[[], Coroutine[Any, Any, None]], work: Callable[[], Awaitable[T]]
) -> T:
    """`work()` with `background()` running until it is done; an error of either is
    raised as itself, not in an exception group (when both fail, at once, as both ends
    of a pipe to a program that died do, the first)."""
    failure: BaseException | None = None
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(background)
            result = await work()
            group.cancel_scope.cancel()
    except BaseExceptionGroup as errors:
        failure = first_error(errors)
    if failure is not None:
        raise failure
    return result


def first_error(errors: BaseExceptionGroup[BaseException]) -> Exception:
    """The first plain error of a task group's; re-raise the group if it holds anything
    else (a KeyboardInterrupt, say)."""
    for error in errors.exceptions:
        if not isinstance(error, Exception):
            raise errors
    first = errors.exceptions[0]
    assert isinstance(first, Exception)
    return first


def user_id(user: str) -> str | int:
    """`user` as Popen and chown take it: a number is a uid, not a name."""
    return int(user) if user.isdigit() else user
