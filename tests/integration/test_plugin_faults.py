"""Plugin code that misbehaves fails its own job's attempt, never the daemon (issue 14).

Sources, sinks and processors are third-party code: they may raise anything
(`SystemExit`, `KeyboardInterrupt`, a `CancelledError` of their own, an exception
whose ``__str__`` raises, a 5 MB message), hang in `open`, or fail the final
checkpoint of a pause. In-process tests run on virtual time (trio), except the
asyncio-only `CancelledError` ones; the real daemon shows the daemon survives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from supervisor.config.model import (
    CheckpointPolicy,
    JobConfig,
    ProcessorConfig,
    RetryPolicy,
)
from supervisor.control.commands import dispatch, job_view, run_job_command
from supervisor.control.protocol import JobCommand, JobVerb, Status
from supervisor.control.views import job_detail
from supervisor.errors import FatalError, FinalCheckpointFailed, TransientError
from supervisor.failures import MESSAGE_LIMIT
from supervisor.protocols import Offset
from supervisor.retry import fatal_reason
from supervisor.start_slots import StartSlots
from supervisor.states import JobState
from supervisor.testing import RecordingSink, ScriptedSource
from tests.conftest import virtual_time_backend
from tests.daemon_process import DaemonProcess, write_config
from tests.helpers import make_job
from tests.in_memory_store import InMemorySnapshotStore
from tests.lifecycle import running_job

R = JobState


@pytest.fixture
def anyio_backend() -> object:
    return virtual_time_backend()


@contextlib.contextmanager
def _nothing_escapes() -> Iterator[None]:
    """Turn an exception that escaped the job's tasks (and would end, or hang, the test's
    event loop as it ended the daemon's) into a plain test failure."""
    try:
        yield
    except BaseException as exc:
        if isinstance(exc, Exception) and not isinstance(exc, BaseExceptionGroup):
            raise
        raise AssertionError(f"{type(exc).__name__} escaped the job's tasks") from None


def _job(name: str = "orders", **retry: Any) -> JobConfig:
    policy = RetryPolicy(initial=1.0, max=10.0, jitter=False, **{"max_attempts": 5, **retry})
    return make_job(name, retry=policy)


class Unprintable(Exception):
    """An error whose ``__str__`` and ``__repr__`` raise (it killed the daemon, crash-looping)."""

    def __str__(self) -> str:
        raise ValueError("no str for you")

    def __repr__(self) -> str:
        raise ValueError("no repr for you")


class PluginBaseError(BaseException):
    """A BaseException subclass of a plugin's own."""


def _plugin_errors() -> dict[str, BaseException]:
    """Every kind of thing plugin code may raise."""
    return {
        "system_exit": SystemExit(7),
        "keyboard_interrupt": KeyboardInterrupt(),
        "cancelled": asyncio.CancelledError(),
        "generator_exit": GeneratorExit(),
        "base_exception": PluginBaseError("mine"),
        "unprintable": Unprintable(),
    }


# --- 14.2: whatever a plugin raises fails that attempt only ------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("where", ["open", "read", "flush"])
@pytest.mark.parametrize("kind", list(_plugin_errors()))
async def test_whatever_a_plugin_raises_fails_only_that_attempt(kind: str, where: str) -> None:
    """SystemExit, KeyboardInterrupt, CancelledError, any BaseException or an unprintable error
    from open, read or flush is one retryable attempt failure, described safely; the job's owner
    lives on (before: the exception ended the owner's task group, i.e. the daemon)."""
    error = _plugin_errors()[kind]
    source, sink = ScriptedSource(available=50, batch=10), RecordingSink()
    if where == "open":
        source.open_errors.append(error)
    elif where == "read":
        source.read_errors.append(error)
    else:
        sink.fail_on_flush = error
    job = replace(_job(), checkpoint=CheckpointPolicy(every_records=10, interval=1.0))
    with _nothing_escapes():
        async with running_job(job, source, sink) as (owner, watch):
            await watch.until(lambda: owner.attempts == 1)
            assert owner.state is R.RETRYING
            assert owner.failure is not None
            assert owner.failure.error_type == _qualified(type(error))
            if kind == "unprintable":
                assert owner.failure.message == "<unprintable Unprintable>"
            await watch.until(lambda: owner.state is R.RUNNING)  # the retry recovers
    assert source.most_open_at_once == 1


def _qualified(cls: type) -> str:
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


