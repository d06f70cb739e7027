"""The strict configuration loader: what it builds and how it reports mistakes."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from supervisor.config.loader import load_config, load_daemon_config
from supervisor.config.model import (
    CheckpointPolicy,
    DaemonConfig,
    JobConfig,
    ProcessorConfig,
    RecordsPolicy,
    RetryPolicy,
)
from supervisor.connectors.basic import NullSinkConfig, StdoutSinkConfig
from supervisor.connectors.file import FileSourceConfig
from supervisor.connectors.generate import GenerateSourceConfig
from supervisor.connectors.jsonl import JsonlSinkConfig
from supervisor.connectors.python import PythonSinkConfig, PythonSourceConfig
from supervisor.connectors.sqlite import SqliteSinkConfig
from supervisor.errors import ConfigError
from tests.helpers import one_of

VALID_JOB = '[source]\ntype = "generate"\n[sink]\ntype = "null"\n'


def _write(root: Path, daemon: str, jobs: dict[str, str | bytes]) -> Path:
    (root / "jobs").mkdir(parents=True, exist_ok=True)
    (root / "supervisor.toml").write_text(textwrap.dedent(daemon))
    for name, body in jobs.items():
        data = body if isinstance(body, bytes) else textwrap.dedent(body).encode()
        (root / "jobs" / name).write_bytes(data)
    return root / "supervisor.toml"


def _issues(config: Path) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        load_config(config, environ={})
    return [str(issue) for issue in raised.value.issues]


def test_a_full_configuration_comes_out_typed(tmp_path: Path) -> None:
    """Every key lands in its dataclass field, with defaults merged and relative paths resolved."""
    config = _write(
        tmp_path,
        """
        [supervisor]
        jobs = "jobs/*.toml"
        state_dir = "var/state"
        control_socket = "run/ctl.sock"
        socket_mode = "0640"
        max_starts_in_flight = 3
        shutdown_timeout = "1m"
        log_format = "json"
        log_level = "debug"
        [defaults]
        suspend_on_failure = true
        [defaults.retry]
        max = "30s"
        max_attempts = 4
        [defaults.records]
        dead_letter = "rejects/all.jsonl"
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
                follow_symlinks = true
                [processor]
                function = "supervisor.examples:enrich_order"
                [sink]
                type = "sqlite"
                path = "/abs/out.db"
                table = "orders"
                [checkpoint]
                every_records = 50
                interval = 2
                [retry]
                initial = 0.5
                multiplier = 3
                jitter = false
                reset_after = "1h"
                retry_on = ["TimeoutError", "mylib.errors.Busy"]
                fatal_on = ["KeyError"]
                [records]
                on_error = "dead_letter"
                dead_letter = "rejects.jsonl"
                max_errors = 7
            """,
            "plugin.toml": """
                name = "plugin-1"
                enabled = false
                suspend_on_failure = false
                [source]
                type = "python"
                class = "supervisor.examples:CountdownSource"
                start = 3
                nested = { deep = [1, 2] }
                [sink]
                type = "python"
                class = "mylib.sinks:Queue.Writer"
                [records]
                on_error = "dead_letter"
            """,
            "stdout.toml": '[source]\ntype = "generate"\ncount = 5\nrate = 2.5\n'
            '[sink]\ntype = "stdout"\n',
            "zz.toml": '[source]\ntype = "file"\npath = "in.txt"\n'
            '[sink]\ntype = "jsonl"\npath = "out.jsonl"\n',
        },
    )
    loaded = load_config(config, environ={})
    assert loaded.daemon == DaemonConfig(
        path=config,
        jobs="jobs/*.toml",
        state_dir=tmp_path / "var" / "state",
        control_socket=tmp_path / "run" / "ctl.sock",
        socket_mode=0o640,
        max_starts_in_flight=3,
        shutdown_timeout=60.0,
        log_format="json",
        log_level="debug",
    )
    jobs = tmp_path / "jobs"
    retry = RetryPolicy(max=30.0, max_attempts=4)
    assert loaded.jobs == (
        JobConfig(
            name="orders",
            path=jobs / "orders.toml",
            source=FileSourceConfig(
                path=tmp_path / "in" / "orders.jsonl",
                format="jsonl",
                follow=False,
                start="end",
                poll_interval=0.1,
                follow_symlinks=True,
            ),
            sink=SqliteSinkConfig(path=Path("/abs/out.db"), table="orders"),
            enabled=True,
            suspend_on_failure=True,
            processor=ProcessorConfig(function="supervisor.examples:enrich_order"),
            checkpoint=CheckpointPolicy(every_records=50, interval=2.0),
            retry=RetryPolicy(
                initial=0.5,
                max=30.0,
                multiplier=3.0,
                jitter=False,
                max_attempts=4,
                reset_after=3600.0,
                retry_on=("TimeoutError", "mylib.errors.Busy"),
                fatal_on=("KeyError",),
            ),
            records=RecordsPolicy(
                on_error="dead_letter", dead_letter=jobs / "rejects.jsonl", max_errors=7
            ),
        ),
        JobConfig(
            name="plugin-1",
            path=jobs / "plugin.toml",
            source=PythonSourceConfig(
                class_ref="supervisor.examples:CountdownSource",
                options={"start": 3, "nested": {"deep": [1, 2]}},
            ),
            sink=PythonSinkConfig(class_ref="mylib.sinks:Queue.Writer"),
            enabled=False,
            retry=retry,
            # The dead-letter path came from [defaults]: relative to the daemon file.
            records=RecordsPolicy(
                on_error="dead_letter", dead_letter=tmp_path / "rejects" / "all.jsonl"
            ),
        ),
        JobConfig(
            name="stdout",
            path=jobs / "stdout.toml",
            source=GenerateSourceConfig(count=5, rate=2.5),
            sink=StdoutSinkConfig(),
            suspend_on_failure=True,
            retry=retry,
            records=RecordsPolicy(dead_letter=tmp_path / "rejects" / "all.jsonl"),
        ),
        JobConfig(
            name="zz",
            path=jobs / "zz.toml",
            source=FileSourceConfig(path=jobs / "in.txt"),
            sink=JsonlSinkConfig(path=jobs / "out.jsonl"),
            suspend_on_failure=True,
            retry=retry,
            records=RecordsPolicy(dead_letter=tmp_path / "rejects" / "all.jsonl"),
        ),
    )


def test_an_empty_daemon_file_uses_documented_defaults(tmp_path: Path) -> None:
    """Without [supervisor], jobs/*.toml, state/ and supervisor.sock beside the file are used."""
    config = _write(tmp_path, "", {"minimal.toml": VALID_JOB})
    loaded = load_config(config, environ={})
    assert loaded.daemon == DaemonConfig(
        path=config, state_dir=tmp_path / "state", control_socket=tmp_path / "supervisor.sock"
    )
    assert loaded.jobs == (
        JobConfig(
            name="minimal",
            path=tmp_path / "jobs" / "minimal.toml",
            source=GenerateSourceConfig(),
            sink=NullSinkConfig(),
        ),
    )


def test_the_jobs_glob_skips_dot_files_and_the_daemon_file(tmp_path: Path) -> None:
    """No match is a daemon with no jobs; dot files never count; an absolute glob works."""
    config = _write(tmp_path, 'supervisor.jobs = "*.toml"\n', {})
    (tmp_path / ".#editor-lock.toml").write_text("not toml at all [")
    assert load_config(config, environ={}).jobs == ()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "far.toml").write_text(VALID_JOB)
    config.write_text(f'supervisor.jobs = "{tmp_path}/else*/*.toml"\n')
    (job,) = load_config(config, environ={}).jobs
    assert job.path == tmp_path / "elsewhere" / "far.toml"


