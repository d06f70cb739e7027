"""The `supervisor` command itself, as a subprocess: exit codes and messages."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor import cli
from supervisor.control.views import printable
from tests.daemon_process import DaemonProcess, write_config

CONFIGS = Path(__file__).parent.parent.parent / "configs"


def _supervisor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_accepts_the_shipped_example() -> None:
    """`supervisor check` on configs/ exits 0 and names the jobs."""
    result = _supervisor("check", "-c", str(CONFIGS / "supervisor.toml"))
    assert result.returncode == 0, result.stderr
    assert "countdown, counter, orders" in result.stdout


def test_check_and_run_refuse_a_bad_config_with_exit_2(tmp_path: Path) -> None:
    """A bad job file makes `check` and `run` exit 2 with the file and key, no traceback."""
    (tmp_path / "jobs").mkdir()
    (tmp_path / "supervisor.toml").write_text("")
    (tmp_path / "jobs" / "a.toml").write_text('[source]\ntype = "generate"\nrat = 5\n')
    for command in ("check", "run"):
        result = _supervisor(command, "-c", str(tmp_path / "supervisor.toml"))
        assert result.returncode == 2
        assert f'{tmp_path}/jobs/a.toml: source.rat: unknown key "rat"; did you mean "rate"?' in (
            result.stderr
        )
        assert f"{tmp_path}/jobs/a.toml: sink: required table [sink] is missing" in result.stderr
        assert "Traceback" not in result.stderr


def test_missing_config_file_is_a_usage_error(tmp_path: Path) -> None:
    """A daemon file that does not exist is exit 2, naming it."""
    result = _supervisor("check", "-c", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert f"{tmp_path}/nope.toml: cannot read" in result.stderr


def test_no_command_is_a_usage_error() -> None:
    """Running `supervisor` with no command prints usage and exits 2."""
    result = _supervisor()
    assert result.returncode == 2
    assert "usage: supervisor" in result.stderr


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    """`supervisor check | head -0`: output to a pipe nobody reads any more is exit 1 with
    no traceback (none from the interpreter's last flush either), as a pipeline expects."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "supervisor", "check", "-c", str(CONFIGS / "supervisor.toml")],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 1
    assert result.stderr == ""


# --- against the real daemon ---------------------------------------------------------------

DAEMON = """\
[supervisor]
log_format = "json"
log_level = "info"
shutdown_timeout = "10s"
"""
TICKS = """
    [source]
    type = "generate"
    rate = 200
    [sink]
    type = "null"
    [checkpoint]
    interval = "100ms"
"""
LOG = """
    [source]
    type = "file"
    path = "../app.log"
    [sink]
    type = "null"
"""
SLOW_SINK = """\
from pathlib import Path

import anyio


class SlowClose:
    \"\"\"A sink whose close waits until the file `release` exists.\"\"\"

    def __init__(self, release: str) -> None:
        self.release = Path(release)

    async def open(self):
        return None

    async def write(self, records):
        pass

    async def flush(self, offset):
        pass

    async def close(self):
        while not self.release.exists():
            await anyio.sleep(0.02)
"""
SLOW = """
    [source]
    type = "generate"
    rate = 100
    [sink]
    type = "python"
    class = "slowsink:SlowClose"
    release = "{release}"
"""
FAILING = """
    suspend_on_failure = false
    [source]
    type = "python"
    class = "no_such_module:Source"
    [sink]
    type = "null"
"""


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _supervisor(*args, "-c", str(config))


@pytest.fixture
def paused(tmp_path: Path) -> Iterator[tuple[DaemonProcess, Path]]:
    """A daemon with a PAUSED generate job `ticks` and a PAUSED file job `log`."""
    (tmp_path / "app.log").write_text("one\ntwo\n")
    config = write_config(tmp_path, {"ticks": TICKS, "log": LOG}, DAEMON)
    process = DaemonProcess(config)
    process.wait_for("control.listening")
    process.keep_draining()
    for job in ("ticks", "log"):
        result = _cli(config, "pause", job)
        assert result.returncode == 0, result.stderr
    yield process, config
    process.stop()


def _offset(config: Path, job: str) -> Any:
    shown = _cli(config, "offset", job)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("{pos: 5}", "not JSON"),  # a typo'd table: it was stored as the text "{pos: 5}"
        ("-Infinity", "-Infinity is not a JSON number"),  # it was taken for an option
        ("NaN", "NaN is not a JSON number"),
        ("1e999", "1e999 is beyond the range of a 64-bit float"),  # it said "Infinity is not..."
        ("9" * 5000, "an integer of 5000 digits is outside the 64-bit range"),  # stored as text
        ("18446744073709551616", "18446744073709551616 is outside the 64-bit range"),
        ("null", "null is not an offset"),
    ],
    ids=["typo", "-Infinity", "NaN", "1e999", "5000-digits", "2**64", "null"],
)
def test_offset_set_takes_only_json_an_offset_can_be(
    paused: tuple[DaemonProcess, Path], value: str, said: str
) -> None:
    """`offset --set` refuses what is not JSON, or not a finite 64-bit number, with a usage
    error (exit 2) saying why; nothing is sent and the offset is unchanged."""
    _, config = paused
    before = _offset(config, "ticks")
    result = _cli(config, "offset", "ticks", "--set", value)
    assert result.returncode == 2, result
    assert said in result.stderr
    assert len(result.stderr) < 1000
    assert _offset(config, "ticks") == before


