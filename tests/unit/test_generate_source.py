"""The generate source: a counter for demos and benchmarks."""

from __future__ import annotations

import pytest

from supervisor.connectors.generate import GenerateSource, GenerateSourceConfig
from tests.conftest import virtual_time_backend


@pytest.fixture
def anyio_backend() -> object:
    return virtual_time_backend()


@pytest.mark.anyio
async def test_counts_from_the_offset_to_count_and_ends() -> None:
    """Records are {"seq": n} from the offset; the last batch says end."""
    source = GenerateSource(GenerateSourceConfig(count=10))
    await source.open(7)
    batch = await source.read(100, wait=1)
    assert [r["seq"] for r in batch.records] == [7, 8, 9]
    assert (batch.offset, batch.end) == (10, True)


@pytest.mark.anyio
async def test_rate_paces_records_in_virtual_time() -> None:
    """At rate 100/s, one virtual second yields about 100 records, never more."""
    import anyio

    source = GenerateSource(GenerateSourceConfig(rate=100))
    await source.open(None)
    started = anyio.current_time()
    seen = 0
    while anyio.current_time() - started < 1.0:
        seen += len((await source.read(1000, wait=0.1)).records)
    assert 95 <= seen <= 101


@pytest.mark.anyio
async def test_a_fresh_counter_has_no_offset_until_its_first_record() -> None:
    """From a fresh start an empty read reports offset None: an idle job has nothing to commit."""
    source = GenerateSource(GenerateSourceConfig(rate=0.001))
    await source.open(None)
    assert (await source.read(10, wait=0.5)).offset is None
    await source.open(0)
    assert (await source.read(10, wait=0.5)).offset == 0