def test_defaults_must_be_a_table(tmp_path: Path) -> None:
    """A [defaults] that is not a table is reported at "defaults"."""
    assert _issues(_write(tmp_path, "defaults = 3\n", {})) == [
        f"{tmp_path}/supervisor.toml: defaults: expected a table of job keys, got an integer (3)"
    ]


def test_a_job_of_another_source_type_replaces_the_default_table(tmp_path: Path) -> None:
    """A job's [source] of another type does not inherit the default source's keys."""
    daemon = '[defaults.source]\ntype = "file"\npath = "in.txt"\nfollow = false\n'
    config = _write(tmp_path, daemon, {"a.toml": VALID_JOB, "b.toml": '[sink]\ntype = "null"\n'})
    first, second = load_config(config, environ={}).jobs
    assert first.source == GenerateSourceConfig()
    assert second.source == FileSourceConfig(path=tmp_path / "in.txt", follow=False)


def test_systemd_directories_win(tmp_path: Path) -> None:
    """$STATE_DIRECTORY (its first entry) and $RUNTIME_DIRECTORY override the file's paths."""
    config = _write(tmp_path, "[supervisor]\nstate_dir = 'x'\ncontrol_socket = 'y.sock'\n", {})
    environ = {"STATE_DIRECTORY": "/var/lib/ss:/other", "RUNTIME_DIRECTORY": "/run/ss"}
    loaded = load_config(config, environ=environ)
    assert loaded.daemon.state_dir == Path("/var/lib/ss")
    assert loaded.daemon.control_socket == Path("/run/ss/control.sock")


