"""The exec sink against real programs: a Python Singer target, one that never confirms,
one that dies, and (when installed) target-jsonl from PyPI in `confirm = "exit"` mode."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import anyio
import pytest

from supervisor.errors import TransientError
from tests.exec_helpers import PYTHON, TARGET, process_state, sink

pytestmark = pytest.mark.anyio


def lines(path: Path) -> list[object]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_records_are_durable_when_flush_returns(tmp_path: Path) -> None:
    """Each flush waits for the target's echo; the records are in its file by then."""
    out = tmp_path / "out.jsonl"
    target = sink(PYTHON, TARGET, str(out))
    await target.open()
    try:
        await target.write([{"n": 1}, {"n": 2}])
        await target.flush('{"n":2}')
        assert lines(out) == [{"n": 1}, {"n": 2}]
        await target.write([{"n": 3}])
        await target.flush('{"n":3}')
        assert lines(out) == [{"n": 1}, {"n": 2}, {"n": 3}]
    finally:
        await target.close()


async def test_many_records_do_not_deadlock_a_chatty_target(tmp_path: Path) -> None:
    """A target that writes to stdout for every record is read while it is fed."""
    script = (
        "import sys\n"
        "for line in sys.stdin:\n"
        "    print('got ' + line.strip(), flush=True)\n"
        "    if '\"STATE\"' in line:\n"
        "        print(line.split('\"value\":', 1)[1].strip()[:-1], flush=True)\n"
    )
    target = sink(PYTHON, "-c", script)
    await target.open()
    try:
        with anyio.fail_after(20):
            for _ in range(5):
                await target.write([{"payload": "x" * 100, "i": i} for i in range(5000)])
                await target.flush(None)
    finally:
        await target.close()


async def test_a_target_that_never_confirms_fails_the_flush(tmp_path: Path) -> None:
    """No echo within flush_timeout: a retryable error that says what is expected."""
    target = sink(
        PYTHON,
        TARGET,
        str(tmp_path / "out.jsonl"),
        environment={"TARGET_NO_ECHO": "1"},
        flush_timeout=0.5,
    )
    await target.open()
    await target.write([{"n": 1}])
    with pytest.raises(TransientError, match=r"did not echo the STATE of flush 1 within 0\.5 s"):
        await target.flush(None)
    await target.close()


async def test_a_target_that_dies_fails_the_attempt(tmp_path: Path) -> None:
    """A target that exits: the next write or flush fails with its exit code and stderr."""
    target = sink("/bin/sh", "-c", "read line; echo bye >&2; exit 4")
    await target.open()
    with pytest.raises(TransientError, match=r"exited with code 4; its stderr ended: bye"):
        for _ in range(100):
            await target.write([{"n": 1}] * 1000)
            await target.flush(None)
    await target.close()


async def test_close_ends_the_target_by_closing_its_stdin(tmp_path: Path) -> None:
    """Close: stdin closed, the target exits by itself, and it is reaped."""
    target = sink(PYTHON, TARGET, str(tmp_path / "out.jsonl"))
    await target.open()
    pid = target._program.pid if target._program else None
    assert pid is not None
    with anyio.fail_after(10):
        await target.close()
    assert process_state(pid) is None


async def test_confirm_exit_runs_the_target_once_per_checkpoint(tmp_path: Path) -> None:
    """`confirm = "exit"`: a flush closes stdin and waits for exit 0; the next write
    starts a new run."""
    out = tmp_path / "out.jsonl"
    target = sink(PYTHON, TARGET, str(out), confirm="exit", environment={"TARGET_NO_ECHO": "1"})
    await target.open()
    try:
        await target.write([{"n": 1}])
        await target.flush(None)
        await target.flush(None)  # nothing new: nothing to run
        await target.write([{"n": 2}])
        await target.flush(None)
    finally:
        await target.close()
    assert lines(out) == [{"n": 1}, {"n": 2}]


SINGER_BIN = os.environ.get("SINGER_BIN", "")
"""A directory with `tap-jsonl` and `target-jsonl` (PyPI), e.g. /tmp/singer-venv/bin."""


def singer_program(name: str) -> str:
    found = shutil.which(name, path=SINGER_BIN or None)
    if found is None:
        pytest.skip(f"{name} not installed (pip install {name}; set SINGER_BIN to its bin)")
    return found


async def test_target_jsonl_from_pypi_with_confirm_exit(tmp_path: Path) -> None:
    """target-jsonl writes its state only at the end: it works in `confirm = "exit"` mode."""
    program = singer_program("target-jsonl")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"destination_path": str(tmp_path), "do_timestamp_file": False}))
    target = sink(program, "--config", str(config), confirm="exit", stream="orders")
    await target.open()
    try:
        await target.write([{"id": 1}, {"id": 2}])
        await target.flush(None)
        await target.write([{"id": 3}])
        await target.flush(None)
    finally:
        await target.close()
    assert lines(tmp_path / "orders.jsonl") == [{"id": 1}, {"id": 2}, {"id": 3}]


async def test_target_jsonl_from_pypi_cannot_confirm_an_echo_flush(tmp_path: Path) -> None:
    """target-jsonl never echoes a STATE before its end: the default mode says so."""
    program = singer_program("target-jsonl")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"destination_path": str(tmp_path), "do_timestamp_file": False}))
    target = sink(program, "--config", str(config), flush_timeout=2, stream="orders")
    await target.open()
    await target.write([{"id": 1}])
    with pytest.raises(TransientError, match="did not echo the STATE"):
        await target.flush(None)
    await target.close()
