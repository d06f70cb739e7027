"""Shared fixtures.

Async tests run on asyncio, the backend the daemon itself runs on. A module
that wants virtual time overrides `anyio_backend` with `virtual_time_backend()`.
"""

from __future__ import annotations

from typing import Any

import pytest
from trio.testing import MockClock


def virtual_time_backend() -> tuple[str, dict[str, Any]]:
    """Trio with a clock that jumps ahead whenever every task is waiting.

    Only for tests that do no thread or disk I/O while waiting: a worker
    thread counts as "waiting", so the clock would jump past its timeouts.
    """
    return ("trio", {"clock": MockClock(autojump_threshold=0)})


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