@pytest.mark.parametrize(
    ("body", "where", "message"),
    [
        ('name = "x"\nenabled = tru\n', "line 2, column 11", "invalid TOML: Invalid value"),
        ("[source]\ntype = [1,\n", "line 3, column 1", "invalid TOML: "),
        ("a = 1\na = 2\n", "line 2, column 6", "invalid TOML: Cannot overwrite a value"),
        (
            b'name = "ok"\n# caf\xe9\n',
            "line 2, column 6",
            "expected UTF-8 text, found the byte 0xe9",
        ),
    ],
    ids=["bad-value", "end-of-file", "duplicate-key", "not-utf8"],
)
def test_unparsable_files_name_the_line_and_column(
    tmp_path: Path, body: str | bytes, where: str, message: str
) -> None:
    """A syntax or encoding error names the file, the line and column, and what is wrong."""
    config = _write(tmp_path, "", {"bad.toml": body})
    (issue,) = _issues(config)
    assert issue.startswith(f"{tmp_path}/jobs/bad.toml: {where}: {message}")
    assert "(at " not in issue


def test_unknown_keys_suggest_the_closest(tmp_path: Path) -> None:
    """Misspelt keys, at the top level and nested, get a did-you-mean; a far-off key does not."""
    body = VALID_JOB + "[retyr]\n[checkpoint]\nevery_record = 5\nzzz = 1\n"
    config = _write(tmp_path, "[supervisor]\nlog_levl = 'info'\n", {"a.toml": body})
    job = f"{tmp_path}/jobs/a.toml"
    assert set(_issues(config)) == {
        f'{tmp_path}/supervisor.toml: supervisor.log_levl: unknown key "log_levl"; '
        'did you mean "log_level"?',
        f'{job}: retyr: unknown key "retyr"; did you mean "retry"?',
        f'{job}: checkpoint.every_record: unknown key "every_record"; '
        'did you mean "every_records"?',
        f'{job}: checkpoint.zzz: unknown key "zzz"',
    }


