"""The strict configuration loader: what it builds and how it reports mistakes."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from supervisor.config.loader import load_config
from supervisor.config.model import (
    FileSourceConfig,
    GenerateSourceConfig,
    JsonlSinkConfig,
    PythonSourceConfig,
    SqliteSinkConfig,
)
from supervisor.errors import ConfigError

VALID_JOB = """
    [source]
    type = "generate"
    [sink]
    type = "null"
"""


def _write(root: Path, daemon: str, jobs: dict[str, str]) -> Path:
    (root / "jobs").mkdir(parents=True, exist_ok=True)
    (root / "supervisor.toml").write_text(textwrap.dedent(daemon))
    for name, body in jobs.items():
        (root / "jobs" / name).write_text(textwrap.dedent(body))
    return root / "supervisor.toml"


def _issues(config: Path) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        load_config(config, environ={})
    return [str(issue) for issue in raised.value.issues]


def test_a_full_configuration_comes_out_typed(tmp_path: Path) -> None:
    """Every key is parsed into its dataclass field, with defaults merged and paths resolved."""
    config = _write(
        tmp_path,
        """
        [supervisor]
        state_dir = "var/state"
        socket_mode = "0640"
        max_starts_in_flight = 3
        shutdown_timeout = "1m"
        [defaults]
        suspend_on_failure = true
        [defaults.retry]
        max = "30s"
        max_attempts = 4
        """,
        {
            "orders.toml": """
                [source]
                type = "file"
                path = "../in/orders.jsonl"
                format = "jsonl"
                follow = false
                start = "end"
                poll_interval = "100ms"
                [processor]
                function = "supervisor.examples:enrich_order"
                [sink]
                type = "sqlite"
                path = "/abs/out.db"
                table = "orders"
                [retry]
                initial = 0.5
                [records]
                on_error = "dead_letter"
                dead_letter = "rejects.jsonl"
                max_errors = 7
            """,
            "plugin.toml": """
                name = "plugin-1"
                enabled = false
                [source]
                type = "python"
                class = "supervisor.examples:CountdownSource"
                start = 3
                [sink]
                type = "jsonl"
                path = "out.jsonl"
            """,
        },
    )
    loaded = load_config(config, environ={})
    assert loaded.daemon.state_dir == tmp_path / "var" / "state"
    assert (loaded.daemon.socket_mode, loaded.daemon.max_starts_in_flight) == (0o640, 3)
    assert loaded.daemon.shutdown_timeout == 60.0
    orders, plugin = loaded.jobs
    assert orders.name == "orders" and orders.suspend_on_failure
    assert orders.source == FileSourceConfig(
        path=tmp_path / "in" / "orders.jsonl",
        format="jsonl",
        follow=False,
        start="end",
        poll_interval=0.1,
    )
    assert orders.sink == SqliteSinkConfig(path=Path("/abs/out.db"), table="orders")
    assert (orders.retry.initial, orders.retry.max, orders.retry.max_attempts) == (0.5, 30.0, 4)
    assert orders.records.dead_letter == tmp_path / "jobs" / "rejects.jsonl"
    assert orders.processor is not None
    assert plugin.name == "plugin-1" and not plugin.enabled
    assert plugin.source == PythonSourceConfig(
        class_ref="supervisor.examples:CountdownSource", options={"start": 3}
    )
    assert plugin.sink == JsonlSinkConfig(path=tmp_path / "jobs" / "out.jsonl")


def test_systemd_directories_win(tmp_path: Path) -> None:
    """$STATE_DIRECTORY and $RUNTIME_DIRECTORY override the file's paths under systemd."""
    config = _write(tmp_path, "[supervisor]\nstate_dir = 'x'\n", {})
    loaded = load_config(
        config, environ={"STATE_DIRECTORY": "/var/lib/ss:/other", "RUNTIME_DIRECTORY": "/run/ss"}
    )
    assert loaded.daemon.state_dir == Path("/var/lib/ss")
    assert loaded.daemon.control_socket == Path("/run/ss/control.sock")


