"""The redis connector against plain redis-py loops doing the same work (issue #17).

Three workloads, each run side by side for a few alternating rounds on one
``redis-server`` started here (no persistence: the client path is measured):

- ``replay``: a stream of N entries -> the daemon's redis source (replay mode) -> null
  sink, against a plain loop of XREAD COUNT 4096, decoding every field, with a durable
  offset write (`bench.baseline.durable_offset_write`) every `every` entries.
- ``shared``: the same through a consumer group: the daemon's XREADGROUP source, against a
  plain loop of XREADGROUP, durable offset write and XACK of what it covers, at the same
  cadence.
- ``sink``: the daemon's generate source -> redis sink, against a plain loop that makes
  the same records, XADDs them in pipelines of 4096 and writes its offset durably every
  `every` records.

Records/s: for the daemon, from the job's RUNNING to the checkpoint covering the last
entry (sources; the daemon logs at debug level to show it) or to FINISHED (sink), by its
log's timestamps; the plain loops time themselves. Both clients parse raw RESP2 replies
(the plain loop clears redis-py's reply callbacks as the connector does), so the
comparison is of the pipelines around the same client work.

Usage: python bench/redis_bench.py [--records N] [--rounds R] (or bench/run.py --only redis).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.baseline import durable_offset_write
from bench.daemon_run import events, job_span, run_until_idle, start_daemon, write_daemon
from bench.measure import load_average, machine, median

EVERY = 10_000
BATCH = 4096


class Server:
    """A throwaway ``redis-server`` on a free port."""

    def __init__(self, directory: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url)

    def fill(self, stream: str, count: int) -> str:
        """`count` entries like a small JSON record's fields; the last ID."""
        client = self.client()
        client.delete(stream)
        last = b""
        for start in range(0, count, BATCH):
            pipe = client.pipeline(transaction=False)
            for n in range(start, min(start + BATCH, count)):
                pipe.xadd(stream, {"n": str(n), "user": f"u{n % 97}", "amount": "12.5"})
            last = pipe.execute()[-1]
        client.close()
        return last.decode()

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


# --- the plain loops (run in a subprocess: `python bench/redis_bench.py loop ...`) -------


def _raw(url: str) -> Any:
    import redis

    client = redis.Redis.from_url(url, protocol=2)
    client.response_callbacks.clear()
    return client


def _decode(entries: list[Any]) -> list[dict[str, str]]:
    return [
        {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat) - 1, 2)}
        for _, flat in entries
    ]


def loop_replay(url: str, count: int, state: Path) -> None:
    client = _raw(url)
    last, done, uncommitted = "0-0", 0, 0
    while done < count:
        reply = client.execute_command("XREAD", "COUNT", BATCH, "STREAMS", "s", last)
        entries = reply[0][1]
        _decode(entries)
        last = entries[-1][0].decode()
        done += len(entries)
        uncommitted += len(entries)
        if uncommitted >= EVERY or done >= count:
            durable_offset_write(state, done)
            uncommitted = 0


def loop_shared(url: str, count: int, state: Path) -> None:
    client = _raw(url)
    done, unacked = 0, []
    while done < count:
        reply = client.execute_command(
            "XREADGROUP", "GROUP", "g", "c", "COUNT", BATCH, "STREAMS", "s", ">"
        )
        entries = reply[0][1]
        _decode(entries)
        unacked += [entry_id for entry_id, _ in entries]
        done += len(entries)
        if len(unacked) >= EVERY or done >= count:
            durable_offset_write(state, done)
            for start in range(0, len(unacked), BATCH):
                client.execute_command("XACK", "s", "g", *unacked[start : start + BATCH])
            unacked = []


def loop_sink(url: str, count: int, state: Path) -> None:
    client = _raw(url)
    encode = json.JSONEncoder(separators=(",", ":")).encode
    pipe = client.pipeline(transaction=False)
    queued = 0
    for n in range(count):
        record = {"seq": n}
        fields = [x for k, v in record.items() for x in (k, v if isinstance(v, str) else encode(v))]
        pipe.execute_command("XADD", "out", "*", *fields)
        queued += 1
        if queued >= BATCH or (n + 1) % EVERY == 0 or n + 1 == count:
            pipe.execute()
            queued = 0
        if (n + 1) % EVERY == 0 or n + 1 == count:
            durable_offset_write(state, n + 1)


LOOPS: dict[str, Callable[[str, int, Path], None]] = {
    "replay": loop_replay,
    "shared": loop_shared,
    "sink": loop_sink,
}


def _run_loop(workload: str, url: str, count: int, work: Path) -> float:
    state = work / "state"
    state.mkdir()
    out = subprocess.run(
        [sys.executable, __file__, "loop", workload, url, str(count), str(state)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])


