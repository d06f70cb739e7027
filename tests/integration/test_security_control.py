"""Attacks on the control socket's server side (issue 13: items 4, 5, 9, 12; issue 14:
item 19), each written as the attack itself against a real control socket.

Most run an in-process `Supervisor` with its real control server and talk to it over
the socket from a worker thread (blocking clients, as the CLI is). Attacks that need
another uid create throwaway users and run a system python as them (`runuser`); they
skip when not root.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from supervisor.components import DEFAULT_COMPONENTS, Components
from supervisor.config.model import Config, DaemonConfig, JobConfig
from supervisor.connectors.generate import GenerateSourceConfig
from supervisor.connectors.python import PythonSourceConfig
from supervisor.control.admission import MAX_CLIENTS, follower_limit, uid_limit
from supervisor.control.protocol import MAX_JOBS, MAX_REQUEST_BYTES, encode_json, encode_response
from supervisor.daemon import Supervisor
from supervisor.offsets import MAX_OFFSET_BYTES
from supervisor.states import JobState
from tests.daemon_process import DaemonProcess, write_config
from tests.helpers import make_job, throwaway_user
from tests.in_memory_store import InMemorySnapshotStore

pytestmark = pytest.mark.slow

SYSTEM_PYTHON = "/usr/bin/python3"
"""What a throwaway user runs: the test's own venv may sit where that user cannot read."""


# --- an in-process supervisor and a blocking client -----------------------------------


@contextlib.asynccontextmanager
async def serving(
    root: Path,
    jobs: tuple[JobConfig, ...],
    components: Components = DEFAULT_COMPONENTS,
    *,
    mode: int = 0o660,
) -> AsyncIterator[tuple[Supervisor, Path]]:
    """A running `Supervisor` with its real control socket at `root/control.sock`."""
    daemon = DaemonConfig(
        path=root / "supervisor.toml",
        state_dir=root / "state",
        control_socket=root / "control.sock",
        socket_mode=mode,
    )
    supervisor = Supervisor(
        Config(daemon=daemon, jobs=jobs), store=InMemorySnapshotStore(), components=components
    )
    async with anyio.create_task_group() as tasks:
        await tasks.start(supervisor.run)
        try:
            yield supervisor, daemon.control_socket
        finally:
            supervisor.request_stop()


async def until_finished(supervisor: Supervisor, job: str) -> None:
    with anyio.fail_after(30), supervisor.history.follow() as changes:
        while supervisor.owners[job].state is not JobState.FINISHED:
            await changes.receive()


def stopped(name: str) -> JobConfig:
    """A job that never runs (STOPPED): it only has to be there to be named."""
    return make_job(name, enabled=False)


def _strict(constant: str) -> Any:
    raise AssertionError(f"the reply holds {constant}, which is not JSON")


def replies(data: bytes) -> list[dict[str, Any]]:
    """Each response line, parsed as strict JSON (no NaN)."""
    return [json.loads(line, parse_constant=_strict) for line in data.splitlines()]


