"""A job owner's inbox: messages from its attempt task and from operators, read by one task.

An anyio memory object stream does the same job, and cost the 10,000-job start
about a fifth of its event-loop time: every `receive` yields to the loop once
before looking (a whole extra turn per message), and an empty one raises and
catches `WouldBlock` before it waits. This is a deque and an event: `get`
returns a waiting message at once and only waits when there is none.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

import anyio

Message = TypeVar("Message")


class Inbox(Generic[Message]):
    """Unbounded, first in first out, one reader; `put` never blocks."""

    __slots__ = ("_arrived", "_closed", "_messages")

    def __init__(self) -> None:
        self._messages: deque[Message] = deque()
        self._arrived: anyio.Event | None = None
        self._closed = False

    @property
    def reader_idle(self) -> bool:
        """The reader waits in `get` and nothing is queued: between two messages, not in one."""
        return self._arrived is not None and not self._messages

    def put(self, message: Message) -> None:
        """Queue `message`; BrokenResourceError once the reader has closed the inbox."""
        if self._closed:
            raise anyio.BrokenResourceError("the inbox's reader has gone")
        self._messages.append(message)
        if self._arrived is not None:
            self._arrived.set()

    async def get(self) -> Message:
        """The oldest message, waiting for one if there is none."""
        while not self._messages:
            self._arrived = anyio.Event()
            try:
                await self._arrived.wait()
            finally:
                self._arrived = None
        return self._messages.popleft()

    def close(self) -> None:
        """The reader is done: later `put`s are refused, as a closed stream's are."""
        self._closed = True
