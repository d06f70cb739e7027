"""Shared mode's messages delivered but not yet acknowledged, until the checkpoint.

A message is held from its delivery until `commit` (its checkpoint's snapshot is
durable), then acknowledged with a confirmed ("double") ack: each ack asks the
server for a reply, and the commit returns only once every reply came, so an ack
lost on the way is a failed (retryable) commit, not a silent redelivery later.

While messages are held, `keep_in_progress` (a task the source owns) tells the
server every third of ``ack_wait`` that they are still being worked on (``+WPI``),
so a sink flush longer than ``ack_wait`` causes no redelivery. A message delivered
again while held (its ack timer ran out anyway, or the server restarted) is not
passed on twice: it is recognised by its stream sequence, and the newer delivery's
reply subject is the one acknowledged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import structlog

from supervisor.errors import BrokerUnavailable

if TYPE_CHECKING:
    from nats.aio.msg import Msg

    from supervisor.connectors.nats.connection import Connection

log = structlog.get_logger("supervisor.source.nats")

ACK = b"+ACK"
TERM = b"+TERM"
IN_PROGRESS = b"+WPI"


class HeldMessages:
    """Delivered, unacknowledged messages by stream sequence."""

    def __init__(self, connection: Connection, ack_wait: float, job: str) -> None:
        self._connection = connection
        self._ack_wait = ack_wait
        self._job = job
        self._replies: dict[int, str] = {}
        """Stream sequence -> the reply subject of its latest delivery."""
        self._poison: set[int] = set()
        """Held messages handed to the records policy: terminated, not acked."""
        self._touched = 0.0
        """When the server last heard of the held messages (delivery or ``+WPI``)."""
        self.duplicates = 0
        self.failure: BaseException | None = None
        """Why `keep_in_progress` stopped, raised by the next read or commit."""

    def __len__(self) -> int:
        return len(self._replies)

    def hold(self, stream_seq: int, reply: str, *, poison: bool = False) -> bool:
        """Hold a delivery; False if its sequence is held already (a redelivery: drop it)."""
        if not self._replies:
            self._touched = anyio.current_time()
        again = stream_seq in self._replies
        self._replies[stream_seq] = reply
        if again:
            self.duplicates += 1
            return False
        if poison:
            self._poison.add(stream_seq)
        return True

    async def acknowledge(self, within: float) -> int:
        """Ack every held message (terminate the poison ones) and wait for the server to
        confirm each; `BrokerUnavailable` if it does not `within` seconds."""
        if not self._replies:
            return 0
        items = [
            (reply, TERM if seq in self._poison else ACK) for seq, reply in self._replies.items()
        ]
        await confirm(self._connection, items, within)
        self._replies.clear()
        self._poison.clear()
        return len(items)

    async def keep_in_progress(self) -> None:
        """Run until cancelled: ``+WPI`` for the held messages every third of ack_wait."""
        period = self._ack_wait / 3
        try:
            while True:
                await anyio.sleep(period)
                now = anyio.current_time()
                if not self._replies or now - self._touched < period:
                    continue
                nc = self._connection.nc
                for reply in list(self._replies.values()):
                    await nc.publish(reply, IN_PROGRESS)
                self._touched = now
                log.debug("source.in_progress_sent", job=self._job, messages=len(self._replies))
        except Exception as exc:  # noqa: BLE001 - handed to the attempt by the next call
            self.failure = exc

    async def release(self, undelivered: list[str]) -> None:
        """Closing: messages that arrived but were never passed on (`undelivered`) are
        given back (``-NAK``: delivered again now). The held ones are not: they reached
        the job, and a redelivery after a NAK does not count as a delivery on the server
        (2.9), so a message failing every attempt would never reach `max_deliveries`.
        They come back after ack_wait, one delivery more. Best effort."""
        self._replies.clear()
        if not undelivered:
            return
        nc = self._connection.nc
        for reply in undelivered:
            await nc.publish(reply, b"-NAK")
        await nc.flush(timeout=1)


async def confirm(connection: Connection, items: list[tuple[str, bytes]], within: float) -> None:
    """Publish each ``(reply subject, ack kind)`` asking for a reply; wait for them all."""
    nc = connection.nc
    inbox = nc.new_inbox()
    confirmed = 0
    done = anyio.Event()

    async def count(_: Msg) -> None:
        nonlocal confirmed
        confirmed += 1
        if confirmed >= len(items):
            done.set()

    sub = await connection.call(nc.subscribe(inbox, cb=count), "acknowledging")
    try:
        for reply, kind in items:
            await connection.call(nc.publish(reply, kind, reply=inbox), "acknowledging")
        await connection.call(nc.flush(timeout=max(int(within), 1)), "acknowledging")
        with anyio.move_on_after(within):
            await done.wait()
        if not done.is_set():
            raise BrokerUnavailable(
                f"source: {connection.server} confirmed {confirmed} of {len(items)} acks "
                f"within {within:g} s ({connection.lost or 'no answer'}); the rest come "
                "back after ack_wait"
            )
    finally:
        if not connection.nc.is_closed:
            with anyio.move_on_after(within, shield=True):
                await sub.unsubscribe()
