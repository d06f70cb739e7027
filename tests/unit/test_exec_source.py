"""The exec source against real programs: a Python tap, a shell tap, garbage, floods."""

from __future__ import annotations

import json
import os
import pwd
import signal
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from supervisor.connectors.exec.lines import LineSplitter, LongLine
from supervisor.errors import FatalError, TransientError
from tests.exec_helpers import PYTHON, SHELL_TAP, TAP, process_state, read_all, source

pytestmark = pytest.mark.anyio


def test_line_splitter_joins_chunks_and_cuts_long_lines() -> None:
    """Lines across chunks come out whole; a line over the limit comes out as its start."""
    splitter = LineSplitter(10)
    assert splitter.feed(b"ab") == []
    assert splitter.feed(b"c\nd\n") == [b"abc", b"d"]
    long = splitter.feed(b"0123456789ABCDEF")
    assert long == [LongLine(b"0123456789ABCDEF")]
    assert splitter.feed(b"GHI\nok\n") == [b"ok"]
    assert splitter.feed(b"tail") == []
    assert splitter.rest() == b"tail"


async def test_singer_tap_records_and_state_as_offset() -> None:
    """RECORDs are the records, the last STATE (as JSON text) the offset; exit 0 ends."""
    tap = source(PYTHON, TAP, "25", "10")
    await tap.open(None)
    try:
        records, rejects, batches = await read_all(tap)
    finally:
        await tap.close()
    assert records == [{"n": i} for i in range(25)]
    assert rejects == []
    assert batches[-1].offset == '{"n":25}'


async def test_a_batch_ends_at_a_state() -> None:
    """With a STATE within reach, a batch ends at it: what it covers is what was handed on."""
    tap = source(PYTHON, TAP, "100", "10")
    await tap.open(None)
    try:
        batch = await tap.read(25, 10.0)
    finally:
        await tap.close()
    assert len(batch.records) in (10, 20)
    assert batch.offset == json.dumps({"n": len(batch.records)}, separators=(",", ":"))


async def test_the_state_is_handed_back_as_a_file() -> None:
    """Opened at an offset, the program gets `--state FILE` holding it, and resumes there."""
    tap = source(PYTHON, TAP, "30", "10")
    await tap.open('{"n":20}')
    try:
        records, _, _ = await read_all(tap)
    finally:
        await tap.close()
    assert records == [{"n": i} for i in range(20, 30)]


async def test_shell_tap_gets_its_state_through_the_environment() -> None:
    """`state_env` names the state file; `state_argument = ""` passes no argument."""
    tap = source("/bin/sh", SHELL_TAP, "12", state_argument="", state_env="TAP_STATE")
    await tap.open('{"n":5}')
    try:
        records, _, batches = await read_all(tap)
    finally:
        await tap.close()
    assert records == [{"n": i} for i in range(5, 12)]
    assert batches[-1].offset == '{"n":12}'


async def test_plain_protocol_lines_and_jsonl(tmp_path: Path) -> None:
    """Plain mode: each line a record (JSON or text), no offset."""
    jsonl = source("/bin/sh", "-c", "echo '{\"a\": 1}'; echo 2", protocol="plain")
    text = source("/bin/sh", "-c", "echo hello; echo world", protocol="plain", format="lines")
    for tap, expected in ((jsonl, [{"a": 1}, 2]), (text, ["hello", "world"])):
        await tap.open(None)
        try:
            records, _, batches = await read_all(tap)
        finally:
            await tap.close()
        assert records == expected
        assert batches[-1].offset is None


