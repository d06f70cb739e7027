"""The unit under a real systemd 252 (PID 1 of a Debian 12 container), installed by the README.

Issue 15: the unit had passed `systemd-analyze verify` and `security` but never
run under systemd. Defects this reproduces: `ExecReload=/bin/kill -HUP $MAINPID`
returned before the reload was done and returned 0 when the daemon refused it;
every line reached the journal at priority 6; the README's install block failed
on a stock Debian 12 (no python3-venv); `Documentation=` named a file nothing
installed; a plugin's system call outside the filter killed the whole daemon.

The tests share one container and one installation (module fixtures); each test
sets up the jobs it looks at. Run: `SUPERVISOR_LIVE_SYSTEMD=1 python -m pytest
tests/system` as root after `tools/live-systemd prepare` (see tests/system/conftest.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from supervisor.notify import status_line
from supervisor.states import JobState
from tests.system.container import (
    REPO,
    SUPERVISOR,
    Container,
    install_block,
    lines_of,
    main_pid,
    write_lines,
)

WHEELS = Path(os.environ.get("SS_LIVE_RUN", "/run/stream-supervisor-ci")) / "wheels"
SOURCE_DIR = "/root/stream-supervisor"  # the "clone of this repository" the README starts from
JOBS = "/etc/stream-supervisor/jobs"
STATE = "/var/lib/stream-supervisor"
SOCKET = "/run/stream-supervisor/control.sock"
# The README's drop-in example: where the jobs' sources and sinks live.
DROP_IN = "[Service]\nReadOnlyPaths=/srv/orders\nReadWritePaths=/var/spool/orders\n"
SPOOL = "/var/spool/orders"
INBOX = "/srv/orders"
PLUGIN = "/opt/stream-supervisor/lib/python3.11/site-packages/ss_live_plugin.py"


def file_job(name: str, *, every_records: int = 100_000) -> str:
    """A job file: JSON lines from /srv/orders/NAME.jsonl to /var/spool/orders/NAME.jsonl."""
    return (
        f'name = "{name}"\n'
        "[source]\n"
        'type = "file"\n'
        f'path = "{INBOX}/{name}.jsonl"\n'
        'format = "jsonl"\n'
        "follow = true\n"
        "[sink]\n"
        'type = "jsonl"\n'
        f'path = "{SPOOL}/{name}.jsonl"\n'
        "[checkpoint]\n"
        f"every_records = {every_records}\n"
        'interval = "1h"\n'  # checkpoints come from every_records and stops only
    )


def records(start: int, count: int) -> list[str]:
    """JSON lines as the jsonl sink writes them (compact), so input and output compare."""
    return [json.dumps({"n": n}, separators=(",", ":")) for n in range(start, start + count)]


@pytest.fixture(scope="module")
def live(container: Container) -> Iterator[Container]:
    """The README's "Install as a service" block run word for word inside, then jobs' paths.

    The container has no network: pip finds the wheels built on the host through
    PIP_NO_INDEX / PIP_FIND_LINKS, so the block's `pip install .` runs unchanged.
    """
    assert WHEELS.is_dir(), f"no wheels in {WHEELS}: run `tools/live-systemd prepare` first"
    subprocess.run(["cp", "-r", str(WHEELS), str(container.path("/root/wheels"))], check=True)
    tree = subprocess.run(
        ["tar", "-C", str(REPO), "--exclude=./.venv", "--exclude=./.git", "-cf", "-", "."],
        capture_output=True,
        check=True,
    ).stdout
    container.path(SOURCE_DIR).mkdir(parents=True)
    subprocess.run(
        ["tar", "-C", str(container.path(SOURCE_DIR)), "-xf", "-"], input=tree, check=True
    )
    container.run(
        "sh",
        "-exc",
        f"cd {SOURCE_DIR}\n{install_block()}",
        env={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "/root/wheels"},
        timeout=300,
    )
    # Where the test's jobs read and write, given to the sandbox as the README says.
    container.sh(
        f"install -d -m 0755 {INBOX}\n"
        f"install -d -m 0750 -o stream-supervisor -g stream-supervisor {SPOOL}\n"
        "install -d /etc/systemd/system/stream-supervisor.service.d\n"
        f"printf '{DROP_IN}' > /etc/systemd/system/stream-supervisor.service.d/paths.conf\n"
        "systemctl daemon-reload\n"
        "systemctl restart stream-supervisor\n"
    )
    yield container


def add_job(live: Container, name: str, text: str) -> None:
    """Write a job file and reload; `systemctl reload` must succeed."""
    live.path(f"{JOBS}/{name}.toml").write_text(text)
    live.run("systemctl", "reload", "stream-supervisor")


def snapshot_pos(live: Container, job: str) -> int:
    """The committed file position in the job's snapshot on disk (0 if there is none)."""
    path = live.path(f"{STATE}/{job}.snapshot.toml")
    if not path.exists():
        return 0
    offset: Any = tomllib.loads(path.read_text()).get("offset")
    return int(offset["pos"]) if isinstance(offset, dict) else 0


