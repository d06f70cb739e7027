"""Start slots: at most `max_starts_in_flight` attempts starting at once, the rest in line.

A slot is taken before an attempt builds and opens its source and sink, and
given back once the source opened (or the attempt ended first). At daemon
start every job waits for one, so the wait is what 10,000 jobs do at once:
anyio's `CapacityLimiter` made it a cancellation checkpoint, a raised and
caught `WouldBlock` and a borrower table per waiter (bench/README.md,
"Measurements behind the code"). Here a
waiter is an event in a queue, and a slot given back goes straight to the
oldest waiter.
"""

from __future__ import annotations

from collections import deque

import anyio


class StartSlots:
    """A first-come, first-served semaphore for attempt starts."""

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError(f"start slots must be at least 1, got {total}")
        self.total = total
        self._free = total
        self._waiting: deque[anyio.Event] = deque()

    @property
    def in_use(self) -> int:
        """Slots taken and not given back."""
        return self.total - self._free

    async def take(self) -> None:
        """Take a slot, waiting in line for one if none is free."""
        if self._free and not self._waiting:
            self._free -= 1
            return
        handed = anyio.Event()
        self._waiting.append(handed)
        try:
            await handed.wait()
        except BaseException:
            if handed.is_set():
                self.give_back()  # handed over as the wait was cancelled: pass it on
            else:
                self._waiting.remove(handed)
            raise

    def give_back(self) -> None:
        """Return a slot: to the oldest waiter if there is one."""
        if self._waiting:
            self._waiting.popleft().set()  # the slot changes hands: the free count stays
        else:
            self._free += 1