# --- the daemon ---------------------------------------------------------------------


def _daemon_source(url: str, workload: str, count: int, last: str, work: Path) -> float:
    group = '\ngroup = "g"\nconsumer = "c"\nclaim_idle = "3h"' if workload == "shared" else ""
    job = (
        f'[source]\ntype = "redis"\nurl = "{url}"\nstream = "s"{group}\n\n'
        '[sink]\ntype = "null"\n\n'
        f'[checkpoint]\nevery_records = {EVERY}\ninterval = "1h"\n'
    )
    config = write_daemon(work, {"redis": job}, log_level="debug")
    log = work / "daemon.log"
    process = start_daemon(config, log)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the daemon exited: {log.read_text()[-2000:]}")
            running = end = None
            for event in events(log):
                if event.get("event") == "job.state_changed" and event.get("to") == "running":
                    running = running or event["timestamp"]
                offset = event.get("offset")
                if event.get("event") == "job.checkpoint" and (
                    offset == last or (isinstance(offset, dict) and offset.get("read") == count)
                ):
                    end = event["timestamp"]
            if running and end:
                return _seconds(end) - _seconds(running)
            time.sleep(0.05)
        raise TimeoutError(f"the daemon did not reach {last} in 600 s")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def _daemon_sink(url: str, count: int, work: Path) -> float:
    job = (
        f'[source]\ntype = "generate"\ncount = {count}\n\n'
        f'[sink]\ntype = "redis"\nurl = "{url}"\nstream = "out"\n\n'
        f'[checkpoint]\nevery_records = {EVERY}\ninterval = "1h"\n'
    )
    config = write_daemon(work, {"redis": job})
    log = work / "daemon.log"
    run_until_idle(config, log)
    return job_span(log, "redis").seconds


def _seconds(timestamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def redis_bench(records: int, rounds: int, scratch: Path) -> dict[str, Any]:
    """Each workload: median records/s of the daemon and the plain loop, and the median
    of each round's ratio."""
    results: dict[str, Any] = {"records": records, "rounds": rounds, "every_records": EVERY}
    server = Server(Path(tempfile.mkdtemp(prefix="redis-", dir=scratch)))
    try:
        for workload in ("replay", "shared", "sink"):
            daemon, plain = [], []
            for _ in range(rounds):
                for contestant in ("daemon", "plain"):
                    work = Path(tempfile.mkdtemp(prefix=f"{workload}-{contestant}-", dir=scratch))
                    last = ""
                    if workload != "sink":
                        last = server.fill("s", records)
                        if workload == "shared":
                            server.client().xgroup_create("s", "g", id="0")
                    else:
                        server.client().delete("out")
                    if contestant == "daemon":
                        seconds = (
                            _daemon_sink(server.url, records, work)
                            if workload == "sink"
                            else _daemon_source(server.url, workload, records, last, work)
                        )
                        daemon.append(records / seconds)
                    else:
                        plain.append(records / _run_loop(workload, server.url, records, work))
                    shutil.rmtree(work, ignore_errors=True)
            paired = [d / p for d, p in zip(daemon, plain, strict=True)]
            results[workload] = {
                "daemon_records_per_s": median(daemon),
                "plain_records_per_s": median(plain),
                "ratio": median(paired),
                "ratio_per_round": paired,
                "load_average_1m": load_average()[0],
            }
    finally:
        server.stop()
    return results


def markdown(section: dict[str, Any]) -> list[str]:
    lines = [
        "### Redis Streams connector",
        "",
        f"{section['records']:,} entries, checkpoint every {section['every_records']:,}, "
        f"median of {section['rounds']} alternating rounds (target: daemon / plain >= 0.9x).",
        "",
        "| workload | daemon records/s | plain loop records/s | daemon / plain | each round |",
        "|---|---|---|---|---|",
    ]
    for name, label in (
        ("replay", "source, replay (XREAD) -> null"),
        ("shared", "source, shared (XREADGROUP + XACK) -> null"),
        ("sink", "generate -> sink (XADD pipelined)"),
    ):
        row = section[name]
        each = ", ".join(f"{r:.2f}" for r in row["ratio_per_round"])
        lines.append(
            f"| {label} | {row['daemon_records_per_s']:,.0f} | {row['plain_records_per_s']:,.0f}"
            f" | {row['ratio']:.2f}x | {each} |"
        )
    return [*lines, ""]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "loop":
        workload, url, count, state = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
        started = time.perf_counter()
        LOOPS[workload](url, count, Path(state))
        print(json.dumps({"records": count, "seconds": time.perf_counter() - started}))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as scratch:
        results = redis_bench(args.records, args.rounds, Path(scratch))
    results["machine"] = machine()
    print(json.dumps(results, indent=2))
    print("\n".join(markdown(results)))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
