"""The guard that fails a test whose code blocked the event loop (tests/blocking_guard.py)."""

from __future__ import annotations

import contextlib
import importlib
import socket
import sys
import time
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from supervisor.protocols import Offset
from supervisor.testing import ScriptedSource
from tests import blocking_guard
from tests.helpers import make_job
from tests.lifecycle import running_job

pytestmark = pytest.mark.anyio

BOTH_BACKENDS = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])


@BOTH_BACKENDS
async def test_a_blocking_call_on_the_loop_is_caught(tmp_path: Path) -> None:
    """A sleep, an open and a directory listing made by a task are each recorded, with a
    stack that ends in the line that made them."""
    with blocking_guard.watching(everything=True) as found:
        time.sleep(0)  # noqa: ASYNC251 - on purpose: what the guard is for
        (tmp_path / "f").write_text("x")
        list(tmp_path.iterdir())
    assert [call.event for call in found] == ["time.sleep", "open", "os.listdir"]
    assert found[0].stack[-1].name == test_a_blocking_call_on_the_loop_is_caught.__name__
    assert "1 blocking call(s) on the event loop:\ntime.sleep" in blocking_guard.report(found[:1])


@BOTH_BACKENDS
async def test_the_same_calls_in_a_worker_thread_are_not(tmp_path: Path) -> None:
    """What `anyio.to_thread.run_sync` runs is off the loop: that is the fix the guard asks for."""
    with blocking_guard.watching(everything=True) as found:
        await anyio.to_thread.run_sync(time.sleep, 0)
        await anyio.to_thread.run_sync((tmp_path / "f").write_text, "x")
    assert found == []


def test_nothing_is_recorded_outside_a_loop(tmp_path: Path) -> None:
    """Synchronous test code (setting up files) is not on a loop, so never a finding."""
    with blocking_guard.watching(everything=True) as found:
        time.sleep(0)
        (tmp_path / "f").write_text("x")
    assert found == []


async def test_an_import_on_the_loop_is_allowed() -> None:
    """The import system opening a module's files is on the allow-list (a one-off wait)."""
    sys.modules.pop("colorsys", None)  # a small standard module, read from disk again
    with blocking_guard.watching(everything=True) as found:
        importlib.import_module("colorsys")
    assert found == []


async def test_only_a_blocking_socket_is_a_finding(tmp_path: Path) -> None:
    """A loop's own sockets are non-blocking and return at once; a blocking one may wait."""
    address = str(tmp_path / "s")
    with contextlib.ExitStack() as sockets:
        server, quick, slow = (
            sockets.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
            for _ in range(3)
        )
        server.bind(address)
        quick.setblocking(False)
        with blocking_guard.watching(everything=True) as found:
            quick.sendto(b"x", address)
            slow.sendto(b"x", address)
    assert [call.event for call in found] == ["socket.sendto"]  # the blocking one's only


async def test_a_watching_block_inside_another_keeps_its_findings_to_itself() -> None:
    """So the guard's own tests can block inside the autouse fixture's block, unfailed."""
    with blocking_guard.watching(everything=True) as outer:
        with blocking_guard.watching(everything=True) as inner:
            time.sleep(0)  # noqa: ASYNC251 - on purpose
        assert [call.event for call in inner] == ["time.sleep"]
    assert outer == []


class SleepyOpenSource(ScriptedSource):
    """A fake that blocks the loop when the job's attempt opens it."""

    async def open(self, offset: Offset | None) -> None:
        time.sleep(0)  # noqa: ASYNC251 - on purpose
        await super().open(offset)


async def test_the_guard_fails_a_test_whose_code_under_test_blocks_the_loop() -> None:
    """What the autouse fixture does: a job's attempt (a coroutine of the supervisor
    package) calling a source that sleeps is a failure naming the call and where it was."""
    source = SleepyOpenSource(available=0)
    with (
        pytest.raises(pytest.fail.Exception, match=r"1 blocking call\(s\)") as failure,
        blocking_guard.failing_on_blocking_calls(),
    ):
        async with running_job(make_job(), source) as (_, watch):
            await watch.until(lambda: source.opens == 1)
    assert "time.sleep(0,)" in str(failure.value)
    assert "in open\n" in str(failure.value)  # the stack ends in the fake's `open`


async def test_test_code_may_set_up_files_on_the_loop(tmp_path: Path) -> None:
    """The test's own synchronous set-up is not the code under test: no finding."""
    with blocking_guard.watching() as found:
        (tmp_path / "f").write_text("x")
        time.sleep(0)  # noqa: ASYNC251 - on purpose
    assert found == []
