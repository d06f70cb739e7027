"""Files read or written are never reached through a symlink, and must be regular files.

Each test replays an attack from issue 13 as another local user would make it:
an application that owns the directory being tailed, or the directory a sink
writes to, plants a symlink (or a FIFO) there. The tests run as root, create a
throwaway user with ``useradd`` and plant things as that user with ``runuser``.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from supervisor.codec import JSON
from supervisor.config.model import RecordsPolicy
from supervisor.connectors.file import FileSourceConfig
from supervisor.connectors.file.source import FileSource
from supervisor.connectors.jsonl import JsonlSinkConfig
from supervisor.connectors.jsonl.sink import JsonlSink
from supervisor.connectors.jsonl.torn_line import is_torn_json_line
from supervisor.connectors.sqlite import SqliteSinkConfig
from supervisor.connectors.sqlite.sink import SqliteSink, table_rows
from supervisor.errors import FatalError, UnsafeFile
from supervisor.processing import BatchProcessor
from supervisor.protocols import Record, Rejected
from tests.daemon_process import DaemonProcess, write_config
from tests.helpers import throwaway_user

SECRET = "private bytes only the daemon's user may read"
_users = itertools.count()

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None or shutil.which("runuser") is None,
    reason="needs root with useradd and runuser: the attacks are made by a throwaway local user",
)


@dataclass(frozen=True)
class Stage:
    """A directory tree other users can traverse, an attacker, and a private file."""

    root: Path
    attacker: str
    secret: Path
    """0600, owned by root, in a directory only root may enter."""
    app_dir: Path
    """Owned by the attacker: the directory an application logs to, or a sink writes to."""

    def as_attacker(self, *command: str) -> None:
        subprocess.run(["runuser", "-u", self.attacker, "--", *command], check=True)


@pytest.fixture
def stage() -> Iterator[Stage]:
    if os.geteuid() != 0:  # pragma: no cover - the marker skips first
        pytest.skip("needs root")
    # pytest's tmp_path is under a 0700 directory the attacker could not enter.
    with (
        throwaway_user(f"ss-a-{os.getpid() % 100_000}-{next(_users)}") as name,
        tempfile.TemporaryDirectory(prefix="ss-a-security-", dir="/tmp") as shared,
    ):
        root = Path(shared)
        root.chmod(0o755)
        private = root / "private"
        private.mkdir(mode=0o700)
        secret = private / "secret.txt"
        secret.write_text(SECRET + "\n")
        secret.chmod(0o600)
        app_dir = root / "app"
        app_dir.mkdir(mode=0o755)
        shutil.chown(app_dir, user=name)
        yield Stage(root, name, secret, app_dir)


def _daemon(stage: Stage, job: str) -> DaemonProcess:
    config = write_config(stage.root / "conf", {"victim": job})
    return DaemonProcess(config, "--exit-when-idle")


def _failed_cause(daemon: DaemonProcess) -> str:
    """The cause of the job's failure; kills a daemon wedged for 60 s so the test fails."""
    watchdog = threading.Timer(60, daemon.process.kill)
    watchdog.start()
    try:
        failed = daemon.wait_for("job.state_changed", to="failed")
        assert daemon.finish() == 1  # --exit-when-idle: 1 when a job ended failed
    finally:
        watchdog.cancel()
    cause: str = failed["cause"]
    return cause


# --- the file source (finding 1) ----------------------------------------------------------


@needs_root
def test_a_symlink_planted_at_the_source_path_is_refused_not_copied(stage: Stage) -> None:
    """The application plants app.log -> a private file: the job fails naming the path,
    and not a byte of the private file reaches the sink."""
    log_path = stage.app_dir / "app.log"
    stage.as_attacker("ln", "-s", str(stage.secret), str(log_path))
    out = stage.root / "out.jsonl"
    daemon = _daemon(
        stage,
        f"""
        [source]
        type = "file"
        path = "{log_path}"
        follow = false
        [sink]
        type = "jsonl"
        path = "{out}"
        """,
    )
    cause = _failed_cause(daemon)
    assert str(log_path) in cause
    assert "symbolic link" in cause
    assert not out.exists() or SECRET not in out.read_text()


