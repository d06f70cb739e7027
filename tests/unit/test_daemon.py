"""The daemon in-process: job states across a restart, idle exit, commands by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from supervisor.components import Components
from supervisor.config.model import Config, DaemonConfig, JobConfig, RetryPolicy
from supervisor.daemon import Supervisor
from supervisor.errors import CommandRefused, FatalError, TransientError
from supervisor.states import JobState
from supervisor.testing import RecordingSink, ScriptedSource
from tests.conftest import virtual_time_backend
from tests.helpers import make_job
from tests.in_memory_store import InMemorySnapshotStore
from tests.lifecycle import eventually

pytestmark = pytest.mark.anyio
R = JobState


@pytest.fixture
def anyio_backend() -> object:
    return virtual_time_backend()


def _config(*jobs: JobConfig) -> Config:
    daemon = DaemonConfig(
        path=Path("/x/supervisor.toml"),
        state_dir=Path("/x/state"),
        control_socket=Path("/x/s.sock"),
        shutdown_timeout=5.0,
    )
    return Config(daemon=daemon, jobs=jobs)


class World:
    """The sources and sinks each job gets, kept across daemon restarts."""

    def __init__(self) -> None:
        self.sources: dict[str, ScriptedSource] = {}
        self.sinks: dict[str, RecordingSink] = {}
        self.components = Components(
            source=lambda job: self.sources[job.name], sink=lambda job: self.sinks[job.name]
        )

    def add(self, name: str, source: ScriptedSource) -> None:
        self.sources[name], self.sinks[name] = source, RecordingSink()


async def _run_until(daemon: Supervisor, condition: Callable[[], bool]) -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        await eventually(condition)
        daemon.request_stop()


async def test_persisted_states_and_attempts_survive_a_daemon_restart() -> None:
    """SUSPENDED with its cause, STOPPED, and a RETRYING attempt count survive a restart."""
    retry = RetryPolicy(initial=500.0, max=500.0, jitter=False, max_attempts=10)
    jobs = (
        replace(make_job("broken"), suspend_on_failure=True),
        make_job("quiet"),
        make_job("flaky", retry=retry),
    )
    world, store = World(), InMemorySnapshotStore()
    world.add("broken", ScriptedSource(open_errors=[FatalError("credentials revoked")]))
    world.add("quiet", ScriptedSource(available=5))
    world.add("flaky", ScriptedSource(open_errors=[TransientError("refused")] * 2, available=5))
    daemon = Supervisor(
        _config(*jobs), store=store, components=world.components, control_socket=False
    )

    async def stop_quiet_once_running() -> None:
        await eventually(
            lambda: "quiet" in daemon.owners and daemon.owners["quiet"].state is R.RUNNING
        )
        await daemon.owner("quiet").stop()

    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_quiet_once_running)
        await _run_until(
            daemon,
            lambda: (
                daemon.owners.get("broken") is not None
                and daemon.owners["broken"].state is R.SUSPENDED
                and daemon.owners["quiet"].state is R.STOPPED
                and daemon.owners["flaky"].attempts == 1
            ),
        )

    again = Supervisor(
        _config(*jobs), store=store, components=world.components, control_socket=False
    )
    await _run_until(
        again,
        lambda: again.owners.get("flaky") is not None and again.owners["flaky"].attempts == 2,
    )
    assert again.owners["broken"].state is R.SUSPENDED
    assert again.owners["broken"].cause == "supervisor.errors.FatalError: credentials revoked"
    assert again.owners["quiet"].state is R.STOPPED
    assert world.sources["broken"].opens == 1  # not retried after the restart
    assert world.sources["flaky"].opens == 2  # the count went on from 1, not from 0


async def test_exit_when_idle_stops_once_no_job_is_active() -> None:
    """With exit_when_idle the daemon returns once every job has finished."""
    world = World()
    world.add("a", ScriptedSource(count=30))
    world.add("b", ScriptedSource(count=70))
    daemon = Supervisor(
        _config(make_job("a"), make_job("b")),
        exit_when_idle=True,
        store=InMemorySnapshotStore(),
        components=world.components,
        control_socket=False,
    )
    await daemon.run()
    assert {name: r.state for name, r in daemon.owners.items()} == {
        "a": R.FINISHED,
        "b": R.FINISHED,
    }
    assert len(world.sinks["b"].flushed) == 70


async def test_commands_name_unknown_jobs() -> None:
    """A command for a job that does not exist is refused, listing the jobs there are."""
    world = World()
    world.add("a", ScriptedSource(available=1))
    daemon = Supervisor(
        _config(make_job("a")),
        store=InMemorySnapshotStore(),
        components=world.components,
        control_socket=False,
    )
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        with pytest.raises(CommandRefused, match=r"no job named 'b' \(jobs: a\)"):
            await daemon.owner("b").pause()
        daemon.request_stop()


async def test_every_transition_is_one_event_and_kept_in_history() -> None:
    """Each state change logs `job.state_changed` (job, from, to, attempt, cause) and is kept."""
    from structlog.testing import capture_logs

    world = World()
    world.add("a", ScriptedSource(count=10, open_errors=[TransientError("blip")]))
    job = make_job("a", retry=RetryPolicy(initial=1.0, jitter=False, reset_after=0.0))
    daemon = Supervisor(
        _config(job),
        exit_when_idle=True,
        store=InMemorySnapshotStore(),
        components=world.components,
        control_socket=False,
    )
    with capture_logs() as logs:
        await daemon.run()
    events = [e for e in logs if e["event"] == "job.state_changed"]
    assert [(e["from"], e["to"]) for e in events] == [
        ("pending", "retrying"),
        ("retrying", "running"),
        ("running", "finished"),
    ]
    assert events[0]["attempt"] == 1 and "blip" in events[0]["cause"]
    assert [(c.old, c.new) for c in daemon.history] == [
        (R.PENDING, R.RETRYING),
        (R.RETRYING, R.RUNNING),
        (R.RUNNING, R.FINISHED),
    ]
