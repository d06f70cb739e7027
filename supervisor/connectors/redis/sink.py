"""The ``redis`` sink: one stream entry per record, XADD pipelined.

`write` queues each batch's XADDs and sends them as one pipeline once enough are
queued; `flush` sends the rest and waits for every reply, so when it returns the
server has every entry (as durable as the server's own ``appendfsync`` makes it). The
pipeline is written straight to one connection of the sink's own, and with hiredis its
replies are taken from the parser's buffer directly: redis-py's pipeline object and one
`read_response` per reply each cost a third of the throughput.
How records become fields: `supervisor.connectors.redis.entries`. With ``maxlen`` each
XADD trims the stream to about that many entries (``MAXLEN ~``).

Delivery is at-least-once: a crash after a pipeline and before the checkpoint adds
those entries again on the retry (XADD with ``*`` IDs has no duplicate detection).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio

from supervisor.codec import JSON, Codec
from supervisor.connectors.redis import entries
from supervisor.connectors.redis.config import RedisSinkConfig
from supervisor.connectors.redis.connection import connect, translated
from supervisor.connectors.refusals import ENCODE_ERRORS, RefusesRecords
from supervisor.protocols import Offset, Record, Rejected

if TYPE_CHECKING:
    from redis.asyncio import Redis

SEND_AT = 4096
"""Queued entries that make `write` send them (one pipeline, one round trip)."""


class RedisSink(RefusesRecords):
    """XADD each record to `stream`; `flush` returns once the server has them all."""

    def __init__(self, config: RedisSinkConfig, *, codec: Codec = JSON) -> None:
        self._config = config
        self._codec = codec
        self._client: Redis | None = None
        self._connection: Any = None
        self._queued: list[list[object]] = []
        trim: list[object] = [] if config.maxlen is None else ["MAXLEN", "~", config.maxlen]
        self._head: list[object] = ["XADD", config.stream, *trim, "*"]

    async def open(self) -> Offset | None:
        config = self._config
        self._client = await connect(
            config, "sink", socket_timeout=config.timeout, connect_timeout=config.timeout
        )
        with translated(config, "sink", "url"):
            pool = self._client.connection_pool
            self._connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        return None

    async def write(self, records: Sequence[Record]) -> None:
        head = self._head
        refused: list[Rejected] = []
        for record in records:
            command = list(head)
            try:
                for name, value in entries.fields(record, self._codec).items():
                    if not (name.isascii() and value.isascii()):
                        # A lone surrogate: refused now, not when the batch is sent.
                        name.encode(), value.encode()
                    command += (name, value)
            except ENCODE_ERRORS as exc:
                refused.append(Rejected(record, exc))
                continue
            self._queued.append(command)
        await self._refuse(refused)
        if len(self._queued) >= SEND_AT:
            await self._send()

    async def flush(self, offset: Offset | None) -> None:
        await self._send()

    async def _send(self) -> None:
        connection = self._connection
        if connection is None:
            raise RuntimeError("redis sink used before open()")
        queued, self._queued = self._queued, []
        if not queued:
            return
        with translated(self._config, "sink", "stream"):
            await connection.send_packed_command(connection.pack_commands(queued))
            await self._replies(connection, len(queued))

    async def _replies(self, connection: Any, count: int) -> None:
        """Read `count` replies; raise the first error among them."""
        parser = getattr(connection, "_parser", None)
        reader = getattr(parser, "_reader", None)
        if type(reader).__module__.partition(".")[0] != "hiredis":
            for _ in range(count):
                await connection.read_response()
            return
        # hiredis: take every reply already buffered without a coroutine each (reading
        # 4,096 replies one `read_response` at a time cost a third of the throughput).
        assert parser is not None and reader is not None
        try:
            from redis._parsers.hiredis import NOT_ENOUGH_DATA as missing
        except ImportError:  # older redis-py: hiredis's own default
            missing = False
        with anyio.fail_after(self._config.timeout):
            while count:
                reply = reader.gets()
                if reply is missing or reply is False:  # RESP2 has no booleans
                    await parser.read_from_socket()
                    continue
                if isinstance(reply, Exception):
                    raise reply
                count -= 1

    async def close(self) -> None:
        client, self._client = self._client, None
        connection, self._connection = self._connection, None
        self._queued = []
        if connection is not None:
            # Replies may be left unread after an error: the connection is not reused.
            await connection.disconnect()
        if client is not None:
            await client.aclose()
