"""Reading the daemon file and every job file into a `Config`, strictly.

Every problem in every file is collected and raised together as one
`ConfigError`; nothing is half-loaded. A syntax error names the line and
column, a schema error the dotted key. The daemon file's ``[defaults]`` are
checked once on their own (errors at ``defaults.<key>`` in the daemon file),
then merged under each job file, tables key by key.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import tomli

from supervisor.config import model, trust
from supervisor.config.imports import ImportCheck
from supervisor.config.job_glob import expand
from supervisor.config.job_schema import JOB_NAME_PATTERN, check_defaults, check_job_file
from supervisor.config.schema import (
    Field,
    Origin,
    Problem,
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
from supervisor.durable import read_at_most
from supervisor.errors import ConfigError, ConfigIssue

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
    job_files = _in_safe_directories(job_files, directories, issues)
    for batch in _read_in_batches(job_files, directories):
        # Every file of a batch parsed, then every one checked: going back and forth
        # between read, parser and checker file by file was about 20% slower for
        # thousands of files (each step starting cold). Issues keep the file order.
        documents: list[dict[str, Any] | ConfigIssue] = []
        for job_file, data in batch:
            documents.append(data if isinstance(data, ConfigIssue) else _parse_toml(job_file, data))
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
        _in_safe_directories([str(daemon_file)], directories, issues)
        if issues:
            raise ConfigError(issues)
    document = _read_toml(daemon_file, issues, directories)
    if document is None:
        raise ConfigError(issues)
    daemon = _daemon(daemon_file, document, os.environ if environ is None else environ, issues)
    return daemon_file, document, daemon


# --- files ----------------------------------------------------------------------------


def _absolute(file: Path) -> Path:
    # Lexically normalised, not resolved: a symlinked config stays visible as such.
    return Path(os.path.normpath(file.absolute()))


MAX_FILE_BYTES = 1024 * 1024
"""A daemon or job file is a few hundred bytes; a bigger one is refused unread."""
_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def _read_toml(
    file: Path, issues: list[ConfigIssue], directories: trust.DirectoryCheck | None
) -> dict[str, Any] | None:
    data = _read_bytes(str(file), directories)
    document = data if isinstance(data, ConfigIssue) else _parse_toml(file, data)
    if isinstance(document, ConfigIssue):
        issues.append(document)
        return None
    return document


_BATCH_FILES = 256
_BATCH_BYTES = MAX_FILE_BYTES
"""A batch also ends at this many bytes, so batching never holds much more than one
file of the largest size allowed (and its parsed TOML) in memory."""


def _read_in_batches(
    files: list[str], directories: trust.DirectoryCheck
) -> Iterator[list[tuple[Path, bytes | ConfigIssue]]]:
    """Each file's `Path` and bytes (or why it cannot be read), in order, a batch at a time."""
    batch: list[tuple[Path, bytes | ConfigIssue]] = []
    size = 0
    for name in files:
        data = _read_bytes(name, directories)  # by the string: a Path would format its own
        batch.append((Path(name), data))
        size += len(data) if isinstance(data, bytes) else 0
        if len(batch) >= _BATCH_FILES or size >= _BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _read_bytes(file: str, directories: trust.DirectoryCheck | None) -> bytes | ConfigIssue:
    try:
        return _read_regular_file(file, directories)
    except OSError as exc:
        return ConfigIssue(file, "", f"cannot read the file: {exc.strerror or exc}")
    except _NotAConfigFile as exc:
        return ConfigIssue(file, "", f"cannot read the file: {exc}")
    except _Untrusted as exc:
        return ConfigIssue(file, "", str(exc))


def _in_safe_directories(
    files: list[str], directories: trust.DirectoryCheck, issues: list[ConfigIssue]
) -> list[str]:
    """The `files` whose directories only root and the daemon's user may write; each unsafe
    directory is one issue (a file in it is not even read)."""
    verdicts: dict[str, bool] = {}
    reported = {issue.path for issue in issues if not issue.where}
    safe = []
    for file in files:
        directory = os.path.dirname(file)  # noqa: PTH120 - strings: thousands of files
        if directory not in verdicts:
            problems = directories.problems(directory)
            verdicts[directory] = not problems
            for unsafe, problem in problems:
                if unsafe not in reported:
                    reported.add(unsafe)
                    issues.append(ConfigIssue(unsafe, "", problem))
        if verdicts[directory]:
            safe.append(file)
    return safe


def _parse_toml(file: Path, data: bytes) -> dict[str, Any] | ConfigIssue:
    """The TOML document, or the issue that names where it goes wrong."""
    try:
        document = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = _line_column(data[: exc.start].decode("utf-8"), exc.start)
        found = f"expected UTF-8 text, found the byte 0x{data[exc.start]:02x}"
        return ConfigIssue(str(file), where, found)
    try:
        return tomli.loads(document)
    except tomli.TOMLDecodeError as exc:
        where, message = _syntax_error(exc, document)
    except RecursionError:
        where = _line_column(document, _too_deep(document))
        message = "invalid TOML: arrays or tables nested too deeply to read"
    except ValueError:  # int() refuses more than sys.get_int_max_str_digits() digits
        digits = _TOO_MANY_DIGITS.search(document)
        where = _line_column(document, digits.start() if digits else len(document))
        message = "invalid TOML: a number with too many digits to read"
    return ConfigIssue(str(file), where, message)


