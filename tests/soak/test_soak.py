"""Kill -9 soak, CI-sized (`bench/soak.py --kills 20`): the real daemon, SIGKILLed and
SIGTERMed at random moments and restarted, loses nothing and repeats only what a kill
caught after the last checkpoint."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from bench.soak import DAEMON_COMMAND, run_soak

pytestmark = pytest.mark.slow

DAEMON = shlex.split(os.environ.get("SOAK_DAEMON", "")) or DAEMON_COMMAND
"""The build under test. To see this test fail on a broken checkpoint order:
SOAK_DAEMON=".venv/bin/python tests/checkpoint_builds.py broken" pytest tests/soak/test_soak.py"""


def test_twenty_random_kills_lose_nothing_and_repeat_only_uncheckpointed_records(
    tmp_path: Path,
) -> None:
    """20 SIGKILLs and a few SIGTERMs: no record missing, repeats only in kill windows."""
    result = run_soak(kills=20, seed=20, workdir=tmp_path, daemon_command=DAEMON)
    print(result.summary())

    assert result.violations == [], result.summary()
    assert result.kills == 20
    assert result.sigterms > 0
    assert result.repeats["gen_sqlite"] == 0
    # The bound was put to the test: some kill found records after the last checkpoint.
    assert result.repeats["wide_jsonl"] > 0
    assert result.rotations > 0