def test_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    """A TOML syntax error gives the file, line and column."""
    config = _write(tmp_path, "", {"bad.toml": "name = 'bad'\nsource = [1,\n"})
    (issue,) = _issues(config)
    assert issue.startswith(f"{tmp_path}/jobs/bad.toml: ")
    assert "line" in issue or "end of file" in issue


def test_syntax_error_line_and_column_are_exact(tmp_path: Path) -> None:
    """The line and column point at the offending character."""
    config = _write(tmp_path, "", {"bad.toml": 'name = "x"\nenabled = tru\n'})
    (issue,) = _issues(config)
    assert "line 2, column 11" in issue


def test_unknown_keys_suggest_the_closest(tmp_path: Path) -> None:
    """Misspelt keys, top level and nested, are named with a did-you-mean."""
    body = VALID_JOB + "[retyr]\n[checkpoint]\nevery_record = 5\n"
    config = _write(tmp_path, "[supervisor]\nlog_levl = 'info'\n", {"a.toml": body})
    issues = _issues(config)
    typo = 'unknown key "log_levl"; did you mean "log_level"?'
    assert f"{tmp_path}/supervisor.toml: supervisor.log_levl: {typo}" in issues
    assert any('a.toml: retyr: unknown key "retyr"; did you mean "retry"?' in i for i in issues)
    assert any(
        "checkpoint.every_record: unknown key" in i and '"every_records"' in i for i in issues
    )


@pytest.mark.parametrize(
    ("table", "value", "expected"),
    [
        ("checkpoint.every_records", "true", "expected an integer, got a boolean"),
        ("checkpoint.every_records", '"3"', "expected an integer, got a string"),
        ("checkpoint.every_records", "0", "expected at least 1"),
        ("checkpoint.interval", '"5 seconds"', 'expected a duration like "5s"'),
        ("checkpoint.interval", "0", "expected more than 0"),
        ("retry.multiplier", "0.5", "expected at least 1"),
        ("retry.jitter", '"yes"', "expected true or false"),
        ("retry.retry_on", '"TimeoutError"', "expected an array of exception names"),
        ("records.on_error", '"ignore"', 'expected one of "fail", "skip", "dead_letter"'),
        ("records.max_errors", "-1", "expected at least 0"),
    ],
)
def test_wrong_values_name_the_dotted_key(
    tmp_path: Path, table: str, value: str, expected: str
) -> None:
    """Wrong types and out-of-range values name the file, the dotted key and what was expected."""
    section, key = table.split(".")
    config = _write(tmp_path, "", {"a.toml": VALID_JOB + f"[{section}]\n{key} = {value}\n"})
    (issue,) = _issues(config)
    assert issue.startswith(f"{tmp_path}/jobs/a.toml: {table}: ")
    assert expected in issue


def test_missing_required_keys_are_named(tmp_path: Path) -> None:
    """A job without a sink, or a file source without a path, says which key is missing."""
    config = _write(tmp_path, "", {"a.toml": '[source]\ntype = "file"\n'})
    issues = _issues(config)
    assert f"{tmp_path}/jobs/a.toml: source.path: required key is missing" in issues
    assert f"{tmp_path}/jobs/a.toml: sink: required table [sink] is missing" in issues


def test_retry_max_below_initial_is_an_error(tmp_path: Path) -> None:
    """retry.max must be at least retry.initial."""
    config = _write(tmp_path, "", {"a.toml": VALID_JOB + '[retry]\ninitial = "2m"\nmax = "1m"\n'})
    (issue,) = _issues(config)
    assert "retry.max: expected at least retry.initial (120s), got 60s" in issue


def test_dead_letter_needs_a_path(tmp_path: Path) -> None:
    """on_error = dead_letter without a dead_letter file is an error."""
    config = _write(tmp_path, "", {"a.toml": VALID_JOB + '[records]\non_error = "dead_letter"\n'})
    (issue,) = _issues(config)
    assert "records.dead_letter: required when" in issue