@pytest.mark.parametrize(
    ("table", "value", "expected"),
    [
        ("checkpoint.every_records", "true", "expected an integer, got a boolean (True)"),
        ("checkpoint.every_records", '"3"', "expected an integer, got a string ('3')"),
        ("checkpoint.every_records", "0", "expected an integer of at least 1, got an integer"),
        ("checkpoint.interval", '"5 seconds"', 'expected a duration like "5s", "250ms"'),
        ("checkpoint.interval", "0", "expected a duration of more than 0s"),
        ("checkpoint.interval", "-1", "expected a finite duration of 0 or more seconds"),
        ("checkpoint.interval", "inf", "expected a finite duration of 0 or more seconds"),
        ("retry.multiplier", "0.5", "expected a finite number of at least 1, got a number"),
        ("retry.multiplier", "true", "expected a number, got a boolean"),
        ("retry.jitter", '"yes"', "expected true or false, got a string"),
        ("retry.retry_on", '"TimeoutError"', "expected an array of exception names"),
        ("retry.fatal_on", '["ok", "not a name"]', "got an element a string ('not a name')"),
        ("retry.max_attempts", "-1", "expected an integer of at least 0"),
        ("records.on_error", '"ignore"', 'expected one of "fail", "skip", "dead_letter"'),
        ("records.max_errors", "-1", "expected an integer of at least 0"),
        (
            "records.dead_letter",
            "{ a = 1 }",
            "expected a file path (a non-empty string), got a table",
        ),
        ("processor.function", '"no_colon"', 'expected a reference like "package.module:Name"'),
        ("source.count", "-1", "expected an integer of at least 0"),
        ("source.rate", "-0.5", "expected a finite number of at least 0"),
        (
            "sink.type",
            '"kafka"',
            one_of("sink"),
        ),
        (
            "source.type",
            "{ a = 1 }",
            f"{one_of('source')}, got a table",
        ),
    ],
)
def test_wrong_values_name_the_dotted_key(
    tmp_path: Path, table: str, value: str, expected: str
) -> None:
    """Wrong types and out-of-range values name the file, the dotted key and what was expected."""
    section, key = table.split(".")
    tables = {"source": {"type": '"generate"'}, "sink": {"type": '"null"'}}
    tables.setdefault(section, {})[key] = value
    body = "".join(
        f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())
        for name, keys in tables.items()
    )
    config = _write(tmp_path, "", {"a.toml": body})
    (issue,) = _issues(config)
    assert issue.startswith(f"{tmp_path}/jobs/a.toml: {table}: ")
    assert expected in issue


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ('socket_mode = "0999"', 'expected an octal mode as a string like "0660"'),
        ("socket_mode = 660", "expected an octal mode as a string like"),
        ("max_starts_in_flight = 0", "expected an integer of at least 1"),
        ('shutdown_timeout = "0s"', "expected a duration of more than 0s"),
        ('log_format = "xml"', 'expected one of "auto", "console", "json"'),
        ('log_level = "trace"', 'expected one of "debug", "info", "warning", "error"'),
        ("state_dir = { path = 'x' }", "expected a file path (a non-empty string), got a table"),
        ("jobs = ''", 'expected a glob like "jobs/*.toml"'),
        (f"control_socket = '{'s' * 120}'", "expected a socket path of at most 107 bytes"),
    ],
)
def test_wrong_daemon_settings_name_the_dotted_key(
    tmp_path: Path, setting: str, expected: str
) -> None:
    """A bad [supervisor] value names the daemon file, supervisor.<key> and what was expected."""
    config = _write(tmp_path, f"[supervisor]\n{setting}\n", {})
    (issue,) = _issues(config)
    key = setting.split(" ")[0]
    assert issue.startswith(f"{tmp_path}/supervisor.toml: supervisor.{key}: ")
    assert expected in issue


