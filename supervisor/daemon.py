"""The daemon: one owner task per job, signals, reloads, graceful shutdown.

A job name has at most one owner task at a time, across reloads too: a job that
a reload removes ends its attempt after a final checkpoint, and a reload that
adds it back waits for that owner to end before it loads the snapshot and
starts the new one.

Shutdown (SIGTERM, SIGINT, or idle with ``--exit-when-idle``) asks every job
to end its attempt after a final checkpoint; attempts still running after
`shutdown_timeout` are cancelled without one, even in a slow `close()` (their
last checkpoint stands). A stop signal never waits for a reload, and once
stopping, reloads are refused.
"""

from __future__ import annotations

import functools
import gc
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import structlog

from supervisor.components import DEFAULT_COMPONENTS, Components
from supervisor.config.loader import load_config
from supervisor.config.model import Config, JobConfig
from supervisor.control.commands import dispatch
from supervisor.control.server import serve_control
from supervisor.control.socket_file import bind_control_socket
from supervisor.errors import CommandRefused, ConfigError, SnapshotError
from supervisor.history import EventHistory, StateChange
from supervisor.job_owner import JobOwner
from supervisor.ledger import JobLedger
from supervisor.loop_lag import probe_wanted, report_loop_lag
from supervisor.notify import SystemdNotifier, status_line
from supervisor.observe.http import bind_http
from supervisor.observe.routes import serve_observer
from supervisor.reload import ReloadPlan, plan_reload
from supervisor.snapshot import Snapshot
from supervisor.snapshot_store import SnapshotStorage, SnapshotStore
from supervisor.start_slots import StartSlots
from supervisor.states import ACTIVE, JobState

log = structlog.get_logger("supervisor.daemon")

STOPPING_REFUSAL = "the daemon is stopping: reload refused, nothing changed"
STOPPING_PART_WAY = "the daemon began stopping during the reload: it was applied only in part"

GC_THRESHOLDS = (50_000, 20, 10)
"""The cyclic collector's thresholds while the daemon runs (Python's default is 700, 10, 10):
young collections every 50,000 net allocations, so full ones come about 70 times less often.
Almost everything the daemon allocates is freed by reference counting anyway."""


async def read_config_files(path: Path) -> Config:
    """The daemon file at `path` and its job files, read in a worker thread.

    Abandoned if cancelled: the read changes nothing, and a hung filesystem must not keep
    a stopping daemon waiting."""
    return await anyio.to_thread.run_sync(load_config, path, abandon_on_cancel=True)