async def test_garbage_lines_are_rejected_with_their_start() -> None:
    """Not JSON, not UTF-8, not a message, too long: bad records naming the line's start."""
    script = (
        "printf 'not json at all\\n'; printf '\\377\\376\\n'; echo '[1, 2]';"
        'echo \'{"type": "WHAT"}\'; head -c 300 /dev/zero | tr "\\0" x; echo;'
        'echo \'{"type": "SCHEMA", "stream": "s"}\';'
        'echo \'{"type": "RECORD", "record": 1}\'; echo \'{"type": "STATE", "value": 1}\''
    )
    tap = source("/bin/sh", "-c", script, max_line_bytes=100)
    await tap.open(None)
    try:
        records, rejects, batches = await read_all(tap)
    finally:
        await tap.close()
    assert records == [1]
    assert batches[-1].offset == "1"
    messages = [str(reject.error) for reject in rejects]
    assert len(messages) == 5, messages
    assert "not JSON" in messages[0] and "'not json at all'" in messages[0]
    assert "not JSON" in messages[1]
    assert "not a Singer message" in messages[2]
    assert "not a Singer RECORD or STATE message" in messages[3] and "WHAT" in messages[3]
    assert "longer than 100 bytes" in messages[4] and "xxxx" in messages[4]


async def test_exit_codes_classify_failures() -> None:
    """Exit 1: retryable, with the program's last stderr; a fatal_exit_codes code: fatal."""
    failing = source("/bin/sh", "-c", "echo oops >&2; exit 1")
    await failing.open(None)
    with pytest.raises(TransientError, match=r"exited with code 1; its stderr ended: oops"):
        await read_all(failing)
    await failing.close()
    fatal = source("/bin/sh", "-c", "exit 3", fatal_exit_codes=frozenset({3}))
    await fatal.open(None)
    with pytest.raises(FatalError, match="fatal_exit_codes"):
        await read_all(fatal)
    await fatal.close()


async def test_a_program_that_cannot_start_is_a_retryable_error(tmp_path: Path) -> None:
    """A missing program: a clear error naming it, retried (it may be installed later)."""
    tap = source(str(tmp_path / "missing"))
    with pytest.raises(TransientError, match=r"source.command: cannot start .*missing"):
        await tap.open(None)
    await tap.close()


async def test_records_before_a_kill_are_delivered_and_the_kill_fails_the_attempt() -> None:
    """A SIGKILLed tap: the records up to its last STATE are handed on, then an error."""
    tap = source(PYTHON, TAP, "1000000", "10", environment={"TAP_PAUSE": "0.05"})
    await tap.open(None)
    first = await tap.read(100, 10.0)
    pid = tap.progress()["pid"]  # type: ignore[index]
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(TransientError, match="killed by SIGKILL"):
        while True:
            batch = await tap.read(100, 10.0)
            assert batch.offset is not None
    await tap.close()
    assert first.records and first.offset is not None


async def test_a_flood_is_read_with_bounded_memory() -> None:
    """A program writing as fast as it can: each read takes a bounded amount; close stops it."""
    tap = source("/bin/sh", "-c", 'yes \'{"type": "RECORD", "record": 1}\'')
    await tap.open(None)
    try:
        for _ in range(20):
            batch = await tap.read(1000, 10.0)
            assert len(batch.records) <= 1000
            progress = tap.progress()
            assert progress is not None and isinstance(progress["held"], int)
            assert progress["held"] <= 1000
        assert len(tap._ready) < 70_000  # at most one chunk's lines
    finally:
        with anyio.fail_after(5):
            await tap.close()


async def test_close_kills_the_group_when_sigterm_is_ignored(tmp_path: Path) -> None:
    """SIGTERM ignored: SIGKILL after stop_timeout, and the program's children die too."""
    pids = tmp_path / "pids"
    script = f"trap '' TERM; sleep 60 & echo $! > {pids}; echo '{{}}' ; wait"
    tap = source("/bin/sh", "-c", script, stop_timeout=0.2, protocol="plain")
    await tap.open(None)
    await tap.read(1, 10.0)
    pid = tap.progress()["pid"]  # type: ignore[index]
    child = int(pids.read_text())
    with anyio.fail_after(5):
        await tap.close()
    assert isinstance(pid, int)
    assert process_state(pid) is None  # reaped: no zombie
    for _ in range(50):
        if process_state(child) in (None, "Z"):
            break
        await anyio.sleep(0.05)
    assert process_state(child) in (None, "Z")