def exchange(path: Path, data: bytes, *, at_most: int = 1 << 20) -> bytes:
    """Send `data`, half-close, return what the daemon answers (failing past `at_most`)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(30)
        client.connect(os.fspath(path))
        client.sendall(data)
        client.shutdown(socket.SHUT_WR)
        received = bytearray()
        while chunk := client.recv(65536):
            received += chunk
            assert len(received) <= at_most, f"the reply is over {at_most:,} bytes"
        return bytes(received)


def line_of(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


async def ask(path: Path, body: dict[str, Any]) -> dict[str, Any]:
    (reply,) = replies(await anyio.to_thread.run_sync(exchange, path, line_of(body)))
    return reply


# --- 13.4: reply amplification --------------------------------------------------------


@pytest.mark.anyio
async def test_a_job_named_16000_times_is_answered_once(tmp_path: Path) -> None:
    """A 64 KB `status` naming one job 16,000 times gets one row, not 16,000."""
    # The attack: each repeat of the name cost a full row (and with a long failure
    # cause about 64 KB), so one request line made the daemon build a 1 GB reply.
    request = line_of({"v": 1, "verb": "status", "jobs": ["a"] * 16_000})
    assert 60_000 < len(request) < MAX_REQUEST_BYTES
    async with serving(tmp_path, (stopped("a"),)) as (_, path):
        data = await anyio.to_thread.run_sync(exchange, path, request)
    (reply,) = replies(data)
    assert [row["job"] for row in reply["result"]] == ["a"]


@pytest.mark.anyio
async def test_more_job_names_than_the_cap_are_refused_with_the_cap(tmp_path: Path) -> None:
    """A request naming more different jobs than `MAX_JOBS` is refused with an error naming
    the cap; one naming exactly `MAX_JOBS` is served."""
    names = [f"j{index}" for index in range(MAX_JOBS + 1)]
    async with serving(tmp_path, tuple(stopped(name) for name in names)) as (_, path):
        over = await ask(path, {"v": 1, "verb": "status", "jobs": names})
        at_cap = await ask(path, {"v": 1, "verb": "status", "jobs": names[:MAX_JOBS]})
    assert over == {
        "v": 1,
        "ok": False,
        "error": f"a request names at most {MAX_JOBS} different jobs (this one names "
        f"{MAX_JOBS + 1}): split it, or name none to mean every job",
    }
    assert len(at_cap["result"]) == MAX_JOBS


@pytest.mark.anyio
async def test_an_offset_over_64_kib_as_json_is_refused(tmp_path: Path) -> None:
    """`offset --set` refuses a value whose JSON (as `status` sends it) is over 64 KiB, and
    keeps the old offset; one under it is stored."""
    # 60,000 bytes on the wire, 180,002 in every `status` reply ("\u00e9" each).
    swollen = "\u00e9" * 30_000
    # A plugin source with no `check_offset` of its own: only the size rule applies.
    job = make_job("a", enabled=False, source=PythonSourceConfig(class_ref="no_such:Source"))
    async with serving(tmp_path, (job,)) as (supervisor, path):
        before = supervisor.owners["a"].ledger.offset
        refused = await ask(
            path, {"v": 1, "verb": "offset", "jobs": ["a"], "set": True, "value": swollen}
        )
        assert supervisor.owners["a"].ledger.offset == before
        fits = "x" * (MAX_OFFSET_BYTES - 100)
        stored = await ask(
            path, {"v": 1, "verb": "offset", "jobs": ["a"], "set": True, "value": fits}
        )
    assert refused["error"] == (
        "offset not set: it is 180,002 bytes as JSON, over the 64 KiB limit for an offset"
    )
    assert stored["result"]["offset"] == fits


@pytest.mark.anyio
async def test_a_reader_that_stops_reading_a_long_reply_costs_one_slice(tmp_path: Path) -> None:
    """While a client reads none of a 3,000-job `status`, the daemon holds a slice of the
    reply, not all of it; read on, the reply is whole and in order."""
    # The reply was built as one bytes object (and its parts, and asyncio's copy in its
    # write buffer) and held until the reader drained it: with 16,000 rows, 2 GB.
    names = [f"job{index:04}" for index in range(3000)]
    async with serving(tmp_path, tuple(stopped(name) for name in names)) as (_, path):

        def stall_then_read() -> tuple[int, int, bytes]:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(30)
                client.connect(os.fspath(path))
                tracemalloc.start()
                try:
                    baseline, _ = tracemalloc.get_traced_memory()
                    client.sendall(b'{"v": 1, "verb": "status"}\n')
                    first = client.recv(1)  # the daemon has started sending
                    held, _ = tracemalloc.get_traced_memory()
                finally:
                    tracemalloc.stop()
                rest = bytearray(first)
                while chunk := client.recv(65536):
                    rest += chunk
                return baseline, held, bytes(rest)

        baseline, held, data = await anyio.to_thread.run_sync(stall_then_read)
    (reply,) = replies(data)
    assert [row["job"] for row in reply["result"]] == names
    # Whatever the daemon is doing at this moment, it never holds more than a slice (and
    # asyncio's 64 KiB write buffer); before, the whole reply was held from here on.
    assert held - baseline < len(data) / 4, (held - baseline, len(data))


# --- 13.12: duplicate keys, NaN ----------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("request_line", "key"),
    [
        (b'{"v": 1, "verb": "status", "verb": "reload"}\n', "verb"),
        (b'{"v": 1, "verb": "offset", "jobs": ["a"], "set": true, "set": false}\n', "set"),
        (
            b'{"v": 1, "verb": "offset", "jobs": ["a"], "set": true, '
            b'"value": {"pos": 1, "pos": 2}}\n',
            "pos",
        ),
    ],
    ids=["verb", "flag", "in-offset"],
)
async def test_a_request_with_a_key_twice_is_refused(
    tmp_path: Path, request_line: bytes, key: str
) -> None:
    """A request with a repeated key is refused with an error naming it; nothing runs."""
    # json.loads keeps the last value: {"verb": "status", "verb": "reload"} reloaded.
    (tmp_path / "supervisor.toml").write_text("not toml: a reload would be refused and logged")
    async with serving(tmp_path, (stopped("a"),)) as (supervisor, path):
        offset = supervisor.owners["a"].ledger.offset
        (reply,) = replies(await anyio.to_thread.run_sync(exchange, path, request_line))
        assert supervisor.owners["a"].ledger.offset == offset
    assert reply == {"v": 1, "ok": False, "error": f'request has the key "{key}" more than once'}


def test_a_non_finite_float_in_a_reply_goes_out_as_strict_json() -> None:
    """A NaN or infinite float in a reply is sent as the string "NaN", "Infinity" or
    "-Infinity", in a whole reply and in a list sent slice by slice alike."""
    # A plugin's NaN offset went out as a bare NaN, which jq, JavaScript and Go refuse:
    # one job made every `status --json` unreadable. The snapshot now refuses such an
    # offset (supervisor.snapshot.check_offset), so this is the encoder's own guarantee
    # for whatever else a reply may carry.
    offset = {"nan": float("nan"), "up": float("inf"), "down": [float("-inf"), 1.5]}
    expected = {"nan": "NaN", "up": "Infinity", "down": ["-Infinity", 1.5]}
    (reply,) = replies(encode_response(ok=True, result={"offset": offset}))
    assert reply["result"] == {"offset": expected}
    slices = "[" + encode_json([offset, offset])[1:-1] + "]"
    assert json.loads(slices, parse_constant=_strict) == [expected, expected]


# --- 14.19: several requests on one connection -------------------------------------------


@pytest.mark.anyio
async def test_every_request_line_on_a_connection_is_answered_in_order(tmp_path: Path) -> None:
    """Three request lines sent at once on one connection get three replies, in order."""
    # Before, the daemon answered the first line and closed: the others were never run.
    lines = (
        b'{"v": 1, "verb": "status", "jobs": ["a"]}\n'
        b"not json\n"
        b'{"v": 1, "verb": "offset", "jobs": ["b"]}\n'
    )
    async with serving(tmp_path, (stopped("a"), stopped("b"))) as (_, path):
        answers = replies(await anyio.to_thread.run_sync(exchange, path, lines))
    assert [answer["ok"] for answer in answers] == [True, False, True]
    assert answers[0]["result"][0]["job"] == "a"
    assert answers[1]["error"].startswith("request is not JSON")
    assert answers[2]["result"]["job"] == "b"


@pytest.mark.anyio
async def test_a_line_after_events_follow_is_answered_with_an_error(tmp_path: Path) -> None:
    """`events --follow` takes the connection: a line sent after it ends the stream with an
    error saying the line was not run."""
    lines = b'{"v": 1, "verb": "events", "follow": true}\n{"v": 1, "verb": "status"}\n'
    async with serving(tmp_path, (make_job("a", source=GenerateSourceConfig(count=1)),)) as (
        _,
        path,
    ):
        answers = replies(await anyio.to_thread.run_sync(exchange, path, lines))
    assert answers[-1] == {
        "v": 1,
        "ok": False,
        "error": "events --follow takes the whole connection: what was sent after it is not run",
    }
    assert all(answer["ok"] for answer in answers[:-1])


# --- other users: throwaway accounts -------------------------------------------------------

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None or not Path(SYSTEM_PYTHON).exists(),
    reason="needs root, useradd and a system python3 (to act as other users)",
)


@dataclass(frozen=True)
class Accounts:
    group: int
    """A group the socket is given; `member` has it as a supplementary group."""
    member: str
    outsider: str


ACCOUNT_NAMES = ("ss-b1-member", "ss-b1-outsider")
GROUP_NAME = "ss-b1-socket"


def _remove_accounts() -> None:
    for name in ACCOUNT_NAMES:
        subprocess.run(["userdel", name], capture_output=True, check=False)
    subprocess.run(["groupdel", GROUP_NAME], capture_output=True, check=False)


@pytest.fixture(scope="module")
def accounts() -> Iterator[Accounts]:
    _remove_accounts()  # left over by an interrupted run
    try:
        subprocess.run(["groupadd", "--system", GROUP_NAME], check=True)
        member, outsider = ACCOUNT_NAMES
        useradd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
        subprocess.run([*useradd, "--groups", GROUP_NAME, member], check=True)
        subprocess.run([*useradd, outsider], check=True)
        yield Accounts(grp.getgrnam(GROUP_NAME).gr_gid, member, outsider)
    finally:
        _remove_accounts()


@pytest.fixture
def shared_dir(accounts: Accounts) -> Iterator[Path]:
    """A directory other users can reach (pytest's tmp dirs are not), setgid to the
    socket group: the socket made in it gets that group."""
    with tempfile.TemporaryDirectory(dir="/tmp") as shared:
        root = Path(shared)
        os.chown(root, 0, accounts.group)
        root.chmod(0o2755)
        yield root


PROBE = """\
import json, socket, sys
path, line = sys.argv[1], sys.argv[2].encode() + b"\\n"
s = socket.socket(socket.AF_UNIX); s.settimeout(30); s.connect(path)
try:
    s.sendall(line); s.shutdown(socket.SHUT_WR)
except OSError:
    pass  # refused before the request was read: the answer is there to read
data = b""
try:
    while chunk := s.recv(65536):
        data += chunk
except ConnectionResetError:
    pass  # closed with our request unread: what came before still counts
print(data.decode(), end="")
"""


def run_as(user: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", user, "--", SYSTEM_PYTHON, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@needs_root
@pytest.mark.anyio
async def test_a_member_of_the_socket_group_is_served_and_no_proc_file_is_read(
    accounts: Accounts, shared_dir: Path
) -> None:
    """A user with the socket's group as a supplementary group is served, a user without it
    is refused with an error saying who may connect, and the daemon reads nothing under
    /proc to decide (it takes the groups from the socket: SO_PEERGROUPS)."""
    # The /proc/PID/status read raced with pid reuse (a client that exits and another
    # user's process that takes its pid) and fails under the unit's ProtectProc=invisible.
    opened: list[str] = []

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and isinstance(args[0], str) and args[0].startswith("/proc/"):
            opened.append(args[0])

    sys.addaudithook(audit)  # cannot be removed; it only appends to a local list
    # World-writable, so that only the daemon's own check stands in the outsider's way.
    async with serving(shared_dir, (stopped("a"),), mode=0o666) as (_, path):
        assert path.stat().st_gid == accounts.group
        request = '{"v": 1, "verb": "status"}'
        opened.clear()
        member = await anyio.to_thread.run_sync(
            run_as, accounts.member, "-c", PROBE, str(path), request
        )
        outsider = await anyio.to_thread.run_sync(
            run_as, accounts.outsider, "-c", PROBE, str(path), request
        )
        reads = [name for name in opened if name.endswith("/status")]
    assert reads == []
    (served,) = replies(member.stdout.encode())
    assert served["ok"] is True and served["result"][0]["job"] == "a"
    (refused,) = replies(outsider.stdout.encode())
    assert refused["error"] == (
        "permission denied: only root, the daemon's user and members of group "
        f"{accounts.group} may use this socket"
    )


@needs_root
@pytest.mark.anyio
async def test_a_member_in_more_than_256_groups_is_served(
    accounts: Accounts, shared_dir: Path
) -> None:
    """A client in 300 supplementary groups, the socket's the last, is served (Python's
    getsockopt has room for 256; the daemon asks the kernel with a larger buffer)."""
    groups = [*range(70_000, 70_299), accounts.group]
    uid = pwd.getpwnam(accounts.outsider).pw_uid
    async with serving(shared_dir, (stopped("a"),)) as (_, path):

        def probe() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [SYSTEM_PYTHON, "-c", PROBE, str(path), '{"v": 1, "verb": "status"}'],
                capture_output=True,
                text=True,
                timeout=60,
                user=uid,
                group=uid,
                extra_groups=groups,
                check=False,
            )

        result = await anyio.to_thread.run_sync(probe)
    (reply,) = replies(result.stdout.encode())
    assert reply["ok"] is True, reply


FOLLOWERS = """\
import json, socket, sys
path, count = sys.argv[1], int(sys.argv[2])
follow = b'{"v": 1, "verb": "events", "follow": true}\\n'
clients, outcomes = [], {}
for _ in range(count):
    s = socket.socket(socket.AF_UNIX); s.settimeout(30); s.connect(path)
    try:
        s.sendall(follow)
    except OSError:
        pass
    reply = json.loads(s.makefile("rb").readline())
    key = "ok" if reply["ok"] else reply["error"]
    outcomes[key] = outcomes.get(key, 0) + 1
    clients.append(s)
