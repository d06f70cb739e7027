"""The commands a job's owner takes, one message type each, as its inbox carries them.

`JobOwner.pause()` and its siblings post one and wait for its `done`; the owner task
handles it between attempt messages (`supervisor.attempt_task`), one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio

from supervisor.config.model import JobConfig
from supervisor.errors import CommandRefused, FinalCheckpointFailed
from supervisor.protocols import Offset
from supervisor.states import JobState


@dataclass(eq=False)
class OwnerCommand:
    """A command in the owner's inbox; `done` is set once its effect is complete."""

    error: CommandRefused | FinalCheckpointFailed | None = field(default=None, init=False)
    done: anyio.Event = field(default_factory=anyio.Event, init=False)
    state: JobState | None = field(default=None, init=False)
    """The state the command produced (a later command may change it before `done`)."""


class Pause(OwnerCommand):
    """`supervisor pause`."""


class Stop(OwnerCommand):
    """`supervisor stop`."""


class Resume(OwnerCommand):
    """`supervisor resume`."""


class Start(OwnerCommand):
    """`supervisor start`."""


class Restart(OwnerCommand):
    """`supervisor restart`."""


class Retry(OwnerCommand):
    """`supervisor retry`."""


@dataclass(eq=False)
class SetOffset(OwnerCommand):
    """`supervisor offset --set`, once the control handler has checked `value`."""

    value: Offset


@dataclass(eq=False)
class Reconfigure(OwnerCommand):
    """A reload changed the job's definition to `job`."""

    job: JobConfig


class ShutDown(OwnerCommand):
    """The daemon is stopping (nothing waits for this one)."""


Command = Pause | Stop | Resume | Start | Restart | Retry | SetOffset | Reconfigure | ShutDown