def test_missing_required_keys_are_named(tmp_path: Path) -> None:
    """A job without a sink, a file source without a path or a plugin without class says so."""
    config = _write(
        tmp_path,
        "",
        {
            "a.toml": '[source]\ntype = "file"\n',
            "b.toml": '[source]\npath = "x"\n[sink]\ntype = "python"\n[processor]\n',
        },
    )
    a, b = f"{tmp_path}/jobs/a.toml", f"{tmp_path}/jobs/b.toml"
    assert set(_issues(config)) == {
        f"{a}: source.path: required key is missing",
        f"{a}: sink: required table [sink] is missing",
        f"{b}: source.type: {one_of('source')}, got nothing (required key is missing)",
        f"{b}: sink.class: required key is missing",
        f"{b}: processor.function: required key is missing (or processor.batch_function)",
    }


def test_retry_max_below_initial_is_an_error(tmp_path: Path) -> None:
    """retry.max must be at least retry.initial, whether set or left at its default."""
    config = _write(
        tmp_path,
        "",
        {
            "a.toml": VALID_JOB + '[retry]\ninitial = "2m"\nmax = "1m"\n',
            "b.toml": VALID_JOB + '[retry]\ninitial = "2m"\n',
        },
    )
    assert _issues(config) == [
        f"{tmp_path}/jobs/a.toml: retry.max: expected at least retry.initial (120s), got 60s",
        f"{tmp_path}/jobs/b.toml: retry.max: expected at least retry.initial (120s), "
        "got 60s (the default)",
    ]


def test_dead_letter_needs_a_path(tmp_path: Path) -> None:
    """on_error = dead_letter without a dead_letter file is an error at records.dead_letter."""
    config = _write(tmp_path, "", {"a.toml": VALID_JOB + '[records]\non_error = "dead_letter"\n'})
    assert _issues(config) == [
        f"{tmp_path}/jobs/a.toml: records.dead_letter: expected a file path, "
        'required when records.on_error = "dead_letter"'
    ]


def test_duplicate_job_names_name_both_files(tmp_path: Path) -> None:
    """Two files declaring the same name: the second is refused, naming the first."""
    config = _write(tmp_path, "", {"a.toml": VALID_JOB, "b.toml": 'name = "a"\n' + VALID_JOB})
    assert _issues(config) == [
        f'{tmp_path}/jobs/b.toml: name: job name "a" is already used by {tmp_path}/jobs/a.toml: '
        "expected a new name"
    ]


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
    """A name that is not a safe file name is refused at key "name", with the rule."""
    quoted = name.encode("unicode_escape").decode().replace('"', '\\"').replace("\\x", "\\u00")
    config = _write(tmp_path, "", {"a.toml": f'name = "{quoted}"\n' + VALID_JOB})
    (issue,) = _issues(config)
    assert issue.startswith(
        f"{tmp_path}/jobs/a.toml: name: expected a job name of 1 to 63 lowercase ASCII letters, "
        "digits, '_' or '-', starting with a letter or digit (^[a-z0-9][a-z0-9_-]{0,62}$), "
        f"got a string ({repr(name)[:40]}"
    )


def test_the_longest_name_is_accepted(tmp_path: Path) -> None:
    """63 characters is still a valid name."""
    config = _write(tmp_path, "", {"a.toml": f'name = "{"x" * 63}"\n' + VALID_JOB})
    assert load_config(config, environ={}).jobs[0].name == "x" * 63


def test_a_bad_file_stem_is_reported_as_the_name(tmp_path: Path) -> None:
    """Without a name key, an unsafe file name is reported at "name", saying where it came from."""
    config = _write(tmp_path, "", {"Bad Name.toml": VALID_JOB})
    (issue,) = _issues(config)
    assert issue.startswith(f"{tmp_path}/jobs/Bad Name.toml: name: expected a job name of ")
    assert "the file name makes the job name 'Bad Name': rename the file or set name" in issue


def test_unreadable_files_are_named(tmp_path: Path) -> None:
    """A missing daemon file, or a job "file" that cannot be read, is an error naming it."""
    assert _issues(tmp_path / "nope.toml") == [
        f"{tmp_path}/nope.toml: cannot read the file: No such file or directory"
    ]
    config = _write(tmp_path, "", {})
    (tmp_path / "jobs" / "dir.toml").mkdir()
    assert _issues(config) == [f"{tmp_path}/jobs/dir.toml: cannot read the file: Is a directory"]


