"""The daemon's HTTP listener: a small HTTP/1.1 server on the daemon's event loop.

Read-only and deliberately small: ``GET`` and ``HEAD`` only, one request per
connection (every response says ``Connection: close``), no request body. A client
sends its request head (at most `MAX_HEAD_BYTES`, `MAX_HEADERS` lines) within
`HEAD_TIMEOUT`, and reads each slice of the response within `SEND_TIMEOUT`, or it is
dropped. At most `MAX_CLIENTS` connections are served at once; one past that is told
503 and closed at once. So a slow or hostile client costs a connection slot for a
few seconds, never the jobs' time. What each path answers is `supervisor.observe.routes`'s.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import anyio
import anyio.abc
import structlog
from anyio.streams.stapled import MultiListener

from supervisor.errors import ConfigError, ConfigIssue

log = structlog.get_logger("supervisor.http")

MAX_HEAD_BYTES = 8192
"""The request line and headers, with their line ends."""
MAX_HEADERS = 64
HEAD_TIMEOUT = 10.0
"""Seconds a client has to send its whole request head."""
SEND_TIMEOUT = 10.0
"""Seconds each slice of a response may take to send."""
SEND_SLICE = 1024 * 1024
MAX_CLIENTS = 64
"""Connections served at once (a scrape, a browser, a few `curl`s need far fewer)."""
ACCEPT_BACKOFF = 0.1
_ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})

REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    421: "Misdirected Request",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    """Lower-cased names; a repeated header's values joined with ", "."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]


class BadRequest(Exception):
    """The request head cannot be served; `status` says how."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def bind_http(
    address: tuple[str, int], config_path: Path
) -> anyio.abc.Listener[anyio.abc.SocketStream]:
    """Listen on `address`; `ConfigError` at ``supervisor.http_listen`` if it cannot be."""
    host, port = address
    try:
        return await anyio.create_tcp_listener(local_host=host, local_port=port)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            [
                ConfigIssue(
                    str(config_path),
                    "supervisor.http_listen",
                    f"cannot listen on {host}:{port}: {reason}",
                )
            ]
        ) from None


def bound_port(listener: MultiListener[anyio.abc.SocketStream]) -> int:
    """The port `listener` took (the one asked for, or the one picked for port 0)."""
    port: int = listener.listeners[0].extra(anyio.abc.SocketAttribute.local_port)
    return port


class _Slots:
    """Connections being served now."""

    __slots__ = ("serving",)

    def __init__(self) -> None:
        self.serving = 0


async def serve_http(
    listener: MultiListener[anyio.abc.SocketStream],
    handler: Handler,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; each connection in a task of its own."""
    slots = _Slots()
    inner = listener.listeners
    async with listener, anyio.create_task_group() as tasks:
        log.info("http.listening", port=bound_port(listener), addresses=len(inner))
        for one in inner:  # "localhost" may be two: IPv4 and IPv6
            tasks.start_soon(_accept_loop, one, tasks, handler, slots)
        task_status.started()


async def _accept_loop(
    listener: anyio.abc.Listener[anyio.abc.SocketStream],
    tasks: anyio.abc.TaskGroup,
    handler: Handler,
    slots: _Slots,
) -> None:
    while True:
        stream = await _accept(listener)
        if stream is None:
            continue
        # Counted here, as each connection is accepted: a burst is seen as it comes.
        if slots.serving >= MAX_CLIENTS:
            tasks.start_soon(_turn_away, stream)
            continue
        slots.serving += 1
        tasks.start_soon(_serve_counted, stream, handler, slots)


async def _serve_counted(stream: anyio.abc.SocketStream, handler: Handler, slots: _Slots) -> None:
    try:
        await _serve_connection(stream, handler)
    finally:
        slots.serving -= 1


