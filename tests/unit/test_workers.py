"""The processor in worker processes (real ones), judged exactly as in the daemon."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from supervisor.config.model import RecordsPolicy
from supervisor.errors import PluginError, TransientError, UnpicklableRecord
from supervisor.processing import BatchProcessor, load_batch_function, load_processor
from supervisor.workers.pool import WorkerPool
from tests import worker_functions
from tests.helpers import gone

pytestmark = pytest.mark.anyio

FUNCTIONS = "tests.worker_functions"


def in_daemon(reference: str, policy: RecordsPolicy, *, batch: bool) -> BatchProcessor:
    if batch:
        function = load_batch_function(reference)
        return BatchProcessor("job", None, policy, batch_function=(reference, function))
    return BatchProcessor("job", load_processor(reference), policy)


def in_workers(
    reference: str, policy: RecordsPolicy, *, batch: bool, workers: int = 3
) -> BatchProcessor:
    pool = WorkerPool(
        "job", reference, batch=batch, workers=workers, search=policy.on_error != "fail"
    )
    return BatchProcessor("job", None, policy, pool=pool)


async def outcome(processor: BatchProcessor, batches: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """What a processor makes of `batches`: outputs, counters, and the error that ended it."""
    outputs: list[Any] = []
    error = None
    await processor.open()
    try:
        for batch in batches:
            outputs.append(list(await processor.process(batch)))
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        await processor.close()
    return {
        "outputs": outputs,
        "error": error,
        "rejected": processor.rejected,
        "dropped": list(processor.counters.dropped),
        "errors": list(processor.counters.errors),
    }


NUMBERS = [[{"n": n} for n in range(start, start + 500)] for start in range(0, 2000, 500)]
WITH_BAD = [[{"n": n} for n in range(20)] + [{"n": "x"}, {"n": 21}, {"n": None}, {"n": 22}]]


@pytest.mark.parametrize("reference", ["double", "double_async"])
async def test_per_record_function_in_workers_gives_what_it_gives_in_the_daemon(
    reference: str,
) -> None:
    """Order, drops, fan-outs and the filtered count: the same as the daemon's own calls."""
    policy = RecordsPolicy()
    here = await outcome(in_daemon(f"{FUNCTIONS}:{reference}", policy, batch=False), NUMBERS)
    there = await outcome(in_workers(f"{FUNCTIONS}:{reference}", policy, batch=False), NUMBERS)
    assert there == here
    assert here["error"] is None and here["dropped"][0] == 1000  # odd numbers filtered


@pytest.mark.parametrize("reference", ["double_all", "double_all_async"])
async def test_batch_function_in_workers_gives_what_it_gives_in_the_daemon(reference: str) -> None:
    """A batch function's outputs in order, across slices, as in the daemon."""
    policy = RecordsPolicy()
    here = await outcome(in_daemon(f"{FUNCTIONS}:{reference}", policy, batch=True), NUMBERS)
    there = await outcome(in_workers(f"{FUNCTIONS}:{reference}", policy, batch=True), NUMBERS)
    assert there == here
    assert here["outputs"][0] == [{"n": n * 2} for n in range(0, 500, 2)]


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize(
    "policy",
    [
        RecordsPolicy(on_error="fail"),
        RecordsPolicy(on_error="skip"),
        RecordsPolicy(on_error="skip", max_errors=1),
        RecordsPolicy(on_error="dead_letter"),
    ],
    ids=["fail", "skip", "max_errors", "dead_letter"],
)
async def test_the_records_policy_is_the_same_in_workers(
    policy: RecordsPolicy, batch: bool, tmp_path: Path
) -> None:
    """fail, skip, max_errors and dead letters: the same outputs, counts, error and file."""
    reference = f"{FUNCTIONS}:{'double_all' if batch else 'double'}"
    results = []
    for where, build in (("daemon", in_daemon), ("workers", in_workers)):
        dead = tmp_path / f"{where}.jsonl"
        if policy.on_error == "dead_letter":
            policy = RecordsPolicy(on_error="dead_letter", dead_letter=dead)
        result = await outcome(build(reference, policy, batch=batch), WITH_BAD)
        letters = dead.read_text().splitlines() if dead.exists() else []
        result["dead"] = [{**json.loads(line), "at": None} for line in letters]
        results.append(result)
    here, there = results
    assert there == here
    if policy.on_error == "fail":
        assert here["error"] == "ValueError: not a number: 'x'"
    elif policy.max_errors == 1:
        assert here["error"].startswith("TooManyBadRecords: 2 bad records in one attempt")
    else:
        assert here["rejected"] == 2 and here["error"] is None
    if policy.on_error == "dead_letter":
        assert [letter["record"] for letter in here["dead"]] == [{"n": "x"}, {"n": None}]


