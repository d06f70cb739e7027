"""The redis connector as an operator meets it: poison entries, several daemons in one
group, bad input, secrets kept out of everything shown, and lag in `status`."""

from __future__ import annotations

import contextlib
import json
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.daemon_process import DaemonProcess, write_config
from tests.helpers import run_cli
from tests.integration.test_redis_delivery import until
from tests.redis_helpers import add, job_toml, plain_client, written
from tests.servers import RedisServer

pytestmark = pytest.mark.slow

FAILING_SINK = """\
import json
from pathlib import Path


class FailOn:
    \"\"\"A jsonl sink that raises on the record whose n is `poison`.\"\"\"

    def __init__(self, path, poison):
        self.path, self.poison, self.pending = Path(path), poison, []

    async def open(self):
        return None

    async def write(self, records):
        for record in records:
            if record.get("n") == self.poison:
                raise RuntimeError("this sink cannot take entry " + self.poison)
            self.pending.append(json.dumps(record) + "\\n")

    async def flush(self, offset):
        with self.path.open("a") as out:
            out.write("".join(self.pending))
        self.pending = []

    async def close(self):
        pass
"""


def test_a_poison_entry_reaches_the_records_policy_after_max_deliveries(
    daemons: Callable[..., DaemonProcess], tmp_path: Path, redis_server: RedisServer
) -> None:
    """A sink failing on one entry: delivered max_deliveries times, then dead-lettered and
    acked; the job is RUNNING and the entries around it all written."""
    (tmp_path / "failsink.py").write_text(FAILING_SINK)
    job = job_toml(
        redis_server.url,
        'group = "g"\nconsumer = "c"\nmax_deliveries = 3',
        sink=f'type = "python"\nclass = "failsink:FailOn"\npath = "{tmp_path}/out.jsonl"\n'
        'poison = "5"',
        extra='[records]\non_error = "dead_letter"\ndead_letter = "../dead.jsonl"',
    )
    config = write_config(tmp_path, {"r": job})
    daemon = daemons(config, env={"PYTHONPATH": str(tmp_path)})
    daemon.wait_for("job.state_changed", to="running")
    add(redis_server.url, 5)
    until(daemon, lambda: len(written(tmp_path / "out.jsonl")) == 5)
    add(redis_server.url, 1, start=5)
    daemon.wait_until(lambda: (tmp_path / "dead.jsonl").exists())
    add(redis_server.url, 4, start=6)
    until(daemon, lambda: len(written(tmp_path / "out.jsonl")) == 9)
    (status,) = json.loads(run_cli(config, "status", "--json").stdout)
    assert status["state"] == "running"
    assert daemon.stop() == 0

    assert sorted(written(tmp_path / "out.jsonl")) == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    (dead,) = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert dead["record"]["fields"] == {"n": "5"}
    assert "delivered 4 times, more than source.max_deliveries = 3" in dead["error"]
    assert plain_client(redis_server.url).xpending("s", "g")["pending"] == 0


def test_two_daemons_share_a_group_and_one_killed_repeatedly_loses_nothing(
    daemons: Callable[..., DaemonProcess], tmp_path: Path, redis_server: RedisServer
) -> None:
    """Daemon b is SIGKILLed again and again, then for good: a claims what b held, and
    every entry is written by one of them."""
    rounds, chunk = 5, 6000
    count = rounds * chunk
    configs = {}
    for name in ("a", "b"):
        source = f'group = "g"\nconsumer = "{name}"\nclaim_idle = "1s"'
        job = job_toml(
            redis_server.url,
            source,
            checkpoint='every_records = 500\ninterval = "200ms"',
        )
        configs[name] = write_config(tmp_path / name, {"r": job})
    a = daemons(configs["a"])
    a.keep_draining()
    a.wait_logged("job.state_changed", to="running")
    for round_ in range(rounds):
        b = daemons(configs["b"])
        b.keep_draining()
        b.wait_logged("job.state_changed", to="running")
        add(redis_server.url, chunk, start=round_ * chunk)
        # b usually gets some of the chunk (or its own pending) before it is killed.
        with contextlib.suppress(AssertionError):
            b.wait_logged("job.checkpoint", timeout=5)
        b.process.kill()
        b.stop()

    client = plain_client(redis_server.url)

    def everything() -> bool:
        # Written by one or the other, and acknowledged: a claimed what b held at its
        # last kill (b may have written some of it: repeats, never losses).
        return (
            set(written(tmp_path / "a/out.jsonl")) | set(written(tmp_path / "b/out.jsonl"))
            >= set(range(count))
            and client.xpending("s", "g")["pending"] == 0
        )

    a.wait_until(everything)
    assert a.stop() == 0
    assert written(tmp_path / "b/out.jsonl"), "b took part"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:1/0", "source.url: redis://127.0.0.1:1/0 is unreachable"),
        ("redis://no-such-host.invalid:6379/0", "source.url: redis://no-such-host.invalid"),
    ],
)
def test_an_unreachable_server_keeps_the_job_retrying_with_a_clear_error(
    daemons: Callable[..., DaemonProcess], tmp_path: Path, url: str, expected: str
) -> None:
    """Nothing listening, or no such host: RETRYING, the cause names the server; no traceback
    in `status`."""
    config = write_config(tmp_path, {"r": job_toml(url, 'timeout = "1s"')})
    daemon = daemons(config)
    retrying = daemon.wait_for("job.state_changed", to="retrying")
    assert expected in retrying["cause"]
    status = run_cli(config, "status")
    assert "BrokerUnavailable" in status.stdout
    assert "Traceback" not in status.stdout
    assert daemon.stop() == 0