def test_bad_defaults_are_reported_once_against_the_daemon_file(tmp_path: Path) -> None:
    """A wrong [defaults] value names the daemon file and defaults.<key>, once, even unused."""
    daemon = '[defaults]\nname = "x"\n[defaults.retry]\nmax = true\n[defaults.typo]\n'
    expected = {
        f"{tmp_path}/supervisor.toml: defaults.name: expected no name here: "
        "a name belongs to one job file",
        f"{tmp_path}/supervisor.toml: defaults.retry.max: expected a duration like "
        '"5s", "250ms", "2m", "1h" or a number of seconds, got a boolean (True)',
        f'{tmp_path}/supervisor.toml: defaults.typo: unknown key "typo"',
    }
    assert set(_issues(_write(tmp_path / "none", daemon, {}))) == {
        issue.replace(str(tmp_path), str(tmp_path / "none")) for issue in expected
    }
    issues = _issues(_write(tmp_path, daemon, {"a.toml": VALID_JOB, "b.toml": VALID_JOB}))
    assert sorted(issues) == sorted(expected)


def test_a_default_that_fails_only_in_one_job_is_reported_there(tmp_path: Path) -> None:
    """A default key that does not fit a job's source type is reported in that job file."""
    config = _write(tmp_path, '[defaults.source]\npath = "in.txt"\n', {"a.toml": VALID_JOB})
    assert _issues(config) == [
        f'{tmp_path}/jobs/a.toml: source.path: unknown key "path" '
        f"(the value is from [defaults] in {tmp_path}/supervisor.toml)"
    ]


def test_every_error_in_every_file_is_reported_together(tmp_path: Path) -> None:
    """Errors in several files come back in one ConfigError, with no job half-loaded."""
    config = _write(
        tmp_path,
        "[supervisor]\nmax_starts_in_flight = 0\n",
        {
            "a.toml": "x = \n",
            "b.toml": VALID_JOB + "[checkpoint]\ninterval = -1\nevery_records = true\n",
            "c.toml": VALID_JOB,
            "d.toml": 'name = "c"\n',
        },
    )
    issues = _issues(config)
    assert [issue.split(": ")[:2] for issue in issues] == [
        [f"{tmp_path}/supervisor.toml", "supervisor.max_starts_in_flight"],
        [f"{tmp_path}/jobs/a.toml", "line 1, column 5"],
        [f"{tmp_path}/jobs/b.toml", "checkpoint.interval"],
        [f"{tmp_path}/jobs/b.toml", "checkpoint.every_records"],
        [f"{tmp_path}/jobs/d.toml", "source"],
        [f"{tmp_path}/jobs/d.toml", "sink"],
        [f"{tmp_path}/jobs/d.toml", "name"],
    ]


@pytest.mark.parametrize(
    "body",
    [
        VALID_JOB + "[checkpoint]\ninterval = " + "9" * 400 + "\n",
        VALID_JOB + "[checkpoint]\nevery_records = " + "9" * 5000 + "\n",
        "x = " + "[" * 5000 + "\n",
        VALID_JOB + "[checkpoint]\ninterval = 1979-05-27T07:32:00Z\n",
        '[source]\ntype = "file"\npath = "~no-such-user-here/x"\n[sink]\ntype = "null"\n',
        "\ufeffname = 'bom'\n",
    ],
    ids=["huge-duration", "too-many-digits", "deep-nesting", "datetime", "tilde-user", "bom"],
)
def test_extreme_input_is_a_config_error(tmp_path: Path, body: str) -> None:
    """Huge numbers, deep nesting, dates and odd paths are reported, never a traceback."""
    (issue,) = _issues(_write(tmp_path, "", {"a.toml": body}))
    assert issue.startswith(f"{tmp_path}/jobs/a.toml: ")
    assert "expected" in issue or "invalid TOML" in issue


