"""The daemon's end of the control socket: accept, admit, read, dispatch, reply.

A client sends request lines, each within `REQUEST_TIMEOUT` and at most
`MAX_REQUEST_BYTES`, and each is answered in order. Who is admitted, and who is
dropped to make room, is `supervisor.control.admission`'s rule, from the peer's
credentials as the kernel recorded them (`supervisor.control.peer`); the socket's
file is made by `supervisor.control.socket_file`. Nothing a client does can raise
out of its own handler, and nothing it does can stop the daemon accepting. Replies
are written a slice at a time, each within `SEND_TIMEOUT` (a client that stops
reading is dropped), and running out of file descriptors pauses accepting for
`ACCEPT_BACKOFF` instead of crashing or spinning.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import structlog
from anyio.streams.buffered import BufferedByteReceiveStream

from supervisor.control.admission import Follower, Served, client_limit
from supervisor.control.commands import EventFeed, Listing
from supervisor.control.peer import Peer, peer_of
from supervisor.control.protocol import (
    MAX_REQUEST_BYTES,
    REQUEST_TIMEOUT,
    ProtocolError,
    Request,
    decode_request,
    encode_json,
    encode_response,
)
from supervisor.control.socket_file import ControlSocket
from supervisor.errors import SupervisorError

log = structlog.get_logger("supervisor.control")

Dispatch = Callable[[Request], Awaitable[Any]]

SEND_TIMEOUT = 10.0
"""Seconds each slice of a reply may take to send; a client that stops reading is dropped."""
ACCEPT_BACKOFF = 0.1
"""Seconds to wait before accepting again when the process or system is out of
file descriptors or memory (accept would fail again at once: a busy loop)."""
_ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


async def serve_control(
    control: ControlSocket,
    dispatch: Dispatch,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Accept clients until cancelled; the socket file is removed on the way out."""
    served = Served(control.identity.st_gid)
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
                    peer = peer_of(stream.extra(anyio.abc.SocketAttribute.raw_socket))
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


async def _turn_away(stream: anyio.abc.SocketStream, error: str) -> None:
    async with stream:
        with contextlib.suppress(*_GONE):
            await _send(stream, encode_response(ok=False, error=error))


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
    served: Served,
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
    served: Served,
) -> None:
    """One response line per event until the daemon or the client goes away, or the
    daemon needs the slot (the client is told why).

    A follower that hangs up is noticed at once, not at the next event (which may
    never come): until then it would hold a file descriptor and a client slot.
    """
    follower = Follower()
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


async def _receive_request(buffered: BufferedByteReceiveStream, served: Served) -> bytes:
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