@pytest.mark.anyio
@pytest.mark.parametrize("kind", list(_plugin_errors()))
async def test_whatever_a_close_raises_is_logged_and_the_job_goes_on(kind: str) -> None:
    """An error from a plugin's close (even SystemExit or a CancelledError) is logged as
    job.close_failed; the bounded job still finishes."""

    class ClosingBadly(ScriptedSource):
        async def close(self) -> None:
            await super().close()
            raise _plugin_errors()[kind]

    source = ClosingBadly(count=30)
    with capture_logs() as logs, _nothing_escapes():
        async with running_job(_job(), source) as (owner, watch):
            await watch.until(lambda: owner.state is R.FINISHED)
    (closed,) = [event for event in logs if event["event"] == "job.close_failed"]
    assert closed["component"] == "source"
    assert closed["error"].startswith(_qualified(type(_plugin_errors()[kind])))


@pytest.mark.anyio
async def test_a_plugin_error_inside_a_group_is_described_safely() -> None:
    """An ExceptionGroup holding an unprintable error or a SystemExit is one failure whose
    traceback and message could be written."""
    group = BaseExceptionGroup("two", [Unprintable(), SystemExit(3)])
    source = ScriptedSource(open_errors=[group], available=5)
    with _nothing_escapes():
        async with running_job(_job(), source) as (owner, watch):
            await watch.until(lambda: owner.attempts == 1)
            assert owner.failure is not None
            assert owner.failure.error_type == "BaseExceptionGroup"
            assert "<exception str() failed>" in owner.failure.traceback


@pytest.fixture
def must_complete() -> Iterator[list[bool]]:
    """Checked after the test, outside its event loop: the test appends to it as its last step.

    Before the fix a plugin's CancelledError cancelled the jobs' task group quietly, skipping
    the rest of the test's body (as it ended the daemon with exit 0), and the test "passed".
    """
    done: list[bool] = []
    yield done
    assert done, "the test's body was cancelled before its end"


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("where", ["open", "read", "flush"])
async def test_a_cancelled_error_a_plugin_raises_on_asyncio_is_an_attempt_failure(
    where: str, must_complete: list[bool]
) -> None:
    """On asyncio, a CancelledError raised by plugin code when nobody cancelled anything fails
    the attempt (before: it ended the daemon with exit 0 and nothing logged)."""
    source, sink = ScriptedSource(available=20, batch=10), RecordingSink()
    error = asyncio.CancelledError()
    if where == "open":
        source.open_errors.append(error)
    elif where == "read":
        source.read_errors.append(error)
    else:
        sink.fail_on_flush = error
    job = make_job(
        "orders",
        retry=RetryPolicy(initial=0.01, max=0.01, jitter=False, max_attempts=5, reset_after=0.0),
        checkpoint=CheckpointPolicy(every_records=10, interval=0.05),
    )
    with anyio.fail_after(10):
        async with running_job(job, source, sink) as (owner, watch):
            await watch.until(lambda: owner.attempts == 1)
            assert owner.failure is not None
            assert owner.failure.error_type == "asyncio.exceptions.CancelledError"
            await watch.until(lambda: source.opens == 2)
            must_complete.append(True)  # inside the block: a cancelled group skips the rest


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_real_cancellation_still_ends_the_job_on_asyncio(must_complete: list[bool]) -> None:
    """A pause still interrupts a waiting read, and cancelling the jobs' group still ends
    their tasks: only a CancelledError nobody asked for is an attempt failure."""
    source = ScriptedSource(available=0)  # every read waits an hour (the checkpoint interval)
    job = make_job("orders", checkpoint=CheckpointPolicy(every_records=10, interval=3600))
    with anyio.fail_after(10):
        async with running_job(job, source) as (owner, watch):
            await watch.until(lambda: owner.state is R.RUNNING)
            assert await owner.pause() is R.PAUSED
            assert owner.failure is None
            await owner.resume()
            await watch.until(lambda: owner.state is R.RUNNING and source.opens == 2)
            must_complete.append(True)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group, running_job(job, source) as (_, watch):
            await watch.until(lambda: source.opens == 3)
            must_complete.append(True)
            group.cancel_scope.cancel()  # as the daemon's shutdown timeout does
    assert source.open_now == 0


# --- 14.12: retry_on / fatal_on names as users write them -----------------------------------