class Supervisor:
    """Runs every job of a `Config` until told to stop (or until idle).

    `read_config` is how a reload reads the configuration (the files, unless a test
    says otherwise); `handle_signals` False leaves signals alone (a daemon run off the
    main thread, as tests do).
    """

    def __init__(
        self,
        config: Config,
        *,
        exit_when_idle: bool = False,
        store: SnapshotStorage | None = None,
        components: Components = DEFAULT_COMPONENTS,
        control_socket: bool = True,
        read_config: Callable[[Path], Awaitable[Config]] = read_config_files,
        handle_signals: bool = True,
    ) -> None:
        self.config = config
        self.exit_when_idle = exit_when_idle
        self.store = store if store is not None else SnapshotStore(config.daemon.state_dir)
        self._components = components
        self._control_socket = control_socket
        self._read_config = read_config
        self._handle_signals_wanted = handle_signals
        self.notifier = SystemdNotifier()
        self.start_slots = StartSlots(config.daemon.max_starts_in_flight)
        self.owners: dict[str, JobOwner] = {}
        self.history = EventHistory()
        self._stopping = False
        self._changed = anyio.Event()
        self._stop_requested = anyio.Event()
        self._status_changed = anyio.Event()
        self._reload_lock = anyio.Lock()
        self._ending: dict[str, tuple[JobOwner, anyio.Event]] = {}
        """Owners of jobs a reload removed that have not ended yet (final checkpoint, close),
        by job name, each with the event set once it has: a job added back waits for it."""
        self.ready = False
        """Every job launched and READY=1 sent (`/readyz`)."""
        self.control_listening: bool | None = None
        """The control socket accepts (`/readyz`); None without one."""

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Prepare state, run every job, return once all have stopped."""
        # The daemon's heap is large and long-lived (tasks, scopes and owners of
        # every job): with the default thresholds, full collections of it run again
        # and again while thousands of jobs start, each stalling the loop. See
        # GC_THRESHOLDS.
        gc.set_threshold(*GC_THRESHOLDS)
        await self.store.prepare(lock=True)  # one daemon per state directory
        try:
            await self._run(task_status)
        finally:
            self.store.close()

    async def _run(self, task_status: anyio.abc.TaskStatus[None]) -> None:
        # Every job's snapshot in one worker-thread trip: one per job took seconds at 10,000.
        loaded = await self.store.load_many([job.name for job in self.config.jobs])
        for job in self.config.jobs:
            self.owners[job.name] = self._owner_for(job, loaded[job.name])
        listen = self.config.daemon.http_listen
        # Before the control socket: if the address is taken, no socket file is left behind.
        http = None if listen is None else await bind_http(listen, self.config.daemon.path)
        socket_path = self.config.daemon.control_socket
        control = (
            # In a thread: it checks the directory, and probes and removes a stale socket.
            await anyio.to_thread.run_sync(
                bind_control_socket, socket_path, self.config.daemon.socket_mode
            )
            if self._control_socket
            else None
        )
        log.info("daemon.started", jobs=len(self.owners), state_dir=str(self.store.directory))
        async with anyio.create_task_group() as daemon_tasks:
            self._daemon_tasks = daemon_tasks
            # Signal handlers first: a SIGHUP or SIGTERM sent as soon as the socket
            # answers (or READY=1 is sent) must be handled, not kill the process.
            if self._handle_signals_wanted:
                await daemon_tasks.start(self._handle_signals)
            if control is not None:
                await daemon_tasks.start(serve_control, control, functools.partial(dispatch, self))
                self.control_listening = True
            if http is not None:
                await daemon_tasks.start(serve_observer, self, http)
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
                    for owner in self.owners.values():
                        self._launch(owner)
                    task_status.started()
                    self.ready = True
                    # Config read, state directory and control socket ready: tell systemd.
                    self.notifier.send("READY=1", f"STATUS={self._summary()}")
            daemon_tasks.cancel_scope.cancel()
        self.notifier.close()
        log.info("daemon.stopped")

    async def reload(self) -> dict[str, Any]:
        """Re-read every file and apply the whole new set; return once it is applied.

        Raises ConfigError with every problem when the new set is invalid (nothing
        changes), and CommandRefused once the daemon is stopping. READY=1 follows
        RELOADING=1 only once the plan is applied (or refused), so systemd's reload
        ends when the daemon runs the new set.
        """
        self._refuse_reload_if_stopping()
        async with self._reload_lock:
            self._refuse_reload_if_stopping()
            self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
            try:
                try:
                    new = await self._read_config(self.config.daemon.path)
                except ConfigError as exc:
                    errors = [str(issue) for issue in exc.issues]
                    log.error("daemon.reload_refused", errors=errors)  # noqa: TRY400 - no traceback wanted
                    raise
                self._refuse_reload_if_stopping()
                plan = plan_reload(self.config, new)
                await self._apply(plan, new)
            finally:
                if not self._stopping:  # once stopping, STOPPING=1 is what systemd was told
                    self.notifier.send("READY=1", f"STATUS={self._summary()}")
            log.info("daemon.reloaded", **plan.summary())
            self._status_changed.set()
            return plan.summary()

    async def _apply(self, plan: ReloadPlan, new: Config) -> None:
        """Make the running jobs those of `new`; CommandRefused if the daemon begins
        stopping part-way (what is left undone then is moot: every job is stopping)."""
        self.config = new
        for name in plan.removed:
            self._retire(self.owners.pop(name))
        # Jobs whose previous owner is still ending are started last: the others need not wait.
        for job in sorted(plan.added, key=lambda job: job.name in self._ending):
            ending = self._ending.get(job.name)
            if ending is not None:
                log.info("job.waiting_for_previous_owner", job=job.name)
                await ending[1].wait()
            await self._add(job)
        for job in plan.changed:
            self._refuse_reload_if_stopping(STOPPING_PART_WAY)
            await self.owners[job.name].reconfigure(job)
        if plan.daemon_changed:
            log.warning("daemon.settings_need_restart", path=str(new.daemon.path))

    async def _add(self, job: JobConfig) -> None:
        """Start `job`'s owner; its snapshot is loaded now, after any previous owner ended."""
        owner = await self._build_owner(job)
        # No await from here on: a shutdown that began is seen, or will see this job.
        self._refuse_reload_if_stopping(STOPPING_PART_WAY)
        self.owners[job.name] = owner
        self._launch(owner)

    def _retire(self, owner: JobOwner) -> None:
        """A removed job: its owner ends after a final checkpoint; the snapshot stays."""
        self._ending[owner.name] = (owner, anyio.Event())
        owner.shut_down()

    def _launch(self, owner: JobOwner) -> None:
        self._job_tasks.start_soon(self._own, owner, name=f"job {owner.name}")

    async def _own(self, owner: JobOwner) -> None:
        """Run the task of `owner`; if a reload removed it, say when it has ended."""
        try:
            await owner.run(self._job_tasks)
        finally:
            ending = self._ending.get(owner.name)
            if ending is not None and ending[0] is owner:
                del self._ending[owner.name]
                ending[1].set()

    def _refuse_reload_if_stopping(self, message: str = STOPPING_REFUSAL) -> None:
        if self._stopping:
            raise CommandRefused(message)

    def request_stop(self) -> None:
        """Begin a graceful shutdown; from now on reloads are refused."""
        self._stopping = True
        self._stop_requested.set()

    def owner(self, job: str) -> JobOwner:
        """The owner of `job` now, which an operator's command goes to; `CommandRefused`
        if there is no such job."""
        owner = self.owners.get(job)
        if owner is None:
            known = ", ".join(sorted(self.owners)) or "none"
            raise CommandRefused(f"no job named {job!r} (jobs: {known})")
        return owner

    async def _build_owner(self, job: JobConfig) -> JobOwner:
        loaded: Snapshot | SnapshotError | None
        try:
            loaded = await self.store.load(job.name)
        except SnapshotError as exc:
            loaded = exc
        return self._owner_for(job, loaded)

    def _owner_for(self, job: JobConfig, loaded: Snapshot | SnapshotError | None) -> JobOwner:
        """The owner of `job`, given its snapshot as loaded (or why it could not be)."""
        load_error = loaded if isinstance(loaded, SnapshotError) else None
        snapshot = None if isinstance(loaded, SnapshotError) else loaded
        owner = JobOwner(
            job,
            JobLedger(self.store, job.name, snapshot),
            self._record_change,
            start_slots=self.start_slots,
            components=self._components,
        )
        if load_error is not None:
            owner.fail_at_start(load_error)
            log.error("job.snapshot_unreadable", job=job.name, error=str(load_error))
        return owner

    def _record_change(
        self, owner: JobOwner, old: JobState, new: JobState, cause: str | None
    ) -> None:
        self.history.record(StateChange(owner.name, old, new, owner.attempts, cause, time.time()))
        log.info(
            "job.state_changed",
            job=owner.name,
            to=new.value,
            attempt=owner.attempts,
            cause=cause,
            **{"from": old.value},
        )
        self._changed.set()
        self._status_changed.set()

    async def _handle_signals(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """SIGHUP reloads; SIGTERM and SIGINT stop. Started once the handlers are installed."""
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    # In a task of its own: a SIGTERM during a long reload is not kept waiting.
                    self._daemon_tasks.start_soon(self._reload_on_signal)
                    continue
                log.info("daemon.signal", signal=signal.Signals(signum).name)
                self.request_stop()

    async def _reload_on_signal(self) -> None:
        try:
            await self.reload()
        except ConfigError:
            pass  # logged; nothing changed
        except CommandRefused as exc:
            log.warning("daemon.reload_refused", error=str(exc))

    def _summary(self) -> str:
        return status_line(owner.state for owner in self.owners.values())

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
        while any(owner.state in ACTIVE for owner in self.owners.values()):
            await self._changed.wait()
            self._changed = anyio.Event()
        log.info("daemon.idle")
        self.request_stop()

    async def _shut_down_when_requested(self) -> None:
        await self._stop_requested.wait()
        timeout = self.config.daemon.shutdown_timeout
        log.info("daemon.stopping", timeout=timeout)
        self.notifier.send("STOPPING=1")
        for owner in self.owners.values():
            owner.shut_down()
        await anyio.sleep(timeout)
        owners = [*self.owners.values(), *(owner for owner, _ in self._ending.values())]
        still_running = sorted(
            (owner for owner in owners if owner.attempt is not None), key=lambda r: r.name
        )
        log.error("daemon.shutdown_timeout", timeout=timeout, jobs=[r.name for r in still_running])
        for owner in still_running:
            attempt = owner.attempt
            if attempt is not None:
                log.warning("job.attempt_cancelled", job=owner.name, reason="shutdown_timeout")
                attempt.abandon()  # a close() that hangs must not hold the daemon past now
        self._jobs_scope.cancel()