async def test_a_failing_batch_is_searched_for_its_bad_records() -> None:
    """Bisection finds each bad record; every good record's outputs are kept, in order."""
    records: list[dict[str, Any]] = [{"n": n} for n in range(64)]
    for bad in (0, 17, 18, 63):
        records[bad] = {"n": f"bad {bad}"}
    calls: list[int] = []

    def counted(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        calls.append(len(batch))
        return worker_functions.double_all(batch)

    processor = BatchProcessor(
        "job", None, RecordsPolicy(on_error="skip"), batch_function=("counted", counted)
    )
    out = await processor.process(records)
    good = [n for n in range(64) if n not in (0, 17, 18, 63)]
    assert out == [{"n": n * 2} for n in good if n % 2 == 0]
    assert processor.rejected == 4
    assert calls[0] == 64
    assert len(calls) <= 1 + 2 * 4 * 6  # a search (2·k·log2 n more calls), not one per record


async def test_a_batch_function_that_returns_no_list_is_a_plugin_error() -> None:
    """Returning something else than a list breaks the contract: fatal, in both places."""
    reference = f"{FUNCTIONS}:not_a_list"
    for build in (in_daemon, in_workers):
        processor = build(reference, RecordsPolicy(on_error="skip"), batch=True)
        result = await outcome(processor, [[1, 2, 3]])
        assert result["error"] == (
            f"PluginError: batch_function {reference!r} returned a dict; expected a list of "
            "output records"
        )


async def test_records_and_results_that_cannot_cross_are_bad_records() -> None:
    """An unpicklable record, an unpicklable result and an exception that cannot be
    unpickled are each that record's error; the other records go through."""
    records = [{"n": 1}, {"n": 2, "lock": threading.Lock()}, {"n": 7}, {"n": -1}, {"n": 3}]
    processor = in_workers(f"{FUNCTIONS}:odd_errors", RecordsPolicy(on_error="skip"), batch=False)
    await processor.open()
    try:
        rejected: list[Exception] = []
        original = processor._reject

        def seen(record: Any, error: Exception, *args: Any, **kwargs: Any) -> None:
            rejected.append(error)
            original(record, error, *args, **kwargs)

        processor._reject = seen  # type: ignore[method-assign]
        out = await processor.process(records)
    finally:
        await processor.close()
    assert out == [{"n": 1}, {"n": 3}]
    assert [type(error) for error in rejected] == [UnpicklableRecord] * 3
    assert "cannot be pickled for the worker process" in str(rejected[0])
    assert "result for this record cannot be pickled back" in str(rejected[1])
    assert str(rejected[2]).startswith("NeedsTwo: negative: -1 (that exception cannot be")


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"die": "kill"}, r"processor worker \d of 2 .* was killed by SIGKILL"),
        ({"die": "exit"}, r"exited with code 3; its stderr ended: worker says: giving up"),
    ],
)
async def test_a_worker_that_dies_fails_the_attempt_with_its_cause(
    record: dict[str, Any], expected: str
) -> None:
    """A crash mid-batch: a retryable error naming the worker, its exit and its stderr."""
    processor = in_workers(
        f"{FUNCTIONS}:crash_on", RecordsPolicy(on_error="skip"), batch=False, workers=2
    )
    await processor.open()
    pool = processor._pool
    assert pool is not None
    pids = pool.pids
    try:
        with pytest.raises(TransientError, match=expected):
            await processor.process([{"n": 1}, {"n": 2}, record, {"n": 4}])
    finally:
        await processor.close()
    assert all(gone(pid) for pid in pids)


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        (
            "tests.no_such_module:fn",
            "in a processor worker: cannot import module 'tests.no_such_module'",
        ),
        ("os:sep", "in a processor worker: processor 'os:sep' is not callable (it is a str)"),
    ],
)
async def test_a_processor_a_worker_cannot_import_is_a_plugin_error(
    reference: str, expected: str
) -> None:
    """Fatal, with the worker's own message, at open; the workers are gone after close."""
    processor = in_workers(reference, RecordsPolicy(), batch=False, workers=2)
    with pytest.raises(PluginError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        await processor.open()
    pool = processor._pool
    assert pool is not None
    pids = pool.pids
    await processor.close()
    assert len(pids) == 2 and all(gone(pid) for pid in pids)


async def test_every_worker_takes_a_slice_and_close_stops_them() -> None:
    """A batch is spread over every worker, in consecutive slices; close ends them all."""
    processor = in_workers(f"{FUNCTIONS}:where_am_i", RecordsPolicy(), batch=False, workers=3)
    await processor.open()
    pool = processor._pool
    assert pool is not None
    pids = pool.pids
    try:
        out = await processor.process(list(range(9)))
    finally:
        await processor.close()
    assert [item["record"] for item in out] == list(range(9))
    assert [item["pid"] for item in out] == [pid for pid in pids for _ in range(3)]
    assert all(gone(pid) for pid in pids)
