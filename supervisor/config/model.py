"""The parsed configuration: frozen, slotted, keyword-only dataclasses.

The core never sees a raw TOML dict; `supervisor.config.loader` builds these
at the edge and rejects anything it cannot build. Durations are seconds
(float); paths are absolute.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

LineFormat: TypeAlias = Literal["lines", "jsonl"]
StartAt: TypeAlias = Literal["beginning", "end"]
OnRecordError: TypeAlias = Literal["fail", "skip", "dead_letter"]
LogFormat: TypeAlias = Literal["auto", "console", "json"]
LogLevel: TypeAlias = Literal["debug", "info", "warning", "error"]


# --- sources -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class FileSourceConfig:
    """``type = "file"``: lines of a local file, optionally followed as it grows."""

    path: Path
    format: LineFormat = "lines"
    follow: bool = True
    start: StartAt = "beginning"
    poll_interval: float = 0.25
    """How often a followed file is checked for growth and rotation."""
    follow_symlinks: bool = False
    """Read through a symlink at `path` (one level) if the link and its target have one owner."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerateSourceConfig:
    """``type = "generate"``: records ``{"seq": n}`` counting from 0, for demos and benchmarks."""

    count: int = 0
    """How many records in all; 0 means unbounded."""
    rate: float = 0.0
    """Records per second; 0 means as fast as the job can take them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PythonSourceConfig:
    """``type = "python"``: a third-party `Source` class, built as ``cls(**options)``."""

    class_ref: str
    options: Mapping[str, Any] = field(default_factory=dict)


SourceConfig: TypeAlias = FileSourceConfig | GenerateSourceConfig | PythonSourceConfig


# --- sinks ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class JsonlSinkConfig:
    """``type = "jsonl"``: append one JSON document per line; flush is fsync."""

    path: Path


@dataclass(frozen=True, slots=True, kw_only=True)
class SqliteSinkConfig:
    """``type = "sqlite"``: rows and the job's offset committed in one transaction."""

    path: Path
    table: str = "records"


@dataclass(frozen=True, slots=True, kw_only=True)
class StdoutSinkConfig:
    """``type = "stdout"``: one JSON document per line on standard output."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NullSinkConfig:
    """``type = "null"``: discard records (benchmarks, dry runs)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PythonSinkConfig:
    """``type = "python"``: a third-party `Sink` class, built as ``cls(**options)``."""

    class_ref: str
    options: Mapping[str, Any] = field(default_factory=dict)


SinkConfig: TypeAlias = (
    JsonlSinkConfig | SqliteSinkConfig | StdoutSinkConfig | NullSinkConfig | PythonSinkConfig
)


# --- job policies ----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessorConfig:
    """``[processor]``: ``function = "pkg.mod:fn"``."""

    function: str


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
    source: SourceConfig
    sink: SinkConfig
    enabled: bool = True
    suspend_on_failure: bool = False
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Everything the daemon runs: its own settings and every job, sorted by name."""

    daemon: DaemonConfig
    jobs: tuple[JobConfig, ...]

    def job(self, name: str) -> JobConfig | None:
        return next((job for job in self.jobs if job.name == name), None)
