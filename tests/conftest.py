"""Shared fixtures.

Async tests run on asyncio, the backend the daemon itself runs on. A module
that wants virtual time overrides `anyio_backend` with `virtual_time_backend()`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from trio.testing import MockClock

from supervisor.connectors.registry import installed
from tests import blocking_guard
from tests.daemon_process import daemons
from tests.servers import nats_server, postgres_server, rabbit_server, redis_server

__all__ = [  # connector fixtures
    "daemons", "nats_server", "postgres_server", "rabbit_server", "redis_server"
]  # fmt: skip


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


@pytest.fixture(autouse=True, scope="session")
def connectors_loaded() -> None:
    """Load every installed connector once, before any test's event loop.

    A job loaded from a file finds its connector as it is loaded; one built in code
    (many tests do) finds it by loading every installed connector on first use,
    wherever that happens, maybe on an event loop. Without this, the test that
    happened to come first paid that entry-point scan, and the blocking-call guard
    failed it (or not) depending on the order tests ran in.
    """
    installed().load_all()
