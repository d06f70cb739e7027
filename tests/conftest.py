"""Shared fixtures.

Async tests run on asyncio, the backend the daemon itself runs on. A module
that wants virtual time overrides `anyio_backend` with `virtual_time_backend()`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from trio.testing import MockClock

from tests import blocking_guard


def virtual_time_backend() -> tuple[str, dict[str, Any]]:
    """Trio with a clock that jumps ahead whenever every task is waiting.

    Only for tests that do no thread or disk I/O while waiting: a worker
    thread counts as "waiting", so the clock would jump past its timeouts
    (or hold the clock meanwhile: `tests.lifecycle.clock_held`).
    """
    return ("trio", {"clock": MockClock(autojump_threshold=0)})


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def no_blocking_calls_on_the_loop() -> Iterator[None]:
    """Fail a test during which the code under test made a blocking call on an event
    loop (tests/blocking_guard.py says what counts)."""
    with blocking_guard.failing_on_blocking_calls():
        yield