def test_the_daemon_file_alone_ignores_job_files(tmp_path: Path) -> None:
    """load_daemon_config finds the socket even when a job file is broken."""
    config = _write(tmp_path, "[defaults]\nbogus = 1\n", {"a.toml": "x = "})
    assert load_daemon_config(config, environ={}).control_socket == tmp_path / "supervisor.sock"
    with pytest.raises(ConfigError, match=r"supervisor\.log_level"):
        load_daemon_config(_write(tmp_path, "supervisor.log_level = 1\n", {}), environ={})


def test_the_shipped_example_is_valid() -> None:
    """`configs/supervisor.toml` and its jobs load without error."""
    config = load_config(
        Path(__file__).parent.parent.parent / "configs" / "supervisor.toml", environ={}
    )
    assert config.jobs
    assert all(job.path.stem == job.name for job in config.jobs)


def test_job_files_are_taken_in_path_order_part_by_part(tmp_path: Path) -> None:
    """Job files are read in `Path` order, so "b/c.toml" comes before "b-c.toml"."""
    same = 'name = "same"\n' + VALID_JOB
    config = _write(tmp_path, 'supervisor.jobs = "jobs/**/*.toml"\n', {"b-c.toml": same})
    (tmp_path / "jobs" / "b").mkdir()
    (tmp_path / "jobs" / "b" / "c.toml").write_text(same)
    assert _issues(config) == [
        f'{tmp_path}/jobs/b-c.toml: name: job name "same" is already used by '
        f"{tmp_path}/jobs/b/c.toml: expected a new name"
    ]


def test_issues_of_many_job_files_keep_the_file_order(tmp_path: Path) -> None:
    """Across hundreds of files, unreadable, unparsable and wrong ones come in file order."""
    jobs: dict[str, str | bytes] = {f"j{index:04d}.toml": VALID_JOB for index in range(700)}
    jobs["j0100.toml"] = b"x = \xff\n"
    jobs["j0255.toml"] = VALID_JOB + "bogus = 1\n"
    jobs["j0256.toml"] = "x = \n"
    jobs["j0600.toml"] = 'name = "j0001"\n' + VALID_JOB
    config = _write(tmp_path, "", jobs)
    (tmp_path / "jobs" / "j0300.toml").unlink()
    (tmp_path / "jobs" / "j0300.toml").mkdir()
    assert [issue.split(": ")[:2] for issue in _issues(config)] == [
        [f"{tmp_path}/jobs/j0100.toml", "line 1, column 5"],
        [f"{tmp_path}/jobs/j0255.toml", "sink.bogus"],
        [f"{tmp_path}/jobs/j0256.toml", "line 1, column 5"],
        [f"{tmp_path}/jobs/j0300.toml", "cannot read the file"],
        [f"{tmp_path}/jobs/j0600.toml", "name"],
    ]
    for name in ("j0100.toml", "j0255.toml", "j0256.toml", "j0600.toml"):
        (tmp_path / "jobs" / name).write_text(VALID_JOB)
    (tmp_path / "jobs" / "j0300.toml").rmdir()
    loaded = load_config(config, environ={})
    assert [job.name for job in loaded.jobs] == sorted(
        name[:-5] for name in jobs if name != "j0300.toml"
    )


# --- `supervisor check` imports what job files name (issue 14.12, 14.13) -------------------

_PLUGIN_MODULE = """\
from pathlib import Path

NOT_CALLABLE = 42
MARKER = Path(__file__).with_name("constructed")


class Source:
    def __init__(self, **options):
        MARKER.write_text("constructed")  # check must never construct a plugin


def process(record):
    MARKER.write_text("called")  # nor call one
    return record
"""