print(json.dumps(outcomes), flush=True)
sys.stdin.readline()  # hold every connection until told
with clients[0].makefile("rb") as first:
    lines = first.read().splitlines()
print(json.loads(lines[-1]).get("error") if lines else "closed without a word", flush=True)
"""


@needs_root
@pytest.mark.anyio
async def test_260_idle_followers_of_one_user_lock_out_no_one(
    accounts: Accounts, shared_dir: Path
) -> None:
    """A member of the socket's group opening 260 `events --follow` clients gets a quarter
    of the slots (the rest are refused, saying why); root is still served, and root's new
    follower ends the oldest one, which is told why."""
    # Before, the 260 followers took all 256 slots; nothing could make room (only a
    # client yet to send a request could be dropped), so root too was turned away.
    job = make_job("a", source=GenerateSourceConfig(count=1))  # one change each follower sees
    async with serving(shared_dir, (job,)) as (supervisor, path):
        await until_finished(supervisor, "a")
        command = ["runuser", "-u", accounts.member, "--", SYSTEM_PYTHON, "-c", FOLLOWERS]
        async with await anyio.open_process([*command, str(path), "260"]) as attacker:
            assert attacker.stdin is not None and attacker.stdout is not None
            said = BufferedByteReceiveStream(attacker.stdout)
            with anyio.fail_after(60):
                outcomes = json.loads(await said.receive_until(b"\n", 1 << 16))
            status = await ask(path, {"v": 1, "verb": "status"})
            root_follows = await anyio.to_thread.run_sync(
                exchange_first_line, path, b'{"v": 1, "verb": "events", "follow": true}\n'
            )
            await attacker.stdin.send(b"go\n")
            with anyio.fail_after(60):
                evicted = (await said.receive_until(b"\n", 1 << 16)).decode()
    uid = pwd.getpwnam(accounts.member).pw_uid
    quarter = uid_limit(MAX_CLIENTS)
    assert outcomes == {
        "ok": quarter,
        f"too many control connections from uid {uid} (limit {quarter}): close some and "
        "try again": 260 - quarter,
    }
    assert status["ok"] is True
    assert root_follows["ok"] is True
    assert evicted == (
        f"events --follow ended: more than {follower_limit(MAX_CLIENTS)} clients followed "
        "events and this was the oldest; run it again"
    )


def exchange_first_line(path: Path, data: bytes) -> dict[str, Any]:
    """Send `data` and return the first reply line, leaving the sending side open."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(30)
        client.connect(os.fspath(path))
        client.sendall(data)
        with client.makefile("rb") as lines:
            (reply,) = replies(lines.readline())
            return reply


