"""The operator's side of the control socket under attack (issue 13): an impostor socket,
terminal escapes in what the daemon shows, and the daemon's own error behind a broken pipe.

Each test is the attack itself, against the real daemon and the real CLI as subprocesses;
the ones that need a second user create a throwaway one (root only).
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_process import DaemonProcess, write_config
from tests.helpers import run_cli as cli
from tests.helpers import throwaway_user

pytestmark = pytest.mark.slow

DAEMON = """\
[supervisor]
log_format = "json"
log_level = "info"
shutdown_timeout = "10s"
control_socket = "{socket}"
[defaults]
suspend_on_failure = true
"""
TICKS = """
    [source]
    type = "generate"
    rate = 100
    [sink]
    type = "null"
"""
SYSTEM_PYTHON = Path("/usr/bin/python3")
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not SYSTEM_PYTHON.exists(),
    reason="needs root (to create a throwaway second user) and a system python3 it can run",
)


@pytest.fixture
def other_user() -> Iterator[str]:
    """A throwaway system user, removed afterwards."""
    with throwaway_user(f"ss-b2-{os.getpid() % 100000}") as name:
        yield name


# --- 13.6: a socket another user binds in the daemon's place ------------------------------

IMPOSTOR = """
import json, socket, sys
server = socket.socket(socket.AF_UNIX)
server.bind(sys.argv[1])
server.listen(8)
print("ready", flush=True)
forged = [{"job": "ticks", "state": "running", "since": "2026-01-01T00:00:00+00:00",
           "offset": 1, "records_per_s": 1.0, "attempt": 0, "next_retry_in": None,
           "error": None, "persist_pending": False}]
while True:
    client, _ = server.accept()
    try:
        line = client.makefile("rb").readline()
        if line:
            print("received", line.decode().strip(), flush=True)
        client.sendall((json.dumps({"v": 1, "ok": True, "result": forged}) + "\\n").encode())
    except OSError:
        pass  # a client that hung up
    client.close()
