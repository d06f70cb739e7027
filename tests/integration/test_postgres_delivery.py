"""The ``postgres`` sink with the real daemon and a real server: exactly-once across a
SIGTERM and across SIGKILLs of the daemon, refused rows to the records policy, and a
clear error (no traceback) for each kind of bad input, with the password shown nowhere.

The long runs (server restarted 10 times, daemon SIGKILLed 20 times) are in
tests/soak/test_postgres_soak.py.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.daemon_process import DaemonProcess, write_config
from tests.helpers import run_cli
from tests.servers import PostgresServer, free_port

pytestmark = pytest.mark.slow

COUNT = 6_000


def postgres_job(
    url: str,
    *,
    count: int = COUNT,
    rate: int = 4000,
    table: str = "seqs",
    extra_sink: str = "",
    extra: str = "",
) -> str:
    return f"""
        [source]
        type = "generate"
        count = {count}
        rate = {rate}

        [sink]
        type = "postgres"
        url = "{url}"
        table = "{table}"
        columns = ["seq"]
        {extra_sink}

        [checkpoint]
        every_records = 500
        interval = "1s"

        [retry]
        initial = "0.05s"
        max = "0.5s"
        max_attempts = 0
        {extra}
    """


def seq_counts(server: PostgresServer, table: str = "seqs") -> tuple[int, int, int | None, int]:
    """(rows, distinct seqs, highest seq, seqs written more than once)."""
    [(rows, distinct, highest)] = server.query(
        f"SELECT count(*), count(DISTINCT seq), max(seq) FROM {table}"
    )
    [(repeated,)] = server.query(
        f"SELECT count(*) FROM (SELECT seq FROM {table} GROUP BY seq HAVING count(*) > 1) r"
    )
    return rows, distinct, highest, repeated


def test_sigterm_then_restart_writes_every_row_once(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    postgres_server.execute("CREATE TABLE seqs (seq bigint)")  # no key: repeats would show
    config = write_config(tmp_path, {"pg": postgres_job(postgres_server.url)})
    daemon = DaemonProcess(config, "--exit-when-idle")
    daemon.wait_for("job.checkpoint", count=3)
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.finish() == 0
    assert 0 < seq_counts(postgres_server)[0] < COUNT
    assert DaemonProcess(config, "--exit-when-idle").finish() == 0
    assert seq_counts(postgres_server) == (COUNT, COUNT, COUNT - 1, 0)


def test_sigkill_then_restart_writes_every_row_once(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """The sink's offset wins over the snapshot's: a kill between the commit and the
    snapshot repeats nothing."""
    postgres_server.execute("CREATE TABLE seqs (seq bigint)")
    config = write_config(tmp_path, {"pg": postgres_job(postgres_server.url)})
    for checkpoints in (2, 4):
        daemon = DaemonProcess(config, "--exit-when-idle")
        daemon.wait_for("job.checkpoint", count=checkpoints)
        daemon.kill()
    assert DaemonProcess(config, "--exit-when-idle").finish() == 0
    assert seq_counts(postgres_server) == (COUNT, COUNT, COUNT - 1, 0)


def spoil(record: dict[str, int]) -> dict[str, object]:
    """A processor for the refusal test: every 100th record breaks a CHECK, every 100th
    (offset by 50) is not a number."""
    seq = record["seq"]
    if seq % 100 == 7:
        return {"seq": seq, "amount": -1}
    if seq % 100 == 57:
        return {"seq": seq, "amount": "plenty"}
    return {"seq": seq, "amount": seq % 10}


def test_refused_rows_are_dead_lettered_and_the_rest_written(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    postgres_server.execute(
        "CREATE TABLE amounts (seq bigint PRIMARY KEY, amount integer CHECK (amount >= 0))"
    )
    dead = tmp_path / "dead.jsonl"
    job = postgres_job(
        postgres_server.url,
        count=3000,
        rate=0,
        table="amounts",
        extra=f"""
        [processor]
        function = "tests.integration.test_postgres_delivery:spoil"

        [records]
        on_error = "dead_letter"
        dead_letter = "{dead}"
        max_errors = 1000
        """,
    ).replace('columns = ["seq"]', 'columns = ["seq", "amount"]')
    config = write_config(tmp_path, {"pg": job})
    assert DaemonProcess(config, "--exit-when-idle").finish() == 0
    bad = {seq for seq in range(3000) if seq % 100 in (7, 57)}
    rows = [seq for (seq,) in postgres_server.query("SELECT seq FROM amounts ORDER BY seq")]
    assert rows == [seq for seq in range(3000) if seq not in bad]
    letters = [json.loads(line) for line in dead.read_text().splitlines()]
    assert sorted(letter["record"]["seq"] for letter in letters) == sorted(bad)
    errors = {letter["error"].split(":")[0] for letter in letters}
    assert errors == {"CheckViolation", "InvalidTextRepresentation"}


def _failed(config: Path, daemon: DaemonProcess, state: str) -> dict[str, object]:
    daemon.wait_for("job.state_changed", job="pg", to=state)
    [job] = json.loads(run_cli(config, "status", "--json").stdout)
    return dict(job)


@pytest.mark.parametrize(
    ("case", "state", "expected"),
    [
        ("wrong password", "failed", "sink.password: postgresql://supervisor_pw@127.0.0.1:"),
        ("missing table", "failed", "sink.table: no table nowhere on postgresql://"),
        ("unreachable", "retrying", "unavailable: Connection refused"),
    ],
)
def test_bad_input_gives_a_clear_error_and_never_shows_the_password(
    tmp_path: Path, postgres_server: PostgresServer, case: str, state: str, expected: str
) -> None:
    postgres_server.execute("CREATE TABLE seqs (seq bigint)")
    password = postgres_server.password
    url, table, secret = postgres_server.password_url, "seqs", f'password = "{password}"'
    if case == "wrong password":
        (tmp_path / "pw").write_text("not-" + password + "\n")
        secret = f'password_file = "{tmp_path / "pw"}"'
    elif case == "missing table":
        table = "nowhere"
    else:
        url = f"postgresql://u:{password}@127.0.0.1:{free_port()}/db"
        secret = ""
    extra = "max_attempts = 0" if state == "retrying" else ""
    job = postgres_job(url, table=table, extra_sink=secret).replace("max_attempts = 0", extra)
    config = write_config(tmp_path, {"pg": job})
    daemon = DaemonProcess(config)
    try:
        status = _failed(config, daemon, state)
    finally:
        daemon.stop()
    error = str(status.get("error") or status.get("cause") or status)
    assert expected in error, status
    assert "Traceback" not in error
    shown = json.dumps(status) + json.dumps(daemon.events)
    shown += run_cli(config, "events", "pg").stdout
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file():
            shown += path.read_text(errors="replace")
    assert password not in shown
    assert "not-" + password not in shown


def test_a_malformed_url_is_refused_by_check_without_a_traceback(tmp_path: Path) -> None:
    job = postgres_job("postgresql://u:Hunter2-secret@db.example.com:99999/x")
    config = write_config(tmp_path, {"pg": job})
    result = run_cli(config, "check")
    assert result.returncode == 2
    assert "sink.url: expected a postgresql:// URL, got 'postgresql://u:***@db.example" in (
        result.stdout + result.stderr
    )
    assert "Traceback" not in result.stderr
    assert "Hunter2-secret" not in result.stdout + result.stderr


def test_a_run_with_a_password_shows_it_nowhere(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """Connecting, writing, checkpointing, a clean stop, at debug level: the password in no
    log line, status, events or state file."""
    postgres_server.execute("CREATE TABLE seqs (seq bigint)")
    postgres_server.execute(f"GRANT ALL ON seqs TO {postgres_server.PASSWORD_USER}")
    password = postgres_server.password
    job = postgres_job(
        postgres_server.password_url, count=0, extra_sink='password_env = "PG_PASSWORD"'
    )
    config = write_config(tmp_path, {"pg": job})
    daemon = DaemonProcess(config, env={"PG_PASSWORD": password})
    try:
        daemon.wait_for("job.checkpoint", count=3)
        status = run_cli(config, "status", "--json").stdout
        events = run_cli(config, "events", "pg").stdout
    finally:
        assert daemon.stop() == 0
    assert json.loads(status)[0]["state"] == "running"
    shown = status + events + json.dumps(daemon.events)
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file():
            shown += path.read_text(errors="replace")
    assert password not in shown
    assert seq_counts(postgres_server)[0] > 0