def caught_up(live: Container, job: str) -> bool:
    """The job's committed offset is the end of its input file."""
    offset = live.job(job)["offset"]
    size = live.path(f"{INBOX}/{job}.jsonl").stat().st_size
    return isinstance(offset, dict) and offset.get("pos") == size


def has_read(live: Container, job: str) -> bool:
    """The job's current attempt has read records (its records/s is above 0).

    Its input file was complete when the job started, so its first read took all of it.
    """
    return bool(live.job(job)["records_per_s"])


def timestamp(text: str) -> float:
    """A `systemctl show --timestamp=us+utc` value as seconds since the epoch."""
    return datetime.strptime(text, "%a %Y-%m-%d %H:%M:%S.%f UTC").replace(tzinfo=UTC).timestamp()


def test_the_unit_becomes_active_only_once_the_daemon_is_ready(live: Container) -> None:
    """Type=notify: systemd calls the service started only after the control socket is up."""
    show = live.wait_for_unit("active")
    assert live.prop("Type") == "notify"
    # The daemon binds the socket before it sends READY=1. With Type=simple (or a
    # READY=1 sent too early) systemd enters "active" before the socket exists.
    socket_made = live.path(SOCKET).lstat().st_ctime
    active_since = timestamp(live.prop("ActiveEnterTimestamp"))
    assert socket_made <= active_since, (socket_made, active_since)
    assert main_pid(show) > 0
    live.run(SUPERVISOR, "status")


def test_documentation_points_at_an_installed_file(live: Container) -> None:
    """Documentation= names a file the README's install block put there."""
    for url in live.prop("Documentation").split():
        assert url.startswith("file://"), url
        assert live.path(url.removeprefix("file://")).is_file(), url


def test_state_and_runtime_directories_have_the_units_modes(live: Container) -> None:
    """StateDirectory is 0700 and RuntimeDirectory 0750, owned by the service user; socket 0660."""
    out = live.run("stat", "-c", "%n %a %U %G", STATE, "/run/stream-supervisor", SOCKET).stdout
    assert out.splitlines() == [
        f"{STATE} 700 stream-supervisor stream-supervisor",
        "/run/stream-supervisor 750 stream-supervisor stream-supervisor",
        f"{SOCKET} 660 stream-supervisor stream-supervisor",
    ]


def test_the_daemon_runs_sandboxed(live: Container) -> None:
    """No capabilities, no_new_privs, a seccomp filter, / read-only, state directory writable."""
    pid = main_pid(live.wait_for_unit("active"))
    status = dict(
        line.split(":\t", 1)
        for line in live.path(f"/proc/{pid}/status").read_text().splitlines()
        if ":\t" in line
    )
    assert status["Uid"].split()[0] != "0"
    for capabilities in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[capabilities], 16) == 0, (capabilities, status[capabilities])
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"  # filter mode
    mounts = {}
    for line in live.path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        mounts[fields[4]] = fields[5].split(",")  # mount point -> per-mount options

    def options(path: str) -> list[str]:
        """The options of the mount `path` lies on (the longest mount point above it)."""
        above = [
            point for point in mounts if path == point or path.startswith(point.rstrip("/") + "/")
        ]
        return mounts[max(above, key=len)]

    assert "ro" in options("/etc"), "ProtectSystem=strict: /etc must be read-only"
    assert "ro" in options("/usr")
    assert "ro" in options(INBOX)
    assert "rw" in options(STATE)
    assert "rw" in options(SPOOL)
    # Resource limits: set (the container delegates no controllers, so not enforced here).
    limits = live.show("MemoryHigh", "MemoryMax", "TasksMax")
    assert all(value != "infinity" for value in limits.values()), limits


