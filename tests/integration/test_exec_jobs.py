"""Exec jobs in the real daemon: a clean stop repeats nothing, a daemon SIGKILL leaves no
program behind (children die with the daemon), the example jobs pass `supervisor check`."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.daemon_process import DaemonProcess, write_config
from tests.exec_helpers import PYTHON, TAP, TARGET, process_state
from tests.helpers import run_cli

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent.parent
PROGRAMS = REPO / "configs/examples/programs"


def job(count: int, sink: str, pause: float = 0.002) -> str:
    return f"""
        [source]
        type = "exec"
        command = ["{PYTHON}", "{TAP}", "{count}", "10"]
        environment = {{ TAP_PAUSE = "{pause}" }}
        stop_timeout = "2s"

        [sink]
        {sink}

        [checkpoint]
        every_records = 50
        interval = "10s"
    """


def numbers(path: Path) -> list[int]:
    return [json.loads(line)["n"] for line in path.read_text().splitlines()]


def wait_dead(pid: int, timeout: float = 10) -> str | None:
    """Wait until `pid` no longer runs: gone, or a zombie left to init (not ours)."""
    deadline = time.monotonic() + timeout
    state = process_state(pid)
    while state not in (None, "Z", "X") and time.monotonic() < deadline:
        time.sleep(0.02)
        state = process_state(pid)
    return state


def test_sigterm_then_restart_repeats_nothing(tmp_path: Path) -> None:
    """A clean stop ends the last batch at a STATE: the restarted tap repeats no record."""
    sink = 'type = "jsonl"\npath = "../out.jsonl"'
    config = write_config(tmp_path, {"tap": job(2000, sink)})
    daemon = DaemonProcess(config, "--exit-when-idle")
    daemon.wait_for("job.checkpoint", count=5)
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.finish() == 0
    assert DaemonProcess(config, "--exit-when-idle").finish() == 0
    seen = numbers(tmp_path / "out.jsonl")
    assert sorted(seen) == list(range(2000))


def test_exec_sink_sigterm_then_restart_repeats_nothing(tmp_path: Path) -> None:
    """The same through an exec sink (a Python Singer target confirming each flush)."""
    sink = f'type = "exec"\ncommand = ["{PYTHON}", "{TARGET}", "{tmp_path / "out.jsonl"}"]'
    config = write_config(tmp_path, {"tap": job(2000, sink)})
    daemon = DaemonProcess(config, "--exit-when-idle")
    daemon.wait_for("job.checkpoint", count=5)
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.finish() == 0
    assert DaemonProcess(config, "--exit-when-idle").finish() == 0
    assert sorted(numbers(tmp_path / "out.jsonl")) == list(range(2000))


def test_daemon_sigkill_leaves_no_program_running(tmp_path: Path) -> None:
    """kill -9 of the daemon: its source, co-process and sink programs die with it."""
    sink = (
        f'type = "exec"\ncommand = ["{PYTHON}", "{TARGET}", "{tmp_path / "out.jsonl"}"]\n'
        f'[processor]\ntype = "exec"\ncommand = ["{PROGRAMS}/double.sh"]'
    )
    config = write_config(tmp_path, {"tap": job(10**9, sink, pause=0.01)})
    daemon = DaemonProcess(config)
    daemon.keep_draining()
    source = daemon.wait_logged("exec.started", role="source")["pid"]
    target = daemon.wait_logged("exec.started", role="sink")["pid"]
    coprocess = daemon.wait_logged("exec.started", role="processor")["pid"]
    daemon.wait_logged("job.checkpoint")
    for pid in (source, target, coprocess):
        assert process_state(pid) not in (None, "Z")
    daemon.process.kill()
    daemon.process.wait()
    for pid in (source, target, coprocess):
        assert wait_dead(pid) in (None, "Z", "X"), pid
    daemon.stop()


def test_garbage_and_the_records_policy(tmp_path: Path) -> None:
    """Garbage lines are bad records: dead-lettered with the line's start, the rest delivered."""
    script = tmp_path / "noisy.sh"
    script.write_text(
        "#!/bin/sh\n"
        "echo 'this is not json'\n"
        'echo \'{"type": "RECORD", "record": {"n": 0}}\'\n'
        'echo \'{"type": "STATE", "value": 1}\'\n'
    )
    script.chmod(0o755)
    config = write_config(
        tmp_path,
        {
            "noisy": f"""
                [source]
                type = "exec"
                command = ["{script}"]
                [sink]
                type = "jsonl"
                path = "../out.jsonl"
                [records]
                on_error = "dead_letter"
                dead_letter = "../rejects.jsonl"
            """
        },
    )
    assert DaemonProcess(config, "--exit-when-idle").finish() == 0
    assert numbers(tmp_path / "out.jsonl") == [0]
    rejects = (tmp_path / "rejects.jsonl").read_text()
    assert "this is not json" in rejects


def test_fatal_exit_code_fails_the_job_with_a_clear_cause(tmp_path: Path) -> None:
    """An exit code in fatal_exit_codes: FAILED at once; status shows the cause, no traceback."""
    config = write_config(
        tmp_path,
        {
            "broken": """
                [source]
                type = "exec"
                command = ["/bin/sh", "-c", "echo 'no config file' >&2; exit 78"]
                fatal_exit_codes = [78]
                [sink]
                type = "null"
            """
        },
    )
    daemon = DaemonProcess(config)
    daemon.keep_draining()
    daemon.wait_logged("job.state_changed", job="broken", to="failed")
    status = run_cli(config, "status", "--json")
    daemon.stop()
    assert "exited with code 78; its stderr ended: no config file" in status.stdout
    assert "Traceback" not in status.stdout


