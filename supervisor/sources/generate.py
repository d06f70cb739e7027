"""The ``generate`` source: records ``{"seq": n}`` counting from 0, for demos and benchmarks."""

from __future__ import annotations

import anyio

from supervisor.config.model import GenerateSourceConfig
from supervisor.protocols import Batch, Offset


class GenerateSource:
    """A counter. The offset is the next sequence number to emit."""

    def __init__(self, config: GenerateSourceConfig) -> None:
        self._count = config.count
        self._rate = config.rate
        self._next = 0
        self._started_at = 0.0
        self._first_of_run = 0

    async def open(self, offset: Offset | None) -> None:
        if offset is not None and (not isinstance(offset, int) or isinstance(offset, bool)):
            raise ValueError(f"generate source offset must be an integer, got {offset!r}")
        self._next = offset or 0
        self._first_of_run = self._next
        self._started_at = anyio.current_time()

    async def read(self, max_records: int, wait: float) -> Batch:
        available = max_records
        if self._count:
            available = min(available, self._count - self._next)
        if self._rate:
            # Pace against the time the attempt started, so the rate holds on
            # average whatever the batch sizes are.
            due = self._first_of_run + int((anyio.current_time() - self._started_at) * self._rate)
            if due <= self._next:
                delay = (self._next + 1 - self._first_of_run) / self._rate
                delay -= anyio.current_time() - self._started_at
                await anyio.sleep(min(max(delay, 0.0), wait))
                due = self._first_of_run + int(
                    (anyio.current_time() - self._started_at) * self._rate
                )
            available = min(available, max(due - self._next, 0))
        start = self._next
        self._next = start + available
        records = [{"seq": seq} for seq in range(start, self._next)]
        return Batch(records, self._next, end=bool(self._count) and self._next >= self._count)

    async def close(self) -> None:
        return None