def test_reload_applies_a_new_job_before_it_returns(live: Container) -> None:
    """`systemctl reload` returns once the daemon has applied the new set of jobs."""
    write_lines(live.path(f"{INBOX}/reloaded.jsonl"), records(0, 3))
    pid = main_pid(live.wait_for_unit("active"))
    add_job(live, "reloaded", file_job("reloaded"))
    # Asked at once: `kill -HUP` returned before the daemon had read the files.
    assert live.job("reloaded")["state"] in {"pending", "running"}
    assert main_pid(live.show("MainPID")) == pid
    # And in causal order: the daemon logged "applied" (its own clock) before systemd
    # logged "Reloaded" (when ExecReload= exited). `kill -HUP` exits at once, so
    # systemd logs first (by under a millisecond when tried); the invalid-set test
    # below is the one that always tells `kill -HUP` apart.

    def applied() -> float | None:
        for entry in live.journal():
            if '"daemon.reloaded"' in entry["MESSAGE"]:
                event = json.loads(entry["MESSAGE"])
                if "reloaded" in event["added"]:
                    return datetime.fromisoformat(event["timestamp"]).timestamp()
        return None

    applied_at = live.wait_until(applied, timeout=10, what="daemon.reloaded in the journal")
    systemd_reloaded_at = max(
        int(entry["__REALTIME_TIMESTAMP"]) / 1e6
        for entry in live.journal()
        if entry.get("_PID") == "1" and entry["MESSAGE"].startswith("Reloaded ")
    )
    assert applied_at <= systemd_reloaded_at, "systemctl reload returned before the daemon applied"


def test_an_invalid_job_set_fails_the_reload_and_changes_nothing(live: Container) -> None:
    """A refused reload makes `systemctl reload` fail; the service and its jobs go on."""
    before = live.wait_for_unit("active")
    jobs_before = {
        row["job"] for row in json.loads(live.run(SUPERVISOR, "status", "--json").stdout)
    }
    live.path(f"{JOBS}/broken.toml").write_text('name = "broken"\n[source]\ntype = "no-such"\n')
    try:
        result = live.run("systemctl", "reload", "stream-supervisor", check=False)
        assert result.returncode != 0, "systemctl reload succeeded with an invalid job file"
        after = live.wait_for_unit("active")
        assert main_pid(after) == main_pid(before)
        assert after["NRestarts"] == before["NRestarts"]
        rows = json.loads(live.run(SUPERVISOR, "status", "--json").stdout)
        assert {row["job"] for row in rows} == jobs_before
    finally:
        live.path(f"{JOBS}/broken.toml").unlink()
    live.run("systemctl", "reload", "stream-supervisor")


def test_lines_reach_the_journal_at_their_priority(live: Container) -> None:
    """`journalctl -p err` finds a refused reload; info events are filed at priority 6."""
    live.path(f"{JOBS}/broken.toml").write_text("name = \n")
    try:
        live.run("systemctl", "reload", "stream-supervisor", check=False)
    finally:
        live.path(f"{JOBS}/broken.toml").unlink()
    errors = live.journal("-p", "err")
    refused = [e for e in errors if '"daemon.reload_refused"' in e["MESSAGE"]]
    assert refused, [e["MESSAGE"] for e in errors]
    assert all(e["PRIORITY"] == "3" for e in refused)
    assert refused[0]["MESSAGE"].startswith("{"), "journald must strip the <N> prefix"
    started = [e for e in live.journal() if '"daemon.started"' in e["MESSAGE"]]
    assert started
    assert {e["PRIORITY"] for e in started} == {"6"}


def test_status_text_summarises_the_jobs(live: Container) -> None:
    """STATUS= (systemctl status's "Status:" line) counts the jobs by state."""
    write_lines(live.path(f"{INBOX}/summarised.jsonl"), records(0, 3))
    add_job(live, "summarised", file_job("summarised"))

    def matches() -> bool:
        rows = json.loads(live.run(SUPERVISOR, "status", "--json").stdout)
        expected = status_line(JobState(row["state"]) for row in rows)
        return "running" in expected and live.prop("StatusText") == expected

    live.wait_until(matches, timeout=15, what="StatusText to match `supervisor status`")


