"""Group commit: items submitted while a batch runs share the next batch and its thread trip."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from supervisor.group_commit import GroupCommit

pytestmark = pytest.mark.anyio


class GatedRunner:
    """Doubles each item; the first batch waits in its thread until `gate` is set."""

    def __init__(self, fail: frozenset[int] = frozenset()) -> None:
        self.gate = threading.Event()
        self.batches: list[list[int]] = []
        self._fail = fail

    def __call__(self, items: Sequence[int]) -> list[int | Exception]:
        if not self.batches:
            self.gate.wait(timeout=30)
        self.batches.append(list(items))
        return [ValueError(f"bad {item}") if item in self._fail else item * 2 for item in items]


async def test_a_lone_submit_runs_as_a_batch_of_one() -> None:
    """With nothing else queued, a submit is one batch of its own item, and returns its result."""
    runner = GatedRunner()
    runner.gate.set()
    commits = GroupCommit(runner)
    assert await commits.submit(21) == 42
    assert runner.batches == [[21]]


async def test_items_submitted_during_a_batch_share_the_next_one() -> None:
    """Ten submits made while the first batch runs are done together, in one more batch."""
    runner = GatedRunner()
    commits = GroupCommit(runner)
    results: dict[int, int] = {}

    async def submit(item: int) -> None:
        results[item] = await commits.submit(item)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(submit, 0)
        await wait_all_tasks_blocked()  # the first batch is in its thread, held at the gate
        for item in range(1, 11):
            tasks.start_soon(submit, item)
        await wait_all_tasks_blocked()
        runner.gate.set()
    assert runner.batches == [[0], list(range(1, 11))]
    assert results == {item: item * 2 for item in range(11)}


async def test_batches_hold_at_most_max_batch_items_in_submission_order() -> None:
    """Waiting items are taken oldest first, `max_batch` at a time."""
    runner = GatedRunner()
    commits = GroupCommit(runner, max_batch=2)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(commits.submit, 0)
        await wait_all_tasks_blocked()
        for item in range(1, 6):
            tasks.start_soon(commits.submit, item)
            await wait_all_tasks_blocked()
        runner.gate.set()
    assert runner.batches == [[0], [1, 2], [3, 4], [5]]


async def test_an_item_error_is_raised_to_its_submitter_only() -> None:
    """One item's error reaches its own submitter; the others in the batch get their results."""
    runner = GatedRunner(fail=frozenset({3}))
    commits = GroupCommit(runner)
    outcomes: dict[int, object] = {}

    async def submit(item: int) -> None:
        try:
            outcomes[item] = await commits.submit(item)
        except ValueError as exc:
            outcomes[item] = str(exc)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(submit, 0)
        await wait_all_tasks_blocked()
        for item in (1, 2, 3, 4):
            tasks.start_soon(submit, item)
        await wait_all_tasks_blocked()
        runner.gate.set()
    assert outcomes == {0: 0, 1: 2, 2: 4, 3: "bad 3", 4: 8}


async def test_a_batch_that_fails_whole_fails_each_of_its_items() -> None:
    """If the runner itself raises, every submitter of that batch gets the error."""

    def broken(items: Sequence[int]) -> list[int | Exception]:
        raise OSError(5, "Input/output error")

    commits = GroupCommit(broken)
    with pytest.raises(OSError, match="Input/output"):
        await commits.submit(1)
    assert commits.batches == 1


async def test_a_cancelled_leader_still_sees_its_batch_through() -> None:
    """Cancelling the task that leads a batch neither abandons that batch nor its followers."""
    runner = GatedRunner()
    commits = GroupCommit(runner)
    follower_result: list[int] = []

    async def lead_then_be_cancelled(scope: anyio.CancelScope) -> None:
        with scope:
            await commits.submit(1)

    async def follow() -> None:
        follower_result.append(await commits.submit(5))

    leader_scope = anyio.CancelScope()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(lead_then_be_cancelled, leader_scope)
        await wait_all_tasks_blocked()  # the leader's batch is in its thread
        tasks.start_soon(follow)
        await wait_all_tasks_blocked()
        leader_scope.cancel()
        runner.gate.set()
    assert runner.batches == [[1], [5]]
    assert follower_result == [10]