@pytest.mark.parametrize(
    ("names", "error", "fatal"),
    [
        ({"fatal_on": ("supervisor.TransientError",)}, TransientError("x"), True),
        ({"fatal_on": ("json.JSONDecodeError",)}, json.JSONDecodeError("bad", "{", 0), True),
        ({"fatal_on": ("ValueError",)}, json.JSONDecodeError("bad", "{", 0), True),
        ({"fatal_on": ("ExceptionGroup",)}, ExceptionGroup("g", [ValueError("x")]), True),
        ({"retry_on": ("supervisor.FatalError",)}, FatalError("x"), False),
        ({"retry_on": ("ExceptionGroup",)}, ExceptionGroup("g", [FatalError("x")]), False),
        ({"fatal_on": ("supervisor.errors.TransientError",)}, TransientError("x"), True),
        ({"fatal_on": ("no_such_lib.Busy", "json.JSONDecodError")}, ValueError("x"), False),
        ({}, ExceptionGroup("g", [TransientError("a"), FatalError("b")]), True),
    ],
)
def test_exception_names_match_as_users_write_them(
    names: dict[str, tuple[str, ...]], error: BaseException, fatal: bool
) -> None:
    """A name matches through the class it resolves to (public aliases such as
    supervisor.TransientError, json.JSONDecodeError) and a group matches by its own class;
    before, only the defining module's path matched and a group was never named."""
    policy = RetryPolicy(retry_on=names.get("retry_on", ()), fatal_on=names.get("fatal_on", ()))
    assert (fatal_reason(error, policy) is not None) is fatal


# --- 14.13: a processor that cannot be called is fatal ----------------------------------------


@pytest.mark.anyio
async def test_a_processor_that_is_not_callable_fails_the_job_at_once() -> None:
    """A processor reference to something that is not callable fails the job on its first
    attempt, like one that cannot be imported (before: retried max_attempts times)."""
    job = replace(_job(), processor=ProcessorConfig(function="supervisor.attempt:MAX_BATCH"))
    source = ScriptedSource(available=5)
    async with running_job(job, source) as (owner, watch):
        await watch.until(lambda: owner.state is R.FAILED)
        assert owner.attempts == 1
        assert owner.failure is not None
        assert "is not callable (it is an int)" in owner.failure.message


# --- 14.14: error messages are capped ----------------------------------------------------------


@pytest.mark.anyio
async def test_a_huge_error_message_is_capped_everywhere_it_is_written() -> None:
    """A 5 MB message is kept as its first 4 KiB and its length, in the failure record, the
    snapshot, the log line and the cause `status` and `events` show (before: 5 MB each)."""
    huge = "m" * 5_242_880
    store = InMemorySnapshotStore()
    source = ScriptedSource(open_errors=[TransientError(huge)], available=5)
    with capture_logs() as logs:
        async with running_job(_job(), source, store=store) as (owner, watch):
            await watch.until(lambda: owner.attempts == 1)
            await anyio.sleep(0.1)  # virtual: the RETRYING write completes
            assert owner.failure is not None
            message = owner.failure.message
            cause = owner.cause
    assert message == "m" * MESSAGE_LIMIT + "... [5,242,880 characters, cut]"
    assert cause is not None and len(cause) < MESSAGE_LIMIT + 100
    assert len(store.files["orders"]) < 32_000  # message and traceback, both capped
    (failed,) = [event for event in logs if event["event"] == "job.attempt_failed"]
    assert len(failed["error"]) < MESSAGE_LIMIT + 100


# --- 14.5: a stop wins over an open that hangs ---------------------------------------------


class HangingOpen(ScriptedSource):
    """A source whose open never returns (a broker that never answers)."""

    async def open(self, offset: Offset | None) -> None:
        self.opens += 1
        self.open_now += 1
        await anyio.sleep_forever()


@pytest.mark.anyio
@pytest.mark.parametrize("verb", ["pause", "stop"])
async def test_a_pause_or_stop_interrupts_a_hanging_open_and_frees_its_start_slot(
    verb: str,
) -> None:
    """With one start slot, a job whose open hangs is paused (or stopped) at once, and the other
    job, PENDING behind it, starts (before: both waited for the open for ever)."""
    slots = StartSlots(1)
    hanging, healthy = HangingOpen(), ScriptedSource(available=5)
    async with (
        running_job(_job("hangs"), hanging, slots=slots) as (stuck, _),
        running_job(_job("waits"), healthy, slots=slots) as (other, other_watch),
    ):
        await other_watch.until(lambda: hanging.opens == 1)
        await anyio.sleep(60)
        assert other.state is R.PENDING
        with anyio.fail_after(1):
            assert await run_job_command(stuck, JobVerb(verb)) in (R.PAUSED, R.STOPPED)
        await other_watch.until(lambda: other.state is R.RUNNING, within=1)
        assert stuck.attempts == 0  # cancelled before it ran: not counted
    assert slots.in_use == 0


