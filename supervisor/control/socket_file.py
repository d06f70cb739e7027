"""The control socket's file: made with its final mode, in a directory only root or
the daemon's user can write; a stale one left by a crashed daemon is replaced, a
live daemon's never."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

import structlog

from supervisor.errors import SupervisorError

log = structlog.get_logger("supervisor.control")


@dataclass(frozen=True, slots=True)
class ControlSocket:
    """A bound, listening control socket and the file it made."""

    sock: socket.socket
    path: Path
    identity: os.stat_result

    def remove(self) -> None:
        """Unlink the socket file if it is still the one we made."""
        with contextlib.suppress(OSError):
            current = self.path.stat()
            if (current.st_dev, current.st_ino) == (self.identity.st_dev, self.identity.st_ino):
                self.path.unlink()


def bind_control_socket(path: Path, mode: int) -> ControlSocket:
    """A listening Unix socket at `path` with permissions `mode` from its creation."""
    check_socket_directory(path)
    _clear_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        previous = os.umask(0o777 & ~mode)
        try:
            sock.bind(os.fspath(path))
        finally:
            os.umask(previous)
        sock.listen(socket.SOMAXCONN)  # a burst of clients waits here, not in EAGAIN
        sock.setblocking(False)
        return ControlSocket(sock, path, path.stat())
    except BaseException:
        sock.close()
        raise


def check_socket_directory(path: Path) -> None:
    """Refuse a socket directory that anyone but root or this process's user can write.

    Whoever can write there can bind their own socket at `path` before the daemon
    starts (or swap it in later) and answer the CLI in the daemon's name. The CLI
    trusts only root and the directory's owner (`client.check_server`), so this
    check is what makes that owner trustworthy.
    """
    directory = path.parent
    info, user = directory.stat(), os.geteuid()
    if info.st_uid not in (0, user):
        raise SupervisorError(
            f"control socket directory {directory} is owned by uid {info.st_uid}, not by root "
            f"or uid {user} that the supervisor runs as: refused, since its owner could put "
            f"their own socket in the daemon's place; `chown {user} {directory}`, or set "
            "control_socket to a directory of the daemon's user"
        )
    if stat.S_IMODE(info.st_mode) & (stat.S_IWGRP | stat.S_IWOTH):
        raise SupervisorError(
            f"control socket directory {directory} is writable by its group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}): refused, since they could bind their "
            f"own socket at {path} and answer the CLI in the daemon's name; "
            f"`chmod go-w {directory}`, or set control_socket to a directory only the "
            "daemon's user can write (under systemd: $RUNTIME_DIRECTORY)"
        )


def _clear_stale_socket(path: Path) -> None:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise SupervisorError(f"{path} exists and is not a socket: not replacing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(os.fspath(path))
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise
        log.warning("control.stale_socket_removed", path=str(path))
        path.unlink(missing_ok=True)
    else:
        raise SupervisorError(f"another daemon is already listening on {path}")
    finally:
        probe.close()