def test_offset_set_checks_the_value_against_the_jobs_source(
    paused: tuple[DaemonProcess, Path],
) -> None:
    """A JSON value the job's source could not resume from is refused (exit 1, the source's
    reason) instead of stored to fail the job at its next start; a good one is stored."""
    _, config = paused
    before = {job: _offset(config, job) for job in ("ticks", "log")}
    for job, args, reason in (
        ("ticks", ("--set", "-5"), "generate source offset must be an integer >= 0"),
        ("ticks", ("--set=-5",), "generate source offset must be an integer >= 0"),
        ("ticks", ("--set", '"abc"'), "got 'abc'"),
        ("ticks", ("--set", "abc", "--text"), "got 'abc'"),
        ("log", ("--set", "5"), "file source offset must be a table"),
    ):
        result = _cli(config, "offset", job, *args)
        assert result.returncode == 1, (args, result)
        assert f"offset not set: the source of {job} does not take it: " in result.stderr
        assert reason in result.stderr
    assert {job: _offset(config, job) for job in ("ticks", "log")} == before
    stored = _cli(config, "offset", "ticks", "--set", "7")
    assert stored.returncode == 0 and stored.stdout.endswith("-> 7\n")
    assert _cli(config, "resume", "ticks").returncode == 0


def test_events_of_an_unknown_job_is_refused_like_status(
    paused: tuple[DaemonProcess, Path],
) -> None:
    """`events nosuch` exits 1 naming the jobs there are, as `status nosuch` does (it
    printed nothing and exited 0)."""
    _, config = paused
    for command in ("events", "status"):
        result = _cli(config, command, "nosuch")
        assert result.returncode == 1, (command, result)
        assert "no job named nosuch (jobs: log, ticks)" in result.stderr
    assert _cli(config, "events", "ticks").returncode == 0


def test_exit_when_idle_exits_1_when_a_job_failed(tmp_path: Path) -> None:
    """`run --exit-when-idle` exits 1, and logs which jobs, when a job ended FAILED (a
    batch caller must see its work was not done); it once exited 0."""
    config = write_config(tmp_path, {"failing": FAILING}, DAEMON)
    daemon = DaemonProcess(config, "--exit-when-idle")
    assert daemon.finish() == 1
    said = [e for e in daemon.events if e.get("event") == "daemon.exit_with_failed_jobs"]
    assert said and said[0]["jobs"] == ["failing"]


