"""The storm's fault switch (`supervisor.testing.SwitchedSource`): it fails while its file
exists, and it reports overlapping opens of one job, which the load test relies on."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from supervisor.errors import TransientError
from supervisor.testing import SwitchedSource

pytestmark = pytest.mark.anyio


async def test_fails_while_the_switch_file_exists_and_resumes_from_its_offset(
    tmp_path: Path,
) -> None:
    """With the switch on, open and read raise TransientError; off again, records flow on."""
    switch = tmp_path / "switch"
    source = SwitchedSource(str(switch), key="a", per_read=3, interval=0.0, check_every=0.0)
    await source.open(5)
    assert [r["seq"] for r in (await source.read(10, 1.0)).records] == [5, 6, 7]
    switch.touch()
    with pytest.raises(TransientError):
        await source.read(10, 1.0)
    await source.close()
    retry = SwitchedSource(str(switch), key="a", per_read=3, interval=0.0, check_every=0.0)
    with pytest.raises(TransientError):
        await retry.open(8)
    await retry.close()
    switch.unlink()
    recovered = SwitchedSource(str(switch), key="a", per_read=3, interval=0.0, check_every=0.0)
    await recovered.open(8)
    batch = await recovered.read(10, 1.0)
    await recovered.close()
    assert ([r["seq"] for r in batch.records], batch.offset) == ([8, 9, 10], 11)


async def test_logs_an_overlap_when_two_sources_of_one_key_are_open_at_once(
    tmp_path: Path,
) -> None:
    """A second open before the first one's close is logged as testing.source_overlap."""
    switch = str(tmp_path / "switch")
    first, second = SwitchedSource(switch, key="b"), SwitchedSource(switch, key="b")
    with capture_logs() as logs:
        await first.open(None)
        await second.open(None)
        await first.close()
        await second.close()
    assert [(e["event"], e["open_now"]) for e in logs] == [
        ("testing.source_opened", 1),
        ("testing.source_opened", 2),
        ("testing.source_overlap", 2),
        ("testing.source_closed", 1),
        ("testing.source_closed", 0),
    ]