def _check_issues(config: Path) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        load_config(config, environ={}, import_plugins=True)
    return [str(issue) for issue in raised.value.issues]


def _plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A plugin module importable as the returned name, unique per test."""
    name = f"ss_plugin_{tmp_path.name.replace('-', '_')}"
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / f"{name}.py").write_text(_PLUGIN_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    return name


def test_check_reports_exception_names_that_cannot_be_imported(tmp_path: Path) -> None:
    """`check` names the file, the dotted key and what is wrong for every retry_on / fatal_on
    name it cannot import (it accepted them all before), and accepts names as users write them.
    """
    config = _write(
        tmp_path,
        "[supervisor]\n",
        {
            "a.toml": VALID_JOB
            + """
                [retry]
                retry_on = ["supervisor.TransientError", "json.JSONDecodeError", "no_such_lib.Busy"]
                fatal_on = ["ExceptionGroup", "json.JSONDecodError", "os.path", "Nope"]
                """,
        },
    )
    job_file = tmp_path / "jobs" / "a.toml"
    issues = _check_issues(config)
    assert issues == [
        f"{job_file}: retry.retry_on: expected an exception class that can be imported: "
        "cannot import 'no_such_lib.Busy': no module named 'no_such_lib'",
        f"{job_file}: retry.fatal_on: expected an exception class that can be imported: "
        "module 'json' has no attribute 'JSONDecodError'",
        f"{job_file}: retry.fatal_on: expected an exception class, but 'os.path' is a module",
        f"{job_file}: retry.fatal_on: expected an exception class that can be imported: "
        "'Nope' is not a builtin name: write it with its module, 'pkg.mod.Nope'",
    ]
    # The daemon's own loading imports nothing: these names fall back to matching by name.
    assert load_config(config, environ={}).jobs[0].retry.fatal_on[1] == "json.JSONDecodError"


def test_check_reports_plugin_references_it_cannot_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Missing modules, missing names and objects that cannot be called are reported by `check`,
    which imports plugins but never constructs or calls one."""
    module = _plugin_module(tmp_path, monkeypatch)
    config = _write(
        tmp_path,
        "[supervisor]\n",
        {
            "good.toml": f"""
                [source]
                type = "python"
                class = "{module}:Source"
                [processor]
                function = "{module}:process"
                [sink]
                type = "null"
                """,
            "bad.toml": f"""
                [source]
                type = "python"
                class = "no_such_plugin_lib.sources:Source"
                [processor]
                function = "{module}:NOT_CALLABLE"
                [sink]
                type = "python"
                class = "{module}:Sink"
                """,
        },
    )
    bad = tmp_path / "jobs" / "bad.toml"
    assert _check_issues(config) == [
        f"{bad}: source.class: cannot import module 'no_such_plugin_lib.sources' for "
        "'no_such_plugin_lib.sources:Source': ModuleNotFoundError: No module named "
        "'no_such_plugin_lib'",
        f"{bad}: sink.class: module '{module}' has no attribute 'Sink'",
        f"{bad}: processor.function: processor '{module}:NOT_CALLABLE' is not callable "
        "(it is an int)",
    ]
    assert not (tmp_path / "lib" / "constructed").exists()


def test_check_reports_a_bad_name_from_defaults_once_against_the_daemon_file(
    tmp_path: Path,
) -> None:
    """A name set in [defaults] that cannot be imported is one error at defaults.<key>."""
    config = _write(
        tmp_path,
        """
        [supervisor]
        [defaults.retry]
        fatal_on = ["no_such_lib.Fatal"]
        """,
        {"a.toml": VALID_JOB, "b.toml": VALID_JOB},
    )
    assert _check_issues(config) == [
        f"{config}: defaults.retry.fatal_on: expected an exception class that can be imported: "
        "cannot import 'no_such_lib.Fatal': no module named 'no_such_lib'"
    ]
