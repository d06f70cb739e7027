"""The daemon's end of the control socket.

The socket is created with its final mode (umask set around bind, so there is
no moment with wider permissions), replaces a stale socket left by a crashed
daemon but never a live one, and is removed on exit. A client sends request lines, each within
`REQUEST_TIMEOUT` and at most `MAX_REQUEST_BYTES`, and each is answered in order;
a peer that is not root, the daemon's user or in the socket's group (its
credentials and groups as the kernel recorded them at connect: SO_PEERCRED and
SO_PEERGROUPS) is refused. Nothing a client does can raise out of its own
handler, and nothing it does can stop the daemon accepting: at most
`MAX_CLIENTS` are served at once, of which one uid other than root and the
daemon's user holds at most a quarter, `events --follow` clients at most a
quarter, and the last few are kept for root and the daemon's user. When all are
taken, the client that has waited longest without sending a request, or else
the oldest follower, is told why and dropped to make room; if every one is busy
the newcomer is told so and closed. Replies are written a slice at a time, each
within `SEND_TIMEOUT` (a client that stops reading is dropped), and running out
of file descriptors pauses accepting for `ACCEPT_BACKOFF` instead of crashing
or spinning.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import resource
import socket
import stat
import struct
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import structlog
from anyio.streams.buffered import BufferedByteReceiveStream

from supervisor.control.commands import EventFeed, Listing
from supervisor.control.protocol import (
    MAX_REQUEST_BYTES,
    REQUEST_TIMEOUT,
    ProtocolError,
    Request,
    decode_request,
    encode_json,
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
"""Seconds each slice of a reply may take to send; a client that stops reading is dropped."""
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
    served = _Served(control.identity.st_gid)
    try:
        listener = await anyio.abc.SocketListener.from_socket(control.sock)
        async with listener, anyio.create_task_group() as clients:
            mode = oct(stat.S_IMODE(control.identity.st_mode))
            log.info("control.listening", path=str(control.path), mode=mode)
            task_status.started()
            while True:
                stream = await _accept(listener)
                if stream is None:
                    continue
                try:
                    peer = _peer(stream.extra(anyio.abc.SocketAttribute.raw_socket))
                except OSError as exc:
                    log.warning("control.peer_unknown", error=str(exc))
                    await stream.aclose()
                    continue
                # Admitted here, not in the task: a burst is counted as it comes.
                refusal = served.admit(peer)
                if refusal is None:
                    clients.start_soon(_serve_client, stream, dispatch, peer, served)
                else:
                    clients.start_soon(_turn_away, stream, refusal)
    finally:
        # Shielded: this runs as the daemon stops (cancelled); in a thread: a stat and
        # an unlink are file system calls, which must not hold the loop.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(control.remove)


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


def follower_limit(limit: int) -> int:
    """`events --follow` clients at once: a quarter of `limit`. 260 idle followers once
    took every slot, and only a client that had sent nothing could be dropped."""
    return max(limit // 4, 1)


def uid_limit(limit: int) -> int:
    """Connections one uid other than root and the daemon's user may hold: a quarter."""
    return max(limit // 4, 1)


def reserved_slots(limit: int) -> int:
    """The last slots, kept for root and the daemon's user (1 in 16)."""
    return min(max(limit // 16, 1), limit - 1)


async def _turn_away(stream: anyio.abc.SocketStream, error: str) -> None:
    async with stream:
        with contextlib.suppress(*_GONE):
            await _send(stream, encode_response(ok=False, error=error))


@dataclass(slots=True)
class _Follower:
    """An `events --follow` client; `evicted` says why, once it was dropped to make room."""

    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    evicted: str | None = None


@dataclass(slots=True)
class _Served:
    """Who is being served now: how many, per uid, who is still waiting to send a
    request, and who follows events."""

    group: int
    """The socket's group: its members are served."""
    count: int = 0
    by_uid: Counter[int] = field(default_factory=Counter)
    reading: dict[int, anyio.CancelScope] = field(default_factory=dict)
    """The clients yet to send a request line, oldest first (dicts keep order)."""
    following: dict[int, _Follower] = field(default_factory=dict)
    """The `events --follow` clients, oldest first."""

    def admit(self, peer: Peer) -> str | None:
        """Count `peer` in, or say why it is refused (the error line it is sent)."""
        privileged = peer.uid in (0, os.geteuid())
        if not privileged and not peer.in_group(self.group):
            log.warning("control.peer_refused", pid=peer.pid, uid=peer.uid)
            if peer.groups is None:
                return (
                    "permission denied: this kernel does not tell the daemon your "
                    f"supplementary groups (SO_PEERGROUPS); use group {self.group} as your "
                    "primary group (sg), or connect as root or the daemon's user"
                )
            return (
                "permission denied: only root, the daemon's user and members of group "
                f"{self.group} may use this socket"
            )
        limit = client_limit()
        if not privileged and self.by_uid[peer.uid] >= uid_limit(limit):
            log.warning("control.uid_limit", uid=peer.uid, limit=uid_limit(limit))
            return (
                f"too many control connections from uid {peer.uid} "
                f"(limit {uid_limit(limit)}): close some and try again"
            )
        room = limit if privileged else limit - reserved_slots(limit)
        if self.count >= room and not self.make_room(limit):
            log.warning("control.too_many_clients", limit=limit)
            return f"too many control clients connected (limit {limit}): try again"
        self.count += 1
        self.by_uid[peer.uid] += 1
        return None

    def leave(self, peer: Peer) -> None:
        self.count -= 1
        self.by_uid[peer.uid] -= 1
        if not self.by_uid[peer.uid]:
            del self.by_uid[peer.uid]

    def make_room(self, limit: int) -> bool:
        """Drop the client that has waited longest without sending a request, or else the
        oldest follower; False if there is neither."""
        if self.reading:
            self.reading.pop(next(iter(self.reading))).cancel()
            return True
        if self.following:
            self._evict_oldest_follower(f"every control client slot was taken (limit {limit})")
            return True
        return False

    def add_follower(self, follower: _Follower) -> None:
        """Count a new follower in, dropping the oldest ones beyond `follower_limit`."""
        limit = follower_limit(client_limit())
        while len(self.following) >= limit:  # while: prlimit may have lowered the limit
            self._evict_oldest_follower(f"more than {limit} clients followed events")
        self.following[id(follower)] = follower

    def _evict_oldest_follower(self, why: str) -> None:
        oldest = self.following.pop(next(iter(self.following)))
        oldest.evicted = f"events --follow ended: {why} and this was the oldest; run it again"
        oldest.scope.cancel()


class _ReplyCut(Exception):
    """A reply failed after its first bytes were sent: no error line can follow them."""


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
    peer: Peer,
    served: _Served,
) -> None:
    """Answer each request line in order until the client closes, stalls or follows."""
    async with stream:
        buffered = BufferedByteReceiveStream(stream)  # one per connection: it holds the next line
        answered = 0
        try:
            while True:
                try:
                    line = await _receive_request(buffered, served)
                except (_Stalled, anyio.IncompleteRead):
                    if answered:
                        return  # done (or idle) after its requests: nothing to say
                    raise
                try:
                    result = await dispatch(decode_request(line))
                except (ProtocolError, SupervisorError) as exc:
                    await _send(stream, encode_response(ok=False, error=str(exc)))
                else:
                    if isinstance(result, EventFeed):
                        await _follow(stream, buffered, result, served)
                        return
                    await _send_result(stream, result)
                answered += 1
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
        except _ReplyCut:
            pass  # logged where it happened; the client sees a reply without its end
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, OSError):
            pass  # the client went away; nothing to answer
        except Exception:
            log.exception("control.request_failed")
            with contextlib.suppress(*_GONE):
                error = "internal error; the daemon logged it as control.request_failed"
                await _send(stream, encode_response(ok=False, error=error))
        finally:
            served.leave(peer)


async def _follow(
    stream: anyio.abc.SocketStream,
    buffered: BufferedByteReceiveStream,
    feed: EventFeed,
    served: _Served,
) -> None:
    """One response line per event until the daemon or the client goes away, or the
    daemon needs the slot (the client is told why).

    A follower that hangs up is noticed at once, not at the next event (which may
    never come): until then it would hold a file descriptor and a client slot.
    """
    follower = _Follower()
    served.add_follower(follower)
    sent_more: list[bytes] = []
    try:
        with follower.scope:
            async with anyio.create_task_group() as watch:
                watch.start_soon(_cancel_on_hang_up, buffered, watch.cancel_scope, sent_more)
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
    finally:
        served.following.pop(id(follower), None)
    error = follower.evicted
    if error is not None:
        log.warning("control.follower_evicted", reason=error)
    elif sent_more:
        error = "events --follow takes the whole connection: what was sent after it is not run"
    if error is not None:
        with contextlib.suppress(*_GONE):
            await _send(stream, encode_response(ok=False, error=error))


async def _cancel_on_hang_up(
    buffered: BufferedByteReceiveStream, scope: anyio.CancelScope, sent_more: list[bytes]
) -> None:
    # A follower sends nothing after its request: any data, or the end, means it is done.
    with contextlib.suppress(anyio.EndOfStream, *_GONE):
        sent_more.append(await buffered.receive())
    scope.cancel()


async def _receive_request(buffered: BufferedByteReceiveStream, served: _Served) -> bytes:
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
                line = await buffered.receive_until(b"\n", MAX_REQUEST_BYTES)
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
"""Items of a list result encoded and sent at a time: a large `status` encoded in one go
stalls the event loop, and made whole, a reply is held until it is read."""


async def _send_result(stream: anyio.abc.SocketStream, result: Any) -> None:
    """`encode_response(ok=True, result=result)`, a list sent a slice at a time.

    Each slice waits for the socket to take the one before (anyio's send waits for
    asyncio's write buffer to drain), so a reader that reads slowly costs the daemon
    one slice, not the whole reply (a 16,000-row reply once held 2 GB).
    """
    slices: AsyncGenerator[list[Any], None]
    if isinstance(result, Listing):
        slices = result.slices()
    elif isinstance(result, list) and len(result) > ENCODE_SLICE:
        slices = _slices_of(result)
    else:
        await _send(stream, encode_response(ok=True, result=result))
        return
    head, _, tail = encode_response(ok=True, result=[]).rpartition(b"[]")
    async with contextlib.aclosing(slices):
        separator = b""
        await _send(stream, head + b"[")
        try:
            async for items in slices:
                if items:
                    # What encode_response writes for the list, slice by slice.
                    await _send(stream, separator + encode_json(items)[1:-1].encode())
                    separator = b", "
            await _send(stream, b"]" + tail)
        except _GONE:
            raise
        except Exception as exc:
            log.exception("control.request_failed")
            raise _ReplyCut from exc


async def _slices_of(items: list[Any]) -> AsyncGenerator[list[Any], None]:
    for start in range(0, len(items), ENCODE_SLICE):
        yield items[start : start + ENCODE_SLICE]


async def _send(stream: anyio.abc.SocketStream, data: bytes) -> None:
    try:
        with anyio.fail_after(SEND_TIMEOUT):
            await stream.send(data)
    except TimeoutError:
        raise _Stalled(f"reply read within {SEND_TIMEOUT:g}s") from None


SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
"""Linux 4.13+: the client's supplementary groups as they were when it connected."""
_GROUPS_IN_PYTHON_BUFFER = 256
"""`socket.getsockopt` takes a buffer of at most 1,024 bytes: 256 gid_t."""


@dataclass(frozen=True, slots=True)
class Peer:
    """A client as the kernel recorded it at connect (not as its pid reads now)."""

    pid: int
    uid: int
    gid: int
    groups: frozenset[int] | None
    """Supplementary groups; None if the kernel cannot tell (before Linux 4.13)."""

    def in_group(self, group: int) -> bool:
        return self.gid == group or (self.groups is not None and group in self.groups)


def _peer(sock: socket.socket) -> Peer:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    return Peer(pid, uid, gid, _peer_groups(sock))


def _peer_groups(sock: socket.socket) -> frozenset[int] | None:
    """The client's supplementary groups, from the socket itself.

    They used to be read from /proc/PID/status, on the event loop: a client that
    exited could have its pid reused by another user's process before the read, and
    with the unit's ProtectProc=invisible the daemon cannot read others' /proc at all.
    """
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * _GROUPS_IN_PYTHON_BUFFER)
    except OSError as exc:
        if exc.errno == errno.ERANGE:
            raw = _peer_groups_unbounded(sock.fileno())
        elif exc.errno in (errno.ENOPROTOOPT, errno.EINVAL):
            return None
        else:
            raise
    return frozenset(struct.unpack(f"{len(raw) // 4}I", raw))


def _peer_groups_unbounded(fd: int) -> bytes:
    """SO_PEERGROUPS for a client in more groups than `socket.getsockopt` has room for."""
    size = 4 * os.sysconf("SC_NGROUPS_MAX")
    buffer = ctypes.create_string_buffer(size)
    length = ctypes.c_uint32(size)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.getsockopt(fd, socket.SOL_SOCKET, SO_PEERGROUPS, buffer, ctypes.byref(length)):
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return buffer.raw[: length.value]
