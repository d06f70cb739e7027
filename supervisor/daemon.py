"""The daemon: one owner task per job, signals, graceful shutdown.

Shutdown (SIGTERM, SIGINT, or idle with ``--exit-when-idle``) asks every job
to end its attempt after a final checkpoint; jobs still running after
`shutdown_timeout` are cancelled without one (their last checkpoint stands).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import signal
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from supervisor.components import DEFAULT_COMPONENTS, Components
from supervisor.config.loader import load_config
from supervisor.config.model import Config, JobConfig
from supervisor.control.commands import dispatch
from supervisor.control.server import bind_control_socket, serve_control
from supervisor.errors import CommandRefused, ConfigError, SnapshotError
from supervisor.job import JobRunner
from supervisor.ledger import JobLedger
from supervisor.loop_lag import probe_wanted, report_loop_lag
from supervisor.notify import SystemdNotifier, status_line
from supervisor.reload import plan_reload
from supervisor.snapshot import Snapshot
from supervisor.snapshot_store import SnapshotStore
from supervisor.start_slots import StartSlots
from supervisor.states import ACTIVE, JobState

if TYPE_CHECKING:
    from supervisor.testing import InMemorySnapshotStore

log = structlog.get_logger("supervisor.daemon")

FOLLOW_BUFFER = 1000
"""State changes a `supervisor events --follow` client may fall behind by before it is dropped."""

HISTORY_LENGTH = 1000
"""State changes kept in memory for `supervisor events`."""

GC_THRESHOLDS = (50_000, 20, 10)
"""The cyclic collector's thresholds while the daemon runs (Python's default is 700, 10, 10):
young collections every 50,000 net allocations, so full ones come about 70 times less often.
Almost everything the daemon allocates is freed by reference counting anyway."""


@dataclass(frozen=True, slots=True)
class StateChange:
    """One job's move from one state to another, as kept for `supervisor events`."""

    job: str
    old: JobState
    new: JobState
    attempt: int
    cause: str | None
    at: float
    """Wall-clock time (seconds since the epoch)."""


