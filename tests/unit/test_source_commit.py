"""The hooks a broker connector relies on: `Source.commit` after each durable checkpoint,
`Sink.resume_from` for a replayable source, and `Source.progress` in `status`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest

from supervisor.attempt import Attempt, AttemptEnd
from supervisor.config.model import CheckpointPolicy
from supervisor.control.views import job_detail, status_table
from supervisor.errors import TransientError
from supervisor.ledger import JobLedger
from supervisor.protocols import Offset
from supervisor.snapshot_store import SnapshotStore
from supervisor.testing import RecordingSink, ScriptedSource, fixed_components
from tests.helpers import make_job

pytestmark = pytest.mark.anyio


@dataclass
class AckingSource(ScriptedSource):
    """A broker-like source: `commit` records, at the moment of the ack, what the snapshot
    on disk holds then."""

    store: SnapshotStore | None = None
    acked: list[tuple[Offset, Offset | None]] = field(default_factory=list)
    """(offset acknowledged, offset of the durable snapshot at that moment)."""
    commit_errors: list[BaseException] = field(default_factory=list)

    async def commit(self, offset: Offset) -> None:
        assert self.store is not None
        on_disk = await self.store.load("job")
        self.acked.append((offset, None if on_disk is None else on_disk.offset))
        if self.commit_errors:
            raise self.commit_errors.pop(0)


@dataclass
class ResumingSink(RecordingSink):
    resumed: list[Offset | None] = field(default_factory=list)

    def resume_from(self, offset: Offset | None) -> None:
        self.resumed.append(offset)


async def _store(tmp_path: Path) -> SnapshotStore:
    store = SnapshotStore(tmp_path / "state")
    await store.prepare()
    return store


async def test_commit_follows_every_checkpoint_once_its_snapshot_is_durable(
    tmp_path: Path,
) -> None:
    """Each ack names the offset of a checkpoint, and that offset is already on disk."""
    store = await _store(tmp_path)
    ledger = JobLedger(store, "job", None)
    source = AckingSource(count=250, batch=60, store=store)
    end = await Attempt(make_job(), ledger, 1, fixed_components(source, RecordingSink())).run()
    assert end is AttemptEnd.FINISHED
    assert source.acked == [(100, 100), (200, 200), (250, 250)]


async def test_a_failed_commit_fails_the_attempt_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    """A lost ack is retryable: the attempt ends with it, the snapshot stays where the sink
    is, and the next attempt resumes there (the broker redelivers, at most one checkpoint)."""
    store = await _store(tmp_path)
    ledger = JobLedger(store, "job", None)
    source = AckingSource(
        count=250, batch=60, store=store, commit_errors=[TransientError("ack lost")]
    )
    sink = RecordingSink()
    with pytest.raises(TransientError, match="ack lost"):
        await Attempt(make_job(), ledger, 1, fixed_components(source, sink)).run()
    assert ledger.offset == 100
    assert source.closes == 1
    await Attempt(make_job(), ledger, 2, fixed_components(source, sink)).run()
    assert [offset for offset, _ in source.acked] == [100, 200, 250]


async def test_the_final_checkpoint_of_a_stop_is_committed(tmp_path: Path) -> None:
    """SIGTERM's path: the stop's last checkpoint is acknowledged too, so nothing read is
    delivered again after a clean stop."""
    store = await _store(tmp_path)
    ledger = JobLedger(store, "job", None)
    source = AckingSource(count=0, batch=10, store=store)
    job = make_job(checkpoint=CheckpointPolicy(every_records=1_000_000, interval=3600))
    attempt = Attempt(job, ledger, 1, fixed_components(source, RecordingSink()))
    async with anyio.create_task_group() as tg:

        async def stop_after_some_records() -> None:
            while attempt.records_read < 55:
                await anyio.lowlevel.checkpoint()
            attempt.request_stop()

        tg.start_soon(stop_after_some_records)
        assert await attempt.run() is AttemptEnd.STOPPED
    assert source.acked == [(source.position, source.position)]


@dataclass
class ReplayableSource(ScriptedSource):
    replayable: bool = True


@pytest.mark.parametrize("replayable", [True, False])
async def test_resume_from_is_told_only_of_a_replayable_source(
    tmp_path: Path, replayable: bool
) -> None:
    """A sink may derive record identities from the offset only if replaying from it gives
    the same records: the attempt tells it where it resumes, once, only then."""
    ledger = JobLedger(await _store(tmp_path), "job", None)
    await ledger.write(offset=40)
    source = ReplayableSource(count=50, replayable=replayable)
    sink = ResumingSink()
    await Attempt(make_job(), ledger, 1, fixed_components(source, sink)).run()
    assert sink.resumed == ([40] if replayable else [])


@dataclass
class ReportingSource(ScriptedSource):
    report: dict[str, object] | None = None
    broken: bool = False

    def progress(self) -> dict[str, object] | None:
        if self.broken:
            raise RuntimeError("no idea")
        return self.report


async def test_status_shows_what_the_source_reports(tmp_path: Path) -> None:
    """`status` shows position and lag as the source reports them; a source that raises
    shows its error instead of failing the command."""
    ledger = JobLedger(await _store(tmp_path), "job", None)
    source = ReportingSource(count=10, report={"position": "1700000000000-3", "lag": 12})
    attempt = Attempt(make_job(), ledger, 1, fixed_components(source, RecordingSink()))
    await attempt.run()
    assert attempt.source_progress() == {"position": "1700000000000-3", "lag": 12}
    source.broken = True
    assert attempt.source_progress() == {"error": "RuntimeError: no idea"}


def _view(source: dict[str, object] | None) -> dict[str, object]:
    return {
        "job": "orders",
        "state": "running",
        "since": "2026-12-03T18:00:00+00:00",
        "offset": None,
        "records_per_s": 5.0,
        "attempt": 1,
        "next_retry_in": None,
        "error": None,
        "cause": None,
        "persist_pending": False,
        "final_checkpoint_error": None,
        "source": source,
        "snapshot": {"path": "/state/orders.snapshot.toml", "generation": 3},
    }


def test_the_table_has_a_lag_column_and_the_detail_every_reported_value() -> None:
    table = status_table([_view({"lag": 12, "group": "g"}), _view(None)])
    header, first, second = table.splitlines()
    lag_at = header.index("LAG")
    assert first[lag_at:].split()[0] == "12"
    assert second[lag_at:].split()[0] == "-"
    detail = job_detail(_view({"lag": 12, "group": "g\x1b[2J"}))
    assert "lag:         12" in detail
    assert '"g\\u001b[2J"' in detail  # JSON-escaped: a broker's name cannot drive the terminal
