"""Who may write the configuration: root and the daemon's user, no one else.

A job file is code execution as the daemon's user (``class = "subprocess:Popen"``),
and the daemon file says where the job files are. So, as sshd's StrictModes
demands of ``authorized_keys``, a daemon or job file is refused unless it is
owned by root or by the user the supervisor runs as and writable by neither
its group nor others; and so is every directory from it up to ``/`` (whoever
may write a directory may rename a file in it and put their own in its
place). One thing is relaxed for the directories above a file's own: a
sticky directory owned by root or the daemon's user, like ``/tmp``, passes,
since no one else may rename what they do not own in it. A file's own
directory gets no such pass: others could still add job files to it.

A daemon or job file may be a symlink (a ``sites-enabled`` layout) only if the
link is owned by root or the daemon's user; its target is then held to the
same rule, its directories included. The file is checked on the descriptor it
is read from (`fstat`), so the check and the read are of the same inode.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH


def file_problem(path: str, info: os.stat_result) -> str | None:
    """Why the file `path` (`info` from `fstat` of its descriptor) must not be used."""
    if not info.st_mode & _WRITABLE_BY_OTHERS and info.st_uid in (0, os.geteuid()):
        return None  # the common case, once per job file: kept cheap
    return _problem(path, info, "the file", "make the supervisor run any code")


def link_problem(path: str, info: os.stat_result) -> str | None:
    """Why the symlink `path` (`info` from `lstat`) must not be followed."""
    if info.st_uid in _trusted():
        return None
    user = os.geteuid()
    return (
        f"it is a symlink owned by uid {info.st_uid}, not by root or uid {user} that the "
        "supervisor runs as: not followed, since its owner could point it at any file; "
        f"replace it with the file it points to, or `chown -h {user} {path}`"
    )


class DirectoryCheck:
    """The directories holding configuration files, each checked once."""

    def __init__(self) -> None:
        self._verdicts: dict[tuple[str, bool], str | None] = {}

    def problems(self, directory: str) -> list[tuple[str, str]]:
        """(directory, why it is unsafe) for `directory`, a file's own, and each above it:
        those named (the path as written) and those reached (the path with every symlink
        resolved), as sshd walks the resolved path."""
        problems: dict[str, str] = {}
        for start in dict.fromkeys([directory, os.path.realpath(directory)]):
            current, own = start, True
            while True:
                key = (current, own)
                if key not in self._verdicts:
                    self._verdicts[key] = _directory_problem(current, own=own)
                if (problem := self._verdicts[key]) is not None:
                    problems.setdefault(current, problem)
                parent = os.path.dirname(current)  # noqa: PTH120 - strings, as the loader's
                if parent == current:
                    break
                current, own = parent, False
        return list(problems.items())


def _directory_problem(directory: str, *, own: bool) -> str | None:
    try:
        info = Path(directory).stat()
    except OSError as exc:
        return f"cannot check the directory's owner and mode: {exc.strerror or exc}"
    if not own and info.st_mode & stat.S_ISVTX and info.st_uid in _trusted():
        return None  # like /tmp: no one may rename what they do not own in it
    what = "the directory" if own else "the directory (above a configuration file)"
    harm = "replace the configuration files below it, and so make the supervisor run any code"
    return _problem(directory, info, what, harm)


def _problem(path: str, info: os.stat_result, what: str, harm: str) -> str | None:
    """Why `path` is unsafe to take orders from: its owner, or who else may write it."""
    user = os.geteuid()
    if info.st_uid not in _trusted():
        fix = f"`chown {user} {path}`" + ("" if user == 0 else " (or `chown root`)")
        return (
            f"{what} is owned by uid {info.st_uid}, not by root or uid {user} that the "
            f"supervisor runs as: refused, since its owner could {harm}; {fix}"
        )
    if (mode := stat.S_IMODE(info.st_mode)) & _WRITABLE_BY_OTHERS:
        return (
            f"{what} is writable by its group or others (mode {mode:04o}): refused, since "
            f"they could {harm}; `chmod go-w {path}`"
        )
    return None


def _trusted() -> frozenset[int]:
    return frozenset({0, os.geteuid()})
