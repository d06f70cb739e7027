"""The amqp connector against plain aio-pika loops doing the same work at the same cadence.

Source: a durable queue holding N persistent JSON messages, read by the daemon
(``amqp`` source -> ``null`` sink, checkpoint every E records) and by a plain
aio-pika loop that consumes with the same prefetch, parses each body, and every E
messages writes the count durably (`bench.baseline.durable_offset_write`) and then
sends one ``ack`` with ``multiple``. Sink: the daemon (``generate`` -> ``amqp``
sink, persistent, mandatory, confirms awaited at each checkpoint) against a loop
that publishes E messages at a time, awaits their confirms, and writes the count
durably. Records/s: the daemon's from its job's ``running`` to the checkpoint that
holds the last message (source) or to ``finished`` (sink), by its log's clock; the
loops time themselves from the first message to the last durable write.

Usage: python bench/amqp_bench.py [--records N] [--rounds R] [--every E] [--url URL]
Without --url it starts a RabbitMQ node of its own (rabbitmq-server must be installed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `supervisor` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.baseline import durable_offset_write
from bench.daemon_run import _epoch, events, job_span, run_until_idle, start_daemon, write_daemon
from bench.measure import load_average, median

QUEUE = "bench-source"
EXCHANGE = "bench-x"
SINK_QUEUE = "bench-sink"


async def _fill(url: str, count: int) -> None:
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(QUEUE)
        await channel.declare_queue(QUEUE, durable=True)
        pending = []
        for n in range(count):
            body = json.dumps({"seq": n, "name": f"item-{n}", "value": n * 0.5}).encode()
            message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            pending.append(channel.default_exchange.publish(message, QUEUE))
            if len(pending) == 2000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)


async def _sink_queue(url: str) -> int:
    """Declare (or purge) the sink's exchange and queue; how many messages it held."""
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(EXCHANGE, durable=True)
        queue = await channel.declare_queue(SINK_QUEUE, durable=True)
        await queue.bind(exchange, "bench")
        held = int(queue.declaration_result.message_count or 0)
        await queue.purge()
        return held


def source_daemon(url: str, count: int, every: int, work: Path) -> float:
    job = (
        f'[source]\ntype = "amqp"\nurl = "{url}"\nqueue = "{QUEUE}"\n\n'
        '[sink]\ntype = "null"\n\n'
        f'[checkpoint]\nevery_records = {every}\ninterval = "1h"\n'
    )
    config = write_daemon(work, {"consume": job}, log_level="debug")
    log = work / "daemon.log"
    process = start_daemon(config, log)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            span = _source_span(log, count)
            if span is not None:
                return span
            if process.poll() is not None:
                raise RuntimeError(f"daemon exited: {log.read_text()[-2000:]}")
            time.sleep(0.05)  # a benchmark harness polling its log: outside the timed span
        raise RuntimeError("the daemon did not consume the queue in 600 s")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def _source_span(log: Path, count: int) -> float | None:
    running = None
    for event in events(log):
        if event.get("event") == "job.state_changed" and event.get("to") == "running":
            running = running or _epoch(event["timestamp"])
        offset = event.get("offset")
        if (
            event.get("event") == "job.checkpoint"
            and isinstance(offset, dict)
            and offset.get("consumed") == count
            and running is not None
        ):
            return _epoch(event["timestamp"]) - running
    return None


async def _source_loop(url: str, count: int, every: int, state: Path) -> float:
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=min(2 * every, 65535))
        queue = await channel.declare_queue(QUEUE, passive=True)
        seen = 0
        started = None
        async with queue.iterator() as messages:
            async for message in messages:
                started = started or time.perf_counter()
                json.loads(message.body)
                seen += 1
                if seen % every == 0 or seen == count:
                    durable_offset_write(state, seen)
                    await message.ack(multiple=True)
                if seen == count:
                    break
        assert started is not None
        return time.perf_counter() - started


def sink_daemon(url: str, count: int, every: int, work: Path) -> float:
    job = (
        f'[source]\ntype = "generate"\ncount = {count}\n\n'
        f'[sink]\ntype = "amqp"\nurl = "{url}"\nexchange = "{EXCHANGE}"\nrouting_key = "bench"\n\n'
        f'[checkpoint]\nevery_records = {every}\ninterval = "1h"\n'
    )
    config = write_daemon(work, {"publish": job})
    log = work / "daemon.log"
    run_until_idle(config, log)
    return job_span(log, "publish").seconds


