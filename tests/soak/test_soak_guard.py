"""Mutation guard for the soak: its checks fail on a build that writes the offset
before the sink's flush, and pass on the real order under the same slow flush."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.soak import run_soak
from tests.checkpoint_builds import COMMAND

pytestmark = pytest.mark.slow

JOBS = ("gen_jsonl", "file_jsonl")


def test_soak_reports_lost_records_when_the_offset_is_committed_before_the_flush(
    tmp_path: Path,
) -> None:
    """Against the broken checkpoint order, kills lose committed records and the soak says so."""
    result = run_soak(
        kills=6, seed=2, workdir=tmp_path, daemon_command=(*COMMAND, "broken"), job_names=JOBS
    )

    assert any("never reached the sink: lost" in v for v in result.violations), result.summary()
    assert any("records missing" in v for v in result.violations), result.summary()


def test_soak_passes_the_real_checkpoint_order_under_the_same_slow_flush(tmp_path: Path) -> None:
    """The same kills against the real order with the same slow flush lose nothing."""
    result = run_soak(
        kills=6, seed=2, workdir=tmp_path, daemon_command=(*COMMAND, "real"), job_names=JOBS
    )

    assert result.violations == [], result.summary()
