"""Reload (`supervisor reload` and SIGHUP): all of a valid new set, or nothing; a job added
back waits for its removed owner; none once stopping. Real daemons, and in-process ones on
virtual time whose sinks are held on cue."""

from __future__ import annotations

import json
import os
import signal
import textwrap
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from supervisor import daemon as daemon_module
from supervisor.config.model import Config
from supervisor.daemon import Supervisor
from supervisor.errors import CommandRefused, ConfigError
from supervisor.notify import SystemdNotifier
from supervisor.snapshot import decode
from supervisor.states import JobState
from tests.conftest import virtual_time_backend
from tests.daemon_process import DaemonProcess, write_config
from tests.helpers import run_cli as cli
from tests.in_memory_store import InMemorySnapshotStore
from tests.integration.test_control import DAEMON
from tests.lifecycle import eventually, read_config_on_virtual_time
from tests.slow_parts import World


def _job(rate: int) -> str:
    return f"""
        [source]
        type = "generate"
        rate = {rate}
        [sink]
        type = "null"
    """


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[DaemonProcess, Path]]:
    jobs = {"keep": _job(10), "drop": _job(10), "edit": _job(10), "held": _job(10)}
    # At debug level the daemon logs each checkpoint once its snapshot is durable.
    debug = DAEMON.replace('log_level = "info"', 'log_level = "debug"')
    config = write_config(tmp_path, jobs, debug)
    process = DaemonProcess(config)
    process.wait_for("control.listening")
    process.keep_draining()
    yield process, config
    process.stop()


def _states(config: Path) -> dict[str, str]:
    return {job["job"]: job["state"] for job in json.loads(cli(config, "status", "--json").stdout)}


@pytest.mark.slow
def test_reload_adds_removes_and_restarts_only_what_changed(
    daemon: tuple[DaemonProcess, Path],
) -> None:
    """Added jobs start, removed jobs stop, changed jobs restart, the rest are untouched."""
    process, config = daemon
    jobs = config.parent / "jobs"
    # Issue 16: on a loaded machine `drop` had sometimes not checkpointed by the reload, so
    # its only snapshot was the one its removal's final checkpoint writes, which may land
    # after `reload` answers. Wait until the daemon says its first checkpoint is durable.
    process.wait_logged("job.checkpoint", job="drop")
    assert cli(config, "pause", "held").returncode == 0
    (jobs / "drop.toml").unlink()
    (jobs / "edit.toml").write_text(textwrap.dedent(_job(20)))
    (jobs / "held.toml").write_text(textwrap.dedent(_job(30)))
    (jobs / "new.toml").write_text(textwrap.dedent(_job(10)))
    before = cli(config, "events", "keep").stdout

    result = cli(config, "reload")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["added: new", "removed: drop", "changed: edit, held"]
    states = _states(config)
    assert set(states) == {"keep", "edit", "held", "new"}
    assert states["held"] == "paused"  # keeps its state; the new definition waits for resume
    assert cli(config, "events", "keep").stdout == before  # untouched
    edit_events = [json.loads(e) for e in cli(config, "events", "edit").stdout.splitlines()]
    assert any(e["cause"] == "definition changed by reload" for e in edit_events)
    assert (config.parent / "state" / "drop.snapshot.toml").exists()


@pytest.mark.slow
def test_an_invalid_set_is_refused_whole(daemon: tuple[DaemonProcess, Path]) -> None:
    """One bad file: reload exits 2 naming it, and no job is added, removed or changed."""
    _, config = daemon
    jobs = config.parent / "jobs"
    (jobs / "new.toml").write_text(textwrap.dedent(_job(10)))
    (jobs / "drop.toml").unlink()
    (jobs / "bad.toml").write_text('[source]\ntype = "generate"\nrate = "fast"\n')
    events_before = cli(config, "events").stdout

    result = cli(config, "reload")

    assert result.returncode == 2
    assert f"{jobs}/bad.toml: source.rate: expected a number" in result.stderr
    assert set(_states(config)) == {"keep", "drop", "edit", "held"}
    assert cli(config, "events").stdout == events_before


@pytest.mark.slow
def test_sighup_reloads(daemon: tuple[DaemonProcess, Path]) -> None:
    """SIGHUP does what `supervisor reload` does."""
    process, config = daemon
    (config.parent / "jobs" / "new.toml").write_text(textwrap.dedent(_job(10)))
    process.process.send_signal(signal.SIGHUP)
    process.wait_logged("daemon.reloaded")  # logged once the reload is applied
    assert "new" in _states(config)


@pytest.mark.slow
def test_a_sighup_as_soon_as_the_socket_listens_reloads(tmp_path: Path) -> None:
    """Signal handlers are installed before the socket listens: an early SIGHUP never kills."""
    config = write_config(tmp_path, {"keep": _job(10)}, DAEMON)
    process = DaemonProcess(config)
    process.wait_for("control.listening")
    process.process.send_signal(signal.SIGHUP)
    process.wait_for("daemon.reloaded")
    assert process.process.poll() is None
    assert process.stop() == 0


