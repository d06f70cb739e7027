"""The daemon's end of the control socket.

The socket is created with its final mode (umask set around bind, so there is
no moment with wider permissions), replaces a stale socket left by a crashed
daemon but never a live one, and is removed on exit. Each client sends one
request line within `REQUEST_TIMEOUT` and at most `MAX_REQUEST_BYTES`; a peer
that is not root, the daemon's user or in the socket's group is refused.
Nothing a client does can raise out of its own handler, and nothing it does
can stop the daemon accepting: at most `MAX_CLIENTS` are served at once (when
all are taken, the one that has waited longest without sending its request is
dropped to make room, and if every one is busy the newcomer is told so and
closed), a reply the client does not read within `SEND_TIMEOUT` is dropped,
and running out of file descriptors pauses accepting for `ACCEPT_BACKOFF`
instead of crashing or spinning.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
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

MAX_CLIENTS = 256
"""Clients served at once, and at most a quarter of the process's file
descriptor limit; more are answered "too many clients" and closed, so control
clients can never take the file descriptors the jobs need."""
SEND_TIMEOUT = 10.0
"""Seconds a reply line may take to send; a client that stops reading is dropped."""
ACCEPT_BACKOFF = 0.1
"""Seconds to wait before accepting again when the process or system is out of
file descriptors or memory (accept would fail again at once: a busy loop)."""
_ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


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
            served = _Served()
            while True:
                stream = await _accept(listener)
                if stream is None:
                    continue
                if served.count >= client_limit() and not served.make_room():
                    clients.start_soon(_turn_away, stream)
                else:
                    served.count += 1  # here, not in the task: a burst is counted as it comes
                    clients.start_soon(_serve_client, stream, dispatch, group, served)
    finally:
        control.remove()


async def _accept(listener: anyio.abc.SocketListener) -> anyio.abc.SocketStream | None:
    """The next client; None after an error that only this connection or a moment had."""
    try:
        return await listener.accept()
    except anyio.BrokenResourceError as exc:
        cause = exc.__cause__
        if not isinstance(cause, OSError):
            raise
        if cause.errno in _ACCEPT_CAPACITY_ERRNOS:
            # The connection waits in the backlog; accepting again now would fail
            # again at once. Jobs and connected clients carry on meanwhile.
            log.warning("control.accept_failed", error=os.strerror(cause.errno or 0))
            await anyio.sleep(ACCEPT_BACKOFF)
            return None
        if cause.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
            return None  # that client gave up before we accepted it
        raise


def client_limit() -> int:
    """`MAX_CLIENTS`, or a quarter of the open-files limit if that is lower (read each time:
    an operator may change it with prlimit)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return MAX_CLIENTS if soft == resource.RLIM_INFINITY else max(min(MAX_CLIENTS, soft // 4), 1)


async def _turn_away(stream: anyio.abc.SocketStream) -> None:
    async with stream:
        limit = client_limit()
        log.warning("control.too_many_clients", limit=limit)
        with contextlib.suppress(*_GONE):
            error = f"too many control clients connected (limit {limit}): try again"
            await _send(stream, encode_response(ok=False, error=error))


@dataclass(slots=True)
class _Served:
    """How many clients are being served now, and which are still waiting for a request."""

    count: int = 0
    reading: dict[int, anyio.CancelScope] = field(default_factory=dict)
    """The clients yet to send their request line, oldest first (dicts keep order)."""

    def make_room(self) -> bool:
        """Drop the client that has waited longest without sending a request; False if none."""
        if not self.reading:
            return False
        self.reading.pop(next(iter(self.reading))).cancel()
        return True


class _RequestTooLong(Exception):
    """The request line (with its newline) is longer than `MAX_REQUEST_BYTES`."""


class _Evicted(Exception):
    """Dropped before sending a request, to make room for a newer client."""


class _Stalled(Exception):
    """The client did not send its request, or read its reply, in time."""


_GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError, _Stalled)
"""What sending a last error line to a client that may have gone away can raise."""


async def _serve_client(
    stream: anyio.abc.SocketStream,
    dispatch: Dispatch,
    group: int,
    served: _Served,
) -> None:
    async with stream:
        try:
            raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
            pid, uid, gid = _peer(raw)
            if not _peer_allowed(pid, uid, gid, group):
                log.warning("control.peer_refused", pid=pid, uid=uid)
                await _send(stream, encode_response(ok=False, error="permission denied"))
                return
            line = await _receive_request(stream, served)
            try:
                result = await dispatch(decode_request(line))
            except (ProtocolError, SupervisorError) as exc:
                await _send(stream, encode_response(ok=False, error=str(exc)))
                return
            if isinstance(result, EventFeed):
                await _follow(stream, result)
                return
            await _send(stream, await _encode_result(result))
        except _RequestTooLong:
            with contextlib.suppress(*_GONE):
                error = f"request line longer than {MAX_REQUEST_BYTES} bytes"
                await _send(stream, encode_response(ok=False, error=error))
        except _Stalled as exc:
            log.warning("control.client_stalled", waiting_for=str(exc))
        except _Evicted:
            log.warning("control.client_evicted", limit=client_limit())
            with contextlib.suppress(*_GONE):
                error = "too many control clients connected: you sent no request in time"
                await _send(stream, encode_response(ok=False, error=error))
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, OSError):
            pass  # the client went away; nothing to answer
        except Exception:
            log.exception("control.request_failed")
            with contextlib.suppress(*_GONE):
                error = "internal error; the daemon logged it as control.request_failed"
                await _send(stream, encode_response(ok=False, error=error))
        finally:
            served.count -= 1


