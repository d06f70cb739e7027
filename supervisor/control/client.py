"""The `supervisor` command's end of the control socket (plain blocking I/O).

What answers on the socket must be the daemon: its peer credentials (SO_PEERCRED)
must be root's or those of the user who owns the socket's directory (the daemon
refuses to listen in a directory anyone else can write, so nobody else can have
bound a socket there). Anything else is an impostor that another user put in the
daemon's place: the CLI tells it nothing and believes nothing from it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from supervisor.control.protocol import Request, Status, encode_request
from supervisor.errors import CommandRefused, DaemonUnreachable, UntrustedDaemon


def connect(path: Path, *, timeout: float) -> socket.socket:
    """A socket connected to `path`, with `timeout` on every operation.

    A Unix socket whose listen backlog is full refuses a non-blocking connect with
    EAGAIN at once (it does not wait, as TCP does): try again until `timeout`.
    """
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(os.fspath(path))
        except BlockingIOError:
            sock.close()
            if time.monotonic() >= deadline:
                raise TimeoutError(f"connect to {path}: the backlog stayed full") from None
            time.sleep(0.005)
            continue
        except BaseException:
            sock.close()
            raise
        return sock


def check_server(sock: socket.socket, path: Path) -> None:
    """Raise UntrustedDaemon unless the process that listens on `sock` runs as root or
    as the owner of the socket's directory (see the module docstring)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _ = struct.unpack("3i", creds)
    owner = path.parent.stat().st_uid
    if uid in (0, owner):
        return
    raise UntrustedDaemon(
        f"refusing to talk to {path}: it is served by uid {uid} (pid {pid}), not by root or "
        f"uid {owner} that owns {path.parent}, so it is not the daemon but another user's "
        "process in its place; nothing was sent to it. Stop that process, and set "
        "control_socket to a directory only the daemon's user can write "
        "(under systemd: /run/stream-supervisor)"
    )


def call(
    path: Path,
    request: Request,
    *,
    timeout: float,
    still_working: Callable[[], None] | None = None,
) -> Any:
    """Send one request, return its result; raises CommandRefused or DaemonUnreachable.

    `timeout` bounds connecting and each wait for the daemon. With `still_working`, it
    does not bound the command: when the reply is late, a second connection asks for
    `status`; while the daemon answers that, it is up and working on the command (a
    pause waits for a slow final checkpoint), so the wait goes on (`still_working` is
    called once, to say so).
    """
    sock: socket.socket | None = None
    try:
        sock = _open(path, timeout=timeout)
        # The daemon may have answered and closed before reading all of the request (it
        # is too long, no client slot is free): its reply says why, and is ours to read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(encode_request(request))
        reply = _read_reply(sock, path, request, timeout, still_working)
    except TimeoutError:
        raise DaemonUnreachable(
            f"the daemon on {path} did not answer within {timeout:g}s"
        ) from None
    except OSError as exc:  # reset, broken pipe, not a socket, ...
        raise DaemonUnreachable(f"talking to the daemon on {path} failed: {exc}") from None
    finally:
        if sock is not None:
            sock.close()
    body = _decode(reply, path)
    if not body.get("ok"):
        raise CommandRefused(str(body.get("error")))
    return body.get("result")


def follow(path: Path, request: Request) -> Iterator[Any]:
    """Send one request and yield each result line; DaemonUnreachable when the daemon
    ends the stream (it only does so when it stops, or drops a reader that fell behind)."""
    sock = _open(path, timeout=10.0)
    try:
        sock.settimeout(None)  # events may be hours apart
        try:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(encode_request(request))  # refused unread: the reply says why
            with sock.makefile("rb") as lines:
                for line in lines:
                    body = _decode(line, path)
                    if not body.get("ok"):
                        raise CommandRefused(str(body.get("error")))
                    yield body.get("result")
        except OSError as exc:
            raise DaemonUnreachable(f"the event stream from {path} failed: {exc}") from None
        raise DaemonUnreachable(
            f"the daemon on {path} ended the event stream: it stopped, or this reader fell "
            "too far behind; run `supervisor events --follow` again once it is back"
        )
    finally:
        sock.close()


def _open(path: Path, *, timeout: float) -> socket.socket:
    """A connection to the daemon on `path`, its peer checked; DaemonUnreachable if none."""
    try:
        sock = connect(path, timeout=timeout)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise DaemonUnreachable(
            f"no daemon answers on {path} ({exc.strerror}): is `supervisor run` running "
            "with this configuration?"
        ) from None
    except PermissionError:
        raise DaemonUnreachable(
            f"permission denied on {path}: run as the daemon's user, root, or a member "
            "of the socket's group"
        ) from None
    except TimeoutError:
        raise DaemonUnreachable(
            f"the daemon on {path} did not answer within {timeout:g}s"
        ) from None
    except OSError as exc:
        raise DaemonUnreachable(f"connecting to {path} failed: {exc}") from None
    try:
        check_server(sock, path)
    except BaseException:
        sock.close()
        raise
    return sock


def _read_reply(
    sock: socket.socket,
    path: Path,
    request: Request,
    timeout: float,
    still_working: Callable[[], None] | None,
) -> bytes:
    chunks: list[bytes] = []
    told = False
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            if still_working is None or not _answers(path, request, timeout):
                raise DaemonUnreachable(
                    f"the daemon on {path} did not answer within {timeout:g}s, "
                    "and does not answer `status` either"
                ) from None
            if not told:
                still_working()
                told = True
            continue
        if not chunk:
            raise DaemonUnreachable(f"the daemon on {path} closed the connection without answering")
        chunks.append(chunk)
        if chunk.endswith(b"\n"):
            return b"".join(chunks)


def _answers(path: Path, request: Request, timeout: float) -> bool:
    """Whether the daemon answers a `status` of (the first of) the request's jobs now."""
    try:
        call(path, Status(request.jobs[:1]), timeout=timeout)
    except CommandRefused:
        return True  # it answered
    except DaemonUnreachable:
        return False
    return True


def _decode(line: bytes, path: Path) -> dict[str, Any]:
    try:
        body = json.loads(line)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise DaemonUnreachable(f"what answers on {path} does not speak the control protocol")
    return body
