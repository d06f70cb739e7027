"""Building a job's source, sink and processor from its configuration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from supervisor.config.model import (
    FileSourceConfig,
    GenerateSourceConfig,
    JobConfig,
    JsonlSinkConfig,
    NullSinkConfig,
    PythonSinkConfig,
    PythonSourceConfig,
    SqliteSinkConfig,
    StdoutSinkConfig,
)
from supervisor.errors import PluginError
from supervisor.plugins import load_callable, load_reference
from supervisor.processing import BatchProcessor, load_processor
from supervisor.protocols import Offset, Sink, Source


def build_source(job: JobConfig) -> Source:
    """A fresh, unopened source for one attempt of `job`."""
    config = job.source
    if isinstance(config, FileSourceConfig):
        from supervisor.sources.file import FileSource

        return FileSource(config)
    if isinstance(config, GenerateSourceConfig):
        from supervisor.sources.generate import GenerateSource

        return GenerateSource(config)
    if isinstance(config, PythonSourceConfig):
        return cast(Source, _construct(config.class_ref, config.options, Source, "source"))
    raise AssertionError(f"unhandled source config {config!r}")


def check_source_offset(job: JobConfig, offset: Offset) -> None:
    """Raise ValueError (or TypeError) if `job`'s source class says it cannot resume from
    `offset` (its optional `check_offset`, see `supervisor.protocols.Source`).

    Blocking: a plugin's class is imported. A class that cannot be loaded checks nothing
    (the job cannot run until it is fixed, and the operator may set the offset first).
    """
    config = job.source
    cls: Any
    if isinstance(config, FileSourceConfig):
        from supervisor.sources.file import FileSource

        cls = FileSource
    elif isinstance(config, GenerateSourceConfig):
        from supervisor.sources.generate import GenerateSource

        cls = GenerateSource
    else:
        try:
            cls = load_reference(config.class_ref)
        except PluginError:
            return
    check = getattr(cls, "check_offset", None)
    if callable(check):
        check(offset)


def build_sink(job: JobConfig) -> Sink:
    """A fresh, unopened sink for one attempt of `job`."""
    config = job.sink
    if isinstance(config, JsonlSinkConfig):
        from supervisor.sinks.jsonl import JsonlSink

        return JsonlSink(config)
    if isinstance(config, SqliteSinkConfig):
        from supervisor.sinks.sqlite import SqliteSink

        return SqliteSink(config, job.name)
    if isinstance(config, StdoutSinkConfig):
        from supervisor.sinks.basic import StdoutSink

        return StdoutSink()
    if isinstance(config, NullSinkConfig):
        from supervisor.sinks.basic import NullSink

        return NullSink()
    if isinstance(config, PythonSinkConfig):
        return cast(Sink, _construct(config.class_ref, config.options, Sink, "sink"))
    raise AssertionError(f"unhandled sink config {config!r}")


def build_processor(job: JobConfig) -> BatchProcessor:
    """The records pipeline for one attempt: processor (if any) and records policy."""
    function = load_processor(job.processor.function) if job.processor else None
    return BatchProcessor(job.name, function, job.records)


def _construct(reference: str, options: Any, protocol: type, role: str) -> Any:
    cls = load_callable(reference, f"{role} class")
    try:
        instance = cls(**options)
    except TypeError as exc:
        raise PluginError(f"{role} class {reference!r} rejected its options: {exc}") from exc
    if not isinstance(instance, protocol):
        raise PluginError(
            f"{role} class {reference!r} does not implement the {protocol.__name__} protocol "
            "(open, read/write, ..., close): see the README's 'Extending' section"
        )
    return instance


@dataclass(frozen=True, slots=True)
class Components:
    """How an attempt gets its parts: the builders above, or test doubles."""

    source: Callable[[JobConfig], Source] = build_source
    sink: Callable[[JobConfig], Sink] = build_sink
    processor: Callable[[JobConfig], BatchProcessor] = build_processor


DEFAULT_COMPONENTS = Components()