# --- in-process, on virtual time ---------------------------------------------------------

QUICK = """
    [source]
    type = "generate"
    [sink]
    type = "null"
    [checkpoint]
    every_records = 10
    interval = "1s"
"""
IN_PROCESS = """\
[supervisor]
shutdown_timeout = "5s"
"""


@pytest.fixture
def anyio_backend() -> object:
    return virtual_time_backend()


@asynccontextmanager
async def _running(
    config: Path, world: World, store: InMemorySnapshotStore | None = None
) -> AsyncIterator[Supervisor]:
    """The daemon of the files at `config`, in-process, with `world`'s sources and sinks."""
    from supervisor.config.loader import load_config

    daemon = Supervisor(
        load_config(config),
        store=store or InMemorySnapshotStore(),
        components=world.components,
        control_socket=False,
        read_config=read_config_on_virtual_time,
    )
    async with anyio.create_task_group() as tasks:
        await tasks.start(daemon.run)
        yield daemon
        daemon.request_stop()


async def _until(condition: Callable[[], bool]) -> None:
    """Wait for `condition`, failing after ten virtual minutes (a defect shows in seconds)."""
    await eventually(condition, within=600)


def _flushed(world: World, job: str) -> list[int]:
    return [record["seq"] for record in world.sinks[job].flushed]


def _committed(store: InMemorySnapshotStore, job: str) -> object:
    """The offset in `job`'s snapshot as stored now."""
    data = store.files.get(job)
    return None if data is None else decode(data, job=job, path=store.path_for(job)).offset


async def _read_and_hold(daemon: Supervisor, world: World, job: str, records: int) -> None:
    """Let `job` read `records` more records (and wait until it has)."""
    await _until(lambda: job in daemon.owners and daemon.owners[job].state is JobState.RUNNING)
    source = world.sources[job]
    source.available = (source.available or 0) + records
    await _until(lambda: source.position == source.available)


@pytest.mark.anyio
@pytest.mark.parametrize("held", ["close", "final_flush"])
async def test_a_job_added_back_while_its_removed_attempt_ends_waits_for_it(
    tmp_path: Path, held: str
) -> None:
    """A job a reload adds back while its removed attempt is still in its final flush or its
    close starts only once that attempt has ended, and resumes from its final checkpoint.

    Issue 14.1: the new attempt opened source and sink beside the old one, loaded the older
    snapshot, and delivered records twice.
    """
    config = write_config(tmp_path, {"orders": QUICK, "other": QUICK}, IN_PROCESS)
    world, store = World(), InMemorySnapshotStore()
    job_file, parked = tmp_path / "jobs" / "orders.toml", tmp_path / "orders.toml"
    async with _running(config, world, store) as daemon:
        await _read_and_hold(daemon, world, "orders", 25)
        sink, gate = world.sinks["orders"], anyio.Event()
        if held == "close":
            sink.close_gate = gate
        else:
            sink.flush_gate = gate
            await _read_and_hold(daemon, world, "orders", 5)
        job_file.rename(parked)
        assert (await daemon.reload())["removed"] == ["orders"]
        await _until(lambda: sink.closing if held == "close" else sink.flushing)
        parked.rename(job_file)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(daemon.reload)
            await anyio.sleep(30)  # the old attempt is held this long
            assert sink.opens == 1, "a new attempt opened while the old one was ending"
            gate.set()
        await _read_and_hold(daemon, world, "orders", 10)
        read = world.sources["orders"].position
        await _until(lambda: _committed(store, "orders") == read)
    assert sink.most_open_at_once == 1
    assert world.sources["orders"].most_open_at_once == 1
    assert _flushed(world, "orders") == list(range(read))  # none twice, none lost


@pytest.mark.anyio
async def test_a_reload_once_stopping_is_refused_and_starts_nothing(tmp_path: Path) -> None:
    """A reload after a stop began is refused with a clear error, and adds no job (14.8: the
    added job started, was never told to stop, and lost its final checkpoint)."""
    config = write_config(tmp_path, {"orders": QUICK}, IN_PROCESS)
    world = World()
    async with _running(config, world) as daemon:
        await _read_and_hold(daemon, world, "orders", 0)
        sink, gate = world.sinks["orders"], anyio.Event()
        sink.flush_gate = gate  # the final checkpoint is slow: the shutdown takes a while
        await _read_and_hold(daemon, world, "orders", 5)
        daemon.request_stop()
        await _until(lambda: sink.flushing)
        (tmp_path / "jobs" / "late.toml").write_text(textwrap.dedent(QUICK))
        with pytest.raises(CommandRefused, match="stopping: reload refused"):
            await daemon.reload()
        gate.set()
    assert set(daemon.owners) == {"orders"}
    assert "late" not in world.sources


class RecordingNotifier(SystemdNotifier):
    """systemd's end of sd_notify (no systemd runs here): each message, with the jobs the
    daemon had then."""

    def __init__(self, daemon: Supervisor) -> None:
        super().__init__({})
        self.daemon = daemon
        self.sent: list[tuple[str, set[str]]] = []

    @property
    def enabled(self) -> bool:
        return True

    def send(self, *lines: str) -> None:
        self.sent.extend((line, set(self.daemon.owners)) for line in lines)


