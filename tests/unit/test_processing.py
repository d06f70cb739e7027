"""The processor step and the bad-record policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from supervisor.config.model import RecordsPolicy
from supervisor.errors import PluginError, TooManyBadRecords
from supervisor.processing import BatchProcessor, load_processor

pytestmark = pytest.mark.anyio


def _fan(record: int) -> Any:
    if record == 0:
        return None
    if record == 1:
        return [10, 11]
    if record == 2:
        raise ValueError("two is bad")
    return record


async def _async_double(record: int) -> int:
    return record * 2


async def test_processor_drops_fans_out_and_passes_records() -> None:
    """None drops a record, a list fans out, anything else is the new record."""
    processor = BatchProcessor("job", _fan, RecordsPolicy(on_error="skip"))
    assert await processor.process([0, 1, 3]) == [10, 11, 3]


async def test_async_processor_is_awaited() -> None:
    """An `async def` processor works like a plain one."""
    processor = BatchProcessor("job", _async_double, RecordsPolicy())
    assert await processor.process([1, 2]) == [2, 4]


async def test_no_processor_passes_the_batch_through() -> None:
    """Without a processor the records go to the sink unchanged."""
    processor = BatchProcessor("job", None, RecordsPolicy())
    assert await processor.process([1, 2]) == [1, 2]


async def test_on_error_fail_raises_the_records_error() -> None:
    """With on_error = fail the processor's exception ends the attempt."""
    processor = BatchProcessor("job", _fan, RecordsPolicy(on_error="fail"))
    with pytest.raises(ValueError, match="two is bad"):
        await processor.process([2])


async def test_on_error_skip_counts_and_continues() -> None:
    """With on_error = skip the bad record is dropped and counted."""
    processor = BatchProcessor("job", _fan, RecordsPolicy(on_error="skip"))
    assert await processor.process([3, 2, 4]) == [3, 4]
    assert processor.rejected == 1


async def test_dead_letter_keeps_the_record_and_its_error(tmp_path: Path) -> None:
    """With on_error = dead_letter the record and its error are appended to the file."""
    dead = tmp_path / "rejects.jsonl"
    processor = BatchProcessor("job", _fan, RecordsPolicy(on_error="dead_letter", dead_letter=dead))
    assert await processor.process([2, 5]) == [5]
    (entry,) = [json.loads(line) for line in dead.read_text().splitlines()]
    assert entry["record"] == 2
    assert entry["error"] == "ValueError: two is bad"
    assert entry["job"] == "job"


async def test_more_bad_records_than_max_errors_is_fatal() -> None:
    """One bad record past max_errors in an attempt raises TooManyBadRecords."""
    processor = BatchProcessor("job", _fan, RecordsPolicy(on_error="skip", max_errors=2))
    await processor.process([2, 2])
    with pytest.raises(TooManyBadRecords, match="max_errors = 2"):
        await processor.process([2])


def test_load_processor_names_what_is_missing() -> None:
    """A processor reference that cannot be imported is a PluginError naming it."""
    with pytest.raises(PluginError, match="no_such_module"):
        load_processor("no_such_module:fn")
    with pytest.raises(PluginError, match="has no attribute 'nope'"):
        load_processor("json:nope")