async def _accept(
    listener: anyio.abc.Listener[anyio.abc.SocketStream],
) -> anyio.abc.SocketStream | None:
    try:
        return await cast("anyio.abc.SocketListener", listener).accept()
    except anyio.BrokenResourceError as exc:
        cause = exc.__cause__
        if not isinstance(cause, OSError):
            raise
        if cause.errno in _ACCEPT_CAPACITY_ERRNOS:
            log.warning("http.accept_failed", error=cause.strerror)
            await anyio.sleep(ACCEPT_BACKOFF)
            return None
        if cause.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
            return None
        raise
    except OSError as exc:
        if exc.errno in _ACCEPT_CAPACITY_ERRNOS:
            log.warning("http.accept_failed", error=exc.strerror)
            await anyio.sleep(ACCEPT_BACKOFF)
            return None
        if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
            return None
        raise


_GONE = (
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    OSError,
    TimeoutError,
)


async def _turn_away(stream: anyio.abc.SocketStream) -> None:
    async with stream:
        with contextlib.suppress(*_GONE):
            await _send(stream, _encode(Response(503, b"too many connections\n"), head_only=False))


async def _serve_connection(stream: anyio.abc.SocketStream, handler: Handler) -> None:
    async with stream:
        try:
            request = await _read_head(stream)
        except BadRequest as exc:
            with contextlib.suppress(*_GONE):
                body = f"{exc}\n".encode()
                await _send(stream, _encode(Response(exc.status, body), head_only=False))
            return
        except _GONE:
            return  # gone, or too slow: nothing to answer
        if request.method not in ("GET", "HEAD"):
            response = Response(405, b"only GET and HEAD\n", headers={"Allow": "GET, HEAD"})
        else:
            try:
                response = await handler(request)
            except Exception:
                log.exception("http.request_failed", path=request.path)
                response = Response(
                    500, b"internal error; the daemon logged it as http.request_failed\n"
                )
        with contextlib.suppress(*_GONE):
            await _send(stream, _encode(response, head_only=request.method == "HEAD"))


async def _read_head(stream: anyio.abc.SocketStream) -> Request:
    """The request line and headers, within `HEAD_TIMEOUT` and `MAX_HEAD_BYTES`."""
    buffer = bytearray()
    with anyio.fail_after(HEAD_TIMEOUT):
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(buffer) >= MAX_HEAD_BYTES:
                raise BadRequest(431, f"request head longer than {MAX_HEAD_BYTES} bytes")
            buffer += await stream.receive(MAX_HEAD_BYTES - len(buffer) + 4)
    if end + 4 > MAX_HEAD_BYTES:
        raise BadRequest(431, f"request head longer than {MAX_HEAD_BYTES} bytes")
    return parse_head(bytes(buffer[:end]))


def parse_head(head: bytes) -> Request:
    """A request from its head (without the blank line); BadRequest if it is not HTTP/1.x."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest(400, "request head is not ASCII") from None
    lines = text.split("\r\n")
    if len(lines) > MAX_HEADERS + 1:
        raise BadRequest(431, f"more than {MAX_HEADERS} header lines")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1].startswith("/"):
        raise BadRequest(400, "expected a request line like: GET /metrics HTTP/1.1")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(505, "only HTTP/1.0 and HTTP/1.1")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or not name.isprintable():
            raise BadRequest(400, "malformed header line")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    path, _, query = target.partition("?")
    return Request(method, path, query, headers)


def _encode(response: Response, *, head_only: bool) -> bytes:
    reason = REASONS.get(response.status, "Internal Server Error" if response.status == 500 else "")
    headers = {
        "Content-Type": response.content_type,
        "Content-Length": str(len(response.body)),
        "Connection": "close",
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        **response.headers,
    }
    head = f"HTTP/1.1 {response.status} {reason}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()
    )
    return head.encode("latin-1") + b"\r\n" + (b"" if head_only else response.body)


async def _send(stream: anyio.abc.SocketStream, data: bytes) -> None:
    """A slice at a time, each within `SEND_TIMEOUT`: a reader that stops is dropped."""
    view = memoryview(data)
    for start in range(0, len(view), SEND_SLICE):
        with anyio.fail_after(SEND_TIMEOUT):
            await stream.send(bytes(view[start : start + SEND_SLICE]))