@needs_root
@pytest.mark.anyio
async def test_a_symlinked_rotated_copy_with_forged_mtimes_is_never_read(stage: Stage) -> None:
    """The application rotates its log beside a planted "app.log.1" symlink to a private
    file, with mtimes forged to put it next in rotation order: the source skips it."""
    log_path = stage.app_dir / "app.log"
    stage.as_attacker("sh", "-c", f"printf 'a\\n' > {log_path}")
    os.utime(stage.secret, (1_300_000_000, 1_300_000_000))  # last changed in 2011
    source = FileSource(FileSourceConfig(path=log_path, poll_interval=0.01))
    await source.open(None)
    try:
        assert (await source.read(10, 0.05)).records == ["a"]
        stage.as_attacker("ln", "-s", str(stage.secret), f"{log_path}.1")
        stage.as_attacker("touch", "-d", "2001-01-01", str(log_path))  # older than the secret
        stage.as_attacker("mv", str(log_path), f"{log_path}.0")
        stage.as_attacker("sh", "-c", f"printf 'b\\n' > {log_path}")
        records: list[Record] = []
        with anyio.fail_after(30):
            while "b" not in records:
                batch = await source.read(10, 0.05)
                records += batch.records
                assert not any(SECRET in str(record) for record in records)
    finally:
        await source.close()
    assert records == ["b"]


@needs_root
@pytest.mark.anyio
async def test_follow_symlinks_reads_through_a_link_its_target_owner_made(stage: Stage) -> None:
    """follow_symlinks = true: a link to a file of the same owner is read through."""
    target = stage.app_dir / "app-2026-12-03.log"
    stage.as_attacker("sh", "-c", f"printf 'x\\n' > {target}")
    stage.as_attacker("ln", "-s", target.name, str(stage.app_dir / "app.log"))
    config = FileSourceConfig(path=stage.app_dir / "app.log", follow=False, follow_symlinks=True)
    source = FileSource(config)
    await source.open(None)
    try:
        assert (await source.read(10, 0.05)).records == ["x"]
    finally:
        await source.close()


@needs_root
@pytest.mark.anyio
async def test_follow_symlinks_refuses_a_link_to_another_owners_file(stage: Stage) -> None:
    """follow_symlinks = true: a link whose target has another owner is refused, naming both."""
    link = stage.app_dir / "app.log"
    stage.as_attacker("ln", "-s", str(stage.secret), str(link))
    source = FileSource(FileSourceConfig(path=link, follow=False, follow_symlinks=True))
    with pytest.raises(UnsafeFile) as refused:
        await source.open(None)
    await source.close()
    assert str(link) in str(refused.value)
    assert str(stage.secret) in str(refused.value)


@pytest.mark.anyio
async def test_follow_symlinks_refuses_a_link_to_a_fifo_or_to_another_link(tmp_path: Path) -> None:
    """follow_symlinks = true follows one link, to a regular file: a FIFO or a second link
    behind it is refused, saying which, and nothing blocks."""
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "to-fifo").symlink_to("fifo")
    (tmp_path / "to-link").symlink_to("to-fifo")
    for name, kind in (("to-fifo", "a FIFO"), ("to-link", "a symbolic link")):
        source = FileSource(FileSourceConfig(path=tmp_path / name, follow_symlinks=True))
        with pytest.raises(UnsafeFile, match=f"which is {kind}: refused"):
            await source.open(None)
        await source.close()


