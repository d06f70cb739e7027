"""NATS JetStream: the daemon's nats source (replay and shared) and sink against plain
nats-py loops doing the same work at the same cadence, side by side in one run.

- source, replay: stream -> null sink, against a loop pulling from an ephemeral consumer
  without acks and writing its offset durably (temp file, fsync, rename, fsync of the
  directory) every `every_records`;
- source, shared: stream -> null sink through a durable consumer, against a loop that
  pulls, and every `every_records` writes its offset durably and sends confirmed acks for
  what it pulled (each ack answered by the server, all awaited);
- sink: generate -> nats (with Nats-Msg-Id headers), against a loop publishing
  asynchronously with the same headers, awaiting every PubAck and writing its offset
  durably every `every_records`.

Records/s for the daemon is records over the span from the job's RUNNING to its last
checkpoint (its log's timestamps); the loops time themselves the same way (connected to
done). Each round runs every contestant once, in turn; ratios are paired per round.
Run it as ``python bench/run.py --only nats`` (``--quick`` for a small size), or alone:
``python bench/nats_bench.py --records 200000 --rounds 3``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `supervisor` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.daemon_run import events, start_daemon, write_daemon
from bench.measure import median

EVERY = 10_000
MODES = ("replay", "shared", "sink")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """A nats-server -js of the benchmark's own, on a free port, its store in `directory`."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
        self.port = _free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
            else:
                return

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


async def _connect(url: str) -> Any:
    import nats

    return await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=1)


async def _fill(url: str, stream: str, subjects: list[str], records: int) -> None:
    nc = await _connect(url)
    js = nc.jetstream(publish_async_max_pending=16_384)
    await js.add_stream(name=stream, subjects=subjects)
    if records:
        pending = [await js.publish_async("in.records", b'{"seq":%d}' % n) for n in range(records)]
        await asyncio.gather(*pending)
    await nc.close()


async def _consumer_done(url: str, stream: str, durable: str) -> bool:
    nc = await _connect(url)
    try:
        info = await nc.jetstream().consumer_info(stream, durable)
    except Exception:  # noqa: BLE001 - not created yet
        return False
    finally:
        await nc.close()
    return not info.num_pending and not info.num_ack_pending


def _durable_offset(state: Path, offset: object) -> None:
    """What the daemon's checkpoint costs at least: a small file written durably."""
    temp = state.with_suffix(".tmp")
    with temp.open("w") as handle:
        handle.write(json.dumps(offset))
        handle.flush()
        os.fsync(handle.fileno())
    temp.replace(state)
    directory = os.open(state.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


async def baseline(mode: str, url: str, stream: str, name: str, records: int, work: Path) -> float:
    """The plain loop for `mode`; its records/s."""
    from nats.js import api

    nc = await _connect(url)
    js = nc.jetstream(publish_async_max_pending=16_384)
    state = work / "offset.json"
    started = time.perf_counter()
    if mode == "sink":
        pending = []
        for n in range(records):
            headers = {"Nats-Msg-Id": f"{name}:{n // EVERY}:{n % EVERY}"}
            data = json.dumps({"seq": n}, separators=(",", ":")).encode()
            pending.append(await js.publish_async("out.records", data, headers=headers))
            if len(pending) == EVERY or n == records - 1:
                await asyncio.gather(*pending)
                pending = []
                await asyncio.to_thread(_durable_offset, state, n + 1)
    else:
        config = api.ConsumerConfig(name=name, filter_subject="in.records")
        if mode == "replay":
            config.ack_policy, config.mem_storage = api.AckPolicy.NONE, True
        else:
            config.durable_name, config.ack_wait, config.max_ack_pending = name, 30, 20_000
        await js.add_consumer(stream, config)
        # One pull request per batch, answered on an inbox whose callback collects the
        # messages: the plain way to pull fast with nats-py (its `fetch` asks per message).
        arrived: list[Any] = []
        batch_done = asyncio.Event()
        wanted = 0

        async def collect(msg: Any) -> None:
            if msg.headers and msg.headers.get("Status"):
                batch_done.set()
                return
            arrived.append(msg)
            if len(arrived) >= wanted:
                batch_done.set()

        deliver = nc.new_inbox()
        await nc.subscribe(deliver, cb=collect)
        next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}"
        acks = nc.new_inbox()
        answered = 0
        acked = asyncio.Event()
        goal = 0

        async def count(_: Any) -> None:
            nonlocal answered
            answered += 1
            if answered >= goal:
                acked.set()

        await nc.subscribe(acks, cb=count)
        seen = held = last = 0
        replies: list[str] = []
        while seen < records:
            wanted = min(4096, EVERY - held)
            batch_done.clear()
            request = json.dumps({"batch": wanted, "expires": 5_000_000_000}).encode()
            await nc.publish(next_subject, request, reply=deliver)
            await batch_done.wait()
            got, arrived = arrived, []
            for msg in got:
                json.loads(msg.data)
                replies.append(msg.reply)
            if got:  # the offset: the last stream sequence read
                last = got[-1].metadata.sequence.stream
            seen += len(got)
            held += len(got)
            if held >= EVERY or seen >= records:
                await asyncio.to_thread(_durable_offset, state, last)
                if mode == "shared":
                    goal = answered + len(replies)
                    acked.clear()
                    for reply in replies:
                        await nc.publish(reply, b"+ACK", reply=acks)
                    await nc.flush()
                    if answered < goal:
                        await acked.wait()
                replies, held = [], 0
    seconds = time.perf_counter() - started
    await nc.close()
    return records / seconds


