"""Reading the daemon file and every job file into a `Config`, strictly.

Every problem in every file is collected and raised together as one
`ConfigError`; nothing is half-loaded. A syntax error names the line and
column, a schema error the dotted key. The daemon file's ``[defaults]`` are
checked once on their own (errors at ``defaults.<key>`` in the daemon file),
then merged under each job file, tables key by key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from supervisor.config import model, reading, trust
from supervisor.config.imports import ImportCheck
from supervisor.config.job_glob import expand
from supervisor.config.job_schema import JOB_NAME_PATTERN, check_defaults, check_job_file
from supervisor.config.schema import (
    Field,
    Origin,
    Problem,
    boolean,
    check_table,
    choice,
    duration,
    integer,
    octal_mode,
    parse_duration,
    path,
    show_key,
    text,
    unknown_key,
)
from supervisor.connectors.registry import Registry, installed
from supervisor.errors import ConfigError, ConfigIssue
from supervisor.observe.address import is_loopback, listen_address

__all__ = ["JOB_NAME_PATTERN", "load_config", "load_daemon_config", "parse_duration"]

_DAEMON_TABLES = {"supervisor", "defaults"}
_SUPERVISOR = {
    "jobs": Field(text(re.compile(r"[^\x00]+"), 'a glob like "jobs/*.toml"')),
    "state_dir": Field(path()),
    "control_socket": Field(path()),
    "socket_mode": Field(octal_mode()),
    "max_starts_in_flight": Field(integer(1)),
    "shutdown_timeout": Field(duration(positive=True)),
    "log_format": Field(choice("auto", "console", "json")),
    "log_level": Field(choice("debug", "info", "warning", "error")),
    "http_listen": Field(listen_address()),
    "http_allow_remote": Field(boolean()),
    "sample_interval": Field(duration(positive=True)),
}
_SOCKET_PATH_MAX = 107
"""Bytes in a Unix socket address on Linux (108 with the NUL); longer fails only at bind."""


def load_config(
    path: Path,
    *,
    environ: Mapping[str, str] | None = None,
    import_plugins: bool = False,
    connectors: Registry | None = None,
) -> model.Config:
    """The daemon file and every job file it names; raises `ConfigError` with every problem.

    `import_plugins` (`supervisor check`): also import every plugin reference and
    `retry_on` / `fatal_on` name, and report those that cannot be used.
    `connectors`: where source and sink types are found (default: the installed ones).
    """
    issues: list[ConfigIssue] = []
    directories = trust.DirectoryCheck()
    daemon_file, document, daemon = _load_daemon_file(path, environ, issues, directories)
    registry = connectors if connectors is not None else installed()
    defaults = check_defaults(daemon_file, document.get("defaults", {}), issues, registry)
    imports = ImportCheck(defaults, issues) if import_plugins else None
    glob_is_valid = not any(issue.where == "supervisor.jobs" for issue in issues)
    owners: dict[str, Path] = {}
    jobs: list[model.JobConfig] = []
    job_files = _job_files(daemon, issues) if glob_is_valid else []
    job_files = reading.in_safe_directories(job_files, directories, issues)
    for batch in reading.read_in_batches(job_files, directories):
        # Every file of a batch parsed, then every one checked: going back and forth
        # between read, parser and checker file by file was slower for thousands of
        # files (each step starting cold). Issues keep the file order.
        documents: list[dict[str, Any] | ConfigIssue] = []
        for job_file, data in batch:
            documents.append(
                data if isinstance(data, ConfigIssue) else reading.parse_toml(job_file, data)
            )
        for (job_file, _), job_document in zip(batch, documents, strict=True):
            if isinstance(job_document, ConfigIssue):
                issues.append(job_document)
                continue
            name, job = check_job_file(job_file, job_document, defaults, issues)
            if name is not None and name in owners:
                message = (
                    f'job name "{name}" is already used by {owners[name]}: expected a new name'
                )
                issues.append(ConfigIssue(str(job_file), "name", message))
            elif name is not None:
                owners[name] = job_file
                jobs.extend([job] if job is not None else [])
                if imports is not None and job is not None:
                    imports.check(job, job_document)
    if issues:
        raise ConfigError(issues)
    return model.Config(daemon=daemon, jobs=tuple(sorted(jobs, key=lambda job: job.name)))


def load_daemon_config(
    path: Path, *, environ: Mapping[str, str] | None = None
) -> model.DaemonConfig:
    """Only the daemon file: what the control commands need to find the socket.

    Job files and ``[defaults]`` are not checked, so a broken job never keeps an
    operator from asking the running daemon about its jobs. Nor are the file's owner
    and mode (`supervisor.config.trust`): nothing in it is run, and an operator in the
    socket's group is neither root nor the daemon's user.
    """
    issues: list[ConfigIssue] = []
    _, _, daemon = _load_daemon_file(path, environ, issues, None)
    if issues:
        raise ConfigError(issues)
    return daemon


def _load_daemon_file(
    path: Path,
    environ: Mapping[str, str] | None,
    issues: list[ConfigIssue],
    directories: trust.DirectoryCheck | None,
) -> tuple[Path, dict[str, Any], model.DaemonConfig]:
    """The daemon file's absolute path, its TOML and its `[supervisor]` settings.

    Raises at once if the file cannot be read or parsed, or (with `directories`, the
    check of who may write them) if it or a directory holding it is not safe to use;
    schema problems go to `issues`.
    """
    daemon_file = _absolute(path)
    if directories is not None:
        reading.in_safe_directories([str(daemon_file)], directories, issues)
        if issues:
            raise ConfigError(issues)
    document = reading.read_toml(daemon_file, issues, directories)
    if document is None:
        raise ConfigError(issues)
    daemon = _daemon(daemon_file, document, os.environ if environ is None else environ, issues)
    return daemon_file, document, daemon


# --- files ----------------------------------------------------------------------------


def _absolute(file: Path) -> Path:
    # Lexically normalised, not resolved: a symlinked config stays visible as such.
    return Path(os.path.normpath(file.absolute()))


def _job_files(daemon: model.DaemonConfig, issues: list[ConfigIssue]) -> list[str]:
    # As a shell, not as Path.glob: an absolute pattern too, and dot files skipped, so an
    # editor's ".#orders.toml" lock is not read as a job. Bounded: see job_glob.
    try:
        matches = expand(daemon.jobs, str(daemon.path.parent))
    except (OSError, ValueError) as exc:
        where = "supervisor.jobs"
        issues.append(ConfigIssue(str(daemon.path), where, f"cannot list the job files: {exc}"))
        return []
    # As strings: a Path per match (built, normalised, compared while sorting)
    # cost more than reading the files. The directory is absolute and normalised,
    # so each is `str(_absolute(directory / match))`.
    directory = str(daemon.path.parent)
    files = {os.path.normpath(os.path.join(directory, match)) for match in matches}  # noqa: PTH118
    files.discard(str(daemon.path))  # jobs = "*.toml" next to the daemon file
    return sorted(files, key=_path_order)


def _path_order(file: str) -> str:
    """A key that sorts paths as `Path` does, part by part ("a/b" before "a-b").

    No part of a path holds a NUL, so as the separator it ends a part before any
    character can; much cheaper than comparing lists of parts.
    """
    return file.replace("/", "\0")


# --- the daemon file --------------------------------------------------------------------


def _daemon(
    file: Path, document: dict[str, Any], environ: Mapping[str, str], issues: list[ConfigIssue]
) -> model.DaemonConfig:
    problems = [
        Problem(show_key(key), unknown_key(key, _DAEMON_TABLES))
        for key in document
        if key not in _DAEMON_TABLES
    ]
    here = Origin(file.parent, file.parent)
    settings = check_table(
        document.get("supervisor", {}), _SUPERVISOR, "supervisor.", here, problems
    )
    settings.setdefault("state_dir", file.parent / "state")
    settings.setdefault("control_socket", file.parent / "supervisor.sock")
    # Under systemd the unit's directories win; STATE_DIRECTORY may list several.
    if state_directory := environ.get("STATE_DIRECTORY", "").split(":")[0]:
        settings["state_dir"] = _absolute(Path(state_directory))
    if runtime_directory := environ.get("RUNTIME_DIRECTORY", "").split(":")[0]:
        settings["control_socket"] = _absolute(Path(runtime_directory)) / "control.sock"
    socket_bytes = len(os.fsencode(settings["control_socket"]))
    if socket_bytes > _SOCKET_PATH_MAX:
        problems.append(
            Problem(
                "supervisor.control_socket",
                f"expected a socket path of at most {_SOCKET_PATH_MAX} bytes, got "
                f"{socket_bytes} bytes: {settings['control_socket']}",
            )
        )
    listen = settings.get("http_listen")
    if listen is not None and not is_loopback(listen[0]) and not settings.get("http_allow_remote"):
        problems.append(
            Problem(
                "supervisor.http_listen",
                f"{listen[0]} is not a loopback address: the HTTP listener shows job names, "
                "offsets and errors to whoever reaches it; set http_allow_remote = true to "
                "listen there anyway",
            )
        )
    issues.extend(ConfigIssue(str(file), problem.key, problem.message) for problem in problems)
    return model.DaemonConfig(path=file, **settings)
