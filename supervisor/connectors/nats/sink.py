"""The ``nats`` sink: each record published to a JetStream subject, acks awaited in `flush`.

`write` publishes asynchronously (the server's PubAck comes back later); `flush`
returns once every PubAck since the last flush arrived, so the checkpoint that
follows covers only records the stream stored.

With ``msg_id = "auto"`` and a replayable source (`resume_from` was called), each
record gets a ``Nats-Msg-Id`` made of the job's name, the source position the
records follow (where the attempt resumed, then each flush's offset) and the
record's index since then. An attempt is sequential (nothing is written after a
flush until that checkpoint's snapshot is durable), so an attempt that resumes
from a checkpoint writes the same records under the same ids as the one that
crashed after it, and the stream's duplicate window drops them (docs/nats.md says
exactly when that makes the pipeline exactly-once).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from supervisor.codec import JSON, Codec
from supervisor.connectors.nats import payload
from supervisor.connectors.nats.config import NatsSinkConfig
from supervisor.connectors.nats.connection import Connection, translate
from supervisor.connectors.refusals import ENCODE_ERRORS, RefusesRecords
from supervisor.errors import BrokerRefused, BrokerUnavailable
from supervisor.protocols import Offset, Record, Rejected

if TYPE_CHECKING:
    from nats.js.api import PubAck

log = structlog.get_logger("supervisor.sink.nats")

MSG_ID = "Nats-Msg-Id"


def position_key(offset: Offset | None) -> str:
    """A short, stable name for a source position (any TOML value)."""
    text = json.dumps(offset, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class NatsSink(RefusesRecords):
    """`supervisor.protocols.Sink` publishing to ``subject`` (see the module doc)."""

    def __init__(self, config: NatsSinkConfig, job: str, *, codec: Codec = JSON) -> None:
        self._config = config
        self._codec = codec
        self._job = job
        self._connection = Connection(config, "sink", f"stream-supervisor {job}")
        self._pending: list[asyncio.Future[PubAck]] = []
        self._base: str | None = None
        """The position key records are numbered after, when ids are on."""
        self._index = 0
        self.duplicates = 0
        """Records the stream had already (dropped by its duplicate window)."""

    @property
    def _where(self) -> str:
        return f'subject "{self._config.subject}" on {self._connection.server}'

    async def open(self) -> Offset | None:
        await self._connection.open()
        if self._config.stream is not None:
            await self._check_stream(self._config.stream)
        return None

    async def _check_stream(self, stream: str) -> None:
        import nats.js.errors

        js = self._connection.js
        where = f'stream "{stream}" on {self._connection.server}'

        async def info() -> Any:
            try:
                return await js.stream_info(stream)
            except nats.js.errors.NotFoundError:
                raise BrokerRefused(f"sink.stream: no {where}") from None

        found = await self._connection.call(info(), "reading the stream's info")
        subjects = list(found.config.subjects or [])
        if not any(_matches(pattern, self._config.subject) for pattern in subjects):
            raise BrokerRefused(
                f'sink.subject: {where} does not capture "{self._config.subject}" '
                f"(its subjects: {', '.join(subjects) or 'none'})"
            )

    def resume_from(self, offset: Offset | None) -> None:
        if self._config.msg_id == "auto":
            self._base = position_key(offset)
            self._index = 0

    async def write(self, records: Sequence[Record]) -> None:
        refused = await self._connection.call(
            self._publish_all(records), f"publishing to {self._where}"
        )
        await self._refuse(refused, self._unpublishable)

    def _unpublishable(self, refused: Rejected) -> Exception:
        return BrokerRefused(
            f"sink.format: a record cannot be published as {self._config.format}: {refused.error}"
        )

    async def _publish_all(self, records: Sequence[Record]) -> list[Rejected]:
        """Publish the records that encode; those that do not, with their errors."""
        import nats.errors

        publish = self._connection.js.publish_async
        fmt = self._config.format
        subject = self._config.subject
        pending = self._pending
        codec = self._codec
        refused: list[Rejected] = []
        for record in records:
            try:
                data = payload.encode(record, fmt, codec)
            except ENCODE_ERRORS as exc:
                refused.append(Rejected(record, exc))
                continue
            headers = None
            if self._base is not None:
                headers = {MSG_ID: f"{self._job}:{self._base}:{self._index}"}
                self._index += 1
            try:
                # No wait_stall: the client's limit (PUBLISH_MAX_PENDING) is far above what
                # one checkpoint publishes, and `flush` bounds the wait for the acks.
                pending.append(await publish(subject, data, headers=headers))
            except nats.errors.MaxPayloadError:
                limit = self._connection.nc.max_payload
                raise BrokerRefused(
                    f"sink.subject: a record of {len(data)} bytes is larger than the server's "
                    f"max_payload ({limit} bytes) on {self._connection.server}"
                ) from None
        return refused

    async def flush(self, offset: Offset | None) -> None:
        pending, self._pending = self._pending, []
        if pending:
            await self._await_acks(pending)
        if self._base is not None:
            # The next records follow `offset`: name them after it (see the module doc).
            self._base = position_key(offset)
            self._index = 0

    async def _await_acks(self, pending: list[asyncio.Future[PubAck]]) -> None:
        import nats.js.errors

        timeout = self._config.connect_timeout * 2
        with anyio.move_on_after(timeout):
            # A lost connection answers none of them: fail at once rather than at the timeout.
            while self._connection.lost is None:
                _, waiting_for = await asyncio.wait(pending, timeout=0.25)
                if not waiting_for:
                    break
        waiting = sum(1 for future in pending if not future.done())
        if waiting:
            for future in pending:
                if future.done() and not future.cancelled():
                    future.exception()  # retrieved, so asyncio does not log it as lost
                future.cancel()
            raise BrokerUnavailable(
                f"sink: {waiting} of {len(pending)} publishes to {self._where} not acknowledged "
                f"within {timeout:g} s ({self._connection.lost or 'no answer'})"
            )
        errors = [error for future in pending if (error := future.exception()) is not None]
        if errors:
            # Every exception retrieved above, so asyncio logs none as lost; the first says why.
            if isinstance(errors[0], nats.js.errors.NoStreamResponseError):
                raise BrokerRefused(f"sink.subject: no stream captures {self._where}")
            raise translate(errors[0], "sink", self._connection.server, doing="publishing")
        for future in pending:
            ack = future.result()
            self.duplicates += bool(ack.duplicate)
            if self._config.stream is not None and ack.stream != self._config.stream:
                raise BrokerRefused(
                    f'sink.stream: {self._where} is stored by stream "{ack.stream}", '
                    f'not "{self._config.stream}"'
                )

    async def close(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pending = []
        await self._connection.close()


def _matches(pattern: str, subject: str) -> bool:
    """Whether a stream's subject `pattern` (``*`` and ``>`` wildcards) captures `subject`."""
    want = pattern.split(".")
    have = subject.split(".")
    for index, token in enumerate(want):
        if token == ">":
            return len(have) > index
        if index >= len(have) or (token != "*" and token != have[index]):
            return False
    return len(want) == len(have)