async def test_stderr_is_logged_with_the_job_and_rate_limited() -> None:
    """Stderr lines go to the log with the job's name, at most N a second; the rest counted."""
    script = "for i in $(seq 1 50); do echo line $i >&2; done"
    tap = source("/bin/sh", "-c", script, stderr_lines_per_second=5, protocol="plain")
    with capture_logs() as logs:
        await tap.open(None)
        await read_all(tap)
        await tap.close()
    lines = [entry for entry in logs if entry["event"] == "exec.stderr"]
    suppressed = [entry for entry in logs if entry["event"] == "exec.stderr_suppressed"]
    assert [entry["line"] for entry in lines][:2] == ["line 1", "line 2"]
    assert all(entry["job"] == "test" for entry in lines)
    assert len(lines) + sum(entry["lines"] for entry in suppressed) == 50
    assert len(lines) < 50


async def test_working_directory_and_environment(tmp_path: Path) -> None:
    """The program runs where `working_directory` says, with `environment` added."""
    tap = source(
        "/bin/sh",
        "-c",
        'echo "\\"$(pwd) $GREETING\\""',
        protocol="plain",
        working_directory=tmp_path,
        environment={"GREETING": "hello"},
    )
    await tap.open(None)
    try:
        records, _, _ = await read_all(tap)
    finally:
        await tap.close()
    assert records == [f"{tmp_path} hello"]


def test_check_offset_wants_json_text() -> None:
    """`offset --set` is refused for a plain source and for what is not JSON text."""
    from supervisor.connectors.exec.source import ExecSource

    ExecSource.check_offset('{"n": 1}')
    with pytest.raises(ValueError, match="JSON text"):
        ExecSource.check_offset("{nope")
    with pytest.raises(ValueError, match="no position"):
        ExecSource.check_offset('{"n": 1}', "plain")


async def test_tap_jsonl_from_pypi(tmp_path: Path) -> None:
    """tap-jsonl (Meltano SDK, reads a local file): its records, its STATE as the offset,
    and the state handed back to it with `--state FILE` on the next run."""
    import shutil

    program = shutil.which("tap-jsonl", path=os.environ.get("SINGER_BIN") or None)
    if program is None:
        pytest.skip("tap-jsonl not installed (pip install tap-jsonl; set SINGER_BIN to its bin)")
    data = tmp_path / "in.jsonl"
    data.write_text("".join(f'{{"id": {i}}}\n' for i in range(25)))
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"path": str(data)}))
    tap = source(program, "--config", str(config))
    await tap.open(None)
    try:
        records, rejects, batches = await read_all(tap)
    finally:
        await tap.close()
    assert [record["id"] for record in records] == list(range(25))
    assert rejects == []
    state = batches[-1].offset
    assert isinstance(state, str) and "bookmarks" in json.loads(state)
    again = source(program, "--config", str(config))
    await again.open(state)
    try:
        _, rejects, batches = await read_all(again)
    finally:
        await again.close()
    assert rejects == [] and batches[-1].end


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
async def test_the_program_runs_as_user_and_can_read_its_state() -> None:
    """`user`: the program runs as that user, and the state file it is given is its own."""
    from tests.helpers import throwaway_user

    script = 'echo "{\\"type\\":\\"RECORD\\",\\"record\\":\\"$(id -un) $(wc -c < "$2")\\"}"'
    with throwaway_user(f"exec-{os.getpid() % 100_000}") as name:
        tap = source("/bin/sh", "-c", script, "tap", user=name)
        await tap.open('"resume"')
        try:
            records, _, _ = await read_all(tap)
        finally:
            await tap.close()
        uid = str(pwd.getpwnam(name).pw_uid)
        by_id = source("/bin/sh", "-c", script, "tap", user=uid)
        await by_id.open('"resume"')
        try:
            by_id_records, _, _ = await read_all(by_id)
        finally:
            await by_id.close()
    assert records == [f"{name} 9"]  # '"resume"' and a newline
    assert by_id_records == records
