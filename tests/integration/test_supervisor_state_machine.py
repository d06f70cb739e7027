"""A Hypothesis state machine over a whole `Supervisor`, on a virtual clock: reloads that
remove and add back jobs, interleaved with sinks whose flush or close is held.

Promise 1 ("one attempt per job, ever") across reloads (issue 14.1): after every step, no
job has two attempts open at once, every record was delivered once and in order, and the
snapshot holds the offset of everything the sink made durable (no final checkpoint lost).

The daemon lives on a trio event loop in a portal thread whose MockClock only moves when a
rule jumps it; every step ends when all tasks are blocked, so its effects are complete.
"""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import trio.testing
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from trio.testing import MockClock

from supervisor.config.model import CheckpointPolicy, Config, DaemonConfig
from supervisor.daemon import Supervisor
from supervisor.snapshot import decode
from supervisor.testing import ScriptedSource
from tests.helpers import make_job
from tests.in_memory_store import InMemorySnapshotStore
from tests.slow_parts import GatedSink, World

JOBS = ("alpha", "beta")


def _config(names: set[str]) -> Config:
    daemon = DaemonConfig(
        path=Path("/x/supervisor.toml"),
        state_dir=Path("/x/state"),
        control_socket=Path("/x/s.sock"),
        shutdown_timeout=5.0,
    )
    policy = CheckpointPolicy(every_records=10, interval=2.0)
    return Config(
        daemon=daemon, jobs=tuple(make_job(name, checkpoint=policy) for name in sorted(names))
    )


class SupervisorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = MockClock()
        self._portal_cm = anyio.from_thread.start_blocking_portal(
            "trio", backend_options={"clock": self.clock}
        )
        self.portal = self._portal_cm.__enter__()
        self.wanted = set(JOBS)
        self.world = World(_config(self.wanted))
        for name in JOBS:
            self.world.sources[name] = ScriptedSource(available=0, batch=3)
            self.world.sinks[name] = GatedSink()
        self.store = InMemorySnapshotStore()
        self.reloads: list[Future[Any]] = []
        """Each reload, as a portal task (one may wait for a held close: it must not block)."""
        self.daemon = Supervisor(
            self.world.files,  # type: ignore[arg-type]
            store=self.store,
            components=self.world.components,
            control_socket=False,
            read_config=self.world.read_config,
            handle_signals=False,
        )
        self._host, _ = self.portal.start_task(self._host_daemon)
        self._settle()

    async def _host_daemon(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with anyio.create_task_group() as tasks:
            self.tasks = tasks
            await tasks.start(self.daemon.run)
            task_status.started()

    def _settle(self) -> None:
        self.portal.call(trio.testing.wait_all_tasks_blocked)

    def teardown(self) -> None:
        try:
            self.portal.call(self._release_all)
            self.portal.call(self.daemon.request_stop)
            for _ in range(100):
                self._settle()
                if self._host.done():
                    break
                self.clock.jump(1.0)
            self._host.result(timeout=10)
            self._check_delivery()
            for name in JOBS:
                sink = self.world.sinks[name]
                assert sink.open_now == 0, f"{name}: an attempt outlived the daemon"
        finally:
            self._portal_cm.__exit__(None, None, None)

    # --- the world -----------------------------------------------------------------------

    @rule(job=st.sampled_from(JOBS), count=st.integers(1, 12))
    def records_arrive(self, job: str, count: int) -> None:
        source = self.world.sources[job]
        # On the loop's thread: setting `available` wakes a waiting read.
        self.portal.call(setattr, source, "available", (source.available or 0) + count)
        self._settle()

    @rule(job=st.sampled_from(JOBS), what=st.sampled_from(["flush", "close"]))
    def sink_is_held(self, job: str, what: str) -> None:
        self.portal.call(self._hold, job, what)
        self._settle()

    @rule(job=st.sampled_from(JOBS))
    def sink_is_released(self, job: str) -> None:
        self.portal.call(self._release, job)
        self._settle()

    @rule(seconds=st.sampled_from([0.1, 0.5, 1.0, 2.0, 5.0]))
    def time_passes(self, seconds: float) -> None:
        remaining = seconds
        while remaining > 0:
            step = min(remaining, 0.25)
            self.clock.jump(step)
            remaining -= step
            self._settle()

    def _hold(self, job: str, what: str) -> None:
        sink = self.world.sinks[job]
        if what == "flush" and sink.flush_gate is None:
            sink.flush_gate = anyio.Event()
        if what == "close" and sink.close_gate is None:
            sink.close_gate = anyio.Event()

    def _release(self, job: str) -> None:
        sink = self.world.sinks[job]
        for gate in (sink.flush_gate, sink.close_gate):
            if gate is not None:
                gate.set()
        sink.flush_gate = sink.close_gate = None

    def _release_all(self) -> None:
        for name in JOBS:
            self._release(name)

    # --- the operator --------------------------------------------------------------------

    @rule(job=st.sampled_from(JOBS))
    def reload_removes(self, job: str) -> None:
        self.wanted.discard(job)
        self._reload()

    @rule(job=st.sampled_from(JOBS))
    def reload_adds(self, job: str) -> None:
        self.wanted.add(job)
        self._reload()

    def _reload(self) -> None:
        # The files as they are when the reload reads them: reloads queue, each reads then.
        self.world.files = _config(set(self.wanted))

        self.reloads.append(self.portal.start_task_soon(self.daemon.reload))
        self._settle()

    # --- the promises ----------------------------------------------------------------------

    @invariant()
    def the_daemon_is_alive(self) -> None:
        if self._host.done():
            self._host.result()
            raise AssertionError("the daemon ended without being told to")
        for reload in self.reloads:
            if reload.done():
                reload.result()  # raises what failed it

    @invariant()
    def never_two_attempts_of_one_job(self) -> None:
        for name in JOBS:
            assert self.world.sinks[name].most_open_at_once <= 1, name
            assert self.world.sources[name].most_open_at_once <= 1, name

    @invariant()
    def delivered_once_and_checkpointed(self) -> None:
        self._check_delivery()

    def _check_delivery(self) -> None:
        for name in JOBS:
            flushed = [record["seq"] for record in self.world.sinks[name].flushed]
            assert flushed == list(range(len(flushed))), f"{name}: repeated or lost records"
            assert (self._committed(name) or 0) == len(flushed), (
                f"{name}: the snapshot does not hold what the sink made durable"
            )

    def _committed(self, job: str) -> Any:
        data = self.store.files.get(job)
        if data is None:
            return None
        return decode(data, job=job, path=self.store.path_for(job)).offset


SupervisorMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_supervisor_state_machine = SupervisorMachine.TestCase