class _NotAConfigFile(Exception):
    """The path names something that is not a regular file of a sane size."""


class _Untrusted(Exception):
    """Someone but root and the daemon's user may write the file (the message says who)."""


# O_NONBLOCK: opening a FIFO with no writer would otherwise wait forever (and hang
# `check`, or a reload in the daemon). It changes nothing for a regular file.
_OPEN = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC


def _read_regular_file(file: str, directories: trust.DirectoryCheck | None) -> bytes:
    """The file's bytes; a FIFO, a device or a huge file is refused without blocking on it,
    and (with `directories`) one that others may write, or a symlink of theirs."""
    fd, through_link = _open(file, directories)
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        if not stat.S_ISREG(info.st_mode):
            kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
            raise _NotAConfigFile(f"it is {kind}, not a regular file")
        if directories is not None:
            _check_trusted(file, fd, info, directories if through_link else None)
        data = read_at_most(fd, MAX_FILE_BYTES + 1, info.st_size)
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise _NotAConfigFile(f"it is larger than {MAX_FILE_BYTES} bytes, too large to be one")
    return data


def _open(file: str, directories: trust.DirectoryCheck | None) -> tuple[int, bool]:
    """A descriptor of `file`, and whether it was a symlink, followed only (with
    `directories`) if root or the daemon's user owns it."""
    if directories is None:
        return os.open(file, _OPEN), False
    try:
        return os.open(file, _OPEN | os.O_NOFOLLOW), False
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
    link = os.lstat(file)
    if not stat.S_ISLNK(link.st_mode):
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
    if problem := trust.link_problem(file, link):
        raise _Untrusted(problem)
    # The link cannot be swapped before this open: its directory was found writable
    # only by root and the daemon's user. What it points to is checked on the descriptor.
    return os.open(file, _OPEN), True


def _check_trusted(
    file: str, fd: int, info: os.stat_result, link_directories: trust.DirectoryCheck | None
) -> None:
    """Raise _Untrusted unless only root and the daemon's user may write the open file `fd`
    and, given `link_directories` (`file` was a symlink), the directories holding it."""
    if problem := trust.file_problem(file, info):
        raise _Untrusted(problem)
    if link_directories is None:
        return  # not reached through a symlink: its directories were checked before
    try:
        target = str(Path(f"/proc/self/fd/{fd}").readlink())
    except OSError:  # no /proc: the path resolved names the same file, unless raced
        target = os.path.realpath(file)
    if problems := link_directories.problems(os.path.dirname(target)):  # noqa: PTH120
        directory, problem = problems[0]
        raise _Untrusted(f"it is a symlink to {target}, and {directory}: {problem}")


_TOO_MANY_DIGITS = re.compile(r"[0-9_]{4000,}")


def _too_deep(document: str) -> int:
    """Roughly where nesting gets deep (brackets outside strings and comments counted)."""
    depth, quote, comment = 0, "", False
    for position, char in enumerate(document):
        if comment:
            comment = char != "\n"
        elif quote:
            quote = "" if char == quote and document[position - 1] != "\\" else quote
        elif char in "\"'":
            quote = char
        elif char == "#":
            comment = True
        elif char in "[{":
            depth += 1
            if depth > 100:
                return position
        elif char in "]}":
            depth -= 1
    return len(document)


_AT_POSITION = re.compile(r" \(at (?:line (\d+), column (\d+)|end of document)\)\Z")


def _syntax_error(exc: tomli.TOMLDecodeError, document: str) -> tuple[str, str]:
    # Python 3.14 gives msg, lineno and colno; 3.11 has them only in the text.
    full = str(exc)
    match = _AT_POSITION.search(full)
    message = getattr(exc, "msg", None) or (full[: match.start()] if match else full)
    line, column = getattr(exc, "lineno", None), getattr(exc, "colno", None)
    if isinstance(line, int) and isinstance(column, int):
        return f"line {line}, column {column}", f"invalid TOML: {message}"
    if match is not None and match[1] is not None:
        return f"line {match[1]}, column {match[2]}", f"invalid TOML: {message}"
    return _line_column(document, len(document)), f"invalid TOML: {message}"


def _line_column(document: str, position: int) -> str:
    line = document.count("\n", 0, position) + 1
    column = position - document.rfind("\n", 0, position)  # rfind is -1 on line 1
    return f"line {line}, column {column}"


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
    issues.extend(ConfigIssue(str(file), problem.key, problem.message) for problem in problems)
    return model.DaemonConfig(path=file, **settings)
