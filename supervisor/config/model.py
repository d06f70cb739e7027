"""The parsed configuration: frozen, slotted, keyword-only dataclasses.

The core never sees a raw TOML dict; `supervisor.config.loader` builds these
at the edge and rejects anything it cannot build. Durations are seconds
(float); paths are absolute.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, TypeAlias

OnRecordError: TypeAlias = Literal["fail", "skip", "dead_letter"]
LogFormat: TypeAlias = Literal["auto", "console", "json"]
LogLevel: TypeAlias = Literal["debug", "info", "warning", "error"]
CodecName: TypeAlias = Literal["auto", "msgspec", "json"]
"""The job's ``codec`` key: how records are read from and written as JSON (`supervisor.codec`)."""


# --- connectors --------------------------------------------------------------


class ConnectorConfig(Protocol):
    """A ``[source]`` or ``[sink]`` table without its ``type``: the frozen dataclass its
    connector declares (`supervisor.connectors`), which also finds the connector."""

    __dataclass_fields__: ClassVar[dict[str, Any]]


# --- job policies ----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessorConfig:
    """``[processor]``: ``function`` or ``batch_function`` (``"pkg.mod:fn"``, one of them)
    and ``workers``; or a connector's ``type`` and keys."""

    function: str | None = None
    batch_function: str | None = None
    workers: int | Literal["auto"] | None = None
    """Worker processes running the function; None: it runs in the daemon."""
    connector: ConnectorConfig | None = None
    """The config of a ``[processor]`` that names a ``type`` (its connector builds it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointPolicy:
    """``[checkpoint]``: checkpoint after this many records or this many seconds."""

    every_records: int = 10_000
    interval: float = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """``[retry]``: capped exponential backoff and the retry budget."""

    initial: float = 1.0
    max: float = 60.0
    multiplier: float = 2.0
    jitter: bool = True
    max_attempts: int = 10
    """Consecutive failed attempts before the job fails; 0 means never give up."""
    reset_after: float = 60.0
    retry_on: tuple[str, ...] = ()
    fatal_on: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordsPolicy:
    """``[records]``: what a record the processor rejects does to the attempt."""

    on_error: OnRecordError = "fail"
    dead_letter: Path | None = None
    max_errors: int = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class JobConfig:
    """One job file, with the daemon's ``[defaults]`` applied."""

    name: str
    path: Path
    """The job file this came from."""
    source: ConnectorConfig
    sink: ConnectorConfig
    enabled: bool = True
    suspend_on_failure: bool = False
    codec: CodecName = "auto"
    """msgspec when installed ("auto"), or always ("msgspec") or never ("json")."""
    processor: ProcessorConfig | None = None
    checkpoint: CheckpointPolicy = CheckpointPolicy()
    retry: RetryPolicy = RetryPolicy()
    records: RecordsPolicy = RecordsPolicy()


@dataclass(frozen=True, slots=True, kw_only=True)
class DaemonConfig:
    """The ``[supervisor]`` table of the daemon file."""

    path: Path
    """The daemon file this came from."""
    jobs: str = "jobs/*.toml"
    state_dir: Path
    control_socket: Path
    socket_mode: int = 0o660
    max_starts_in_flight: int = 8
    shutdown_timeout: float = 20.0
    log_format: LogFormat = "auto"
    log_level: LogLevel = "info"
    http_listen: tuple[str, int] | None = None
    """(host, port) of the HTTP listener (`supervisor.observe`); None: no listener."""
    http_allow_remote: bool = False
    sample_interval: float = 15.0
    """Seconds between two samples of each job's records/s and source lag (HTTP listener)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Everything the daemon runs: its own settings and every job, sorted by name."""

    daemon: DaemonConfig
    jobs: tuple[JobConfig, ...]

    def job(self, name: str) -> JobConfig | None:
        return next((job for job in self.jobs if job.name == name), None)
