"""Builders shared by the tests."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from supervisor.config.model import (
    CheckpointPolicy,
    GenerateSourceConfig,
    JobConfig,
    NullSinkConfig,
)


def make_job(name: str = "job", **changes: Any) -> JobConfig:
    """A valid job config; tests inject the real parts through `Components`."""
    job = JobConfig(
        name=name,
        path=Path(f"/nonexistent/{name}.toml"),
        source=GenerateSourceConfig(count=0),
        sink=NullSinkConfig(),
        checkpoint=CheckpointPolicy(every_records=100, interval=5.0),
    )
    return replace(job, **changes)
