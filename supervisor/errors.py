"""The one exception tree of stream-supervisor.

::

    SupervisorError
    ├── ConfigError              a daemon or job file is invalid (CLI exit 2)
    ├── SnapshotError            a snapshot cannot be read or written
    │   ├── SnapshotCorrupt      a snapshot file fails its checks
    │   ├── SnapshotUnsupported  a snapshot file from a newer format: never used, never moved
    │   ├── SnapshotWriteError   a durable write did not complete
    │   └── StateDirectoryLocked another daemon holds the state directory
    ├── PluginError              a "pkg.mod:Name" reference cannot be loaded
    ├── JobError                 raised by sources, sinks and processors to steer retries
    │   ├── UnpicklableRecord    a record or its results cannot cross to or from a worker process
    │   ├── TransientError       always retried
    │   │   └── BrokerUnavailable  a broker is down or dropped us: back when it is
    │   └── FatalError           never retried
    │       ├── BrokerRefused    wrong credentials; a stream, group or consumer missing
    │       ├── SecretError      a password's variable, file or credential cannot be read
    │       ├── TooManyBadRecords
    │       └── UnsafeFile       a file to read or write is a symlink or not a regular file
    ├── CommandRefused           an operator command does not fit the job's state (exit 1)
    ├── FinalCheckpointFailed    paused or stopped, but without its final checkpoint (exit 1)
    └── DaemonUnreachable        no daemon answers on the control socket (exit 4)
        └── UntrustedDaemon      another user's process answers in the daemon's place

Each class's docstring is its default message. Exit codes are chosen in one
place, at the CLI edge (`supervisor.cli`).
"""

from __future__ import annotations

from dataclasses import dataclass


class SupervisorError(Exception):
    """stream-supervisor failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in one configuration file.

    ``where`` is ``"line L, column C"`` for a syntax error or the dotted key
    (``"retry.max"``) for a schema error; empty when the file as a whole is wrong.
    """

    path: str
    where: str
    message: str

    def __str__(self) -> str:
        location = f"{self.path}: {self.where}" if self.where else self.path
        return f"{location}: {self.message}"


class ConfigError(SupervisorError):
    """The configuration is invalid."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


class SnapshotError(SupervisorError):
    """A snapshot cannot be used."""


class SnapshotCorrupt(SnapshotError):
    """A snapshot file fails its checks."""


class SnapshotUnsupported(SnapshotError):
    """A snapshot file was written in a newer format than this supervisor reads."""


class SnapshotWriteError(SnapshotError):
    """A snapshot could not be written durably; the previous one is intact."""


class StateDirectoryLocked(SnapshotError):
    """Another supervisor holds the state directory."""


class PluginError(SupervisorError):
    """A plugin reference cannot be loaded."""


class JobError(SupervisorError):
    """A job's source, sink or processor failed."""


class UnpicklableRecord(JobError):
    """A record, or what the processor made of it, cannot be pickled to cross to or from a
    processor worker process (``[processor] workers``): a bad record, judged by the job's
    ``[records]`` policy."""


class TransientError(JobError):
    """A transient failure: the attempt is retried with backoff."""


class FatalError(JobError):
    """A failure that retrying cannot fix: the job fails (or is suspended) at once."""


class BrokerUnavailable(TransientError):
    """A broker cannot be reached or dropped the connection: retried with backoff, and
    the job comes back by itself when the broker does."""


class BrokerRefused(FatalError):
    """A broker refused what retrying cannot change: wrong credentials, no permission,
    a stream, group or consumer that does not exist or is configured otherwise than the
    job needs. The message names the job's key and the server (never a secret)."""


class SecretError(FatalError):
    """A secret's variable, file or credential cannot be read (the message names the key,
    never the value): retrying cannot fix it."""


class TooManyBadRecords(FatalError):
    """More bad records in one attempt than `records.max_errors` allows."""


class UnsafeFile(FatalError):
    """A file to read or write is a symlink or not a regular file: refused."""


class CommandRefused(SupervisorError):
    """The command does not fit the job's current state."""


class FinalCheckpointFailed(SupervisorError):
    """The job paused or stopped, but its final checkpoint failed: records will be replayed."""


class DaemonUnreachable(SupervisorError):
    """No daemon answers on the control socket."""


class UntrustedDaemon(DaemonUnreachable):
    """What answers on the control socket runs as neither root nor the daemon's user."""
