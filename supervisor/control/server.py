"""The daemon's end of the control socket.

The socket is created with its final mode (umask set around bind, so there is
no moment with wider permissions), replaces a stale socket left by a crashed
daemon but never a live one, and is removed on exit. Each client sends one
request line within `REQUEST_TIMEOUT` and at most `MAX_REQUEST_BYTES`; a peer
that is not root, the daemon's user or in the socket's group is refused.
Nothing a client does can raise out of its own handler.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import structlog
from anyio.streams.buffered import BufferedByteReceiveStream

from supervisor.control.commands import EventFeed
from supervisor.control.protocol import (
    MAX_REQUEST_BYTES,
    REQUEST_TIMEOUT,
    ProtocolError,
    Request,
    decode_request,
    encode_response,
)
from supervisor.errors import SupervisorError

log = structlog.get_logger("supervisor.control")

Dispatch = Callable[[Request], Awaitable[Any]]


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
    _clear_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        previous = os.umask(0o777 & ~mode)
        try:
            sock.bind(os.fspath(path))
        finally:
            os.umask(previous)
        sock.listen(128)
        sock.setblocking(False)
        return ControlSocket(sock, path, path.stat())
    except BaseException:
        sock.close()
        raise


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


async def serve_control(
    control: ControlSocket,
    dispatch: Dispatch,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Accept clients until cancelled; the socket file is removed on the way out."""
    group = control.identity.st_gid
    try:
        listener = await anyio.abc.SocketListener.from_socket(control.sock)
        async with listener, anyio.create_task_group() as clients:
            mode = oct(stat.S_IMODE(control.identity.st_mode))
            log.info("control.listening", path=str(control.path), mode=mode)
            task_status.started()
            while True:
                stream = await listener.accept()
                clients.start_soon(_serve_client, stream, dispatch, group)
    finally:
        control.remove()


async def _serve_client(stream: anyio.abc.SocketStream, dispatch: Dispatch, group: int) -> None:
    async with stream:
        try:
            raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
            pid, uid, gid = _peer(raw)
            if not _peer_allowed(pid, uid, gid, group):
                log.warning("control.peer_refused", pid=pid, uid=uid)
                await stream.send(encode_response(ok=False, error="permission denied"))
                return
            with anyio.fail_after(REQUEST_TIMEOUT):
                line = await BufferedByteReceiveStream(stream).receive_until(
                    b"\n", MAX_REQUEST_BYTES
                )
            try:
                result = await dispatch(decode_request(line))
            except (ProtocolError, SupervisorError) as exc:
                await stream.send(encode_response(ok=False, error=str(exc)))
                return
            if isinstance(result, EventFeed):
                # One response line per event, until the client or the daemon goes away.
                async with contextlib.aclosing(result.items()) as items:
                    async for item in items:
                        await stream.send(encode_response(ok=True, result=item))
                return
            await stream.send(encode_response(ok=True, result=result))
        except TimeoutError:
            log.warning("control.client_stalled", timeout=REQUEST_TIMEOUT)
        except anyio.DelimiterNotFound:
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await stream.send(
                    encode_response(
                        ok=False, error=f"request longer than {MAX_REQUEST_BYTES} bytes"
                    )
                )
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, OSError):
            pass  # the client went away; nothing to answer
        except Exception:
            log.exception("control.request_failed")


def _peer(sock: socket.socket) -> tuple[int, int, int]:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    return pid, uid, gid


def _peer_allowed(pid: int, uid: int, gid: int, group: int) -> bool:
    """Root, the daemon's own user, or a member of the socket's group."""
    if uid in (0, os.geteuid()) or gid == group:
        return True
    # Supplementary groups are not in SO_PEERCRED; /proc has them.
    return group in _groups_of(pid)


def _groups_of(pid: int) -> set[int]:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return set()
    groups: set[int] = set()
    for line in status.splitlines():
        if line.startswith(("Gid:", "Groups:")):
            groups.update(int(value) for value in line.split()[1:])
    return groups