def test_the_examples_pass_check() -> None:
    """`supervisor check` accepts configs/examples, exec jobs and their programs included."""
    result = run_cli(REPO / "configs/examples/supervisor.toml", "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "exec-" in result.stdout


def test_check_reports_a_missing_program(tmp_path: Path) -> None:
    """A program that is not there, or not executable: `check` says so at source.command."""
    config = write_config(
        tmp_path,
        {
            "missing": """
                [source]
                type = "exec"
                command = ["./no-such-program"]
                [processor]
                type = "exec"
                command = ["/no/such/coprocess"]
                [sink]
                type = "exec"
                command = ["no-such-program-on-path"]
            """
        },
    )
    result = run_cli(config, "check")
    assert result.returncode == 2
    assert "source.command" in result.stderr + result.stdout
    assert "no-such-program is not an executable file" in result.stderr + result.stdout
    assert "sink.command" in result.stderr + result.stdout
    assert "processor.command: /no/such/coprocess is not an executable file" in result.stderr


def test_exec_processor_in_the_daemon_with_the_records_policy(tmp_path: Path) -> None:
    """Two shell co-processes: results in order, `!` answers dead-lettered with the reason."""
    coprocess = tmp_path / "no-threes.sh"
    coprocess.write_text(
        "#!/bin/sh\n"
        "while read -r line; do\n"
        "  case $line in *3*) echo '!has a three';; *) echo \"$line\";; esac\n"
        "  echo\n"
        "done\n"
    )
    coprocess.chmod(0o755)
    config = write_config(
        tmp_path,
        {
            "filtered": f"""
                [source]
                type = "exec"
                command = ["{PYTHON}", "{TAP}", "100", "10"]
                [processor]
                type = "exec"
                command = ["{coprocess}"]
                workers = 2
                [sink]
                type = "jsonl"
                path = "../out.jsonl"
                [records]
                on_error = "dead_letter"
                dead_letter = "../rejects.jsonl"
            """
        },
    )
    assert DaemonProcess(config, "--exit-when-idle").finish() == 0
    assert numbers(tmp_path / "out.jsonl") == [n for n in range(100) if "3" not in str(n)]
    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == len([n for n in range(100) if "3" in str(n)])
    assert "has a three" in rejects[0]["error"]


def test_the_example_programs_run_as_documented(tmp_path: Path) -> None:
    """docs/exec.md's programs in the daemon: shell tap -> Python co-processes -> shell
    target, and Python tap -> shell co-process -> Python target."""
    events = tmp_path / "events.log"
    events.write_text("".join(f"line {i}\n" for i in range(30)))
    config = write_config(
        tmp_path,
        {
            "squares": f"""
                [source]
                type = "exec"
                command = ["{PROGRAMS}/counter-tap.sh", "250"]
                state_argument = ""
                state_env = "TAP_STATE"
                [processor]
                type = "exec"
                command = ["{PROGRAMS}/enrich.py"]
                workers = 2
                [sink]
                type = "exec"
                command = ["{PROGRAMS}/file-target.sh", "{tmp_path / "squares.jsonl"}"]
            """,
            "doubled": f"""
                [source]
                type = "exec"
                command = ["{PROGRAMS}/file-tap.py", "{events}"]
                [processor]
                type = "exec"
                command = ["{PROGRAMS}/double.sh"]
                [sink]
                type = "exec"
                command = ["{PROGRAMS}/jsonl-target.py", "{tmp_path / "doubled.jsonl"}"]
                [checkpoint]
                interval = "200ms"
            """,
        },
    )
    daemon = DaemonProcess(config, "--exit-when-idle")
    daemon.keep_draining()
    daemon.wait_logged("job.state_changed", job="squares", to="finished")
    squares = [json.loads(line) for line in (tmp_path / "squares.jsonl").read_text().splitlines()]
    assert squares == [{"n": n, "square": n * n} for n in range(250) if n % 7]
    doubled = tmp_path / "doubled.jsonl"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (
        not doubled.exists() or doubled.read_text().count("\n") < 60
    ):
        time.sleep(0.05)
    assert daemon.stop() == 0
    lines = [json.loads(line)["line"] for line in doubled.read_text().splitlines()]
    assert lines == [f"line {i}" for i in range(30) for _ in range(2)]


def test_the_page_shows_the_example_programs_as_they_are() -> None:
    """Each code block docs/exec.md marks with ``<!-- file: PATH -->`` is that file, whole."""
    import re

    page = (REPO / "docs" / "exec.md").read_text()
    shown = re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```\n", page, re.DOTALL)
    assert len(shown) >= 6
    for path, text in shown:
        assert text == (REPO / path).read_text(), path


def test_offset_set_moves_a_singer_source(tmp_path: Path) -> None:
    """`offset --set STATE --text` on a stopped job: the tap restarts from that state;
    what is not JSON text is refused."""
    sink = 'type = "jsonl"\npath = "../out.jsonl"'
    config = write_config(tmp_path, {"tap": job(1000, sink, pause=0.05)})
    daemon = DaemonProcess(config)
    daemon.keep_draining()
    daemon.wait_logged("job.checkpoint")
    assert run_cli(config, "stop", "tap").returncode == 0
    refused = run_cli(config, "offset", "tap", "--set", "{nope", "--text")
    assert refused.returncode != 0 and "JSON text" in refused.stderr + refused.stdout
    moved = run_cli(config, "offset", "tap", "--set", '{"n": 990}', "--text")
    assert moved.returncode == 0, moved.stderr
    assert run_cli(config, "start", "tap").returncode == 0
    daemon.wait_logged("job.state_changed", job="tap", to="finished")
    assert daemon.stop() == 0
    seen = numbers(tmp_path / "out.jsonl")
    assert seen[-10:] == list(range(990, 1000))
    assert 500 not in seen
