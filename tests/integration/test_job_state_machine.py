"""A Hypothesis state machine over real JobOwners, on a virtual clock.

Random failures of source, sink and open (transient and fatal, and whatever
else plugin code may raise: SystemExit, KeyboardInterrupt, CancelledError,
BaseException subclasses, unprintable errors, groups of them), new records,
clock advances and every operator command; after every step the invariants of
SPEC §4 are checked.

The owners live on a trio event loop in a portal thread whose MockClock only
moves when a rule jumps it, and every step ends when all tasks are blocked, so
each step's effects are complete and deterministic before the checks run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.from_thread
import trio.testing
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from trio.testing import MockClock

from supervisor.config.model import CheckpointPolicy, RetryPolicy
from supervisor.control.commands import run_job_command
from supervisor.control.protocol import JobVerb
from supervisor.errors import CommandRefused, FatalError, FinalCheckpointFailed, TransientError
from supervisor.failures import MESSAGE_LIMIT
from supervisor.job_owner import JobOwner
from supervisor.ledger import JobLedger
from supervisor.start_slots import StartSlots
from supervisor.states import Event, IllegalTransition, JobState, next_state
from supervisor.testing import (
    RecordingSink,
    ScriptedSource,
    fixed_components,
)
from tests.helpers import make_job
from tests.in_memory_store import InMemorySnapshotStore

JOBS = ("alpha", "beta")
VERBS = tuple(JobVerb)
HOLDING = frozenset({JobState.PAUSED, JobState.STOPPED})


def _error(kind: str) -> BaseException:
    return FatalError("fatal") if kind == "fatal" else TransientError("transient")


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise ValueError("no str")


class _PluginBase(BaseException):
    pass


PLUGIN_ERRORS = ("system_exit", "keyboard_interrupt", "cancelled", "base", "unprintable", "group")
"""What plugin code may raise besides Exception (issue 14.2): BaseException subclasses
included. Each must fail only its attempt: the owner tasks stay alive."""


def _plugin_error(kind: str) -> BaseException:
    makers: dict[str, Callable[[], BaseException]] = {
        "system_exit": lambda: SystemExit(3),
        "keyboard_interrupt": KeyboardInterrupt,
        "cancelled": asyncio.CancelledError,
        "base": lambda: _PluginBase("mine"),
        "unprintable": _Unprintable,
        "group": lambda: BaseExceptionGroup("g", [SystemExit(1), _Unprintable()]),
    }
    return makers[kind]()


@dataclass
class JobModel:
    """What the test knows about one job, to check the owner against."""

    owner: JobOwner
    source: ScriptedSource
    sink: RecordingSink
    suspend: bool
    hold: JobState | None = None
    """PAUSED or STOPPED as the operator left it, until they say otherwise."""
    opens_at_reset: int = 0
    last_offset: int = 0
    suspended_bytes: bytes | None = None
    changes: list[tuple[JobState, JobState]] = field(default_factory=list)

    def record_change(self, _: JobOwner, old: JobState, new: JobState, cause: str | None) -> None:
        self.changes.append((old, new))


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = MockClock()
        self._portal_cm = anyio.from_thread.start_blocking_portal(
            "trio", backend_options={"clock": self.clock}
        )
        self.portal = self._portal_cm.__enter__()
        self.store = InMemorySnapshotStore()
        self.jobs: dict[str, JobModel] = {}
        self._host, _ = self.portal.start_task(self._host_jobs)
        self._settle()

    async def _host_jobs(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        self._stop = anyio.Event()
        async with anyio.create_task_group() as tasks:
            self.tasks = tasks
            await self._start_all()
            task_status.started()
            await self._stop.wait()
            for model in self.jobs.values():
                model.owner.shut_down()

    async def _start_all(self) -> None:
        slots = StartSlots(1)
        for index, name in enumerate(JOBS):
            suspend = index == 0
            policy = RetryPolicy(initial=1.0, max=8.0, jitter=True, max_attempts=3, reset_after=5.0)
            job = make_job(
                name,
                suspend_on_failure=suspend,
                retry=policy,
                checkpoint=CheckpointPolicy(every_records=20, interval=3.0),
            )
            source, sink = ScriptedSource(available=0, batch=3), RecordingSink()
            model = JobModel(None, source, sink, suspend)  # type: ignore[arg-type]
            owner = JobOwner(
                job,
                JobLedger(self.store, name, None),
                model.record_change,
                start_slots=slots,
                components=fixed_components(source, sink),
                rng=lambda: 0.5,
            )
            model.owner = owner
            self.jobs[name] = model
            await self.tasks.start(owner.run, self.tasks)

    def _settle(self) -> None:
        self.portal.call(trio.testing.wait_all_tasks_blocked)

    def teardown(self) -> None:
        try:
            self.portal.call(self._stop.set)
            self._host.result()
        finally:
            self._portal_cm.__exit__(None, None, None)

    # --- the world -------------------------------------------------------------------

    @rule(job=st.sampled_from(JOBS), count=st.integers(1, 12))
    def records_arrive(self, job: str, count: int) -> None:
        source = self.jobs[job].source
        # On the loop's thread: setting `available` wakes a waiting read.
        self.portal.call(setattr, source, "available", (source.available or 0) + count)
        self._settle()

    @rule(job=st.sampled_from(JOBS), kind=st.sampled_from(["transient", "fatal"]))
    def source_read_fails(self, job: str, kind: str) -> None:
        self.portal.call(self.jobs[job].source.fail_next_read, _error(kind))
        self._settle()

    @rule(job=st.sampled_from(JOBS), kind=st.sampled_from(["transient", "fatal"]))
    def source_open_fails(self, job: str, kind: str) -> None:
        self.jobs[job].source.open_errors.append(_error(kind))
        self._settle()

    @rule(job=st.sampled_from(JOBS), kind=st.sampled_from(["transient", "fatal"]))
    def sink_flush_fails(self, job: str, kind: str) -> None:
        self.jobs[job].sink.fail_on_flush = _error(kind)
        self._settle()

    @rule(
        job=st.sampled_from(JOBS),
        where=st.sampled_from(["open", "read", "flush"]),
        kind=st.sampled_from(PLUGIN_ERRORS),
    )
    def plugin_raises(self, job: str, where: str, kind: str) -> None:
        model = self.jobs[job]
        error = _plugin_error(kind)
        if where == "open":
            model.source.open_errors.append(error)
        elif where == "read":
            self.portal.call(model.source.fail_next_read, error)
        else:
            model.sink.fail_on_flush = error
        self._settle()

    @rule(seconds=st.sampled_from([0.1, 0.5, 1.0, 2.0, 5.0, 30.0]))
    def time_passes(self, seconds: float) -> None:
        # In small steps, so every timer due in between fires in order.
        remaining = seconds
        while remaining > 0:
            step = min(remaining, 0.25)
            self.clock.jump(step)
            remaining -= step
            self._settle()

    @rule(on=st.booleans())
    def disk_outage(self, on: bool) -> None:
        self.store.fail_writes = on
        self._settle()

    # --- the operator ----------------------------------------------------------------

    @rule(job=st.sampled_from(JOBS), verb=st.sampled_from(VERBS))
    def operator_command(self, job: str, verb: JobVerb) -> None:
        model = self.jobs[job]
        opens_before = model.source.opens
        outcome: dict[str, Any] = {}

        async def send() -> None:
            try:
                outcome["state"] = await run_job_command(model.owner, verb)
            except CommandRefused as exc:
                outcome["refused"] = exc
            except FinalCheckpointFailed:  # done, and said so: the state stands
                outcome["state"] = model.owner.state

        self.portal.call(self.tasks.start_soon, send)
        self._settle()
        assert outcome, f"{verb} on {job} did not complete once every task was blocked"
        if "refused" in outcome:
            return
        if verb in ("pause", "stop"):
            model.hold = model.owner.state
            assert model.hold in HOLDING
        elif verb in ("resume", "start", "restart"):
            model.hold = None
            model.opens_at_reset = opens_before
            model.suspended_bytes = None
            if model.owner.ledger.offset is None:
                model.last_offset = 0
            assert model.owner.attempts <= model.source.opens - opens_before

    @rule(job=st.sampled_from(JOBS), offset=st.integers(0, 50))
    def operator_sets_offset(self, job: str, offset: int) -> None:
        model = self.jobs[job]
        outcome: dict[str, Any] = {}

        async def send() -> None:
            try:
                await model.owner.set_offset(offset)
                outcome["ok"] = True
            except CommandRefused as exc:
                outcome["refused"] = exc

        state_before = model.owner.state
        self.portal.call(self.tasks.start_soon, send)
        self._settle()
        assert outcome
        if "ok" in outcome:
            model.last_offset = offset
            model.suspended_bytes = None
        elif state_before is JobState.FAILED:
            # Refused on a FAILED job after its snapshot was set aside: it was
            # never going to be resumed from, and `start` begins afresh.
            model.last_offset = 0

    # --- the promises ------------------------------------------------------------------

    @invariant()
    def every_owner_task_is_alive(self) -> None:
        if self._host.done():
            self._host.result()  # raises what killed it
            raise AssertionError("the job tasks ended without being told to")

    @invariant()
    def failures_are_described_safely(self) -> None:
        for model in self.jobs.values():
            failure = model.owner.failure
            if failure is not None:
                assert "no str" not in failure.message  # "<unprintable _Unprintable>" instead
                assert len(failure.message) <= MESSAGE_LIMIT

    @invariant()
    def never_two_attempts_of_one_job(self) -> None:
        for model in self.jobs.values():
            assert model.source.most_open_at_once <= 1

    @invariant()
    def only_table_transitions(self) -> None:
        for model in self.jobs.values():
            for old, new in model.changes:
                assert _has_edge(old, new, model.suspend), f"{old} -> {new}"
            model.changes.clear()

    @invariant()
    def operator_decision_stands(self) -> None:
        for model in self.jobs.values():
            if model.hold is not None:
                assert model.owner.state is model.hold

    @invariant()
    def only_attempts_that_ran_count(self) -> None:
        for model in self.jobs.values():
            assert 0 <= model.owner.attempts <= model.source.opens - model.opens_at_reset

    @invariant()
    def suspended_snapshot_never_changes(self) -> None:
        for name, model in self.jobs.items():
            if model.owner.state is not JobState.SUSPENDED or model.owner.persist_pending:
                model.suspended_bytes = None
                continue
            now = self.store.files.get(name)
            if model.suspended_bytes is None:
                model.suspended_bytes = now
            assert now == model.suspended_bytes

    @invariant()
    def committed_offset_never_goes_back(self) -> None:
        for model in self.jobs.values():
            offset = model.owner.ledger.offset
            current = offset if isinstance(offset, int) else 0
            assert current >= model.last_offset
            model.last_offset = current


def _has_edge(old: JobState, new: JobState, suspend: bool) -> bool:
    for event in Event:
        try:
            if next_state(old, event, suspend_on_failure=suspend) is new:
                return True
        except (CommandRefused, IllegalTransition):
            continue
    return False


LifecycleMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_lifecycle_state_machine = LifecycleMachine.TestCase