@pytest.fixture
def slow(tmp_path: Path) -> Iterator[tuple[DaemonProcess, Path, Path]]:
    """A daemon whose job `slow` has a sink that closes only once `release` exists."""
    release = tmp_path / "release"
    (tmp_path / "slowsink.py").write_text(SLOW_SINK)
    config = write_config(tmp_path, {"slow": SLOW.format(release=release)}, DAEMON)
    process = DaemonProcess(config, env={"PYTHONPATH": str(tmp_path)})
    process.wait_for("job.state_changed", job="slow", to="running")
    try:
        yield process, config, release
    finally:
        release.touch()
        process.stop()


def test_pause_reports_the_state_it_produced(slow: tuple[DaemonProcess, Path, Path]) -> None:
    """`pause` prints PAUSED even when a `resume` lands while it waits for the final
    checkpoint (it printed the later state, PENDING or RUNNING, as its own)."""
    process, config, release = slow
    pause = subprocess.Popen(
        [sys.executable, "-m", "supervisor", "pause", "slow", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    process.wait_for("job.state_changed", job="slow", to="paused")
    resumed = _cli(config, "resume", "slow")
    assert resumed.returncode == 0, resumed.stderr
    release.touch()
    out, err = pause.communicate(timeout=60)
    assert (pause.returncode, out) == (0, "slow: PAUSED\n"), err


def test_a_pause_slower_than_the_timeout_is_waited_for(
    slow: tuple[DaemonProcess, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `pause` whose final checkpoint outlasts the CLI's timeout is waited for while the
    daemon answers, with a note, then reported (it said "did not answer", exit 4)."""
    process, config, release = slow
    process.keep_draining()
    monkeypatch.setattr(cli, "CONTROL_TIMEOUT", 0.2, raising=False)
    noted = threading.Event()

    class Stderr(io.StringIO):
        def write(self, text: str) -> int:
            if "still waiting for `pause`" in text:
                noted.set()
            return super().write(text)

    monkeypatch.setattr(sys, "stderr", Stderr())
    stdout = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stdout)
    outcome: list[int] = []
    pausing = threading.Thread(
        target=lambda: outcome.append(cli.main(["pause", "slow", "-c", str(config)]))
    )
    pausing.start()
    try:
        assert noted.wait(timeout=60), "no note that the daemon is still working"
    finally:
        release.touch()
        pausing.join(timeout=60)
    assert outcome == [0]
    assert stdout.getvalue() == "slow: PAUSED\n"


offsets = st.recursive(
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(offsets)
def test_parse_offset_reads_back_every_offset_as_json(value: Any) -> None:
    """Every value a snapshot can hold, written as JSON, parses back equal."""
    assert cli.parse_offset(json.dumps(value)) == value


@given(st.text() | st.sampled_from(["{pos: 5}", "1e999", "-Infinity", "9" * 5000, "'a'", "[1,"]))
def test_parse_offset_is_strict_json_or_an_error(text: str) -> None:
    """`--set` text is a finite JSON value or a ValueError: never the text taken as a string."""
    try:
        value = cli.parse_offset(text)
    except ValueError as exc:
        assert str(exc)
        return
    assert value == json.loads(text)
    assert isinstance(value, str) == text.strip().startswith('"')


@given(st.text(st.characters(exclude_categories=())))
def test_printable_leaves_nothing_a_terminal_acts_on(text: str) -> None:
    """`printable` output holds no control, format, surrogate or separator character,
    keeps newlines only when asked, and leaves printable text as it is."""
    for lines in (False, True):
        shown = printable(text, lines=lines)
        kept = {"\n"} if lines else set()
        assert all(
            char in kept or unicodedata.category(char) not in {"Cc", "Cf", "Cs", "Zl", "Zp"}
            for char in shown
        )
        shown.encode("utf-8")  # a lone surrogate would not even print
    if text.isprintable():
        assert printable(text) == text
