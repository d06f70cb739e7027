"""The ``nats`` source: the messages of a JetStream stream, in one of two modes.

Replay (no ``durable``): the position is the last stream sequence read, kept in our
snapshot; the server keeps nothing for us. Each attempt creates an ephemeral pull
consumer without acks (in memory, deleted at close, or by the server an hour after a
crash) starting just after the snapshot's sequence, and checks that its consumer
sequence never skips (if it did, the consumer is recreated from the last sequence
read). Reopening at a sequence yields the same messages in the same order, so the
source is `replayable` and a sink may name its records after the position.

Shared (``durable`` set): a durable pull consumer with explicit acks owns the
position and spreads the messages over every daemon that reads it. Messages are
held unacknowledged until `commit` (see `supervisor.connectors.nats.held`); a
message delivered more than ``max_deliveries`` times is handed to the job's
`[records]` policy as a `Rejected` record and terminated at the next commit. The
offset is informational: the consumer's name and the last sequences delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from supervisor.codec import JSON, Codec
from supervisor.connectors.nats import payload
from supervisor.connectors.nats.config import NatsSourceConfig
from supervisor.connectors.nats.connection import Connection
from supervisor.connectors.nats.consumers import ensure_durable, replay_consumer
from supervisor.connectors.nats.held import HeldMessages
from supervisor.connectors.nats.pull import Puller, sequences
from supervisor.errors import BrokerRefused, BrokerUnavailable, FatalError
from supervisor.protocols import Batch, Offset, Record, Rejected

if TYPE_CHECKING:
    from nats.aio.msg import Msg

log = structlog.get_logger("supervisor.source.nats")

FETCH_SLICE = 1.0
"""The longest one pull request waits for messages: a read waiting longer makes several,
refreshing `progress` between them."""
PROGRESS_EVERY = 1.0
"""Seconds between two consumer-info requests for `progress` (lag)."""


class PoisonMessage(FatalError):
    """A message delivered more often than ``max_deliveries``: the records policy decides
    (fatal when that policy is ``fail``: retrying would deliver it once more)."""


def check_offset(config: NatsSourceConfig, offset: Offset) -> None:
    """ValueError unless `open` could resume from `offset` (`supervisor offset --set`)."""
    if config.durable is not None:
        raise ValueError(
            f'the durable consumer "{config.durable}" owns the position in shared mode: move '
            f"it on the server instead (e.g. `nats consumer rm {config.stream} "
            f"{config.durable}` and recreate it with --deliver=<sequence>)"
        )
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ValueError(
            f"a nats replay offset is the last stream sequence read (an integer >= 0), "
            f"got {offset!r}"
        )


class NatsSource:
    """`supervisor.protocols.Source` over a JetStream stream (see the module doc)."""

    def __init__(self, config: NatsSourceConfig, job: str, *, codec: Codec = JSON) -> None:
        self._config = config
        self._codec = codec
        self._job = job
        self.replayable = config.durable is None
        self._connection = Connection(config, "source", f"stream-supervisor {job}")
        self._puller: Puller | None = None
        self._consumer = ""
        self._last = 0
        """Replay: the last stream sequence passed on. Shared: the last one delivered."""
        self._consumer_seq = 0
        """The consumer sequence of the last delivery (replay: checked for gaps)."""
        self._held: HeldMessages | None = None
        self._in_progress: asyncio.Task[None] | None = None
        self._progress: dict[str, object] = {}
        self._progress_at = -PROGRESS_EVERY

    @property
    def _where(self) -> str:
        return f'stream "{self._config.stream}" on {self._connection.server}'

    async def open(self, offset: Offset | None) -> None:
        config = self._config
        if offset is not None and self.replayable:
            try:
                check_offset(config, offset)
            except ValueError as exc:
                raise FatalError(
                    f"the snapshot's offset {offset!r} is not a replay position (was the job "
                    f"in shared mode?): {exc}; choose one with `supervisor offset JOB --set N`"
                ) from None
        await self._connection.open()
        info = await self._stream_info()
        if config.durable is None:
            if isinstance(offset, int):
                self._last = offset
            elif config.start == "end":
                self._last = info.state.last_seq
            await self._open_replay_consumer()
        else:
            self._consumer = config.durable
            await ensure_durable(self._connection, config)
            await self._start_puller()
            self._held = HeldMessages(self._connection, config.ack_wait, self._job)
            self._in_progress = asyncio.create_task(self._held.keep_in_progress())
        await self._refresh_progress(force=True)

    async def _stream_info(self) -> Any:
        import nats.js.errors

        js = self._connection.js

        async def info() -> Any:
            try:
                return await js.stream_info(self._config.stream)
            except nats.js.errors.NotFoundError:
                raise BrokerRefused(f"source.stream: no {self._where}") from None

        return await self._connection.call(info(), "reading the stream's info")

    async def _open_replay_consumer(self) -> None:
        if self._puller is not None:
            await self._drop_replay_consumer()
        self._consumer = await replay_consumer(self._connection, self._config, self._last + 1)
        self._consumer_seq = 0
        await self._start_puller()

    async def _start_puller(self) -> None:
        self._puller = Puller(self._connection, self._config.stream, self._consumer)
        await self._puller.start()

    def position(self) -> Offset | None:
        """Replay: the sequence reading starts after (with start = "end", the stream's last
        one when it opened). Shared: nothing to pin, the consumer holds the position."""
        return self._last if self.replayable else None

    def _offset(self) -> Offset:
        if self.replayable:
            return self._last
        return {"durable": self._consumer, "stream_seq": self._last, "delivery": self._consumer_seq}

    async def read(self, max_records: int, wait: float) -> Batch:
        self._raise_background_failure()
        messages = await self._fetch(max_records, wait)
        records: list[Record] = []
        rejects: list[Rejected] = []
        for msg in messages:
            if self.replayable:
                stream_seq = self._accept_replayed(msg)
                if stream_seq < 0:
                    break
            else:
                stream_seq = self._accept_shared(msg, rejects)
            if stream_seq > 0:
                self._decode(msg, stream_seq, records, rejects)
        await self._refresh_progress()
        return Batch(records, self._offset(), rejects=rejects)

    def _accept_replayed(self, msg: Msg) -> int:
        """The stream sequence of this replayed message, to pass it on; 0 to drop it (a
        repeat), -1 on a consumer sequence gap (the rest of the batch is dropped, and the
        consumer recreated at the next read)."""
        stream_seq, consumer_seq, _ = sequences(msg)
        if consumer_seq != self._consumer_seq + 1:
            log.warning(
                "source.replay_gap",
                job=self._job,
                expected=self._consumer_seq + 1,
                got=consumer_seq,
                resume_after=self._last,
            )
            self._consumer_seq = -1  # recreate before the next fetch
            return -1
        self._consumer_seq = consumer_seq
        if stream_seq <= self._last:
            return 0
        self._last = stream_seq
        return stream_seq

    def _accept_shared(self, msg: Msg, rejects: list[Rejected]) -> int:
        """Hold this delivery; its stream sequence to pass it on, or 0 for a redelivery
        already held or a poison message (which goes to `rejects` instead)."""
        assert self._held is not None
        stream_seq, self._consumer_seq, delivered = sequences(msg)
        poison = delivered > self._config.max_deliveries
        if not self._held.hold(stream_seq, msg.reply, poison=poison):
            return 0
        self._last = stream_seq
        if poison:
            error = PoisonMessage(
                f"message {stream_seq} of {self._where} delivered {delivered} times, more "
                f"than source.max_deliveries = {self._config.max_deliveries}"
            )
            rejects.append(payload.rejected(msg.data, msg.subject, stream_seq, error))
            return 0
        return stream_seq

    def _decode(
        self, msg: Msg, stream_seq: int, records: list[Record], rejects: list[Rejected]
    ) -> None:
        try:
            records.append(payload.decode(msg.data, self._config.format, self._codec))
        except ValueError as exc:
            error = ValueError(f"payload is not {self._config.format}: {exc}")
            rejects.append(payload.rejected(msg.data, msg.subject, stream_seq, error))

    async def _fetch(self, max_records: int, wait: float) -> list[Msg]:
        if self.replayable and self._consumer_seq < 0:
            await self._open_replay_consumer()
        if self._held is not None:
            room = self._config.max_ack_pending - len(self._held)
            max_records = max(1, min(max_records, room))
        puller = self._puller
        assert puller is not None
        deadline = anyio.current_time() + wait
        while True:
            slice_ = min(max(deadline - anyio.current_time(), 0.01), FETCH_SLICE)
            messages = await puller.pull(max_records, slice_)
            if messages:
                return messages
            if self._connection.lost is not None:
                raise BrokerUnavailable(f"source: lost {self._where}: {self._connection.lost}")
            if anyio.current_time() >= deadline:
                return []
            await self._refresh_progress()

    async def commit(self, offset: Offset) -> None:
        self._raise_background_failure()
        if self._held is not None:
            acked = await self._held.acknowledge(self._config.connect_timeout * 2)
            log.debug("source.acknowledged", job=self._job, messages=acked)
        await self._refresh_progress()

    def _raise_background_failure(self) -> None:
        if self._held is not None and self._held.failure is not None:
            failure = self._held.failure
            raise BrokerUnavailable(
                f"source: lost {self._where} while sending in-progress acks: "
                f"{type(failure).__name__}: {failure}"
            )

    async def _refresh_progress(self, *, force: bool = False) -> None:
        now = anyio.current_time()
        if not force and now - self._progress_at < PROGRESS_EVERY:
            return
        self._progress_at = now
        with contextlib.suppress(BrokerUnavailable):
            js = self._connection.js
            info = await self._connection.call(
                js.consumer_info(self._config.stream, self._consumer), "reading consumer info"
            )
            self._progress = {
                "mode": "replay" if self.replayable else "shared",
                "stream": self._config.stream,
                "consumer": self._consumer,
                "position": self._last,
                "lag": info.num_pending or 0,
            }
            if self._held is not None:
                self._progress["ack_pending"] = info.num_ack_pending or 0
                self._progress["held"] = len(self._held)

    def progress(self) -> Mapping[str, object] | None:
        return dict(self._progress) or None

    async def _drop_replay_consumer(self) -> None:
        puller, self._puller = self._puller, None
        with contextlib.suppress(Exception):
            if puller is not None:
                await puller.stop()
            await self._connection.js.delete_consumer(self._config.stream, self._consumer)

    async def close(self) -> None:
        task, self._in_progress = self._in_progress, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with anyio.move_on_after(self._config.connect_timeout):
            if self._connection.lost is None:
                await self._release()
        await self._connection.close()

    async def _release(self) -> None:
        """Give back what this attempt holds: the inbox first (the server drops an open
        pull request nobody listens to, which would otherwise take the messages given
        back), then, in shared mode, the messages (``-NAK``: delivered again now)."""
        puller, self._puller = self._puller, None
        undelivered = puller.undelivered() if puller is not None else []
        with contextlib.suppress(Exception):
            if puller is not None:
                await puller.stop()
            if self._held is not None:
                await self._held.release(undelivered)
            elif self.replayable:
                await self._connection.js.delete_consumer(self._config.stream, self._consumer)