# --- 14.6: a failed final checkpoint is said ---------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("verb", ["pause", "stop"])
async def test_a_failed_final_checkpoint_is_logged_shown_and_reported(verb: str) -> None:
    """When the final checkpoint of a pause or stop fails, the state stands but the command says
    so (exit 1 at the CLI), it is logged as job.final_checkpoint_failed with the job and error,
    and `status` shows it (before: PAUSED, exit 0, nothing logged)."""
    source = ScriptedSource(available=25, batch=5)
    sink = RecordingSink()
    job = make_job("orders", checkpoint=CheckpointPolicy(every_records=10_000, interval=3600))
    with capture_logs() as logs:
        async with running_job(job, source, sink) as (owner, watch):
            await watch.until(lambda: owner.state is R.RUNNING and source.position == 25)
            sink.fail_on_flush = OSError(28, "No space left on device")
            supervisor = _OneJobSupervisor(owner)
            request = JobCommand(JobVerb(verb), ("orders",))
            (result,) = await dispatch(supervisor, request)  # type: ignore[arg-type]
            assert owner.state in (R.PAUSED, R.STOPPED)
            view = job_view(owner, anyio.current_time(), detail=True)
    assert result["ok"] is False
    assert "final checkpoint failed" in result["error"]
    assert "No space left on device" in result["error"]
    (logged,) = [event for event in logs if event["event"] == "job.final_checkpoint_failed"]
    assert logged["job"] == "orders" and "No space left" in logged["error"]
    assert logged["log_level"] == "error"
    assert "No space left" in view["final_checkpoint_error"]
    assert "final checkpoint failed: OSError: [Errno 28]" in job_detail(view)
    assert owner.attempts == 0 and owner.failure is None  # the operator's decision stands


@pytest.mark.anyio
async def test_a_pause_whose_final_checkpoint_fails_raises_from_request() -> None:
    """`request("pause")` raises FinalCheckpointFailed naming the state and the error."""
    source, sink = ScriptedSource(available=5), RecordingSink()
    job = make_job("orders", checkpoint=CheckpointPolicy(every_records=10_000, interval=3600))
    async with running_job(job, source, sink) as (owner, watch):
        await watch.until(lambda: owner.state is R.RUNNING and source.position == 5)
        sink.fail_on_flush = TransientError("flush refused")
        with pytest.raises(FinalCheckpointFailed, match=r"orders: PAUSED, but its final"):
            await owner.pause()
        await owner.resume()  # a new attempt: the note is about the one before
        await watch.until(lambda: owner.state is R.RUNNING)
        assert owner.final_checkpoint_error is None


@pytest.mark.anyio
async def test_a_pause_during_an_open_that_fails_is_not_a_failed_final_checkpoint() -> None:
    """An open that fails as the pause cancels it read nothing, so the pause is plain: no
    FinalCheckpointFailed, nothing counted."""

    class FailsWhenCancelled(HangingOpen):
        async def open(self, offset: Offset | None) -> None:
            try:
                await super().open(offset)
            finally:
                self.open_now -= 1
                raise ConnectionError("connection reset while opening")

    source = FailsWhenCancelled()
    async with running_job(_job(), source) as (owner, watch):
        await watch.until(lambda: source.opens == 1)
        assert await owner.pause() is R.PAUSED
        assert owner.final_checkpoint_error is None
        assert owner.attempts == 0


class _OneJobSupervisor:
    """What `dispatch` needs of a Supervisor for job verbs."""

    def __init__(self, owner: Any) -> None:
        self.owners = {owner.name: owner}

    def owner(self, job: str) -> Any:
        return self.owners[job]


# --- the real daemon survives its plugins ------------------------------------------------------