@needs_root
@pytest.mark.anyio
async def test_a_source_directory_others_can_write_is_warned_about(stage: Stage) -> None:
    """Tailing a file in a directory another user can write logs a warning naming it."""
    log_path = stage.app_dir / "app.log"
    stage.as_attacker("sh", "-c", f"printf 'a\\n' > {log_path}")
    safe = stage.root / "safe.log"
    safe.write_text("a\n")
    with capture_logs() as logs:
        for path in (log_path, safe):
            source = FileSource(FileSourceConfig(path=path, follow=False))
            await source.open(None)
            await source.close()
    warnings = [e for e in logs if e["event"] == "source.file.directory_writable"]
    assert [w["directory"] for w in warnings] == [str(stage.app_dir)]
    assert warnings[0]["owner_uid"] != 0


# --- sinks and the dead-letter file (finding 2) -----------------------------------------

_VICTIM_CONFIG = 'key = "value"'  # another program's file, with no final newline


@needs_root
@pytest.mark.parametrize("sink", ["jsonl", "dead_letter", "sqlite"])
def test_a_symlink_planted_at_a_sink_path_is_refused(stage: Stage, sink: str) -> None:
    """Another user plants the sink's file as a symlink to a config file or another
    job's database: the job fails naming the path and the target is untouched."""
    victims = stage.root / "victims"
    victims.mkdir()
    config_file = victims / "other.toml"
    config_file.write_text(_VICTIM_CONFIG)
    other_db = victims / "other.db"
    with closing(sqlite3.connect(other_db)) as db:
        db.execute("CREATE TABLE records (id INTEGER PRIMARY KEY, record TEXT NOT NULL)")
        db.execute("INSERT INTO records (record) VALUES ('theirs')")
        db.commit()
    source_file = stage.root / "in.jsonl"
    source_file.write_text('{"n": 1}\nnot json\n')
    planted = stage.app_dir / ("out.db" if sink == "sqlite" else "out.jsonl")
    target = other_db if sink == "sqlite" else config_file
    stage.as_attacker("ln", "-s", str(target), str(planted))
    sink_table = (
        f'type = "sqlite"\npath = "{planted}"'
        if sink == "sqlite"
        else f'type = "jsonl"\npath = "{planted if sink == "jsonl" else stage.root / "out"}"'
    )
    records = (
        f'on_error = "dead_letter"\ndead_letter = "{planted}"'
        if sink == "dead_letter"
        else 'on_error = "skip"'
    )
    daemon = _daemon(
        stage,
        f"""
        [source]
        type = "file"
        path = "{source_file}"
        format = "jsonl"
        follow = false
        [sink]
        {sink_table}
        [records]
        {records}
        """,
    )
    cause = _failed_cause(daemon)
    assert str(planted) in cause
    assert "symbolic link" in cause
    assert config_file.read_text() == _VICTIM_CONFIG
    assert table_rows(other_db) == ["theirs"]


@pytest.mark.anyio
async def test_jsonl_sink_never_cuts_a_last_line_it_did_not_tear(tmp_path: Path) -> None:
    """A jsonl sink pointed at a file that does not end in a torn JSON line refuses to
    open and leaves it whole (it used to cut everything after the last newline)."""
    for content in (_VICTIM_CONFIG, '{"a":1}\nplain text, no newline', "x\n[section]"):
        path = tmp_path / "out.jsonl"
        path.write_text(content)
        sink = JsonlSink(JsonlSinkConfig(path=path))
        with pytest.raises(FatalError, match="torn"):
            await sink.open()
        await sink.close()
        assert path.read_text() == content


@pytest.mark.anyio
async def test_jsonl_sink_cuts_a_torn_json_line_and_a_zero_filled_tail(tmp_path: Path) -> None:
    """What a crash leaves (half a JSON line, or zeros after a power cut) is still cut off."""
    for tail in (b'{"b":"h\xc3', b"\0\0\0\0", b'["x",\0\0'):
        path = tmp_path / "out.jsonl"
        path.write_bytes(b'{"a":1}\n' + tail)
        sink = JsonlSink(JsonlSinkConfig(path=path))
        await sink.open()
        await sink.close()
        assert path.read_bytes() == b'{"a":1}\n'


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(record=_json, cut=st.integers(0), zeros=st.integers(0, 8))
def test_every_cut_of_a_line_the_sink_writes_is_a_torn_json_line(
    record: Record, cut: int, zeros: int
) -> None:
    """Whatever a crash leaves of a line the sink writes (cut anywhere, zero-filled) is torn."""
    line = JSON.dump_lines([record])[:-1]
    assert is_torn_json_line(line[: cut % (len(line) + 1)] + b"\0" * zeros)