async def _sink_loop(url: str, count: int, every: int, state: Path) -> float:
    import aio_pika

    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EXCHANGE)
        started = time.perf_counter()
        pending = []
        for n in range(count):
            message = aio_pika.Message(
                encode({"seq": n}).encode(),
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                content_type="application/json",
            )
            pending.append(exchange.publish(message, "bench", mandatory=True))
            if len(pending) == every or n == count - 1:
                await asyncio.gather(*pending)
                pending = []
                durable_offset_write(state, n + 1)
        return time.perf_counter() - started


def run(
    url: str,
    *,
    records: int,
    rounds: int,
    every: int,
    scratch: Path,
    workloads: tuple[str, ...] = ("source", "sink"),
) -> dict[str, Any]:
    """Rounds alternating daemon and loop on each workload: medians and paired ratios."""
    samples: dict[str, list[float]] = {
        name: [] for workload in workloads for name in (workload, f"{workload}_loop")
    }
    for _ in range(rounds):
        for name in samples:
            work = Path(tempfile.mkdtemp(prefix=f"amqp-{name}-", dir=scratch))
            try:
                if name.startswith("source"):
                    asyncio.run(_fill(url, records))
                else:
                    asyncio.run(_sink_queue(url))
                if name == "source":
                    seconds = source_daemon(url, records, every, work)
                elif name == "source_loop":
                    seconds = asyncio.run(_source_loop(url, records, every, work))
                elif name == "sink":
                    seconds = sink_daemon(url, records, every, work)
                else:
                    seconds = asyncio.run(_sink_loop(url, records, every, work))
                if name.startswith("sink"):
                    held = asyncio.run(_sink_queue(url))
                    assert held == records, f"{name}: {held} of {records} messages arrived"
                samples[name].append(records / seconds)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    result: dict[str, Any] = {
        "records": records,
        "rounds": rounds,
        "every_records": every,
        "load_average_1m": load_average()[0],
    }
    for name, values in samples.items():
        result[name] = {"records_per_s": median(values), "samples": values}
    for workload in workloads:
        paired = [
            daemon / loop
            for daemon, loop in zip(samples[workload], samples[f"{workload}_loop"], strict=True)
        ]
        result[f"ratio_{workload}_daemon_to_loop"] = median(paired)
        result[f"ratio_{workload}_per_round"] = paired
    return result


def with_broker(scratch: Path, url: str | None, **sizes: Any) -> dict[str, Any]:
    """`run` against `url`, or against a RabbitMQ node started for it."""
    if url is not None:
        return run(url, scratch=scratch, **sizes)
    if not (
        Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists() or shutil.which("rabbitmq-server")
    ):
        raise RuntimeError("rabbitmq-server is not installed: apt-get install rabbitmq-server")
    from tests.servers import RabbitServer

    directory = Path(tempfile.mkdtemp(prefix="rabbit-", dir=scratch))
    server = RabbitServer(directory, max_message_size=16 * 1024 * 1024)
    server.start()
    try:
        return run(server.url, scratch=scratch, **sizes)
    finally:
        server.kill()


def report_lines(result: dict[str, Any]) -> list[str]:
    """The section bench/results/results.md shows for this workload."""
    if "error" in result:
        return ["### RabbitMQ (amqp connector)", "", f"Not run: {result['error']}", ""]
    lines = [
        "### RabbitMQ (amqp connector)",
        "",
        f"{result['records']:,} persistent messages, checkpoint (ack, confirms) every "
        f"{result['every_records']:,}, median of {result['rounds']} alternating rounds; "
        "target >= 0.9x of a plain aio-pika loop doing the same work.",
        "",
        "| workload | daemon records/s | plain loop records/s | daemon / loop | each round |",
        "|---|---|---|---|---|",
    ]
    for workload, label in (("source", "queue -> null"), ("sink", "generate -> exchange")):
        if workload not in result:
            continue
        paired = " / ".join(f"{value:.2f}" for value in result[f"ratio_{workload}_per_round"])
        lines.append(
            f"| {label} | {result[workload]['records_per_s']:,.0f} | "
            f"{result[f'{workload}_loop']['records_per_s']:,.0f} | "
            f"{result[f'ratio_{workload}_daemon_to_loop']:.2f}x | {paired} |"
        )
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--every", type=int, default=10_000)
    parser.add_argument("--url", help="a broker to use (default: start one)")
    parser.add_argument("--only", nargs="+", choices=("source", "sink"), default=["source", "sink"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="amqp-bench-") as scratch:
        result = with_broker(
            Path(scratch),
            args.url,
            records=args.records,
            rounds=args.rounds,
            every=args.every,
            workloads=tuple(args.only),
        )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