class Supervisor:
    """Runs every job of a `Config` until told to stop (or until idle)."""

    def __init__(
        self,
        config: Config,
        *,
        exit_when_idle: bool = False,
        store: SnapshotStore | InMemorySnapshotStore | None = None,
        components: Components = DEFAULT_COMPONENTS,
        control_socket: bool = True,
    ) -> None:
        self.config = config
        self.exit_when_idle = exit_when_idle
        self.store = store if store is not None else SnapshotStore(config.daemon.state_dir)
        self._components = components
        self._control_socket = control_socket
        self.notifier = SystemdNotifier()
        self.start_slots = StartSlots(config.daemon.max_starts_in_flight)
        self.runners: dict[str, JobRunner] = {}
        self.history: deque[StateChange] = deque(maxlen=HISTORY_LENGTH)
        self._stopping = False
        self._changed = anyio.Event()
        self._stop_requested = anyio.Event()
        self._status_changed = anyio.Event()
        self._reload_lock = anyio.Lock()
        self._followers: set[MemoryObjectSendStream[StateChange]] = set()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Prepare state, run every job, return once all have stopped."""
        # The daemon's heap is large and long-lived (tasks, scopes and runners of
        # every job): with the default thresholds each full collection of 10,000
        # jobs took ~0.5 s, 13 of them while starting. See GC_THRESHOLDS.
        gc.set_threshold(*GC_THRESHOLDS)
        if isinstance(self.store, SnapshotStore):
            await self.store.prepare(lock=True)  # one daemon per state directory
        else:
            await self.store.prepare()
        try:
            await self._run(task_status)
        finally:
            if isinstance(self.store, SnapshotStore):
                self.store.close()

    async def _run(self, task_status: anyio.abc.TaskStatus[None]) -> None:
        # Every job's snapshot in one worker-thread trip: one per job took seconds at 10,000.
        loaded = await self.store.load_many([job.name for job in self.config.jobs])
        for job in self.config.jobs:
            self.runners[job.name] = self._runner_for(job, loaded[job.name])
        socket_path = self.config.daemon.control_socket
        control = (
            bind_control_socket(socket_path, self.config.daemon.socket_mode)
            if self._control_socket
            else None
        )
        log.info("daemon.started", jobs=len(self.runners), state_dir=str(self.store.directory))
        async with anyio.create_task_group() as daemon_tasks:
            # Signal handlers first: a SIGHUP or SIGTERM sent as soon as the socket
            # answers (or READY=1 is sent) must be handled, not kill the process.
            await daemon_tasks.start(self._handle_signals)
            if control is not None:
                await daemon_tasks.start(serve_control, control, functools.partial(dispatch, self))
            if self.notifier.enabled:
                daemon_tasks.start_soon(self._report_status)
            if self.notifier.watchdog_interval:
                daemon_tasks.start_soon(self._ping_watchdog, self.notifier.watchdog_interval)
            if probe_wanted(self.config.daemon.log_level):
                daemon_tasks.start_soon(report_loop_lag)
            daemon_tasks.start_soon(self._shut_down_when_requested)
            if self.exit_when_idle:
                daemon_tasks.start_soon(self._stop_when_idle)
            with anyio.CancelScope() as self._jobs_scope:
                async with anyio.create_task_group() as job_tasks:
                    self._job_tasks = job_tasks
                    # Holds the group open with no jobs (or all removed by reload)
                    # until shutdown: an empty daemon still serves and reloads.
                    job_tasks.start_soon(self._stop_requested.wait)
                    for runner in self.runners.values():
                        job_tasks.start_soon(runner.run, job_tasks, name=f"job {runner.name}")
                    task_status.started()
                    # Config read, state directory and control socket ready: tell systemd.
                    self.notifier.send("READY=1", f"STATUS={self._summary()}")
            daemon_tasks.cancel_scope.cancel()
        self.notifier.close()
        log.info("daemon.stopped")

    async def reload(self) -> dict[str, Any]:
        """Re-read every file; apply the whole new set, or nothing if any of it is invalid.

        Raises ConfigError with every problem when the new set is invalid.
        """
        async with self._reload_lock:
            self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
            try:
                new = await anyio.to_thread.run_sync(load_config, self.config.daemon.path)
            except ConfigError as exc:
                errors = [str(issue) for issue in exc.issues]
                log.error("daemon.reload_refused", errors=errors)  # noqa: TRY400 - no traceback wanted
                raise
            finally:
                self.notifier.send("READY=1")
            plan = plan_reload(self.config, new)
            self.config = new
            for name in plan.removed:
                runner = self.runners.pop(name)
                runner.shut_down()  # final checkpoint; the snapshot stays on disk
            for job in plan.added:
                runner = self.runners[job.name] = await self._build_runner(job)
                self._job_tasks.start_soon(runner.run, self._job_tasks, name=f"job {runner.name}")
            for job in plan.changed:
                await self.runners[job.name].request("reconfigure", job)
            if plan.daemon_changed:
                log.warning("daemon.settings_need_restart", path=str(new.daemon.path))
            log.info("daemon.reloaded", **plan.summary())
            self._status_changed.set()
            return plan.summary()

    def request_stop(self) -> None:
        """Begin a graceful shutdown."""
        self._stop_requested.set()

    async def command(self, job: str, verb: str, value: object = None) -> JobState:
        """Run an operator command (`pause`, `resume`, `stop`, `start`, `restart`,
        `retry`, `set_offset`) on one job; raises `CommandRefused` if it does not fit."""
        runner = self.runners.get(job)
        if runner is None:
            known = ", ".join(sorted(self.runners)) or "none"
            raise CommandRefused(f"no job named {job!r} (jobs: {known})")
        return await runner.request(verb, value)

    async def _build_runner(self, job: JobConfig) -> JobRunner:
        loaded: Snapshot | SnapshotError | None
        try:
            loaded = await self.store.load(job.name)
        except SnapshotError as exc:
            loaded = exc
        return self._runner_for(job, loaded)

    def _runner_for(self, job: JobConfig, loaded: Snapshot | SnapshotError | None) -> JobRunner:
        """The runner of `job`, given its snapshot as loaded (or why it could not be)."""
        load_error = loaded if isinstance(loaded, SnapshotError) else None
        snapshot = None if isinstance(loaded, SnapshotError) else loaded
        runner = JobRunner(
            job,
            JobLedger(self.store, job.name, snapshot),
            self._record_change,
            start_slots=self.start_slots,
            components=self._components,
        )
        if load_error is not None:
            runner.fail_at_start(load_error)
            log.error("job.snapshot_unreadable", job=job.name, error=str(load_error))
        return runner

    def _record_change(
        self, runner: JobRunner, old: JobState, new: JobState, cause: str | None
    ) -> None:
        self.history.append(StateChange(runner.name, old, new, runner.attempts, cause, time.time()))
        log.info(
            "job.state_changed",
            job=runner.name,
            to=new.value,
            attempt=runner.attempts,
            cause=cause,
            **{"from": old.value},
        )
        self._changed.set()
        self._status_changed.set()
        for follower in list(self._followers):
            try:
                follower.send_nowait(self.history[-1])
            except anyio.WouldBlock:
                # A follower that does not keep up is dropped, never waited for.
                self._followers.discard(follower)
                follower.close()

    @contextlib.contextmanager
    def follow(self) -> Iterator[MemoryObjectReceiveStream[StateChange]]:
        """State changes from now on, until the block ends (or the reader falls behind)."""
        send, receive = anyio.create_memory_object_stream[StateChange](FOLLOW_BUFFER)
        self._followers.add(send)
        try:
            yield receive
        finally:
            self._followers.discard(send)
            send.close()
            receive.close()

    async def _handle_signals(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """SIGHUP reloads; SIGTERM and SIGINT stop. Started once the handlers are installed."""
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    with contextlib.suppress(ConfigError):  # logged; nothing changed
                        await self.reload()
                    continue
                log.info("daemon.signal", signal=signal.Signals(signum).name)
                self.request_stop()

    def _summary(self) -> str:
        return status_line(runner.state for runner in self.runners.values())

    async def _report_status(self) -> None:
        """STATUS= on state changes, at most once a second."""
        while True:
            await self._status_changed.wait()
            self._status_changed = anyio.Event()
            self.notifier.send(f"STATUS={self._summary()}")
            await anyio.sleep(1.0)

    async def _ping_watchdog(self, interval: float) -> None:
        # From the event loop itself: if the loop is blocked, the pings stop
        # and systemd restarts us, which is the point.
        while True:
            self.notifier.send("WATCHDOG=1")
            await anyio.sleep(interval)

    async def _stop_when_idle(self) -> None:
        while any(runner.state in ACTIVE for runner in self.runners.values()):
            await self._changed.wait()
            self._changed = anyio.Event()
        log.info("daemon.idle")
        self.request_stop()

    async def _shut_down_when_requested(self) -> None:
        await self._stop_requested.wait()
        timeout = self.config.daemon.shutdown_timeout
        log.info("daemon.stopping", timeout=timeout)
        self.notifier.send("STOPPING=1")
        for runner in self.runners.values():
            runner.shut_down()
        await anyio.sleep(timeout)
        still_running = sorted(r.name for r in self.runners.values() if r.attempt is not None)
        log.error("daemon.shutdown_timeout", timeout=timeout, jobs=still_running)
        self._jobs_scope.cancel()