@pytest.mark.parametrize(
    "tail",
    [b'key = "value"', b"[section]", b"plain", b'{"a":1}{', b'{"a" :1', b"01", b"[1,]", b"\xff"],
)
def test_text_other_programs_write_is_not_a_torn_json_line(tail: bytes) -> None:
    """A config line, plain text, whitespace between tokens or bad JSON is not torn JSON."""
    assert not is_torn_json_line(tail)


@pytest.mark.anyio
async def test_files_the_sinks_create_are_not_readable_by_others(tmp_path: Path) -> None:
    """The jsonl sink, the dead-letter file and the sqlite sink create files 0640, not 0644."""
    jsonl = JsonlSink(JsonlSinkConfig(path=tmp_path / "out.jsonl"))
    await jsonl.open()
    await jsonl.close()
    dead = BatchProcessor(
        "job",
        None,
        RecordsPolicy(on_error="dead_letter", dead_letter=tmp_path / "dead.jsonl"),
    )
    await dead.reject([Rejected("bad", ValueError("bad"))])
    db = SqliteSink(SqliteSinkConfig(path=tmp_path / "out.db"), "job")
    await db.open()
    await db.write([{"a": 1}])
    await db.flush(1)
    await db.close()
    for name in ("out.jsonl", "dead.jsonl", "out.db"):
        mode = stat.S_IMODE((tmp_path / name).stat().st_mode)
        assert mode & 0o007 == 0, f"{name} is {mode:04o}"
        assert mode & 0o640 == 0o640, f"{name} is {mode:04o}"


@pytest.mark.anyio
async def test_a_database_swapped_for_a_symlink_while_the_sqlite_sink_opens_it_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A symlink renamed over the database between the sink's check and SQLite's open (a
    race another user who can write the directory may win) is refused; its target is
    untouched."""
    other = tmp_path / "other.db"
    with closing(sqlite3.connect(other)) as db:
        db.execute("CREATE TABLE records (id INTEGER PRIMARY KEY, record TEXT NOT NULL)")
        db.commit()
    path = tmp_path / "out.db"
    real_connect = sqlite3.connect

    def swap_then_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        link = tmp_path / "planted"
        link.symlink_to(other)
        link.replace(path)  # rename is atomic: the race is won at its narrowest
        connection: sqlite3.Connection = real_connect(*args, **kwargs)
        return connection

    monkeypatch.setattr(sqlite3, "connect", swap_then_connect)
    sink = SqliteSink(SqliteSinkConfig(path=path), "job")
    try:
        with pytest.raises(UnsafeFile, match="replaced"):
            await sink.open()
    finally:
        await sink.close()
        monkeypatch.undo()
    assert table_rows(other) == []
    assert [row[0] for row in sqlite3.connect(other).execute("SELECT name FROM sqlite_master")] == [
        "records"
    ]


# --- special files (the file-opening half of finding 3) ---------------------------------


def _unblock_after(seconds: float, fifo: Path, flags: int) -> threading.Timer:
    """Open the FIFO's other end later, so code that blocks on it fails instead of hanging."""
    timer = threading.Timer(seconds, lambda: os.close(os.open(fifo, flags | os.O_NONBLOCK)))
    timer.start()
    return timer


