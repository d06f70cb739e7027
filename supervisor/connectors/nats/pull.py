"""Pulling messages from a JetStream pull consumer: one request per batch.

The client library's ``fetch`` sends a new pull request on every call, first a
``no_wait`` probe and then a waiting one, and returns after the first message of a
batch when the rest has not arrived yet: reading a stream that way costs about one
request per message. Here one request asks for the whole batch and stays open until
the server sent it or its ``expires`` ran out; what it sends is read from our own
inbox as it arrives, a read returning what came without waiting further once the
flow pauses. At most one request is open at a time, so the messages on their way
never exceed one batch.

Status messages end a request: 404 (no messages), 408 (expired), 409 (the server
ended it: too many waiting, a leadership change); a 409 saying the consumer was
deleted fails the attempt.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import anyio

from supervisor.errors import BrokerUnavailable

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

    from supervisor.connectors.nats.connection import Connection

GRACE = 1.0
"""Seconds past a request's ``expires`` before it counts as lost (its 408 never came)."""
PAUSE = 0.002
"""Seconds without a message, after the first of a batch, that end a read."""


class Puller:
    """Pull requests for one consumer, answered on an inbox of our own."""

    def __init__(self, connection: Connection, stream: str, consumer: str) -> None:
        self._connection = connection
        self._subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._consumer = consumer
        self._inbox = connection.nc.new_inbox()
        self._sub: Subscription | None = None
        self._owed = 0
        """Messages the open request may still bring (0: no request open)."""
        self._expires_at = 0.0

    async def start(self) -> None:
        self._sub = await self._connection.call(
            self._connection.nc.subscribe(self._inbox), "subscribing"
        )

    async def pull(self, batch: int, seconds: float) -> list[Msg]:
        """Up to `batch` messages: what is there, or whatever the next `seconds` bring."""
        found = self._drain(batch)
        if found or seconds <= 0:
            return found
        now = anyio.current_time()
        if self._owed and now > self._expires_at + GRACE:
            self._owed = 0  # its end never came (the server dropped it)
        if not self._owed:
            await self._request(batch, seconds)
        first = await self._next(max(self._expires_at + GRACE - now, 0.001))
        while first is not None:
            found.append(first)
            found += self._drain(batch - len(found))
            if len(found) >= batch or not self._owed:
                break
            first = await self._next(PAUSE)
        return found

    async def _request(self, batch: int, seconds: float) -> None:
        expires = max(seconds, 0.01)
        body = json.dumps({"batch": batch, "expires": int(expires * 1e9)}).encode()
        nc = self._connection.nc
        await self._connection.call(
            nc.publish(self._subject, body, reply=self._inbox), "requesting messages"
        )
        self._owed = batch
        self._expires_at = anyio.current_time() + expires

    async def _next(self, within: float) -> Msg | None:
        """The next message (None on a timeout or at the end of the request)."""
        sub = self._sub
        assert sub is not None

        async def receive() -> Msg | None:
            try:
                return await sub.next_msg(timeout=within)
            except TimeoutError:
                return None

        while True:
            msg = await self._connection.call(receive(), "receiving messages")
            if msg is None:
                return None
            if self._accept(msg):
                return msg
            if not self._owed:
                return None

    def _drain(self, batch: int) -> list[Msg]:
        """What already arrived, without waiting."""
        assert self._sub is not None
        queue = self._sub._pending_queue  # the client has no public non-blocking read
        found: list[Msg] = []
        while len(found) < batch and not queue.empty():
            msg = queue.get_nowait()
            self._sub._pending_size -= len(msg.data)
            if self._accept(msg):
                found.append(msg)
        return found

    def _accept(self, msg: Msg) -> bool:
        """A message to pass on (True), or a status, which ends the open request."""
        status = msg.headers.get("Status") if msg.headers else None
        if not status:
            self._owed = max(self._owed - 1, 0)
            return True
        if status == "100":  # an idle heartbeat
            return False
        description = (msg.headers or {}).get("Description", "")
        if status == "409" and "deleted" in description.lower():
            raise BrokerUnavailable(
                f'source: the consumer "{self._consumer}" was deleted on '
                f"{self._connection.server} ({description})"
            )
        self._owed = 0
        return False

    def undelivered(self) -> list[str]:
        """Reply subjects of messages that arrived but were never read (for a release)."""
        if self._sub is None:
            return []
        replies: list[str] = []
        queue: Any = self._sub._pending_queue
        while not queue.empty():
            msg = queue.get_nowait()
            if msg.reply and not (msg.headers and msg.headers.get("Status")):
                replies.append(msg.reply)
        return replies

    async def stop(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None and not self._connection.nc.is_closed:
            await sub.unsubscribe()


def sequences(msg: Msg) -> tuple[int, int, int]:
    """A message's (stream sequence, consumer sequence, deliveries), read off its ack subject
    (``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ts>.<pending>``)
    without the client's general parser, which costs several times more per message."""
    tokens = msg.reply.split(".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[6]), int(tokens[4])
    metadata = msg.metadata  # the longer form, with a domain and an account hash
    return metadata.sequence.stream, metadata.sequence.consumer, metadata.num_delivered