async def _follow(stream: anyio.abc.SocketStream, feed: EventFeed) -> None:
    """One response line per event until the daemon or the client goes away.

    A follower that hangs up is noticed at once, not at the next event (which may
    never come): until then it would hold a file descriptor and a client slot.
    """
    async with anyio.create_task_group() as watch:
        watch.start_soon(_cancel_on_hang_up, stream, watch.cancel_scope)
        try:
            async with contextlib.aclosing(feed.items()) as items:
                async for item in items:
                    await _send(stream, encode_response(ok=True, result=item))
        except _Stalled as exc:
            log.warning("control.client_stalled", waiting_for=str(exc))
        except _GONE:
            pass  # the client went away
        finally:
            watch.cancel_scope.cancel()


async def _cancel_on_hang_up(stream: anyio.abc.SocketStream, scope: anyio.CancelScope) -> None:
    # A follower sends nothing after its request: any data, or the end, means it is done.
    with contextlib.suppress(anyio.EndOfStream, *_GONE):
        await stream.receive()
    scope.cancel()


async def _receive_request(stream: anyio.abc.SocketStream, served: _Served) -> bytes:
    """One request line without its newline, exactly as long as the limit allows.

    `receive_until` checks its limit only between reads, so by itself it would let
    through lines of up to twice the limit depending on how they were chunked.
    Until the line is in, `served.make_room` may cancel this read (`_Evicted`).
    """
    line = b""
    with anyio.CancelScope() as waiting:
        served.reading[id(waiting)] = waiting
        try:
            with anyio.fail_after(REQUEST_TIMEOUT):
                line = await BufferedByteReceiveStream(stream).receive_until(
                    b"\n", MAX_REQUEST_BYTES
                )
        except TimeoutError:
            raise _Stalled(f"request within {REQUEST_TIMEOUT:g}s") from None
        except anyio.DelimiterNotFound:
            raise _RequestTooLong from None
        finally:
            served.reading.pop(id(waiting), None)
    if waiting.cancelled_caught:
        raise _Evicted
    if len(line) >= MAX_REQUEST_BYTES:  # + 1 for the newline
        raise _RequestTooLong
    return line


ENCODE_SLICE = 100
"""Items of a list result encoded per turn of the event loop: the 270 KB `status` of
1,000 jobs took 5-20 ms to encode in one go."""


async def _encode_result(result: Any) -> bytes:
    """`encode_response(ok=True, result=result)`, yielding to the loop within a long list."""
    if not isinstance(result, list) or len(result) <= ENCODE_SLICE:
        return encode_response(ok=True, result=result)
    head, _, tail = encode_response(ok=True, result=[]).rpartition(b"[]")
    parts = [head, b"["]
    for start in range(0, len(result), ENCODE_SLICE):
        if start:
            await anyio.lowlevel.checkpoint()
            parts.append(b", ")
        # What json.dumps writes for the list, item by item (protocol.encode_response).
        encoded = json.dumps(result[start : start + ENCODE_SLICE], default=str)
        parts.append(encoded[1:-1].encode())
    parts += [b"]", tail]
    return b"".join(parts)


async def _send(stream: anyio.abc.SocketStream, data: bytes) -> None:
    try:
        with anyio.fail_after(SEND_TIMEOUT):
            await stream.send(data)
    except TimeoutError:
        raise _Stalled(f"reply read within {SEND_TIMEOUT:g}s") from None


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