@pytest.mark.anyio
async def test_a_fifo_at_the_source_path_is_a_clear_error_not_a_hang(tmp_path: Path) -> None:
    """A FIFO where the log file should be fails the open at once, naming the path."""
    fifo = tmp_path / "app.log"
    os.mkfifo(fifo)
    source = FileSource(FileSourceConfig(path=fifo))
    timer = _unblock_after(10, fifo, os.O_WRONLY)
    try:
        with pytest.raises(UnsafeFile, match="FIFO") as refused:
            await source.open(None)
    finally:
        timer.cancel()
        await source.close()
    assert str(fifo) in str(refused.value)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["jsonl", "dead_letter", "sqlite"])
async def test_a_fifo_at_a_sink_path_is_a_clear_error_not_a_hang(tmp_path: Path, kind: str) -> None:
    """A FIFO at a sink's or the dead-letter file's path fails at once, naming the path."""
    fifo = tmp_path / "out"
    os.mkfifo(fifo)
    timer = _unblock_after(10, fifo, os.O_RDONLY)
    try:
        with pytest.raises(UnsafeFile, match="FIFO") as refused:
            if kind == "jsonl":
                sink = JsonlSink(JsonlSinkConfig(path=fifo))
                try:
                    await sink.open()
                finally:
                    await sink.close()
            elif kind == "sqlite":
                db = SqliteSink(SqliteSinkConfig(path=fifo), "job")
                try:
                    await db.open()
                finally:
                    await db.close()
            else:
                policy = RecordsPolicy(on_error="dead_letter", dead_letter=fifo)
                await BatchProcessor("job", None, policy).reject([Rejected("x", ValueError())])
    finally:
        timer.cancel()
    assert str(fifo) in str(refused.value)


@needs_root
def test_a_fifo_at_a_followed_path_fails_the_job_and_the_daemon_still_stops(
    stage: Stage,
) -> None:
    """The application puts a FIFO where its log was: the job fails with a message naming
    the path, and the daemon goes on to exit (it used to wedge a worker thread forever)."""
    fifo = stage.app_dir / "app.log"
    stage.as_attacker("mkfifo", str(fifo))
    daemon = _daemon(
        stage,
        f"""
        [source]
        type = "file"
        path = "{fifo}"
        [sink]
        type = "null"
        """,
    )
    cause = _failed_cause(daemon)
    assert str(fifo) in cause
    assert "FIFO" in cause


def test_forty_fifos_fail_their_jobs_and_starve_no_other_job(tmp_path: Path) -> None:
    """40 jobs whose followed path is a FIFO fail at once, each naming its path, and a
    healthy job beside them still runs to its end (the FIFOs used to hold all 40 of
    anyio's worker threads, so no other job's open, write or checkpoint ran again)."""
    jobs: dict[str, str] = {}
    for n in range(40):
        os.mkfifo(tmp_path / f"fifo-{n}.log")
        jobs[f"fifo-{n}"] = f"""
            [source]
            type = "file"
            path = "../fifo-{n}.log"
            [sink]
            type = "null"
            """
    (tmp_path / "in.log").write_text("a\nb\n")
    jobs["healthy"] = """
        [source]
        type = "file"
        path = "../in.log"
        follow = false
        [sink]
        type = "jsonl"
        path = "../out.jsonl"
        """
    daemon = DaemonProcess(write_config(tmp_path, jobs), "--exit-when-idle")
    watchdog = threading.Timer(60, daemon.process.kill)
    watchdog.start()
    try:
        assert daemon.finish() == 1  # --exit-when-idle: 1 when a job ended failed
    finally:
        watchdog.cancel()
    changes = [e for e in daemon.events if e.get("event") == "job.state_changed"]
    failed = {e["job"]: e["cause"] for e in changes if e["to"] == "failed"}
    assert sorted(failed) == sorted(f"fifo-{n}" for n in range(40))
    assert all(f"fifo-{job[5:]}.log is a FIFO" in cause for job, cause in failed.items())
    assert any(e["job"] == "healthy" and e["to"] == "finished" for e in changes)
    assert (tmp_path / "out.jsonl").read_text() == '"a"\n"b"\n'
