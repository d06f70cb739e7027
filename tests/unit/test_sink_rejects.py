"""`Sink.reject_with`: records a sink cannot store go to the job's `[records]` policy, inside
the flush and before the sink commits, so one bad row neither fails its batch nor is lost."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from supervisor.attempt import Attempt, AttemptEnd
from supervisor.config.model import RecordsPolicy
from supervisor.errors import TooManyBadRecords
from supervisor.ledger import JobLedger
from supervisor.protocols import Offset, Rejected, RejectRecords
from supervisor.snapshot_store import SnapshotStore
from supervisor.testing import RecordingSink, ScriptedSource, fixed_components
from tests.helpers import make_job

pytestmark = pytest.mark.anyio


class Refused(ValueError):
    pass


@dataclass
class PickySink(RecordingSink):
    """Refuses records whose seq ends in 3, the way a table with a CHECK constraint would:
    the rest of the batch commits, with the offset, only after the policy judged them."""

    transactional: bool = True
    reject: RejectRecords | None = None
    committed_after_reject: list[bool] = field(default_factory=list)

    def reject_with(self, reject: RejectRecords) -> None:
        self.reject = reject

    async def flush(self, offset: Offset | None) -> None:
        bad = [r for r in self.written if r["seq"] % 10 == 3]
        if bad:
            assert self.reject is not None, "the attempt did not hand over reject_with"
            await self.reject([Rejected(r, Refused(f"seq {r['seq']} refused")) for r in bad])
        self.written = [r for r in self.written if r["seq"] % 10 != 3]
        await super().flush(offset)


async def _ledger(tmp_path: Path) -> JobLedger:
    store = SnapshotStore(tmp_path / "state")
    await store.prepare()
    return JobLedger(store, "job", None)


async def test_refused_records_are_dead_lettered_and_their_neighbours_kept(
    tmp_path: Path,
) -> None:
    dead = tmp_path / "dead.jsonl"
    job = make_job(records=RecordsPolicy(on_error="dead_letter", dead_letter=dead))
    sink = PickySink()
    end = await Attempt(
        job, await _ledger(tmp_path), 1, fixed_components(ScriptedSource(count=50), sink)
    ).run()
    assert end is AttemptEnd.FINISHED
    assert [r["seq"] for r in sink.flushed] == [s for s in range(50) if s % 10 != 3]
    lines = [json.loads(line) for line in dead.read_text().splitlines()]
    assert [line["record"]["seq"] for line in lines] == [3, 13, 23, 33, 43]
    assert lines[0]["error"] == "Refused: seq 3 refused"
    assert sink.stored_offset == 50


async def test_a_refused_record_under_fail_fails_the_attempt_before_the_sink_commits(
    tmp_path: Path,
) -> None:
    sink = PickySink()
    with pytest.raises(Refused, match="seq 3 refused"):
        await Attempt(
            make_job(), await _ledger(tmp_path), 1, fixed_components(ScriptedSource(count=50), sink)
        ).run()
    assert sink.flushed == []
    assert sink.stored_offset is None


async def test_refused_records_count_towards_max_errors(tmp_path: Path) -> None:
    job = make_job(records=RecordsPolicy(on_error="skip", max_errors=2))
    sink = PickySink()
    with pytest.raises(TooManyBadRecords):
        await Attempt(
            job, await _ledger(tmp_path), 1, fixed_components(ScriptedSource(count=50), sink)
        ).run()
    assert sink.stored_offset is None
