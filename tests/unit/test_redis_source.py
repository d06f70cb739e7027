"""The redis source against a real redis-server: replay and shared mode, errors."""

from __future__ import annotations

import pytest

from supervisor.connectors.redis import CONNECTOR
from supervisor.connectors.redis.entries import PoisonEntry, UndecodableEntry
from supervisor.connectors.redis.group import GroupSource
from supervisor.connectors.redis.source import ReplaySource
from supervisor.errors import BrokerRefused, BrokerUnavailable
from tests.redis_helpers import add, drain, numbers, plain_client, rejects, source_config
from tests.servers import RedisServer, free_port

pytestmark = pytest.mark.anyio


def _check_offset(offset: object, **keys: object) -> None:
    assert CONNECTOR.source is not None
    assert CONNECTOR.source.check_offset is not None
    CONNECTOR.source.check_offset(source_config("redis://h", **keys), offset)  # type: ignore[arg-type]


# --- replay mode ---------------------------------------------------------------------


async def test_replay_reads_from_the_beginning_and_resumes_after_the_offset(
    redis_server: RedisServer,
) -> None:
    """Entries come in order; reopening at a batch's offset yields exactly what followed."""
    ids = add(redis_server.url, 10)
    source = ReplaySource(source_config(redis_server.url), "job")
    await source.open(None)
    assert source.position() is None
    first = await source.read(4, 0.1)
    assert numbers([first]) == [0, 1, 2, 3]
    assert first.offset == ids[3]
    await source.close()

    again = ReplaySource(source_config(redis_server.url), "job")
    await again.open(first.offset)
    assert numbers(await drain(again)) == list(range(4, 10))
    progress = again.progress()
    assert progress is not None
    assert progress["lag"] == 0
    assert progress["position"] == ids[-1]
    await again.close()


async def test_replay_from_the_end_pins_the_stream_s_last_id(redis_server: RedisServer) -> None:
    """start = "end": only entries added after open are read, and position() says where."""
    ids = add(redis_server.url, 3)
    source = ReplaySource(source_config(redis_server.url, start="end"), "job")
    await source.open(None)
    assert source.position() == ids[-1]
    add(redis_server.url, 2, start=3)
    assert numbers(await drain(source)) == [3, 4]
    await source.close()


async def test_replay_waits_for_a_stream_that_does_not_exist_yet(
    redis_server: RedisServer,
) -> None:
    """No stream: reads return nothing (offset None) until entries appear."""
    source = ReplaySource(source_config(redis_server.url, include_id=True), "job")
    await source.open(None)
    batch = await source.read(10, 0.01)
    assert (list(batch.records), batch.offset) == ([], None)
    ids = add(redis_server.url, 1)
    batch = await source.read(10, 1)
    assert list(batch.records) == [{"n": "0", "_id": ids[0]}]
    await source.close()


async def test_non_utf8_fields_are_rejected_records_not_crashes(redis_server: RedisServer) -> None:
    """A value that is not UTF-8 is a Rejected record; the entries around it pass."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.xadd("s", {"n": "0"})
    bad: bytes = client.xadd("s", {"n": b"\xff\xfe"})  # type: ignore[assignment]
    client.xadd("s", {"n": "2"})
    source = ReplaySource(source_config(redis_server.url), "job")
    await source.open(None)
    batches = await drain(source)
    assert numbers(batches) == [0, 2]
    (rejected,) = rejects(batches)
    assert isinstance(rejected.error, UndecodableEntry)
    assert rejected.raw == {"id": bad.decode(), "fields": {"n": "\\xff\\xfe"}}
    await source.close()


async def test_a_huge_entry_passes_whole(redis_server: RedisServer) -> None:
    """An 8 MB value is read as it was written."""
    plain_client(redis_server.url).xadd("s", {"big": "x" * (8 << 20)})
    source = ReplaySource(source_config(redis_server.url), "job")
    await source.open(None)
    (batch,) = await drain(source)
    assert len(batch.records[0]["big"]) == 8 << 20
    await source.close()


def test_check_offset_takes_entry_ids_in_replay_mode_only() -> None:
    """`offset --set` takes an entry ID in replay mode and nothing in shared mode."""
    _check_offset("1700000000000-5")
    for bad in ("1700000000000", "$", "x-1", 12, {"group": "g"}, "1-99999999999999999999"):
        with pytest.raises(ValueError, match="entry ID"):
            _check_offset(bad)
    with pytest.raises(ValueError, match="XGROUP SETID"):
        _check_offset("1-0", group="g")


async def test_a_snapshot_offset_of_shared_mode_is_refused_in_replay_mode(
    redis_server: RedisServer,
) -> None:
    """Switched from shared to replay mode: the dict offset is refused, saying what to do."""
    source = ReplaySource(source_config(redis_server.url), "job")
    with pytest.raises(BrokerRefused, match="offset JOB --set"):
        await source.open({"group": "g", "last": "1-0", "read": 1})
    await source.close()


# --- errors --------------------------------------------------------------------------


async def test_an_unreachable_server_is_broker_unavailable() -> None:
    """Nothing listening: BrokerUnavailable naming source.url and the server."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    source = ReplaySource(source_config(url, timeout=2.0), "job")
    with pytest.raises(BrokerUnavailable, match=r"source\.url: redis://127\.0\.0\.1:\d+/0 is"):
        await source.open(None)
    await source.close()