def _daemon_job(mode: str, url: str, stream: str, name: str, records: int) -> str:
    if mode == "sink":
        source = f'type = "generate"\ncount = {records}'
        sink = f'type = "nats"\nurl = "{url}"\nsubject = "out.records"\nstream = "{stream}"'
    else:
        source = f'type = "nats"\nurl = "{url}"\nstream = "{stream}"\nsubject = "in.records"'
        if mode == "shared":
            source += f'\ndurable = "{name}"'
        sink = 'type = "null"'
    return (
        f"[source]\n{source}\n\n[sink]\n{sink}\n\n"
        f'[checkpoint]\nevery_records = {EVERY}\ninterval = "10s"\n'
    )


def run_daemon(mode: str, url: str, stream: str, name: str, records: int, work: Path) -> float:
    """The daemon's records/s for `mode`: RUNNING to its last checkpoint, from its log."""
    config = write_daemon(work, {name: _daemon_job(mode, url, stream, name, records)})
    config.write_text(config.read_text().replace('log_level = "info"', 'log_level = "debug"'))
    log = work / "daemon.log"
    process = start_daemon(config, log, *(["--exit-when-idle"] if mode == "sink" else []))
    try:
        deadline = time.monotonic() + 900
        while process.poll() is None and time.monotonic() < deadline:
            if mode == "replay" and any(
                e.get("event") == "job.checkpoint" and e.get("offset") == records
                for e in events(log)
            ):
                break
            if mode == "shared" and asyncio.run(_consumer_done(url, stream, name)):
                break
            time.sleep(0.2)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    running = last = None
    for event in events(log):
        stamp = event.get("timestamp")
        if event.get("event") == "job.state_changed" and event.get("to") == "running":
            running = running or stamp
        elif event.get("event") == "job.checkpoint" and stamp:
            last = stamp
    if running is None or last is None:
        raise RuntimeError(f"no running or checkpoint in {log}")
    seconds = _epoch(last) - _epoch(running)
    return records / seconds


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def compare(records: int, rounds: int, scratch: Path) -> dict[str, Any]:
    """Every mode, daemon and loop in turn, for `rounds` rounds; medians and paired ratios."""
    server = Server(scratch / "nats-store")
    try:
        asyncio.run(_fill(server.url, "IN", ["in.records"], records))
        samples: dict[str, dict[str, list[float]]] = {
            mode: {"daemon": [], "baseline": []} for mode in MODES
        }
        for round_ in range(rounds):
            for mode in MODES:
                for contestant in ("daemon", "baseline"):
                    name = f"{mode}-{contestant}-{round_}"
                    stream = "IN"
                    if mode == "sink":
                        # Each contestant publishes to a fresh stream (ids never collide).
                        stream = f"OUT{round_}{contestant.upper()}"
                        asyncio.run(_fresh_out_stream(server.url, stream))
                    work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=scratch))
                    if contestant == "daemon":
                        rate = run_daemon(mode, server.url, stream, name, records, work)
                    else:
                        rate = asyncio.run(baseline(mode, server.url, stream, name, records, work))
                    samples[mode][contestant].append(rate)
                    shutil.rmtree(work, ignore_errors=True)
    finally:
        server.stop()
    result: dict[str, Any] = {"records": records, "rounds": rounds, "every_records": EVERY}
    for mode, runs in samples.items():
        paired = [d / b for d, b in zip(runs["daemon"], runs["baseline"], strict=True)]
        result[mode] = {
            "daemon_records_per_s": median(runs["daemon"]),
            "baseline_records_per_s": median(runs["baseline"]),
            "ratio_daemon_to_baseline": median(paired),
            "samples": runs,
        }
    return result


async def _fresh_out_stream(url: str, stream: str) -> None:
    """`stream`, new, capturing ``out.records``; the previous output stream deleted."""
    nc = await _connect(url)
    js = nc.jetstream()
    for info in await js.streams_info():
        if info.config.name != "IN":
            await js.delete_stream(info.config.name)
    await js.add_stream(name=stream, subjects=["out.records"])
    await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nats-bench-") as scratch:
        print(json.dumps(compare(args.records, args.rounds, Path(scratch)), indent=2))


if __name__ == "__main__":
    main()
