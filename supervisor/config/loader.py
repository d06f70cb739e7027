"""Reading the daemon file and every job file into a `Config`, strictly.

Every problem in every file is collected and raised together as one
`ConfigError`; nothing is half-loaded. A syntax error names the line and
column, a schema error the dotted key. Values from the daemon file's
``[defaults]`` are merged under each job file (tables key by key) and their
errors are reported against the daemon file.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from supervisor.config import model
from supervisor.config.schema import (
    Field,
    Inherited,
    Origin,
    Problem,
    boolean,
    check_table,
    choice,
    duration,
    exception_names,
    integer,
    number,
    octal_mode,
    parse_duration,
    path,
    reference,
    text,
    unknown_key,
)
from supervisor.errors import ConfigError, ConfigIssue

__all__ = ["JOB_NAME_PATTERN", "load_config", "load_daemon_config", "parse_duration"]

JOB_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}", re.ASCII)
"""A job name is also a file name in the state directory: nothing else gets through."""

_SUPERVISOR = {
    "jobs": Field(text(what='a glob like "jobs/*.toml"')),
    "state_dir": Field(path()),
    "control_socket": Field(path()),
    "socket_mode": Field(octal_mode()),
    "max_starts_in_flight": Field(integer(1, 10_000)),
    "shutdown_timeout": Field(duration(above=0)),
    "log_format": Field(choice("auto", "console", "json")),
    "log_level": Field(choice("debug", "info", "warning", "error")),
}
_SOURCES: dict[str, dict[str, Field]] = {
    "file": {
        "path": Field(path(), required=True),
        "format": Field(choice("lines", "jsonl")),
        "follow": Field(boolean()),
        "start": Field(choice("beginning", "end")),
        "poll_interval": Field(duration(above=0)),
    },
    "generate": {"count": Field(integer(0)), "rate": Field(number(0))},
    "python": {"class": Field(reference(), required=True)},
}
_SINKS: dict[str, dict[str, Field]] = {
    "jsonl": {"path": Field(path(), required=True)},
    "sqlite": {
        "path": Field(path(), required=True),
        "table": Field(
            text(re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}", re.ASCII), "an SQL identifier")
        ),
    },
    "stdout": {},
    "null": {},
    "python": {"class": Field(reference(), required=True)},
}
_POLICIES: dict[str, dict[str, Field]] = {
    "processor": {"function": Field(reference(), required=True)},
    "checkpoint": {
        "every_records": Field(integer(1)),
        "interval": Field(duration(above=0)),
    },
    "retry": {
        "initial": Field(duration(above=0)),
        "max": Field(duration(above=0)),
        "multiplier": Field(number(1.0)),
        "jitter": Field(boolean()),
        "max_attempts": Field(integer(0)),
        "reset_after": Field(duration(minimum=0)),
        "retry_on": Field(exception_names()),
        "fatal_on": Field(exception_names()),
    },
    "records": {
        "on_error": Field(choice("fail", "skip", "dead_letter")),
        "dead_letter": Field(path()),
        "max_errors": Field(integer(0)),
    },
}
_JOB_SCALARS = {
    "name": Field(text()),
    "enabled": Field(boolean()),
    "suspend_on_failure": Field(boolean()),
}
_DEFAULT_RETRY = model.RetryPolicy()
_JOB_KEYS = {*_JOB_SCALARS, "source", "sink", *_POLICIES}


def load_config(daemon_file: Path, *, environ: Mapping[str, str] | None = None) -> model.Config:
    """The daemon file and every job file it names; raises `ConfigError` with every problem."""
    environ = os.environ if environ is None else environ
    # Absolute from here on: the daemon may change directory, and logs should say where.
    daemon_file = daemon_file.absolute()
    issues: list[ConfigIssue] = []
    document = _read_toml(daemon_file, issues)
    if document is None:
        raise ConfigError(issues)
    daemon, defaults = _daemon(daemon_file, document, environ, issues)
    jobs: dict[str, model.JobConfig] = {}
    seen: dict[str, Path] = {}
    for job_file in sorted(daemon_file.parent.glob(daemon.jobs)):
        job = _job(job_file, defaults, daemon_file, issues)
        if job is None:
            continue
        if job.name in seen:
            issues.append(
                ConfigIssue(
                    str(job_file),
                    "name",
                    f'job name "{job.name}" is already used by {seen[job.name]}',
                )
            )
            continue
        seen[job.name] = job_file
        jobs[job.name] = job
    if issues:
        raise ConfigError(_unique(issues))
    return model.Config(daemon=daemon, jobs=tuple(jobs[name] for name in sorted(jobs)))


def load_daemon_config(
    daemon_file: Path, *, environ: Mapping[str, str] | None = None
) -> model.DaemonConfig:
    """Only the daemon file: what the control commands need to find the socket.

    Job files are not read, so a broken job file never keeps an operator from
    asking the running daemon about its jobs.
    """
    environ = os.environ if environ is None else environ
    daemon_file = daemon_file.absolute()
    issues: list[ConfigIssue] = []
    document = _read_toml(daemon_file, issues)
    if document is None:
        raise ConfigError(issues)
    daemon, _ = _daemon(daemon_file, document, environ, issues)
    if issues:
        raise ConfigError(issues)
    return daemon


def _read_toml(file: Path, issues: list[ConfigIssue]) -> dict[str, Any] | None:
    try:
        data = file.read_bytes()
    except OSError as exc:
        issues.append(ConfigIssue(str(file), "", f"cannot read: {exc.strerror or exc}"))
        return None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        issues.append(ConfigIssue(str(file), f"byte {exc.start}", "not valid UTF-8"))
    except tomllib.TOMLDecodeError as exc:
        issues.append(ConfigIssue(str(file), *_syntax_location(exc)))
    return None


_AT_LINE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_AT_END = re.compile(r"\s*\(at end of document\)$")


def _syntax_location(exc: tomllib.TOMLDecodeError) -> tuple[str, str]:
    message = str(exc)
    if (match := _AT_LINE.search(message)) is not None:
        return f"line {match[1]}, column {match[2]}", message[: match.start()]
    if (match := _AT_END.search(message)) is not None:
        return "end of file", message[: match.start()]
    return "", message


def _daemon(
    file: Path, document: dict[str, Any], environ: Mapping[str, str], issues: list[ConfigIssue]
) -> tuple[model.DaemonConfig, dict[str, Any]]:
    problems: list[Problem] = []
    for key in document:
        if key not in ("supervisor", "defaults"):
            problems.append(Problem(key, unknown_key(key, {"supervisor", "defaults"})))
    here = Origin(file.parent, file.parent)
    settings = check_table(
        document.get("supervisor", {}), _SUPERVISOR, "supervisor.", here, problems
    )
    defaults = document.get("defaults", {})
    if not isinstance(defaults, dict):
        problems.append(Problem("defaults", "expected a table of job keys"))
        defaults = {}
    else:
        for key in list(defaults):
            if key == "name":
                problems.append(Problem("defaults.name", "a job's name cannot have a default"))
            elif key not in _JOB_KEYS:
                problems.append(Problem(f"defaults.{key}", unknown_key(key, _JOB_KEYS)))
            else:
                continue
            del defaults[key]
    issues.extend(ConfigIssue(str(file), p.key, p.message) for p in problems)
    state_dir = settings.get("state_dir", file.parent / "state")
    socket = settings.get("control_socket", file.parent / "supervisor.sock")
    if state_env := environ.get("STATE_DIRECTORY"):
        state_dir = Path(state_env.split(":")[0])
    if runtime_env := environ.get("RUNTIME_DIRECTORY"):
        socket = Path(runtime_env.split(":")[0]) / "control.sock"
    settings.update(state_dir=state_dir, control_socket=socket)
    return model.DaemonConfig(path=file, **settings), defaults


def _job(
    file: Path, defaults: dict[str, Any], daemon_file: Path, issues: list[ConfigIssue]
) -> model.JobConfig | None:
    document = _read_toml(file, issues)
    if document is None:
        return None
    raw = _merge(defaults, document)
    problems: list[Problem] = []
    origin = Origin(file.parent, daemon_file.parent)
    for key in document:
        if key not in _JOB_KEYS:
            problems.append(Problem(key, unknown_key(key, _JOB_KEYS)))
    scalars = check_table(
        {k: v for k, v in raw.items() if k in _JOB_SCALARS},
        _JOB_SCALARS,
        "",
        origin,
        problems,
    )
    name = scalars.get("name", file.stem)
    if not JOB_NAME_PATTERN.fullmatch(name):
        where = "name" if "name" in scalars else "name (taken from the file name)"
        problems.append(
            Problem(
                where,
                f"job name {name!r} must match ^[a-z0-9][a-z0-9_-]{{0,62}}$: lowercase "
                "ASCII letters, digits, '_' and '-', at most 63 characters",
            )
        )
    source = _typed_table(raw, "source", _SOURCES, origin, problems)
    sink = _typed_table(raw, "sink", _SINKS, origin, problems)
    policies = {
        key: check_table(raw[key], _POLICIES[key], f"{key}.", origin, problems)
        for key in _POLICIES
        if key in raw
    }
    _cross_checks(policies, problems)
    for problem in problems:
        where_file = daemon_file if problem.inherited else file
        key = f"defaults.{problem.key}" if problem.inherited else problem.key
        issues.append(ConfigIssue(str(where_file), key, problem.message))
    if problems or source is None or sink is None:
        return None
    return model.JobConfig(
        name=name,
        path=file,
        source=source,
        sink=sink,
        enabled=scalars.get("enabled", True),
        suspend_on_failure=scalars.get("suspend_on_failure", False),
        processor=model.ProcessorConfig(**policies["processor"])
        if "processor" in policies
        else None,
        checkpoint=model.CheckpointPolicy(**policies.get("checkpoint", {})),
        retry=model.RetryPolicy(**policies.get("retry", {})),
        records=model.RecordsPolicy(**policies.get("records", {})),
    )


def _typed_table(
    raw: dict[str, Any],
    key: str,
    kinds: dict[str, dict[str, Field]],
    origin: Origin,
    problems: list[Problem],
) -> Any:
    table = raw.get(key)
    if table is None:
        problems.append(Problem(key, f"required table [{key}] is missing"))
        return None
    if not isinstance(table, dict):
        problems.append(Problem(key, f"expected a table [{key}]"))
        return None
    kind = table.get("type")
    kind = kind.value if isinstance(kind, Inherited) else kind
    if not isinstance(kind, str) or kind not in kinds:
        listed = ", ".join(f'"{name}"' for name in kinds)
        found = "nothing" if kind is None else repr(kind)
        problems.append(Problem(f"{key}.type", f"expected one of {listed}, got {found}"))
        return None
    rest = {k: v for k, v in table.items() if k != "type"}
    fields = kinds[kind]
    extra = (lambda _: True) if kind == "python" else None
    before = len(problems)
    values = check_table(rest, fields, f"{key}.", origin, problems, extra=extra)
    if len(problems) > before:
        return None
    return _build(key, kind, values)


def _build(role: str, kind: str, values: dict[str, Any]) -> Any:
    if kind == "python":
        reference_ = values.pop("class")
        cls = model.PythonSourceConfig if role == "source" else model.PythonSinkConfig
        return cls(class_ref=reference_, options=values)
    classes: dict[tuple[str, str], Any] = {
        ("source", "file"): model.FileSourceConfig,
        ("source", "generate"): model.GenerateSourceConfig,
        ("sink", "jsonl"): model.JsonlSinkConfig,
        ("sink", "sqlite"): model.SqliteSinkConfig,
        ("sink", "stdout"): model.StdoutSinkConfig,
        ("sink", "null"): model.NullSinkConfig,
    }
    return classes[(role, kind)](**values)


def _cross_checks(policies: dict[str, dict[str, Any]], problems: list[Problem]) -> None:
    retry = policies.get("retry", {})
    initial = retry.get("initial", _DEFAULT_RETRY.initial)
    maximum = retry.get("max", _DEFAULT_RETRY.max)
    if maximum < initial:
        problems.append(
            Problem(
                "retry.max", f"expected at least retry.initial ({initial:g}s), got {maximum:g}s"
            )
        )
    records = policies.get("records", {})
    if records.get("on_error") == "dead_letter" and "dead_letter" not in records:
        problems.append(
            Problem("records.dead_letter", 'required when records.on_error = "dead_letter"')
        )


def _merge(defaults: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """`job` over `defaults`; tables merge key by key; default values marked `Inherited`."""
    merged: dict[str, Any] = {key: _inherit(value) for key, value in defaults.items()}
    for key, value in job.items():
        base = defaults.get(key)
        if isinstance(base, dict) and isinstance(value, dict) and _same_kind(base, value):
            merged[key] = _merge(base, value)
        else:
            merged[key] = value
    return merged


def _inherit(value: Any) -> Any:
    # Tables stay tables (so they validate as such); their leaves are marked.
    if isinstance(value, dict):
        return {key: _inherit(item) for key, item in value.items()}
    return Inherited(value)


def _same_kind(base: dict[str, Any], value: dict[str, Any]) -> bool:
    # A [source] or [sink] of another type shares no keys with the default one.
    return "type" not in value or base.get("type", value["type"]) == value["type"]


def _unique(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    # A bad default is found once per job file; report it once.
    return list(dict.fromkeys(issues))