# --- 13.9 under ProtectProc=invisible: the real daemon, as its own user ------------------


DAEMON_USER = "ss-b1-daemon"


@pytest.fixture
def daemon_user() -> Iterator[str]:
    with throwaway_user(DAEMON_USER) as name:
        yield name


@needs_root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")
def test_a_daemon_that_cannot_see_other_users_processes_serves_group_members(
    accounts: Accounts, shared_dir: Path, daemon_user: str
) -> None:
    """The real daemon, as its own user with /proc mounted hidepid=invisible (what the unit's
    ProtectProc=invisible does), serves a member of the socket's group."""
    # Before, it looked the member's groups up in /proc/PID/status, which it cannot see
    # there: every member whose primary group is not the socket's was refused.
    user = pwd.getpwnam(daemon_user)
    config = write_config(shared_dir, {}, '[supervisor]\nlog_format = "json"\n')
    for path in (shared_dir, *shared_dir.rglob("*")):
        os.chown(path, user.pw_uid, accounts.group)
    shared_dir.chmod(0o2755)  # chown may clear setgid
    hidden_proc = (
        'uid="$0" gid="$1"; shift; mount -t proc -o hidepid=invisible proc /proc && '
        'exec setpriv --reuid "$uid" --regid "$gid" --clear-groups -- "$@"'
    )
    process = DaemonProcess(
        config,
        wrapper=(
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            hidden_proc,
            str(user.pw_uid),
            str(accounts.group),
        ),
    )
    try:
        process.wait_for("control.listening")
        socket_path = shared_dir / "supervisor.sock"
        status = '{"v": 1, "verb": "status"}'
        member = run_as(accounts.member, "-c", PROBE, str(socket_path), status)
        (reply,) = replies(member.stdout.encode())
        assert reply == {"v": 1, "ok": True, "result": []}
    finally:
        process.stop()


