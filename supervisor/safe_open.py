"""Opening a configured path: never through a symlink, only a regular file, never blocking.

SPEC §8: files read or written are opened without following symlinks and must
be regular files. Whoever can write a file's directory can put a symlink there
(to a file only the daemon's user may read, or to another job's database) or a
FIFO, whose plain open blocks a worker thread until someone opens the other
end. So every open here:

- looks first (``lstat``) and does not open what is not a regular file at all:
  opening a device can have effects of its own;
- opens with ``O_NOFOLLOW`` (a symlink as the last component fails, ELOOP),
  ``O_NONBLOCK`` (a FIFO opens at once, or fails with ENXIO for writing) and
  ``O_NOCTTY``;
- checks the descriptor with ``fstat``: a file swapped in after the look is
  still caught, since the descriptor is what is read or written afterwards;
- clears ``O_NONBLOCK`` again, so reads and writes behave as usual.

Directories on the way are followed as usual: protecting the last component is
what stops the owner of the file's directory.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

from supervisor.errors import UnsafeFile

FILE_MODE = 0o640
"""Files the supervisor creates: its user reads and writes, its group reads, others nothing."""

_OPEN = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def open_regular(path: Path, flags: int, *, role: str, symlink_hint: str = "") -> int:
    """Open the existing regular file `path` with `flags` (``os.O_RDONLY``, ...).

    `role` names the setting the path came from (``"source.path"``) for the
    error, and `symlink_hint` is added to it when `path` is a symlink.
    FileNotFoundError if there is no file; UnsafeFile if it is a symlink or not
    a regular file.
    """
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise
    except OSError:
        st = None  # let the open report it
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise _refused(path, st.st_mode, role, symlink_hint)
    return _open_checked(path, flags, 0, role, symlink_hint)


def create_or_open(path: Path, flags: int, *, role: str) -> tuple[int, bool]:
    """Open the regular file `path` with `flags`, creating it `FILE_MODE` if missing.

    Returns the descriptor and whether this call created the file (its directory
    entry then wants an fsync). UnsafeFile if `path` is a symlink (even a
    dangling one) or not a regular file.
    """
    try:
        return _open_checked(path, flags | os.O_CREAT | os.O_EXCL, FILE_MODE, role, ""), True
    except FileExistsError:
        pass
    return open_regular(path, flags, role=role), False


def open_through_link(path: Path, flags: int, *, role: str) -> int:
    """Open the regular file `path`, or the one a symlink at `path` points to (one level),
    if the link and its target have the same owner.

    An owner check, not a path check: whoever made the link could have pointed it
    at any file the supervisor may read, so only a file of their own is read
    through it. The link is read from a descriptor of the link itself, so its
    target cannot be swapped between looking and reading.
    """
    link = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        link_info = os.fstat(link)
        if not stat.S_ISLNK(link_info.st_mode):
            return open_regular(path, flags, role=role)
        target = path.parent / os.readlink("", dir_fd=link)
    finally:
        os.close(link)
    try:
        fd = open_regular(target, flags, role=role)
    except UnsafeFile:
        try:
            kind = _kind(target.lstat().st_mode)
        except OSError:
            kind = "not a regular file"
        raise UnsafeFile(
            f"{role} {path} is a symbolic link to {target}, which is {kind}: refused, since "
            f"follow_symlinks follows one link, to a regular file; point {role} at the file"
        ) from None
    owner = os.fstat(fd).st_uid
    if owner != link_info.st_uid:
        os.close(fd)
        raise UnsafeFile(
            f"{role} {path} is a symbolic link owned by uid {link_info.st_uid} to {target}, "
            f"owned by uid {owner}: refused, since whoever owns the link could point it at "
            f"any file the supervisor may read; make the link and its target one user's, "
            f"or point {role} at the file itself"
        )
    return fd


def writable_by_others(info: os.stat_result) -> bool:
    """Whether anyone but root or this process's user may change the directory `info` is of."""
    owned_safely = info.st_uid in (0, os.geteuid())
    return not owned_safely or bool(info.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def _open_checked(path: Path, flags: int, mode: int, role: str, symlink_hint: str) -> int:
    try:
        fd = os.open(path, flags | _OPEN, mode)
    except OSError as exc:
        # ELOOP: a symlink; ENXIO: a FIFO with no reader (for writing), or a socket;
        # EISDIR: a directory opened for writing. Say which, by looking.
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR, errno.EWOULDBLOCK):
            try:
                st = path.lstat()
            except OSError:
                raise exc from None
            if not stat.S_ISREG(st.st_mode):
                raise _refused(path, st.st_mode, role, symlink_hint) from None
        raise
    try:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
            return fd
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    raise _refused(path, info.st_mode, role, symlink_hint)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _refused(path: Path, mode: int, role: str, symlink_hint: str) -> UnsafeFile:
    kind = _kind(mode)
    hint = symlink_hint if stat.S_ISLNK(mode) else ""
    return UnsafeFile(
        f"{role} {path} is {kind}: refused, since files are read and written only as "
        f"regular files, never through a symlink; point {role} at a regular file{hint}"
    )
