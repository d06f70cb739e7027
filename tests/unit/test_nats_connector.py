"""The nats source and sink against a real nats-server: modes, acks, errors, message ids."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest

from supervisor.config.model import CheckpointPolicy
from supervisor.connectors.nats import CONNECTOR, NatsSinkConfig, NatsSourceConfig
from supervisor.connectors.nats.sink import NatsSink
from supervisor.connectors.nats.source import NatsSource, check_offset
from supervisor.errors import BrokerRefused, BrokerUnavailable
from tests import nats_support
from tests.servers import NatsServer, free_port, require_module

pytestmark = pytest.mark.anyio


def source_config(server: NatsServer, **changes: Any) -> NatsSourceConfig:
    return replace(NatsSourceConfig(url=(server.url,), stream="S"), **changes)


def sink_config(server: NatsServer, **changes: Any) -> NatsSinkConfig:
    return replace(NatsSinkConfig(url=(server.url,), subject="out.x", stream="OUT"), **changes)


async def read_all(source: NatsSource, expected: int) -> tuple[list[Any], Any, list[Any]]:
    records: list[Any] = []
    rejects: list[Any] = []
    offset = None
    with anyio.fail_after(20):
        while len(records) + len(rejects) < expected:
            batch = await source.read(4096, 1.0)
            records += batch.records
            rejects += batch.rejects
            offset = batch.offset
    return records, offset, rejects


async def test_replay_reads_in_order_and_resumes_after_the_offset(nats_server: NatsServer) -> None:
    """Replay mode passes each message once, in order; reopened at an offset it goes on after it."""
    await nats_support.make_stream(nats_server, "S", ["s.>"])
    await nats_support.publish(nats_server, "s.a", [{"n": n} for n in range(10)])
    source = NatsSource(source_config(nats_server), "job")
    await source.open(None)
    assert source.replayable and source.position() == 0
    records, offset, _ = await read_all(source, 10)
    await source.close()
    assert records == [{"n": n} for n in range(10)]
    assert offset == 10

    again = NatsSource(source_config(nats_server), "job")
    await again.open(4)
    records, offset, _ = await read_all(again, 6)
    progress = again.progress()
    await again.close()
    assert records == [{"n": n} for n in range(4, 10)]
    assert offset == 10
    assert progress is not None and progress["mode"] == "replay"


async def test_replay_start_end_pins_the_last_sequence(nats_server: NatsServer) -> None:
    """start = "end" skips what is there and pins the stream's last sequence."""
    await nats_support.make_stream(nats_server, "S", ["s.>"])
    await nats_support.publish(nats_server, "s.a", [1, 2, 3])
    source = NatsSource(source_config(nats_server, start="end"), "job")
    await source.open(None)
    assert source.position() == 3
    await nats_support.publish(nats_server, "s.a", [4])
    records, offset, _ = await read_all(source, 1)
    await source.close()
    assert (records, offset) == ([4], 4)


async def test_undecodable_payloads_are_rejected_records(nats_server: NatsServer) -> None:
    """A payload that is not JSON (or not UTF-8 for text) is a Rejected record, not a crash."""
    await nats_support.make_stream(nats_server, "S", ["s.>"])
    await nats_support.publish(nats_server, "s.a", [b"\xff\xfe", b"{not json", b'"ok"'])
    source = NatsSource(source_config(nats_server), "job")
    await source.open(None)
    records, offset, rejects = await read_all(source, 3)
    await source.close()
    assert records == ["ok"] and offset == 3
    assert [r.raw["stream_seq"] for r in rejects] == [1, 2]
    assert rejects[0].raw["data_base64"] == "//4="

    text = NatsSource(source_config(nats_server, format="text"), "job")
    await text.open(None)
    records, _, rejects = await read_all(text, 3)
    await text.close()
    assert records == ["{not json", '"ok"'] and len(rejects) == 1


async def test_shared_mode_acks_only_at_commit(nats_server: NatsServer) -> None:
    """Shared mode holds messages unacknowledged until commit, then acks them (confirmed)."""
    await nats_support.make_stream(nats_server, "S", ["s.>"])
    await nats_support.publish(nats_server, "s.a", list(range(5)))
    source = NatsSource(source_config(nats_server, durable="workers"), "job")
    await source.open(None)
    assert not source.replayable and source.position() is None
    records, offset, _ = await read_all(source, 5)
    assert records == list(range(5))
    assert offset == {"durable": "workers", "stream_seq": 5, "delivery": 5}
    nc = await nats_support.client(nats_server)
    try:
        js = nc.jetstream()
        assert (await js.consumer_info("S", "workers")).num_ack_pending == 5
        await source.commit(offset)
        assert (await js.consumer_info("S", "workers")).num_ack_pending == 0
    finally:
        await nc.close()
    await source.close()