HOLD_REPLIES = """\
import socket, sys
path, count = sys.argv[1], int(sys.argv[2])
held = []
for _ in range(count):
    s = socket.socket(socket.AF_UNIX); s.settimeout(30); s.connect(path)
    s.sendall(b'{"v": 1, "verb": "status"}\\n')
    s.recv(1)  # the daemon is sending: a reply far larger than the socket holds
    held.append(s)
print("holding", flush=True)
sys.stdin.readline()
"""


@needs_root
def test_the_last_slot_is_kept_for_root_when_other_users_take_the_rest(
    accounts: Accounts, shared_dir: Path
) -> None:
    """With every slot but the reserved one busy sending replies to other users' clients that
    do not read, another user is told to try again and root is still served."""
    # Before, root was turned away like everyone else once the busy clients took every slot.
    stopped_job = 'enabled = false\n[source]\ntype = "generate"\n[sink]\ntype = "null"\n'
    # 3,000 stopped jobs: a `status` of about 600 KB, more than the socket holds.
    jobs = {f"j{index:04}": stopped_job for index in range(3000)}
    config = write_config(shared_dir, jobs, '[supervisor]\nlog_format = "json"\n')
    process = DaemonProcess(config)
    holders: list[subprocess.Popen[str]] = []
    try:
        socket_path = shared_dir / "supervisor.sock"
        status = line_of({"v": 1, "verb": "status", "jobs": ["j0000"]})
        process.wait_for("control.listening")
        process.keep_draining()
        limits = resource.prlimit(process.process.pid, resource.RLIMIT_NOFILE)
        resource.prlimit(process.process.pid, resource.RLIMIT_NOFILE, (64, limits[1]))
        slots = 64 // 4
        per_uid = uid_limit(slots)
        # Other users, the socket's group their primary one: 4 uids of 4, the last of 3.
        uids = range(71_000, 71_000 + -(-(slots - 1) // per_uid))
        for index, uid in enumerate(uids):
            count = min(per_uid, slots - 1 - index * per_uid)
            holders.append(
                subprocess.Popen(
                    [SYSTEM_PYTHON, "-c", HOLD_REPLIES, str(socket_path), str(count)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    user=uid,
                    group=accounts.group,
                    extra_groups=[],
                )
            )
        for holder in holders:
            assert holder.stdout is not None
            assert holder.stdout.readline() == "holding\n"
        other = subprocess.run(
            [SYSTEM_PYTHON, "-c", PROBE, str(socket_path), status.decode().strip()],
            capture_output=True,
            text=True,
            timeout=60,
            user=72_000,
            group=accounts.group,
            extra_groups=[],
            check=False,
        )
        (refused,) = replies(other.stdout.encode())
        root = replies(exchange(socket_path, status))
    finally:
        for holder in holders:
            holder.kill()
            holder.communicate()
        process.stop()
    assert refused["error"] == f"too many control clients connected (limit {slots}): try again"
    assert [reply["ok"] for reply in root] == [True]
