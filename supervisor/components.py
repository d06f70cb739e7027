"""Building a job's source, sink and processor from its configuration.

The source and sink come from the connector that declares the job's config
(`supervisor.connectors.registry`); the processor from ``[processor]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from supervisor.config.model import JobConfig
from supervisor.connectors.registry import processor_role, sink_role, source_role
from supervisor.processing import BatchProcessor, load_batch_function, load_processor
from supervisor.protocols import Offset, Sink, Source
from supervisor.workers.pool import WorkerPool, worker_count


def build_source(job: JobConfig) -> Source:
    """A fresh, unopened source for one attempt of `job`."""
    return source_role(job.source).build(job.source, job)


def check_source_offset(job: JobConfig, offset: Offset) -> None:
    """Raise ValueError (or TypeError) if `job`'s source says it cannot resume from
    `offset` (its connector's optional `check_offset`).

    Blocking: a plugin's class may be imported.
    """
    check = source_role(job.source).check_offset
    if check is not None:
        check(job.source, offset)


def build_sink(job: JobConfig) -> Sink:
    """A fresh, unopened sink for one attempt of `job`."""
    return sink_role(job.sink).build(job.sink, job)


def build_processor(job: JobConfig) -> BatchProcessor:
    """The records pipeline for one attempt: processor (if any) and records policy."""
    processor = job.processor
    if processor is not None and processor.connector is not None:
        batch = processor_role(processor.connector).build(processor.connector, job)
        return BatchProcessor(job.name, None, job.records, batch=batch)
    if processor is None:
        return BatchProcessor(job.name, None, job.records)
    if processor.workers is not None:
        # The function is imported in each worker, not here: the daemon stays small.
        reference = processor.function or processor.batch_function
        assert reference is not None  # the schema requires one of them
        pool = WorkerPool(
            job.name,
            reference,
            batch=processor.function is None,
            workers=worker_count(processor.workers),
            search=job.records.on_error != "fail",
        )
        return BatchProcessor(job.name, None, job.records, pool=pool)
    if processor.batch_function is not None:
        batch_function = load_batch_function(processor.batch_function)
        return BatchProcessor(
            job.name, None, job.records, batch_function=(processor.batch_function, batch_function)
        )
    function = load_processor(processor.function) if processor.function else None
    return BatchProcessor(job.name, function, job.records)


@dataclass(frozen=True, slots=True)
class Components:
    """How an attempt gets its parts: the builders above, or test doubles."""

    source: Callable[[JobConfig], Source] = build_source
    sink: Callable[[JobConfig], Sink] = build_sink
    processor: Callable[[JobConfig], BatchProcessor] = build_processor


DEFAULT_COMPONENTS = Components()