_FAULTY_PLUGIN = '''
import asyncio

from supervisor.protocols import Batch


class Unprintable(Exception):
    def __str__(self):
        raise ValueError("no str")


class Faulty:
    """Raises `kind` from `where` (open, read or close); otherwise counts up to `count`."""

    def __init__(self, kind, where="read", count=0):
        self.kind, self.where, self.count, self.next = kind, where, count, 0

    def error(self):
        return {
            "system_exit": SystemExit(7),
            "keyboard_interrupt": KeyboardInterrupt(),
            "cancelled": asyncio.CancelledError(),
            "unprintable": Unprintable(),
        }[self.kind]

    async def open(self, offset):
        if self.where == "open":
            raise self.error()
        self.next = offset or 0

    async def read(self, max_records, wait):
        if self.where == "read":
            raise self.error()
        end = min(self.next + max_records, self.count)
        records = [{"n": n} for n in range(self.next, end)]
        self.next = end
        return Batch(records, end, end=end >= self.count)

    async def close(self):
        if self.where == "close":
            raise self.error()
'''

_DAEMON = """\
[supervisor]
log_format = "json"
log_level = "debug"
shutdown_timeout = "10s"
[defaults.retry]
initial = "10ms"
max = "10ms"
max_attempts = 2
"""

_KINDS = ("system_exit", "keyboard_interrupt", "cancelled", "unprintable")


def _faulty_job(kind: str, where: str, count: int = 0) -> str:
    return f"""
        [source]
        type = "python"
        class = "ss_faulty_plugin:Faulty"
        kind = "{kind}"
        where = "{where}"
        count = {count}
        [sink]
        type = "null"
    """


@pytest.fixture
def faulty_daemon(tmp_path: Path) -> Iterator[tuple[DaemonProcess, Path]]:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "ss_faulty_plugin.py").write_text(textwrap.dedent(_FAULTY_PLUGIN))
    jobs = {
        "steady": """
            [source]
            type = "generate"
            rate = 200
            [sink]
            type = "null"
            [checkpoint]
            interval = "100ms"
        """,
        **{f"{kind.replace('_', '-')}-read": _faulty_job(kind, "read") for kind in _KINDS},
        **{f"{kind.replace('_', '-')}-open": _faulty_job(kind, "open") for kind in _KINDS},
        **{f"{kind.replace('_', '-')}-close": _faulty_job(kind, "close", 50) for kind in _KINDS},
    }
    config = write_config(tmp_path, jobs, _DAEMON)
    path = os.pathsep.join(filter(None, [str(tmp_path / "lib"), os.environ.get("PYTHONPATH")]))
    process = DaemonProcess(config, env={"PYTHONPATH": path})
    yield process, config
    process.stop()


@pytest.mark.slow
def test_the_daemon_survives_every_kind_of_plugin_error(
    faulty_daemon: tuple[DaemonProcess, Path],
) -> None:
    """Plugin sources raising SystemExit, KeyboardInterrupt, CancelledError or an unprintable
    error from open, read or close fail (or, from close, only log) their own jobs; the daemon
    answers `status`, the steady job keeps checkpointing, and SIGTERM still exits 0 (before:
    exit 7, 130, or 0 with nothing logged, at the first such error)."""
    from supervisor.control.client import call

    process, config = faulty_daemon
    expected = {
        f"{kind.replace('_', '-')}-{where}" for kind in _KINDS for where in ("read", "open")
    }
    finished = {f"{kind.replace('_', '-')}-close" for kind in _KINDS}
    failed: set[str] = set()
    done: set[str] = set()
    # A daemon that hangs instead of dying (a dead job task) is killed, which ends the log.
    watchdog = threading.Timer(60, process.process.kill)
    watchdog.start()
    for event in process.iter_events():
        if event.get("event") == "job.state_changed" and event.get("to") == "failed":
            failed.add(event["job"])
        if event.get("event") == "job.state_changed" and event.get("to") == "finished":
            done.add(event["job"])
        if failed >= expected and done >= finished:
            break
    watchdog.cancel()
    assert failed == expected and done == finished, (failed, done, process.events[-10:])
    checkpoints = [e for e in process.events if e.get("event") == "job.checkpoint"]
    process.wait_for("job.checkpoint", job="steady")  # still checkpointing after all that
    process.keep_draining()
    jobs = {
        job["job"]: job for job in call(config.parent / "supervisor.sock", Status(), timeout=30)
    }
    assert jobs["steady"]["state"] == "running"
    assert (
        jobs["unprintable-read"]["error"]
        == "ss_faulty_plugin.Unprintable: <unprintable Unprintable>"
    )
    assert jobs["system-exit-open"]["error"] == "SystemExit: 7"
    assert jobs["cancelled-read"]["error"].startswith("asyncio.exceptions.CancelledError")
    assert all(jobs[name]["state"] == "finished" for name in finished)
    assert checkpoints  # the steady job checkpointed before the last failure too
    assert process.stop() == 0