async def test_a_server_killed_mid_read_is_broker_unavailable(redis_server: RedisServer) -> None:
    """The connection lost while reading: BrokerUnavailable (the attempt is retried)."""
    source = ReplaySource(source_config(redis_server.url), "job")
    await source.open(None)
    redis_server.kill()
    with pytest.raises(BrokerUnavailable, match="unreachable"):
        await source.read(10, 0.5)
    await source.close()


async def test_wrong_credentials_are_refused_without_showing_the_password(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """WRONGPASS and NOAUTH are BrokerRefused at source.password; the password is masked."""
    server = RedisServer(tmp_path_factory.mktemp("auth"), password="right-password-1")
    server.start()
    try:
        wrong = ReplaySource(
            source_config(f"redis://:wrong-password-2@127.0.0.1:{server.port}/0"), "job"
        )
        with pytest.raises(BrokerRefused, match=r"source\.password: .* refused") as raised:
            await wrong.open(None)
        await wrong.close()
        assert "wrong-password-2" not in str(raised.value)
        assert "redis://:***@127.0.0.1" in str(raised.value)

        none = ReplaySource(source_config(server.url), "job")
        with pytest.raises(BrokerRefused, match=r"source\.password: .*Authentication required"):
            await none.open(None)
        await none.close()
    finally:
        server.kill()


# --- shared mode ---------------------------------------------------------------------


def _group(url: str, consumer: str, **keys: object) -> GroupSource:
    return GroupSource(source_config(url, group="g", consumer=consumer, **keys), "job")


async def test_two_consumers_split_the_stream_and_ack_only_at_commit(
    redis_server: RedisServer,
) -> None:
    """Each entry goes to one consumer; XACK happens in commit, not in read."""
    add(redis_server.url, 20)
    a, b = _group(redis_server.url, "a"), _group(redis_server.url, "b")
    await a.open(None)
    await b.open(None)
    first_a = await a.read(10, 0.1)
    first_b = await b.read(10, 0.1)
    assert sorted(numbers([first_a, first_b])) == list(range(20))
    client = plain_client(redis_server.url)
    assert client.xpending("s", "g")["pending"] == 20
    assert first_a.offset is not None
    await a.commit(first_a.offset)
    assert client.xpending("s", "g")["pending"] == 10
    assert first_b.offset == {"group": "g", "last": first_b_last(first_b), "read": 10}
    await a.close()
    await b.close()


def first_b_last(batch: object) -> str:
    offset = getattr(batch, "offset", None)
    assert isinstance(offset, dict)
    last = offset["last"]
    assert isinstance(last, str)
    return last


async def test_a_consumer_rereads_its_own_pending_entries_first(redis_server: RedisServer) -> None:
    """Read and not committed (a crash): the same consumer gets them again, then new ones."""
    add(redis_server.url, 5)
    source = _group(redis_server.url, "a")
    await source.open(None)
    assert numbers(await drain(source)) == list(range(5))
    await source.close()  # no commit: as after a crash

    add(redis_server.url, 2, start=5)
    again = _group(redis_server.url, "a")
    await again.open({"group": "g", "last": "0-1", "read": 5})
    batches = await drain(again)
    assert numbers(batches) == list(range(7))
    assert batches[-1].offset is not None
    await again.commit(batches[-1].offset)
    assert plain_client(redis_server.url).xpending("s", "g")["pending"] == 0
    offset = batches[-1].offset
    assert isinstance(offset, dict)
    assert offset["read"] == 12  # the count goes on from the snapshot's
    await again.close()


async def test_entries_of_a_dead_consumer_are_claimed_after_claim_idle(
    redis_server: RedisServer,
) -> None:
    """XAUTOCLAIM gives another consumer what a dead one held longer than claim_idle."""
    add(redis_server.url, 3)
    dead = _group(redis_server.url, "dead")
    await dead.open(None)
    assert numbers(await drain(dead)) == [0, 1, 2]
    await dead.close()

    alive = _group(redis_server.url, "alive", claim_idle=0.2)
    await alive.open(None)
    got: list[int] = []
    while len(got) < 3:
        got += numbers([await alive.read(10, 0.05)])
    assert sorted(got) == [0, 1, 2]
    await alive.close()


async def test_an_entry_delivered_too_often_is_rejected_and_acked(
    redis_server: RedisServer,
) -> None:
    """Past max_deliveries an entry becomes a PoisonEntry reject, acked at the next commit."""
    add(redis_server.url, 1)
    for _ in range(2):  # delivered twice, never committed
        source = _group(redis_server.url, "a", max_deliveries=2)
        await source.open(None)
        assert numbers(await drain(source)) == [0]
        await source.close()
    source = _group(redis_server.url, "a", max_deliveries=2)
    await source.open(None)
    batches = await drain(source)
    assert numbers(batches) == []
    (poison,) = rejects(batches)
    assert isinstance(poison.error, PoisonEntry)
    assert "delivered 3 times, more than source.max_deliveries = 2" in str(poison.error)
    assert batches[-1].offset is not None
    await source.commit(batches[-1].offset)
    assert plain_client(redis_server.url).xpending("s", "g")["pending"] == 0
    await source.close()


async def test_a_missing_group_is_refused_when_not_to_be_created(
    redis_server: RedisServer,
) -> None:
    """create_group = false: a missing stream or group is BrokerRefused naming key and server."""
    source = _group(redis_server.url, "a", create_group=False)
    with pytest.raises(BrokerRefused, match=r'source\.stream: no stream "s" on redis://'):
        await source.open(None)
    await source.close()
    add(redis_server.url, 1)
    source = _group(redis_server.url, "a", create_group=False)
    with pytest.raises(BrokerRefused, match=r'source\.group: no consumer group "g" on stream "s"'):
        await source.open(None)
    await source.close()


async def test_a_group_destroyed_while_reading_is_refused(redis_server: RedisServer) -> None:
    """NOGROUP mid-run: BrokerRefused naming source.group."""
    source = _group(redis_server.url, "a")
    await source.open(None)
    plain_client(redis_server.url).xgroup_destroy("s", "g")
    with pytest.raises(BrokerRefused, match=r'source\.group: no consumer group "g"'):
        await source.read(10, 0.01)
    await source.close()


async def test_shared_progress_shows_the_group_s_lag(redis_server: RedisServer) -> None:
    """progress(): the group's lag (entries not yet delivered) from XINFO GROUPS."""
    add(redis_server.url, 5)
    source = _group(redis_server.url, "a", start="beginning")
    await source.open(None)
    progress = source.progress()
    assert progress is not None
    assert (progress["mode"], progress["lag"]) == ("shared", 5)
    await source.close()


async def test_a_group_created_at_the_end_skips_what_was_there(redis_server: RedisServer) -> None:
    """start = "end" creates the group at $: earlier entries are not delivered."""
    add(redis_server.url, 3)
    source = _group(redis_server.url, "a", start="end")
    await source.open(None)
    add(redis_server.url, 1, start=3)
    assert numbers(await drain(source)) == [3]
    await source.close()