async def test_shared_mode_in_progress_acks_prevent_redelivery(nats_server: NatsServer) -> None:
    """Held longer than ack_wait (a slow sink), messages are not delivered again."""
    await nats_support.make_stream(nats_server, "S", ["s.>"])
    await nats_support.publish(nats_server, "s.a", list(range(3)))
    config = source_config(nats_server, durable="slow", ack_wait=1.5)
    source = NatsSource(config, "job")
    await source.open(None)
    _, offset, _ = await read_all(source, 3)
    await anyio.sleep(4.0)  # a flush three times as long as ack_wait
    batch = await source.read(10, 0.2)
    assert batch.records == []
    await source.commit(offset)
    nc = await nats_support.client(nats_server)
    try:
        info = await nc.jetstream().consumer_info("S", "slow")
        assert (info.num_redelivered, info.num_ack_pending) == (0, 0)
    finally:
        await nc.close()
    await source.close()


async def test_poison_message_goes_to_the_records_policy(nats_server: NatsServer) -> None:
    """Past max_deliveries a message is a Rejected record, and is terminated at commit."""
    await nats_support.make_stream(nats_server, "S", ["s.>"])
    await nats_support.publish(nats_server, "s.a", ["poison"])
    config = source_config(nats_server, durable="p", max_deliveries=2, ack_wait=1.0)
    for delivery in (1, 2):
        source = NatsSource(config, "job")
        await source.open(None)
        records, _, rejects = await read_all(source, 1)
        assert (records, rejects) == (["poison"], []), delivery
        await source.close()  # the attempt failed: released for redelivery
    source = NatsSource(config, "job")
    await source.open(None)
    records, offset, rejects = await read_all(source, 1)
    assert records == []
    assert "delivered 3 times, more than source.max_deliveries = 2" in str(rejects[0].error)
    await source.commit(offset)
    await source.close()
    again = NatsSource(config, "job")
    await again.open(None)
    assert (await again.read(10, 0.5)).records == []
    await again.close()


async def test_missing_stream_and_consumer_are_refused(nats_server: NatsServer) -> None:
    """A missing stream, a missing consumer (not to be created) and a consumer configured
    otherwise are BrokerRefused, naming the key and the server."""
    with pytest.raises(BrokerRefused, match=rf'source.stream: no stream "S" on {nats_server.url}'):
        await _open_and_close(NatsSource(source_config(nats_server), "job"))
    await nats_support.make_stream(nats_server, "S", ["s.>"])
    missing = source_config(nats_server, durable="d", create_consumer=False)
    with pytest.raises(BrokerRefused, match=r'source\.durable: no consumer "d"'):
        await _open_and_close(NatsSource(missing, "job"))
    await _open_and_close(NatsSource(source_config(nats_server, durable="d"), "job"))
    other = source_config(nats_server, durable="d", ack_wait=60.0)
    with pytest.raises(BrokerRefused, match=r"ack_wait is 30 s \(source.ack_wait = 60\)"):
        await _open_and_close(NatsSource(other, "job"))


async def _open_and_close(component: Any) -> None:
    try:
        await component.open(None) if isinstance(component, NatsSource) else await component.open()
    finally:
        await component.close()


async def test_wrong_credentials_are_refused(tmp_path: Path) -> None:
    """A refused login is BrokerRefused; the password shows nowhere in the message."""
    require_module("nats", "nats")
    server = NatsServer(tmp_path, user="app", password="right-secret")
    server.start()
    try:
        config = source_config(server, user="app", password_env="NATS_TEST_PASSWORD")
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("NATS_TEST_PASSWORD", "wrong-secret")
            with pytest.raises(BrokerRefused, match="refused the credentials") as caught:
                await _open_and_close(NatsSource(config, "job"))
        assert "wrong-secret" not in str(caught.value)
    finally:
        server.kill()


async def test_unreachable_server_is_unavailable() -> None:
    """Nothing listening is BrokerUnavailable (retryable), naming the key and the server."""
    require_module("nats", "nats")
    url = f"nats://127.0.0.1:{free_port()}"
    config = NatsSourceConfig(url=(url,), stream="S", connect_timeout=1.0)
    with pytest.raises(BrokerUnavailable, match=f"source.url: cannot connect to {url}"):
        await _open_and_close(NatsSource(config, "job"))


async def test_server_killed_mid_read_is_unavailable(nats_server: NatsServer) -> None:
    """A server that goes away fails the read with BrokerUnavailable, at once."""
    await nats_support.make_stream(nats_server, "S", ["s.>"])
    source = NatsSource(source_config(nats_server, durable="d"), "job")
    await source.open(None)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(anyio.to_thread.run_sync, nats_server.kill)
            with pytest.raises(BrokerUnavailable, match="lost"), anyio.fail_after(10):
                while True:
                    await source.read(10, 0.2)
    finally:
        await source.close()