@pytest.mark.anyio
async def test_ready_follows_a_reload_only_once_it_is_applied(tmp_path: Path) -> None:
    """READY=1 after RELOADING=1 comes once the added job runs (issue 15: it came before the
    plan was applied), and after a refused reload too."""
    config = write_config(tmp_path, {"orders": QUICK}, IN_PROCESS)
    world = World()
    async with _running(config, world) as daemon:
        notifier = daemon.notifier = RecordingNotifier(daemon)
        (tmp_path / "jobs" / "late.toml").write_text(textwrap.dedent(QUICK))
        await daemon.reload()
        (tmp_path / "jobs" / "bad.toml").write_text('[source]\ntype = "generate"\nrate = "x"\n')
        with pytest.raises(ConfigError):
            await daemon.reload()
    reloads = [(line, jobs) for line, jobs in notifier.sent if line in ("RELOADING=1", "READY=1")]
    assert [line for line, _ in reloads] == ["RELOADING=1", "READY=1"] * 2
    assert "late" in reloads[1][1], "READY=1 was sent before the added job existed"


@pytest.mark.anyio
async def test_a_job_enabled_by_reload_starts_as_it_would_after_a_restart(tmp_path: Path) -> None:
    """`enabled` false -> true: the reload starts the job, as a daemon restart does (14.16:
    after the reload it stayed STOPPED)."""
    disabled = "enabled = false\n" + textwrap.dedent(QUICK)
    config = write_config(tmp_path, {"orders": disabled}, IN_PROCESS)
    world, store = World(), InMemorySnapshotStore()
    async with _running(config, world, store) as daemon:
        await _until(lambda: daemon.owners["orders"].state is JobState.STOPPED)
        (tmp_path / "jobs" / "orders.toml").write_text(textwrap.dedent(QUICK))
        assert (await daemon.reload())["changed"] == ["orders"]
        await _until(lambda: daemon.owners["orders"].state is JobState.RUNNING)
        await _read_and_hold(daemon, world, "orders", 5)
    async with _running(config, world, store) as again:  # the restart agrees
        await _until(lambda: again.owners["orders"].state is JobState.RUNNING)
    assert _flushed(world, "orders") == list(range(5))


@pytest.mark.anyio
async def test_a_job_disabled_by_reload_then_enabled_runs_after_a_restart(tmp_path: Path) -> None:
    """A job a reload disabled, whose file then says `enabled = true`, runs when the daemon
    restarts, as a reload would start it; an operator's `stop` still survives a restart.

    14.16's other half: the disable was written as a plain STOPPED, so the restarted daemon
    kept the job STOPPED while a reload would have started it.
    """
    job_file = tmp_path / "jobs" / "orders.toml"
    config = write_config(tmp_path, {"orders": QUICK, "other": QUICK}, IN_PROCESS)
    world, store = World(), InMemorySnapshotStore()
    async with _running(config, world, store) as daemon:
        await _until(lambda: daemon.owners["orders"].state is JobState.RUNNING)
        await _read_and_hold(daemon, world, "orders", 5)
        job_file.write_text("enabled = false\n" + textwrap.dedent(QUICK))
        assert (await daemon.reload())["changed"] == ["orders"]
        await _until(lambda: daemon.owners["orders"].state is JobState.STOPPED)
        await daemon.owner("other").stop()
    job_file.write_text(textwrap.dedent(QUICK))
    async with _running(config, world, store) as again:
        await _until(lambda: again.owners["orders"].state is JobState.RUNNING)
        assert again.owners["other"].state is JobState.STOPPED  # the operator's stop stands
    assert _flushed(world, "orders")[:5] == list(range(5))


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_sigterm_during_a_slow_reload_stops_within_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while a SIGHUP's reload is still reading the files stops the daemon within
    shutdown_timeout (13.8: the stop waited for the reload to finish).

    The slow read (a hung network filesystem) is the one fault faked: the load blocks until
    released. Real signals, to this process, on the real clock.
    """
    from supervisor.config.loader import load_config

    config = write_config(tmp_path, {"orders": QUICK}, IN_PROCESS.replace("5s", "1s"))
    entered, release = threading.Event(), threading.Event()

    def slow_load(path: Path) -> Config:
        entered.set()
        release.wait(30)
        return load_config(path)

    safety = threading.Timer(20, release.set)  # never leave a thread hanging
    safety.start()
    monkeypatch.setattr(daemon_module, "load_config", slow_load)
    daemon = Supervisor(
        load_config(config),
        store=InMemorySnapshotStore(),
        components=World().components,
        control_socket=False,
    )
    try:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tasks:
                await tasks.start(daemon.run)
                os.kill(os.getpid(), signal.SIGHUP)
                assert await anyio.to_thread.run_sync(entered.wait, 10)
                os.kill(os.getpid(), signal.SIGTERM)
    finally:
        release.set()
        safety.cancel()