"""


def _impostor(user: str, socket_path: Path) -> subprocess.Popen[str]:
    """Another user's fake daemon listening on `socket_path`, once it says it is ready."""
    # setuid in the child rather than runuser, which would stay between us and the
    # process to kill.
    account = pwd.getpwnam(user)
    process = subprocess.Popen(
        [str(SYSTEM_PYTHON), "-c", IMPOSTOR, str(socket_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        user=account.pw_uid,
        group=account.pw_gid,
        extra_groups=[],
    )
    assert process.stdout is not None
    ready = process.stdout.readline()
    assert ready == "ready\n", process.stderr.read() if process.stderr else ready
    return process


def _received(process: subprocess.Popen[str]) -> list[str]:
    process.kill()
    out, _ = process.communicate(timeout=30)
    return [line for line in out.splitlines() if line.startswith("received")]


@needs_root
def test_the_cli_refuses_a_socket_another_user_bound_first(other_user: str) -> None:
    """With control_socket in a directory anyone can write (/tmp-like, 1777), another user
    binds it before the daemon: the CLI shows none of its forged status, sends it no
    offset, and exits 4 naming that user's uid (it once printed the forged table)."""
    uid = pwd.getpwnam(other_user).pw_uid
    with tempfile.TemporaryDirectory(dir="/tmp") as shared:
        root = Path(shared)
        root.chmod(0o755)
        run = root / "run"
        run.mkdir()
        run.chmod(0o1777)
        config = write_config(root, {"ticks": TICKS}, DAEMON.format(socket="run/s.sock"))
        impostor = _impostor(other_user, run / "s.sock")
        try:
            status = cli(config, "status")
            offset = cli(config, "offset", "ticks", "--set", "5")
        finally:
            received = _received(impostor)
    for result in (status, offset):
        assert result.returncode == 4, result
        assert f"served by uid {uid}" in result.stderr
        assert "RUNNING" not in result.stdout
    assert received == []  # not even the request: it learns nothing


@needs_root
def test_the_cli_talks_to_the_owner_of_the_socket_directory(other_user: str) -> None:
    """A server run by the user who owns the socket's directory (the daemon's user under
    systemd: RuntimeDirectory) is the daemon, so the CLI takes its answer."""
    with tempfile.TemporaryDirectory(dir="/tmp") as shared:
        root = Path(shared)
        root.chmod(0o755)
        run = root / "run"
        run.mkdir(mode=0o755)
        os.chown(run, pwd.getpwnam(other_user).pw_uid, -1)
        config = write_config(root, {"ticks": TICKS}, DAEMON.format(socket="run/s.sock"))
        server = _impostor(other_user, run / "s.sock")
        try:
            status = cli(config, "status")
        finally:
            received = _received(server)
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[1].split()[:2] == ["ticks", "RUNNING"]
    assert len(received) == 1


def test_the_daemon_refuses_a_socket_directory_others_can_write(tmp_path: Path) -> None:
    """`supervisor run` with control_socket in a group- or world-writable directory exits 1
    before listening, naming the directory and the chmod that fixes it."""
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(0o1777)
    config = write_config(tmp_path, {"ticks": TICKS}, DAEMON.format(socket="run/s.sock"))
    said = _refused_at_start(DaemonProcess(config))
    assert f"control socket directory {run} is writable by its group or others" in said
    assert f"`chmod go-w {run}`" in said


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the directory away")
def test_the_daemon_refuses_a_socket_directory_another_user_owns(tmp_path: Path) -> None:
    """`supervisor run` with control_socket in a directory owned by another user (who could
    swap the socket) exits 1, naming the directory and the chown that fixes it."""
    run = tmp_path / "run"
    run.mkdir(mode=0o755)
    os.chown(run, 65534, 65534)
    config = write_config(tmp_path, {"ticks": TICKS}, DAEMON.format(socket="run/s.sock"))
    said = _refused_at_start(DaemonProcess(config))
    assert f"control socket directory {run} is owned by uid 65534" in said
    assert f"`chown {os.geteuid()} {run}`" in said


def _refused_at_start(daemon: DaemonProcess) -> str:
    """What the daemon said before exiting 1; fails (and stops it) if it listened instead."""
    for event in daemon.iter_events():
        if event.get("event") == "control.listening":
            daemon.stop()
            pytest.fail(f"the daemon listened: {event}")
    assert daemon.finish() == 1
    return "\n".join(str(event) for event in daemon.events)


# --- the real daemon, for the two attacks below --------------------------------------------

EVIL_SOURCE = """\
from supervisor import FatalError

class Source:
    async def open(self, offset):
        raise FatalError(
            "cannot open /var/log/\\x1b]0;owned\\x07\\x1b[2J\\u202egol.txt\\u202c\\x9b31m\\x7f"
        )

    async def read(self, max_records, wait):
        raise AssertionError("never opened")

    async def close(self):
        pass
"""
EVIL_JOB = """
    [source]
    type = "python"
    class = "evil:Source"
    [sink]
    type = "null"
"""
TERMINAL_CONTROLS = ("\x1b", "\x07", "\x9b", "\x7f", "\u202e", "\u202c")


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[DaemonProcess, Path]]:
    (tmp_path / "evil.py").write_text(EVIL_SOURCE)
    config = write_config(
        tmp_path,
        {"ticks": TICKS, "evil": EVIL_JOB},
        DAEMON.format(socket="supervisor.sock"),
    )
    process = DaemonProcess(config, env={"PYTHONPATH": str(tmp_path)})
    process.wait_for("control.listening")
    process.wait_for("job.state_changed", job="evil", to="suspended")
    process.keep_draining()
    yield process, config
    process.stop()


def test_terminal_escapes_in_a_cause_reach_no_terminal(daemon: tuple[DaemonProcess, Path]) -> None:
    """An error message holding ESC sequences, BEL, C1 controls, DEL and bidi overrides (say,
    from a file name) is shown escaped by `status`, `status JOB` and CLI errors; --json
    stays JSON."""
    _, config = daemon
    table = cli(config, "status")
    detail = cli(config, "status", "evil")
    refused = cli(config, "pause", "no\x1b[2Jsuch\u202e")
    for result in (table, detail, refused):
        shown = result.stdout + result.stderr
        assert not any(char in shown for char in TERMINAL_CONTROLS), repr(shown)
    assert r"\x1b]0;owned\x07\x1b[2J\u202egol.txt" in detail.stdout
    assert r"/var/log/\x1b]0" in table.stdout
    assert r"no job named no\x1b[2Jsuch\u202e" in refused.stderr
    as_json = json.loads(cli(config, "status", "--json").stdout)
    evil = next(job for job in as_json if job["job"] == "evil")
    assert "\x1b]0;owned\x07" in evil["error"]


# --- 13.5 (CLI half): the daemon's error, not a broken pipe --------------------------------


def test_a_refused_request_shows_the_daemons_reason_not_a_broken_pipe(
    daemon: tuple[DaemonProcess, Path],
) -> None:
    """A request the daemon refuses before reading all of it (here: longer than 64 KiB) is
    reported with the daemon's own error line, exit 1; the CLI once said only
    "Broken pipe" or "Connection reset" (exit 4), as if the daemon were gone."""
    _, config = daemon
    names = [f"job{n:05d}" for n in range(30_000)]  # 300 KB: more than the socket buffers
    result = cli(config, "status", *names)
    assert result.returncode == 1, result.stderr
    assert "longer than 65536 bytes" in result.stderr
    assert "Broken pipe" not in result.stderr and "reset" not in result.stderr


def test_events_follow_says_when_the_daemon_goes_away(daemon: tuple[DaemonProcess, Path]) -> None:
    """`events --follow` exits 4 with a message when the daemon dies (it once exited 0,
    silently, as if the stream had simply ended)."""
    process, config = daemon
    follower = subprocess.Popen(
        [sys.executable, "-m", "supervisor", "events", "--follow", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert follower.stdout is not None
    assert json.loads(follower.stdout.readline())["job"] in ("ticks", "evil")
    process.process.kill()
    _, err = follower.communicate(timeout=30)
    assert follower.returncode == 4, err
    assert "ended the event stream" in err
