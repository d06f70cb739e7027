"""The exec processor's framing against real co-processes (shell and Python)."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from supervisor.config.loader import load_config
from supervisor.connectors.exec.config import ExecProcessorConfig
from supervisor.connectors.exec.processor import ExecProcessor, RecordFailed
from supervisor.errors import TransientError
from tests.exec_helpers import PYTHON

pytestmark = pytest.mark.anyio

DOUBLE = 'while read -r line; do echo "$line"; echo "$line"; echo; done'
"""A shell co-process: each record answered twice, then the marker."""

PYTHON_COPROCESS = textwrap.dedent(
    """
    import json, sys
    for line in sys.stdin:
        record = json.loads(line)
        if record.get("bad"):
            print("!no good: " + str(record["bad"]))
        elif record.get("n", 0) % 2 == 0:
            print(json.dumps({**record, "even": True}))
        print(flush=True)
    """
)


def processor(*command: str, **keys: object) -> ExecProcessor:
    return ExecProcessor(ExecProcessorConfig(command=command, **keys), "test")  # type: ignore[arg-type]


async def run(proc: ExecProcessor, records: Sequence[object]) -> list[object]:
    await proc.open()
    try:
        return list(await proc.process(records))
    finally:
        await proc.close()


async def test_shell_coprocess_fans_out_in_order() -> None:
    """Each record gets its own answers, in the batch's order, across several workers."""
    records = [{"n": i} for i in range(1000)]
    answers = await run(processor("/bin/sh", "-c", DOUBLE, workers=3), records)
    assert answers == [[record, record] for record in records]


async def test_python_coprocess_drops_keeps_and_fails_records() -> None:
    """No result line drops a record; a `!` line is that record's error, the rest go on."""
    records = [{"n": 1}, {"n": 2}, {"bad": "x"}, {"n": 4}]
    answers = await run(processor(PYTHON, "-c", PYTHON_COPROCESS), records)
    assert answers[0] == []
    assert answers[1] == [{"n": 2, "even": True}]
    assert isinstance(answers[2], RecordFailed) and "no good: x" in str(answers[2])
    assert answers[3] == [{"n": 4, "even": True}]


async def test_an_answer_that_is_not_json_fails_only_its_record() -> None:
    """A garbage answer line: that record's error, naming the line's start."""
    script = 'while read -r line; do echo "oops $line"; echo; done'
    answers = await run(processor("/bin/sh", "-c", script), [1, 2])
    assert all(isinstance(answer, RecordFailed) for answer in answers)
    assert "'oops 1'" in str(answers[0])


async def test_a_coprocess_that_exits_fails_the_attempt() -> None:
    """Exiting with records unanswered: a retryable error with its exit code."""
    script = "read -r line; echo '1'; echo; exit 5"
    with pytest.raises(TransientError, match=r"2 records unanswered and exited with code 5"):
        await run(processor("/bin/sh", "-c", script), [1, 2, 3])


async def test_too_many_answers_is_a_protocol_error(tmp_path: Path) -> None:
    """Two markers for one record: refused, in the batch or before the next one, rather
    than shifted onto the next record."""
    together = "read -r line; printf '1\\n\\n\\n'; sleep 5"
    with pytest.raises(TransientError, match="answered more records than it was sent"):
        await run(processor("/bin/sh", "-c", together, stop_timeout=0.2), [1])
    written = tmp_path / "written"
    os.mkfifo(written)
    later = f"read -r line; printf '1\\n\\n'; echo; echo > {written}; sleep 5"
    proc = processor("/bin/sh", "-c", later, stop_timeout=0.2)
    await proc.open()
    try:
        with pytest.raises(TransientError, match=r"more records than|before it was sent"):
            assert await proc.process([1]) == [[1]]
            # The program wrote the stray marker before it opened the FIFO.
            await anyio.to_thread.run_sync(written.read_text)
            await proc.process([2])
    finally:
        await proc.close()


async def test_a_coprocess_that_keeps_its_answers_times_out() -> None:
    """Answers held in a buffer: after answer_timeout, a retryable error that says why."""
    hoarder = (
        "import os, sys\n"
        "out = os.fdopen(1, 'w', buffering=65536)\n"
        "for line in sys.stdin:\n"
        "    out.write(line + '\\n')\n"
    )
    proc = processor(PYTHON, "-c", hoarder, answer_timeout=0.5, stop_timeout=0.5)
    with pytest.raises(TransientError, match=r"wrote nothing for 0\.5 s with 3 records"):
        await run(proc, [1, 2, 3])


def test_a_processor_table_with_a_type_is_the_connector_s(tmp_path: Path) -> None:
    """`[processor] type = "exec"` is checked with the exec keys; `function` still works."""
    (tmp_path / "jobs").mkdir()
    (tmp_path / "supervisor.toml").write_text('[supervisor]\njobs = "jobs/*.toml"\n')
    (tmp_path / "jobs" / "a.toml").write_text(
        '[source]\ntype = "generate"\n[sink]\ntype = "null"\n'
        '[processor]\ntype = "exec"\ncommand = ["/bin/cat"]\nworkers = 2\n'
    )
    (tmp_path / "jobs" / "b.toml").write_text(
        '[source]\ntype = "generate"\n[sink]\ntype = "null"\n'
        '[processor]\nfunction = "supervisor.examples:enrich_order"\n'
    )
    config = load_config(tmp_path / "supervisor.toml")
    jobs = {job.name: job for job in config.jobs}
    assert jobs["a"].processor is not None
    assert isinstance(jobs["a"].processor.connector, ExecProcessorConfig)
    assert jobs["a"].processor.connector.workers == 2
    assert jobs["b"].processor is not None
    assert jobs["b"].processor.function == "supervisor.examples:enrich_order"
    (tmp_path / "jobs" / "a.toml").write_text(
        '[source]\ntype = "generate"\n[sink]\ntype = "null"\n'
        '[processor]\ntype = "exec"\ncommand = ["/bin/cat"]\nworker = 2\n'
    )
    with pytest.raises(Exception, match=r'processor.worker: unknown key "worker"; did you mean'):
        load_config(tmp_path / "supervisor.toml")