def test_group_members_may_use_the_cli_and_others_are_told_why_not(live: Container) -> None:
    """A member of the stream-supervisor group runs `supervisor status`; anyone else is refused."""
    live.run("useradd", "--system", "--no-create-home", "-G", "stream-supervisor", "ss-g-member")
    live.run("useradd", "--system", "--no-create-home", "ss-g-other")
    live.run(SUPERVISOR, "status", user="ss-g-member")
    refused = live.run(SUPERVISOR, "status", user="ss-g-other", check=False)
    assert refused.returncode == 4
    assert "permission denied" in refused.stderr
    assert "group" in refused.stderr


def test_a_forbidden_system_call_fails_the_job_not_the_daemon(live: Container) -> None:
    """SystemCallErrorNumber=EPERM: a plugin's filtered call raises in its job; the daemon lives."""
    # sched_setaffinity is in @resources, which the unit denies.
    live.path(PLUGIN).write_text(
        "import os\n\n\n"
        "def pin(record):\n"
        "    os.sched_setaffinity(0, os.sched_getaffinity(0))\n"
        "    return record\n"
    )
    before = live.wait_for_unit("active")
    add_job(
        live,
        "pinned",
        'name = "pinned"\nsuspend_on_failure = true\n'
        '[source]\ntype = "generate"\ncount = 10\n'
        '[processor]\nfunction = "ss_live_plugin:pin"\n'
        '[sink]\ntype = "null"\n'
        "[retry]\nmax_attempts = 1\n",
    )
    try:
        job = live.wait_until(
            lambda: (row := live.job("pinned"))["state"] == "suspended" and row,
            timeout=30,
            what="job pinned suspended",
        )
        assert "PermissionError" in job["error"], job
        after = live.wait_for_unit("active")
        assert main_pid(after) == main_pid(before), "the daemon was killed (SIGSYS?)"
        assert after["NRestarts"] == before["NRestarts"]
    finally:  # a suspended job makes `supervisor status` exit 3 in the tests after this one
        live.path(f"{JOBS}/pinned.toml").unlink()
        live.run("systemctl", "reload", "stream-supervisor", check=False)


def test_systemctl_restart_continues_from_the_snapshot(live: Container) -> None:
    """After `systemctl restart` a job goes on where it stopped: nothing lost, nothing twice."""
    source, sink = live.path(f"{INBOX}/restarted.jsonl"), live.path(f"{SPOOL}/restarted.jsonl")
    write_lines(source, records(0, 50))
    add_job(live, "restarted", file_job("restarted"))  # checkpoints only when it stops
    live.wait_until(lambda: has_read(live, "restarted"), timeout=30, what="restarted read")
    assert snapshot_pos(live, "restarted") == 0
    pid = main_pid(live.wait_for_unit("active"))
    live.run("systemctl", "restart", "stream-supervisor")
    assert main_pid(live.wait_for_unit("active")) != pid
    assert snapshot_pos(live, "restarted") == source.stat().st_size
    write_lines(source, records(50, 5))
    live.wait_until(lambda: has_read(live, "restarted"), timeout=30, what="restarted read again")
    live.run(SUPERVISOR, "stop", "restarted")  # final checkpoint: the sink has every line
    assert lines_of(sink) == lines_of(source)


def test_systemctl_stop_is_clean_and_fast_with_a_final_checkpoint(live: Container) -> None:
    """`systemctl stop` ends the daemon within seconds, exit 0, each job's offset checkpointed."""
    source, sink = live.path(f"{INBOX}/stopped.jsonl"), live.path(f"{SPOOL}/stopped.jsonl")
    write_lines(source, records(0, 40))
    add_job(live, "stopped", file_job("stopped"))  # checkpoints only when it stops
    live.wait_until(lambda: has_read(live, "stopped"), timeout=30, what="stopped read")
    assert snapshot_pos(live, "stopped") == 0
    started = time.monotonic()
    live.run("systemctl", "stop", "stream-supervisor")
    took = time.monotonic() - started
    show = live.show("ActiveState", "Result", "ExecMainStatus", "ExecMainCode")
    try:
        assert show["ActiveState"] == "inactive"
        assert show["Result"] == "success", show
        assert show["ExecMainStatus"] == "0", show
        assert took < 10, f"systemctl stop took {took:.1f}s"
        assert snapshot_pos(live, "stopped") == source.stat().st_size
        assert lines_of(sink) == lines_of(source)
        assert any('"daemon.stopped"' in e["MESSAGE"] for e in live.journal())
    finally:
        live.run("systemctl", "start", "stream-supervisor")


