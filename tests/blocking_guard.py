"""A guard that catches blocking calls made on a running event loop, for in-process tests.

A blocking call on the loop (opening a file, listing a directory, sleeping, starting a
process, a name lookup) stalls every job the daemon runs for as long as it takes, and
a test on an idle machine never notices. This guard notices: an audit hook
(`sys.addaudithook`, PEP 578) sees each audited operation, and one made by a thread
that is running an event-loop task right now, on behalf of the code under test (a
coroutine of the `supervisor` package is on the stack), is recorded with a short
stack. The autouse fixture in `conftest.py` fails the test that made it.

Test code itself may set up small files synchronously, on the loop (as the lint's
exemption for tests says): what the daemon's own coroutines, and the fakes they call,
do is what must not block. Those are what the guard looks at.

How anyio's own suite does it: `blockbuster`, which replaces blocking functions with
wrappers that raise. An audit hook instead needs no patching of builtins, sees calls
however they were imported, and sees trio's loop as well as asyncio's (blockbuster
knows only asyncio, and this suite runs many tests on trio's virtual clock). Its
limit is Python's list of audited events: `os.stat`, `os.fsync` and reads or writes
on a file already open are not among them (the last two need a file opened first, and
`open` is); `time.sleep` is only from Python 3.12, so on 3.11 `install` wraps it.

Not covered: the daemon run as a subprocess (`tests/daemon_process.py`) and CLI
subprocesses; the hook is installed in the pytest process only.

Cheap by design: the hook runs on every audited event in the process, so it returns
after one set lookup for the events it does not watch, and walks the stack only for a
watched event on a loop thread.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, SupportsIndex

import pytest
from trio.lowlevel import in_trio_task

import supervisor

WATCHED = frozenset(
    {
        # files and directories
        "open",
        "os.listdir",
        "os.scandir",
        "os.mkdir",
        "os.rmdir",
        "os.remove",
        "os.rename",
        "os.truncate",
        "os.chmod",
        "os.chown",
        "os.link",
        "os.symlink",
        "os.utime",
        "os.lockf",
        "fcntl.flock",
        "fcntl.lockf",
        "glob.glob",
        "shutil.copyfile",
        "shutil.copytree",
        "shutil.rmtree",
        "shutil.move",
        "tempfile.mkstemp",
        "tempfile.mkdtemp",
        "sqlite3.connect",
        # sleeping, processes
        "time.sleep",
        "subprocess.Popen",
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        # the network: name lookups, and sockets in blocking mode (see `_is_blocking`)
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "socket.gethostbyaddr",
        "socket.getnameinfo",
        "socket.connect",
        "socket.sendto",
        "socket.sendmsg",
        "http.client.connect",
    }
)
"""Audit events that may block (names from Python's audit events table)."""

_SOCKET_EVENTS = frozenset({"socket.connect", "socket.sendto", "socket.sendmsg"})

CODE_UNDER_TEST = str(Path(supervisor.__file__).parent) + "/"
_ASYNC = inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR

ALLOWED_IN = (
    # The import system: a module imported lazily on the loop opens its .py/.pyc and lists
    # its directory once; the import lock makes it a one-off wait, not a stall per call.
    ("<frozen importlib._bootstrap>", None),
    ("<frozen importlib._bootstrap_external>", None),
    # Source lines for a traceback being formatted (an error logged with its traceback):
    # read once per file on an error path, then cached by linecache.
    ("linecache.py", None),
    # anyio's own choice, allowed in its own test suite too: a Unix socket listener
    # removes a stale socket file before binding.
    ("anyio/_core/_sockets.py", "setup_unix_local_socket"),
    # asyncio starts a subprocess in the loop's thread (anyio's `open_process` too): a
    # fork and an exec, not a wait on the program. The exec connector needs that thread:
    # its children's parent-death signal is tied to the thread that forked them.
    ("asyncio/unix_events.py", "_start"),
    ("supervisor/connectors/exec/program.py", "_spawn"),
)
"""(file name ending, function or None for any) of frames under which a watched event is
legitimate; the reason for each is given above it."""


@dataclass(frozen=True)
class BlockingCall:
    """A watched event seen on a loop thread: what, with which arguments, from where."""

    event: str
    args: str
    stack: traceback.StackSummary

    def describe(self) -> str:
        # Formatted outside the loop (at teardown): this reads source lines.
        lines = "".join(traceback.format_list(self.stack[-8:]))
        return f"{self.event}{self.args}\n{lines}"


_collectors: list[tuple[list[BlockingCall], bool]] = []
"""The innermost `watching` block collects (and says whether test code's own calls count);
the hook records nothing when there is none."""
_lock = threading.Lock()


def on_event_loop() -> bool:
    """True if this thread is running an event-loop task now (asyncio or trio).

    trio's `in_trio_task`, not `in_trio_run`: anyio runs trio tests in guest mode, where
    the run is "current" in the host thread between loop ticks too.
    """
    return asyncio._get_running_loop() is not None or in_trio_task()


def _is_blocking(event: str, args: tuple[Any, ...]) -> bool:
    if event == "open":
        return not isinstance(args[0], int)  # wrapping a descriptor already open opens nothing
    if event in _SOCKET_EVENTS:
        sock = args[0]
        # A loop's own sockets are non-blocking (timeout 0.0): their connect returns at once.
        return isinstance(sock, socket.socket) and sock.gettimeout() != 0.0
    return True


def _counts(frame: FrameType | None, everything: bool) -> bool:
    """Whether a watched call made in `frame` is a finding: made for the code under test
    (or `everything`), and under no allowed frame."""
    under_test = everything
    while frame is not None:
        code = frame.f_code
        for ending, function in ALLOWED_IN:
            if code.co_filename.endswith(ending) and function in (None, code.co_name):
                return False
        if code.co_flags & _ASYNC and code.co_filename.startswith(CODE_UNDER_TEST):
            under_test = True
        frame = frame.f_back
    return under_test


def audit_hook(event: str, args: tuple[Any, ...]) -> None:
    """Record `event` if it may block, this thread is running a loop task, and the call
    counts (see `_counts`). Never raises: that would fail the audited call itself."""
    if event not in WATCHED or not _collectors or not on_event_loop():
        return
    try:
        found, everything = _collectors[-1]
    except IndexError:  # the block ended in another thread just now
        return
    if not _is_blocking(event, args):
        return
    frame: FrameType | None = sys._getframe(1)
    if frame is not None and frame.f_code is _audited_sleep.__code__:
        frame = frame.f_back  # the stack ends where `time.sleep` was called
    if not _counts(frame, everything):
        return
    # No source lines now: looking them up would open files, on the loop.
    stack = traceback.StackSummary.extract(traceback.walk_stack(frame), lookup_lines=False)
    stack.reverse()
    found.append(BlockingCall(event, repr(args)[:200], stack))


_installed = False


def install() -> None:
    """Install the audit hook (once per process: audit hooks cannot be removed)."""
    global _installed
    if not _installed:
        sys.addaudithook(audit_hook)
        if sys.version_info < (3, 12):
            time.sleep = _audited_sleep
        _installed = True


_sleep = time.sleep


def _audited_sleep(seconds: float | SupportsIndex, /) -> None:
    """`time.sleep` raises its audit event from Python 3.12 on; before, this does (a module
    that took `sleep` by `from time import sleep` before the install is not seen)."""
    sys.audit("time.sleep", seconds)
    _sleep(seconds)


@contextmanager
def watching(*, everything: bool = False) -> Iterator[list[BlockingCall]]:
    """Collect the blocking calls made on a loop (by any thread) in the body for the code
    under test, or, with `everything`, by test code too. A `watching` block inside another
    collects its body's calls itself."""
    install()
    found: list[BlockingCall] = []
    with _lock:
        _collectors.append((found, everything))
    try:
        yield found
    finally:
        with _lock:
            popped, _ = _collectors.pop()  # blocks nest, so the innermost ends first
        assert popped is found


@contextmanager
def failing_on_blocking_calls() -> Iterator[None]:
    """Fail (the test) after the body if the code under test blocked a loop in it."""
    with watching() as found:
        yield
    if found:
        pytest.fail(report(found), pytrace=False)


def report(found: list[BlockingCall]) -> str:
    """The failure message for blocking calls a test made on the loop."""
    calls = "\n".join(call.describe() for call in found[:5])
    more = f"\n... and {len(found) - 5} more" if len(found) > 5 else ""
    return f"{len(found)} blocking call(s) on the event loop:\n{calls}{more}"
