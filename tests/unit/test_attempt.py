"""One attempt: the read, process, write, checkpoint loop and its delivery order."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from supervisor.attempt import Attempt, AttemptEnd
from supervisor.config.model import CheckpointPolicy
from supervisor.errors import TransientError
from supervisor.ledger import JobLedger
from supervisor.protocols import Offset
from supervisor.snapshot import Snapshot
from supervisor.snapshot_store import SnapshotStore
from supervisor.testing import RecordingSink, ScriptedSource, fixed_components
from tests.helpers import make_job

pytestmark = pytest.mark.anyio


async def _ledger(tmp_path: Path) -> JobLedger:
    store = SnapshotStore(tmp_path / "state")
    await store.prepare()
    return JobLedger(store, "job", None)


async def test_offset_is_written_only_after_the_sink_flushed(tmp_path: Path) -> None:
    """Every snapshot write comes after a sink flush of the same offset."""
    ledger = await _ledger(tmp_path)
    source, sink = ScriptedSource(count=250, batch=60), RecordingSink()
    written: list[Snapshot] = []
    real_write = ledger._store.write

    async def spying_write(snapshot: Snapshot) -> Snapshot:
        sink.calls.append("snapshot")
        written.append(snapshot)
        return await real_write(snapshot)

    ledger._store.write = spying_write  # type: ignore[method-assign]
    end = await Attempt(make_job(), ledger, 1, fixed_components(source, sink)).run()

    assert end is AttemptEnd.FINISHED
    assert [s.offset for s in written] == sink.flushed_offsets
    for index, call in enumerate(sink.calls):
        if call == "snapshot":
            assert sink.calls[index - 1] == "flush"
    assert [r["seq"] for r in sink.flushed] == list(range(250))


async def test_checkpoints_every_records(tmp_path: Path) -> None:
    """With every_records = 100 the offsets committed are 100, 200, then the end."""
    ledger = await _ledger(tmp_path)
    source, sink = ScriptedSource(count=250, batch=60), RecordingSink()
    await Attempt(make_job(), ledger, 1, fixed_components(source, sink)).run()
    assert sink.flushed_offsets == [100, 200, 250]
    assert ledger.offset == 250


async def test_bounded_source_finishes_and_closes_both_ends(tmp_path: Path) -> None:
    """A source that ends gives FINISHED with the final offset durable, source closed."""
    ledger = await _ledger(tmp_path)
    source, sink = ScriptedSource(count=30), RecordingSink()
    end = await Attempt(make_job(), ledger, 1, fixed_components(source, sink)).run()
    assert end is AttemptEnd.FINISHED
    assert (await ledger._store.load("job")) == ledger.snapshot
    assert ledger.offset == 30
    assert (source.opens, source.closes) == (1, 1)


async def test_stop_ends_after_a_final_checkpoint(tmp_path: Path) -> None:
    """A stop request ends the attempt as STOPPED with everything read committed."""
    ledger = await _ledger(tmp_path)
    source, sink = ScriptedSource(count=0, batch=10), RecordingSink()
    job = make_job(checkpoint=CheckpointPolicy(every_records=1_000_000, interval=3600))
    attempt = Attempt(job, ledger, 1, fixed_components(source, sink))
    async with anyio.create_task_group() as tg:

        async def stop_after_some_records() -> None:
            while attempt.records_read < 55:
                await anyio.lowlevel.checkpoint()
            attempt.request_stop()

        tg.start_soon(stop_after_some_records)
        end = await attempt.run()
    assert end is AttemptEnd.STOPPED
    assert ledger.offset == source.position == len(sink.flushed)
    assert sink.written == []


async def test_sink_offset_wins_over_the_snapshot(tmp_path: Path) -> None:
    """A transactional sink's own offset is where the source resumes."""
    ledger = await _ledger(tmp_path)
    await ledger.write(offset=10)
    source = ScriptedSource(count=50)
    sink = RecordingSink(transactional=True, stored_offset=40)
    await Attempt(make_job(), ledger, 1, fixed_components(source, sink)).run()
    assert [r["seq"] for r in sink.flushed] == list(range(40, 50))
    assert ledger.offset == 50


async def test_failure_closes_source_and_sink_and_keeps_last_checkpoint(tmp_path: Path) -> None:
    """An error propagates after both ends closed; the offset stays at the last checkpoint."""
    ledger = await _ledger(tmp_path)
    source = ScriptedSource(count=500, batch=50, fail_at={230: TransientError("blip")})
    sink = RecordingSink()
    with pytest.raises(TransientError):
        await Attempt(make_job(), ledger, 1, fixed_components(source, sink)).run()
    assert source.open_now == 0
    assert ledger.offset == 200
    assert [r["seq"] for r in sink.flushed] == list(range(200))


async def test_failed_flush_does_not_advance_the_offset(tmp_path: Path) -> None:
    """When the sink's flush fails, the snapshot keeps the previous offset."""
    ledger = await _ledger(tmp_path)
    await ledger.write(offset=0)
    before = (tmp_path / "state").joinpath("job.snapshot.toml").read_bytes()
    source = ScriptedSource(count=500)
    sink = RecordingSink(fail_on_flush=OSError(5, "Input/output error"))
    with pytest.raises(OSError, match="Input/output"):
        await Attempt(make_job(), ledger, 1, fixed_components(source, sink)).run()
    assert ledger.offset == 0
    assert (tmp_path / "state").joinpath("job.snapshot.toml").read_bytes() == before


async def test_a_stop_asked_during_a_checkpoint_ends_the_attempt_at_it(tmp_path: Path) -> None:
    """A stop asked while a checkpoint is being written ends the attempt right after it: no
    further batch is written, and the offset is the one that checkpoint committed."""
    ledger = await _ledger(tmp_path)
    source = ScriptedSource(count=0, batch=50)
    sink = RecordingSink()
    attempt = Attempt(make_job(), ledger, 1, fixed_components(source, sink))
    real_flush = sink.flush

    async def flush_then_stop(offset: Offset | None) -> None:
        await real_flush(offset)
        attempt.request_stop()

    sink.flush = flush_then_stop  # type: ignore[method-assign]
    assert await attempt.run() is AttemptEnd.STOPPED
    assert ledger.offset == 100
    assert [r["seq"] for r in sink.flushed] == list(range(100))
    assert sink.written == []


class _HangingOpen(ScriptedSource):
    """A source whose open never returns (a broker that never answers)."""

    async def open(self, offset: Offset | None) -> None:
        self.opens += 1
        self.open_now += 1
        await anyio.sleep_forever()


async def test_a_stop_interrupts_an_open_that_hangs(tmp_path: Path) -> None:
    """A stop asked while the source's open hangs ends the attempt at once as STOPPED, with
    source and sink closed and nothing written (issue 14.5: the stop waited for the open)."""
    ledger = await _ledger(tmp_path)
    source, sink = _HangingOpen(), RecordingSink()
    attempt = Attempt(make_job(), ledger, 1, fixed_components(source, sink))
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def stop_once_opening() -> None:
                while source.opens == 0:
                    await anyio.lowlevel.checkpoint()
                attempt.request_stop()

            tg.start_soon(stop_once_opening)
            assert await attempt.run() is AttemptEnd.STOPPED
    assert source.open_now == 0
    assert not attempt.opened
    assert ledger.snapshot.generation == 0  # nothing to checkpoint: nothing written