async def test_sink_publishes_and_drops_a_replays_repeats(nats_server: NatsServer) -> None:
    """Records resumed from the same offset get the same Nats-Msg-Id: the stream keeps one."""
    await nats_support.make_stream(nats_server, "OUT", ["out.>"])
    for attempt in range(2):
        sink = NatsSink(sink_config(nats_server), "job")
        await sink.open()
        sink.resume_from(7)
        await sink.write([{"n": 1}, {"n": 2}])
        await sink.flush(9)
        await sink.write([{"n": 3}])
        await sink.flush(10)
        await sink.close()
        assert sink.duplicates == 3 * attempt
    assert await nats_support.stream_payloads(nats_server, "OUT") == [{"n": 1}, {"n": 2}, {"n": 3}]


async def test_sink_refuses_a_stream_that_does_not_capture_its_subject(
    nats_server: NatsServer,
) -> None:
    """sink.stream must exist and capture sink.subject, checked at open."""
    await nats_support.make_stream(nats_server, "OUT", ["other.>"])
    with pytest.raises(BrokerRefused, match=r'sink\.subject: stream "OUT" .* does not capture'):
        await _open_and_close(NatsSink(sink_config(nats_server), "job"))
    with pytest.raises(BrokerRefused, match=r'sink\.stream: no stream "NOPE"'):
        await _open_and_close(NatsSink(sink_config(nats_server, stream="NOPE"), "job"))


async def test_sink_refuses_a_record_larger_than_max_payload(nats_server: NatsServer) -> None:
    """A record over the server's max_payload is a clear, fatal error."""
    await nats_support.make_stream(nats_server, "OUT", ["out.>"])
    sink = NatsSink(sink_config(nats_server), "job")
    await sink.open()
    try:
        with pytest.raises(BrokerRefused, match="larger than the server's max_payload"):
            await sink.write(["x" * (2 << 20)])
    finally:
        await sink.close()


def test_check_job_refuses_a_checkpoint_longer_than_half_ack_wait() -> None:
    """supervisor check refuses interval > ack_wait / 2 and every_records > max_ack_pending."""
    assert CONNECTOR.source is not None and CONNECTOR.source.check_job is not None
    config = NatsSourceConfig(url=("nats://h:4222",), stream="S", durable="d", ack_wait=8.0)
    policy = CheckpointPolicy(every_records=30_000, interval=5.0)
    problems = dict(CONNECTOR.source.check_job(config, policy))
    assert "must be at most half of ack_wait" in problems["ack_wait"]
    assert "below checkpoint.every_records" in problems["max_ack_pending"]
    assert not list(CONNECTOR.source.check_job(replace(config, durable=None), policy))


def test_offsets_set_by_an_operator() -> None:
    """Replay offsets are sequences; shared mode refuses offset --set and says what to do."""
    replay = NatsSourceConfig(url=("nats://h:4222",), stream="S")
    check_offset(replay, 12)
    with pytest.raises(ValueError, match="last stream sequence"):
        check_offset(replay, "12")
    with pytest.raises(ValueError, match="owns the position"):
        check_offset(replace(replay, durable="d"), 12)


async def test_tls_and_token(tmp_path: Path) -> None:
    """A tls:// server verified with tls_ca_file, and a token read from a file, work; an
    unknown CA is refused (fatal), naming the key."""
    from tests.servers import ServerProcess, make_certificates, require

    require_module("nats", "nats")
    certs = await anyio.to_thread.run_sync(make_certificates, tmp_path / "certs")
    ca, cert, key = certs.ca, certs.cert, certs.key
    port = free_port()
    argv = [require("nats-server", "nats-server"), "-a", "127.0.0.1", "-p", str(port), "-js",
            "-sd", str(tmp_path / "js"), "--tls", "--tlscert", str(cert), "--tlskey", str(key),
            "--auth", "s3cret-token"]  # fmt: skip
    server = ServerProcess("nats", argv, port, tmp_path)
    await anyio.to_thread.run_sync(server.start)
    try:
        (tmp_path / "token").write_text("s3cret-token\n")
        url = f"tls://127.0.0.1:{port}"
        config = NatsSinkConfig(
            url=(url,), subject="out.x", tls_ca_file=ca, token_file=tmp_path / "token"
        )
        with pytest.raises(BrokerRefused, match=r'sink\.stream: no stream "S"'):
            await _open_and_close(NatsSink(replace(config, stream="S"), "job"))
        with pytest.raises(BrokerRefused, match=r"sink\.tls_ca_file: cannot verify"):
            await _open_and_close(NatsSink(replace(config, tls_ca_file=None), "job"))
    finally:
        await anyio.to_thread.run_sync(server.kill)
