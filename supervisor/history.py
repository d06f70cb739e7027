"""What happened to the jobs: the last state changes, kept for `supervisor events`, and
the followers (`events --follow`) told of each new one as it happens."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from supervisor.states import JobState

HISTORY_LENGTH = 1000
"""State changes kept in memory for `supervisor events`."""

FOLLOW_BUFFER = 1000
"""State changes a `supervisor events --follow` client may fall behind by before it is dropped."""


@dataclass(frozen=True, slots=True)
class StateChange:
    """One job's move from one state to another, as kept for `supervisor events`."""

    job: str
    old: JobState
    new: JobState
    attempt: int
    cause: str | None
    at: float
    """Wall-clock time (seconds since the epoch)."""


class EventHistory:
    """The last `length` state changes, oldest first, and who follows new ones."""

    def __init__(self, length: int = HISTORY_LENGTH) -> None:
        self._kept: deque[StateChange] = deque(maxlen=length)
        self._followers: set[MemoryObjectSendStream[StateChange]] = set()

    def __iter__(self) -> Iterator[StateChange]:
        return iter(self._kept)

    def __len__(self) -> int:
        return len(self._kept)

    def record(self, change: StateChange) -> None:
        """Keep `change` (forgetting the oldest beyond the length) and tell every follower."""
        self._kept.append(change)
        for follower in list(self._followers):
            try:
                follower.send_nowait(change)
            except anyio.WouldBlock:
                # A follower that does not keep up is dropped, never waited for.
                self._followers.discard(follower)
                follower.close()

    @contextlib.contextmanager
    def follow(self) -> Iterator[MemoryObjectReceiveStream[StateChange]]:
        """State changes from now on, until the block ends (or the reader falls behind)."""
        send, receive = anyio.create_memory_object_stream[StateChange](FOLLOW_BUFFER)
        self._followers.add(send)
        try:
            yield receive
        finally:
            self._followers.discard(send)
            send.close()
            receive.close()