SECRET = "correct-horse-battery-staple"


def test_a_password_never_shows_and_wrong_ones_are_refused(
    daemons: Callable[..., DaemonProcess], tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """With password_file the job runs and the secret appears in no log line, status,
    event, snapshot or error; a wrong password suspends its job with a clear cause."""
    server = RedisServer(tmp_path_factory.mktemp("auth"), password=SECRET)
    server.start()
    try:
        url = f"redis://127.0.0.1:{server.port}/0"
        (tmp_path / "pw").write_text(SECRET + "\n")
        (tmp_path / "wrong").write_text("wrong-password-xyz\n")
        authed = f"redis://:{SECRET}@127.0.0.1:{server.port}/0"
        add(authed, 100)
        jobs = {
            "good": job_toml(url, 'password_file = "../pw"', checkpoint='interval = "100ms"'),
            "bad": job_toml(url, 'password_file = "../wrong"'),
            "inurl": job_toml(authed.replace(SECRET, "wrong-in-url-abc"), "", sink='type = "null"'),
            "sink": textwrap.dedent(f"""
                [source]
                type = "generate"
                count = 50
                [sink]
                type = "redis"
                url = "{url}"
                stream = "copy"
                password_file = "../pw"
            """),
        }
        config = write_config(tmp_path, jobs)
        daemon = daemons(config)
        daemon.keep_draining()
        bad = daemon.wait_logged("job.state_changed", job="bad", to="suspended")
        assert "BrokerRefused: source.password:" in bad["cause"]
        assert "refused the credentials" in bad["cause"]
        inurl = daemon.wait_logged("job.state_changed", job="inurl", to="suspended")
        assert f"redis://:***@127.0.0.1:{server.port}/0 refused the credentials" in inurl["cause"]
        until(daemon, lambda: len(written(tmp_path / "out.jsonl")) >= 100)
        shown = [
            run_cli(config, *args).stdout + run_cli(config, *args).stderr
            for args in (["status"], ["status", "--json"], ["status", "bad"], ["events"])
        ]
        assert daemon.stop() == 0
        assert plain_client(authed).xlen("copy") == 50

        logged = "\n".join(json.dumps(event) for event in daemon.events)
        state = "\n".join(p.read_text(errors="replace") for p in (tmp_path / "state").iterdir())
        for text in (logged, state, *shown):
            assert SECRET not in text
            assert "wrong-password-xyz" not in text
            assert "wrong-in-url-abc" not in text
        assert "Traceback" not in shown[0]
    finally:
        server.kill()


def test_non_utf8_and_huge_entries(
    daemons: Callable[..., DaemonProcess], tmp_path: Path, redis_server: RedisServer
) -> None:
    """A non-UTF-8 entry goes to the dead-letter file, a 4 MB one passes; nothing else lost."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.xadd("s", {"n": "0"})
    client.xadd("s", {"n": b"\xc3\x28"})
    client.xadd("s", {"n": "2", "big": "y" * (4 << 20)})
    client.xadd("s", {"n": "3"})
    job = job_toml(
        redis_server.url,
        extra='[records]\non_error = "dead_letter"\ndead_letter = "../dead.jsonl"',
    )
    config = write_config(tmp_path, {"r": job})
    daemon = daemons(config)
    until(daemon, lambda: len(written(tmp_path / "out.jsonl")) == 3)
    assert daemon.stop() == 0
    assert written(tmp_path / "out.jsonl") == [0, 2, 3]
    (dead,) = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert dead["record"]["fields"] == {"n": "\\xc3("}
    assert "is not UTF-8 text" in dead["error"]


def test_status_shows_position_and_lag(
    daemons: Callable[..., DaemonProcess], tmp_path: Path, redis_server: RedisServer
) -> None:
    """`status --json` shows the source's mode, position and the group's lag."""
    add(redis_server.url, 10)
    config = write_config(
        tmp_path, {"r": job_toml(redis_server.url, 'group = "g"\nconsumer = "c"')}
    )
    daemon = daemons(config)
    until(daemon, lambda: len(written(tmp_path / "out.jsonl")) == 10)
    add(redis_server.url, 1, start=10)
    until(daemon, lambda: len(written(tmp_path / "out.jsonl")) == 11)
    (status,) = json.loads(run_cli(config, "status", "--json").stdout)
    table = run_cli(config, "status").stdout
    assert daemon.stop() == 0
    source = status["source"]
    assert (source["mode"], source["group"], source["consumer"]) == ("shared", "g", "c")
    assert source["lag"] == 0
    assert source["position"] == status["offset"]["last"]
    header, row = table.splitlines()
    assert row[header.index("LAG") :].split()[0] == "0"
