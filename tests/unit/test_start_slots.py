"""Start slots: at most N attempts starting at once, the others served in the order they came."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from supervisor.start_slots import StartSlots

pytestmark = pytest.mark.anyio


async def test_takers_beyond_the_total_wait_and_are_served_in_order() -> None:
    """With every slot taken, later takers wait; each slot given back goes to the oldest."""
    slots = StartSlots(2)
    await slots.take()
    await slots.take()
    served: list[int] = []

    async def take(number: int) -> None:
        await slots.take()
        served.append(number)

    async with anyio.create_task_group() as tasks:
        for number in (1, 2, 3):
            tasks.start_soon(take, number)
            await anyio.wait_all_tasks_blocked()
        assert served == []
        slots.give_back()
        await anyio.wait_all_tasks_blocked()
        assert served == [1]
        slots.give_back()
        slots.give_back()
    assert served == [1, 2, 3]
    assert slots.in_use == 2


async def test_a_waiter_cancelled_in_line_leaves_it() -> None:
    """A cancelled wait takes nothing: the next slot given back goes to the one behind it."""
    slots = StartSlots(1)
    await slots.take()
    served: list[str] = []

    async def take(name: str, scope: anyio.CancelScope) -> None:
        with scope:
            await slots.take()
            served.append(name)

    first, second = anyio.CancelScope(), anyio.CancelScope()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(take, "first", first)
        await anyio.wait_all_tasks_blocked()
        tasks.start_soon(take, "second", second)
        await anyio.wait_all_tasks_blocked()
        first.cancel()
        await anyio.wait_all_tasks_blocked()
        slots.give_back()
    assert served == ["second"]
    assert slots.in_use == 1


async def test_no_slot_is_lost_when_a_waiter_is_cancelled_as_it_is_served() -> None:
    """A slot given back to a waiter that is cancelled at that moment still reaches a taker,
    and every slot comes back in the end."""
    slots = StartSlots(1)
    await slots.take()
    served: list[str] = []

    async def take_and_give_back(name: str, scope: anyio.CancelScope) -> None:
        with scope:
            await slots.take()
            try:
                served.append(name)
                await anyio.lowlevel.checkpoint()
            finally:
                slots.give_back()  # as an attempt task does, whatever ends its start

    first, second = anyio.CancelScope(), anyio.CancelScope()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(take_and_give_back, "first", first)
        await anyio.wait_all_tasks_blocked()
        tasks.start_soon(take_and_give_back, "second", second)
        await anyio.wait_all_tasks_blocked()
        slots.give_back()  # handed to "first"...
        first.cancel()  # ...which is cancelled before it runs again
    assert "second" in served
    assert slots.in_use == 0
