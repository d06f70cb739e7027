"""Reading configuration files safely, and parsing them with errors that say where.

A daemon or job file is read only if it is a regular file of a sane size that only
root and the daemon's user may write (`supervisor.config.trust`), without ever
blocking on a FIFO; a symlink is followed only if theirs. A parse error names the
line and column. `supervisor.config.loader` decides what the documents mean.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tomli

from supervisor.config import trust
from supervisor.durable import read_at_most
from supervisor.errors import ConfigIssue

MAX_FILE_BYTES = 1024 * 1024
"""A daemon or job file is a few hundred bytes; a bigger one is refused unread."""
_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def read_toml(
    file: Path, issues: list[ConfigIssue], directories: trust.DirectoryCheck | None
) -> dict[str, Any] | None:
    data = read_bytes(str(file), directories)
    document = data if isinstance(data, ConfigIssue) else parse_toml(file, data)
    if isinstance(document, ConfigIssue):
        issues.append(document)
        return None
    return document


_BATCH_FILES = 256
_BATCH_BYTES = MAX_FILE_BYTES
"""A batch also ends at this many bytes, so batching never holds much more than one
file of the largest size allowed (and its parsed TOML) in memory."""


def read_in_batches(
    files: list[str], directories: trust.DirectoryCheck
) -> Iterator[list[tuple[Path, bytes | ConfigIssue]]]:
    """Each file's `Path` and bytes (or why it cannot be read), in order, a batch at a time."""
    batch: list[tuple[Path, bytes | ConfigIssue]] = []
    size = 0
    for name in files:
        data = read_bytes(name, directories)  # by the string: a Path would format its own
        batch.append((Path(name), data))
        size += len(data) if isinstance(data, bytes) else 0
        if len(batch) >= _BATCH_FILES or size >= _BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def read_bytes(file: str, directories: trust.DirectoryCheck | None) -> bytes | ConfigIssue:
    try:
        return _read_regular_file(file, directories)
    except OSError as exc:
        return ConfigIssue(file, "", f"cannot read the file: {exc.strerror or exc}")
    except _NotAConfigFile as exc:
        return ConfigIssue(file, "", f"cannot read the file: {exc}")
    except _Untrusted as exc:
        return ConfigIssue(file, "", str(exc))


def in_safe_directories(
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


def parse_toml(file: Path, data: bytes) -> dict[str, Any] | ConfigIssue:
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