def test_duplicate_job_names_name_both_files(tmp_path: Path) -> None:
    """Two files declaring the same name: the second is refused, naming the first."""
    config = _write(tmp_path, "", {"a.toml": VALID_JOB, "b.toml": 'name = "a"\n' + VALID_JOB})
    (issue,) = _issues(config)
    assert issue == (
        f'{tmp_path}/jobs/b.toml: name: job name "a" is already used by {tmp_path}/jobs/a.toml'
    )


@pytest.mark.parametrize(
    "name",
    ["../x", "a/b", "a\x00b", "x" * 64, "Orders", "\u043erders", "orders\n", "", "-x", ".hidden"],
    ids=[
        "dotdot",
        "slash",
        "nul",
        "64chars",
        "upper",
        "cyrillic",
        "newline",
        "empty",
        "dash",
        "dot",
    ],
)
def test_unsafe_job_names_are_refused(tmp_path: Path, name: str) -> None:
    """A name that is not a safe file name is refused at key "name"."""
    quoted = (
        name.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\x00", "\\u0000")
        .replace("\n", "\\n")
    )
    config = _write(tmp_path, "", {"a.toml": f'name = "{quoted}"\n' + VALID_JOB})
    (issue,) = _issues(config)
    assert issue.startswith(f"{tmp_path}/jobs/a.toml: name: job name ")


def test_a_bad_file_stem_is_reported_as_the_name(tmp_path: Path) -> None:
    """Without a name key, an unsafe file name is reported as such."""
    config = _write(tmp_path, "", {"Bad Name.toml": VALID_JOB})
    (issue,) = _issues(config)
    assert "name (taken from the file name)" in issue


def test_unreadable_and_non_utf8_files_are_named(tmp_path: Path) -> None:
    """A missing daemon file, or a job file that is not UTF-8, is an error naming it."""
    assert _issues(tmp_path / "nope.toml") == [
        f"{tmp_path}/nope.toml: cannot read: No such file or directory"
    ]
    config = _write(tmp_path, "", {})
    (tmp_path / "jobs" / "latin.toml").write_bytes(b'name = "caf\xe9"\n')
    (issue,) = _issues(config)
    assert issue.startswith(f"{tmp_path}/jobs/latin.toml: byte 11: not valid UTF-8")


def test_bad_defaults_are_reported_once_against_the_daemon_file(tmp_path: Path) -> None:
    """A wrong value in [defaults] names the daemon file and defaults.<key>, once."""
    config = _write(
        tmp_path,
        "[defaults.retry]\nmax = true\n[defaults.typo]\n",
        {"a.toml": VALID_JOB, "b.toml": VALID_JOB},
    )
    issues = _issues(config)
    assert (
        issues.count(
            f"{tmp_path}/supervisor.toml: defaults.retry.max: expected a duration like "
            '"5s", "250ms" or a number of seconds, got a boolean (True)'
        )
        == 1
    )
    assert any("defaults.typo: unknown key" in issue for issue in issues)


def test_every_error_in_every_file_is_reported_together(tmp_path: Path) -> None:
    """Errors in several files come back in one ConfigError."""
    config = _write(
        tmp_path,
        "[supervisor]\nmax_starts_in_flight = 0\n",
        {"a.toml": "x = \n", "b.toml": VALID_JOB + "[checkpoint]\ninterval = -1\n"},
    )
    issues = _issues(config)
    assert len(issues) == 3
    assert {issue.split(":")[0] for issue in issues} == {
        f"{tmp_path}/supervisor.toml",
        f"{tmp_path}/jobs/a.toml",
        f"{tmp_path}/jobs/b.toml",
    }


def test_the_shipped_example_is_valid() -> None:
    """`configs/supervisor.toml` and its jobs load without error."""
    config = load_config(Path(__file__).parent.parent / "configs" / "supervisor.toml", environ={})
    assert [job.name for job in config.jobs] == ["countdown", "counter", "orders"]
    assert isinstance(config.job("counter").source, GenerateSourceConfig)  # type: ignore[union-attr]