def test_a_killed_daemon_is_restarted_and_resumes_at_its_last_checkpoint(live: Container) -> None:
    """kill -9 of the main PID: systemd restarts it; the job replays from its last checkpoint."""
    source, sink = live.path(f"{INBOX}/crashed.jsonl"), live.path(f"{SPOOL}/crashed.jsonl")
    write_lines(source, records(0, 200))
    add_job(live, "crashed", file_job("crashed", every_records=100))  # checkpoints at 100, 200
    live.wait_until(lambda: caught_up(live, "crashed"), timeout=30, what="crashed checkpointed")
    write_lines(source, records(200, 10))  # fewer than every_records: not checkpointed
    before = live.wait_for_unit("active")
    committed = snapshot_pos(live, "crashed")
    assert 0 < committed < source.stat().st_size
    live.run("kill", "-9", before["MainPID"])

    def restarted() -> dict[str, str] | None:
        show = live.show("ActiveState", "SubState", "MainPID", "NRestarts")
        return (
            show
            if show["NRestarts"] != before["NRestarts"] and show["SubState"] == "running"
            else None
        )

    live.wait_until(restarted, timeout=30, what="systemd restarted the killed daemon")
    # The new daemon's attempt reads on from the checkpoint (the 10 records).
    live.wait_until(lambda: has_read(live, "crashed"), timeout=30, what="crashed read again")
    live.run(SUPERVISOR, "stop", "crashed")  # final checkpoint: the sink has every line
    data = source.read_bytes()
    checkpointed = data[:committed].decode().splitlines()
    after_checkpoint = data[committed:].decode().splitlines()
    out = lines_of(sink)
    # At least once: everything up to the checkpoint once, then whatever of the rest
    # had reached the file before the kill, then the rest again from the checkpoint.
    assert out[: len(checkpointed)] == checkpointed
    replayed = out[len(checkpointed) :]
    assert len(replayed) >= len(after_checkpoint), out
    assert replayed[len(replayed) - len(after_checkpoint) :] == after_checkpoint
    assert (
        replayed[: len(replayed) - len(after_checkpoint)]
        == after_checkpoint[: len(replayed) - len(after_checkpoint)]
    )


def test_the_readmes_no_network_drop_in_keeps_the_daemon_working(live: Container) -> None:
    """The README's drop-in for file-only hosts takes the network away; the daemon still serves."""
    section = (REPO / "README.md").read_text().split("\n## Install as a service\n", 1)[1]
    drop_in = section.split("```ini\n", 1)[1].split("```", 1)[0]
    path = drop_in.splitlines()[0].removeprefix("# ")
    live.path(path).write_text(drop_in)
    try:
        live.run("systemctl", "daemon-reload")
        live.run("systemctl", "restart", "stream-supervisor")
        pid = main_pid(live.wait_for_unit("active"))
        interfaces = live.path(f"/proc/{pid}/net/dev").read_text().split("\n")[2:]
        assert [line.split(":")[0].strip() for line in interfaces if line] == ["lo"]
        assert live.prop("RestrictAddressFamilies") == "AF_UNIX"
        live.run(SUPERVISOR, "status")
    finally:
        live.path(path).unlink()
        live.run("systemctl", "daemon-reload")
        live.run("systemctl", "restart", "stream-supervisor")


def test_watchdog_pings_keep_the_service_running(live: Container) -> None:
    """Over 60 s systemd sees WATCHDOG=1 pings (WatchdogSec=30s) and never kills the daemon."""
    before = live.wait_for_unit("active")
    assert live.prop("WatchdogUSec") == "30s"
    pings: set[str] = set()
    watch_until = time.monotonic() + 65
    # Bounded watch of systemd's record of the last ping: there is no event to wait on.
    while time.monotonic() < watch_until:
        show = live.show("ActiveState", "MainPID", "NRestarts", "WatchdogTimestampMonotonic")
        assert show["ActiveState"] == "active", show
        assert show["MainPID"] == before["MainPID"], show
        assert show["NRestarts"] == before["NRestarts"], show
        pings.add(show["WatchdogTimestampMonotonic"])
        time.sleep(1)
    assert len(pings) >= 4, f"{len(pings)} distinct watchdog timestamps in 65 s"
    assert not [e for e in live.journal() if "Watchdog timeout" in e["MESSAGE"]]
