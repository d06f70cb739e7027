"""A job owner's inbox: first in first out, waits only when empty, refuses after close."""

from __future__ import annotations

import anyio
import pytest

from supervisor.inbox import Inbox

pytestmark = pytest.mark.anyio


async def test_messages_come_out_in_the_order_they_were_put() -> None:
    """Queued messages are returned oldest first, without waiting."""
    inbox: Inbox[int] = Inbox()
    for message in (1, 2, 3):
        inbox.put(message)
    assert [await inbox.get() for _ in range(3)] == [1, 2, 3]


async def test_get_waits_for_the_next_put() -> None:
    """A reader of an empty inbox is woken by the next message, and gets it."""
    inbox: Inbox[str] = Inbox()
    received: list[str] = []

    async def read() -> None:
        received.append(await inbox.get())

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(read)
        await anyio.wait_all_tasks_blocked()
        assert received == []
        inbox.put("opened")
    assert received == ["opened"]


async def test_a_closed_inbox_refuses_messages() -> None:
    """Once its reader is gone, a put raises instead of queueing a message no one reads."""
    inbox: Inbox[int] = Inbox()
    inbox.close()
    with pytest.raises(anyio.BrokenResourceError):
        inbox.put(1)


async def test_the_reader_is_idle_only_while_it_waits_with_nothing_queued() -> None:
    """`reader_idle`: not before the reader waits, yes while it waits on an empty inbox, not
    once a message is queued for it (even before it wakes), and yes again when it waits."""
    inbox: Inbox[int] = Inbox()
    received: list[int] = []
    seen: list[bool] = [inbox.reader_idle]

    async def read_two() -> None:
        received.append(await inbox.get())
        received.append(await inbox.get())

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(read_two)
        await anyio.wait_all_tasks_blocked()
        seen.append(inbox.reader_idle)
        inbox.put(1)
        seen.append(inbox.reader_idle)
        await anyio.wait_all_tasks_blocked()
        assert received == [1]
        seen.append(inbox.reader_idle)
        inbox.put(2)
    assert received == [1, 2]
    seen.append(inbox.reader_idle)
    assert seen == [False, True, False, True, False]
