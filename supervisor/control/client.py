"""The `supervisor` command's end of the control socket (plain blocking I/O)."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from supervisor.control.protocol import Request, encode_request
from supervisor.errors import CommandRefused, DaemonUnreachable


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


def call(path: Path, request: Request, *, timeout: float) -> Any:
    """Send one request, return its result; raises CommandRefused or DaemonUnreachable."""
    sock: socket.socket | None = None
    try:
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
        sock.sendall(encode_request(request))
        reply = _read_line(sock, path)
    except TimeoutError:
        raise DaemonUnreachable(
            f"the daemon on {path} did not answer within {timeout:g}s"
        ) from None
    except OSError as exc:  # reset, broken pipe, not a socket, ...
        raise DaemonUnreachable(f"talking to the daemon on {path} failed: {exc}") from None
    finally:
        if sock is not None:
            sock.close()
    try:
        body = json.loads(reply)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise DaemonUnreachable(f"what answers on {path} does not speak the control protocol")
    if not body.get("ok"):
        raise CommandRefused(str(body.get("error")))
    return body.get("result")


def follow(path: Path, request: Request) -> Iterator[Any]:
    """Send one request and yield each result line until the daemon closes the stream."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.connect(os.fspath(path))
        except OSError as exc:
            raise DaemonUnreachable(f"no daemon answers on {path} ({exc.strerror})") from None
        sock.sendall(encode_request(request))
        with sock.makefile("rb") as lines:
            for line in lines:
                body = json.loads(line)
                if not body.get("ok"):
                    raise CommandRefused(str(body.get("error")))
                yield body.get("result")
    finally:
        sock.close()


def _read_line(sock: socket.socket, path: Path) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise DaemonUnreachable(f"the daemon on {path} closed the connection without answering")
        chunks.append(chunk)
        if chunk.endswith(b"\n"):
            return b"".join(chunks)
