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


async def test_a_batch_that_fails_whole_gives_each_submitter_an_error_of_its_own() -> None:
    """Every submitter of a batch that raised whole gets its own exception (made by `failed`,
    chained from the batch's): one object raised in several tasks had its traceback and
    context rewritten by each (issue 13.13)."""
    gate = threading.Event()
    batch_error = OSError(5, "Input/output error")

    def broken(items: Sequence[int]) -> list[int | Exception]:
        gate.wait(timeout=30)
        raise batch_error

    def failed(item: int, error: Exception) -> Exception:
        return LookupError(f"item {item}: {error}")

    commits = GroupCommit(broken, failed=failed)
    errors: dict[int, BaseException] = {}

    async def submit(item: int) -> None:
        try:
            await commits.submit(item)
        except LookupError as exc:
            errors[item] = exc

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(submit, 0)
        await wait_all_tasks_blocked()  # batch [0] is in its thread; 1-3 queue for the next
        for item in (1, 2, 3):
            tasks.start_soon(submit, item)
        await wait_all_tasks_blocked()
        gate.set()
    assert sorted(errors) == [0, 1, 2, 3]
    assert len({id(error) for error in errors.values()}) == 4
    assert all(error.__cause__ is batch_error for error in errors.values())
    assert str(errors[2]) == "item 2: [Errno 5] Input/output error"


async def test_by_default_each_item_of_a_failed_batch_gets_a_fresh_copy() -> None:
    """Without `failed`, each submitter gets a new exception of the batch error's type."""
    gate = threading.Event()

    def broken(items: Sequence[int]) -> list[int | Exception]:
        gate.wait(timeout=30)
        raise OSError(5, "Input/output error")

    commits = GroupCommit(broken)
    errors: list[OSError] = []

    async def submit(item: int) -> None:
        try:
            await commits.submit(item)
        except OSError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(submit, 0)
        await wait_all_tasks_blocked()
        for item in (1, 2):
            tasks.start_soon(submit, item)
        await wait_all_tasks_blocked()
        gate.set()
    assert len({id(error) for error in errors}) == 3
    assert all(error.errno == 5 and isinstance(error.__cause__, OSError) for error in errors)
