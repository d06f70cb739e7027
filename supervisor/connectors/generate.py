"""The ``generate`` connector: records ``{"seq": n}`` counting from 0, for demos and benchmarks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from supervisor.connectors import Connector, SourceRole, kinds, setting
from supervisor.protocols import Batch, Offset

if TYPE_CHECKING:
    from supervisor.config.model import JobConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerateSourceConfig:
    """``type = "generate"``: records ``{"seq": n}`` counting from 0, for demos and benchmarks."""

    count: int = field(
        default=0, metadata=setting(kinds.integer(0), "How many records in all; 0 means unbounded.")
    )
    rate: float = field(
        default=0.0,
        metadata=setting(
            kinds.number(0), "Records per second; 0 means as fast as the job can take them."
        ),
    )


# Float time: a record due at exactly t must count as due at t.
_EPSILON = 1e-9


class GenerateSource:
    """A counter. The offset is the next sequence number to emit."""

    replayable = True

    def __init__(self, config: GenerateSourceConfig) -> None:
        self._count = config.count
        self._rate = config.rate
        self._next = 0
        self._started_at = 0.0
        self._first = 0
        self._has_position = False
        """False from a fresh start until the first record: the offset stays None, so an
        idle job that never read anything has nothing to checkpoint."""

    @staticmethod
    def check_offset(offset: Offset) -> None:
        """ValueError unless `offset` is a sequence number: an integer, 0 or more."""
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise ValueError(f"generate source offset must be an integer >= 0, got {offset!r}")

    async def open(self, offset: Offset | None) -> None:
        if offset is not None:
            self.check_offset(offset)
        self._next = self._first = offset if isinstance(offset, int) else 0
        self._has_position = offset is not None
        self._started_at = anyio.current_time()

    async def read(self, max_records: int, wait: float) -> Batch:
        available = max_records
        if self._count:
            available = min(available, self._count - self._next)
        if self._rate and available > 0:
            # Pace against the attempt's start, so the rate holds on average
            # whatever the batch sizes are.
            if self._due() <= self._next:
                next_at = self._started_at + (self._next + 1 - self._first) / self._rate
                await anyio.sleep(min(max(next_at - anyio.current_time(), 0.0), wait))
            available = min(available, max(self._due() - self._next, 0))
        start = self._next
        self._next = start + available
        records = [{"seq": seq} for seq in range(start, self._next)]
        self._has_position = self._has_position or bool(records)
        return Batch(
            records,
            self._next if self._has_position else None,
            end=bool(self._count) and self._next >= self._count,
        )

    def _due(self) -> int:
        elapsed = anyio.current_time() - self._started_at
        return self._first + math.floor(elapsed * self._rate + _EPSILON)

    async def close(self) -> None:
        return None


def _build(config: GenerateSourceConfig, job: JobConfig) -> GenerateSource:
    return GenerateSource(config)


def _check_offset(config: GenerateSourceConfig, offset: Offset) -> None:
    GenerateSource.check_offset(offset)


CONNECTOR = Connector(
    type="generate",
    doc='Records {"seq": n} counting from 0, for demos and benchmarks.',
    source=SourceRole(
        config=GenerateSourceConfig,
        build=_build,
        check_offset=_check_offset,
    ),
)
