"""The ``exec`` connector: any program as a job's source or sink, speaking JSON lines.

A source program writes Singer RECORD and STATE messages (or plain lines) on stdout;
a sink program reads Singer messages on stdin and echoes each STATE once what came
before it is durable; a processor's co-processes answer each record on stdin with
result lines and an empty line. docs/exec.md is the protocol on one page. This module declares
the connector; the implementation is imported only to run a job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from supervisor.codec_choice import codec_for
from supervisor.connectors import Connector, ProcessorRole, SinkRole, SourceRole
from supervisor.connectors.exec.config import (
    ExecProcessorConfig,
    ExecSinkConfig,
    ExecSourceConfig,
    check_program,
)

if TYPE_CHECKING:
    from supervisor.config.model import JobConfig
    from supervisor.protocols import BatchFunction, Offset, Sink, Source


def _build_source(config: ExecSourceConfig, job: JobConfig) -> Source:
    from supervisor.connectors.exec.source import ExecSource

    return ExecSource(config, job.name, codec=codec_for(job.codec))


def _check_offset(config: ExecSourceConfig, offset: Offset) -> None:
    from supervisor.connectors.exec.source import ExecSource

    ExecSource.check_offset(offset, config.protocol)


def _build_sink(config: ExecSinkConfig, job: JobConfig) -> Sink:
    from supervisor.connectors.exec.sink import ExecSink

    return ExecSink(config, job.name)


def _build_processor(config: ExecProcessorConfig, job: JobConfig) -> BatchFunction:
    from supervisor.connectors.exec.processor import ExecProcessor

    return ExecProcessor(config, job.name, codec=codec_for(job.codec))


CONNECTOR = Connector(
    type="exec",
    doc="A program of any language: records as JSON lines on its stdout (source) or stdin (sink).",
    source=SourceRole(
        config=ExecSourceConfig,
        build=_build_source,
        check_offset=_check_offset,
        check_job=check_program,
    ),
    sink=SinkRole(config=ExecSinkConfig, build=_build_sink, check_job=check_program),
    processor=ProcessorRole(
        config=ExecProcessorConfig, build=_build_processor, check_job=check_program
    ),
)

__all__ = ["CONNECTOR", "ExecProcessorConfig", "ExecSinkConfig", "ExecSourceConfig"]
