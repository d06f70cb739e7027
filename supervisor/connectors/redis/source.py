"""The ``redis`` source in replay mode (no ``group``): XREAD from the snapshot's entry ID.

The offset is the ID of the last entry read (``"1700000000000-0"``): the stream keeps
no state for us, so reopening at an ID yields the same entries in the same order
(`replayable`), `offset --set` takes any entry ID, and a sink that keeps its own offset
gives exactly-once. With ``start = "end"`` and no snapshot, `position` pins the
stream's last ID at open, so a retry before the first checkpoint skips nothing.

`StreamSource` holds what both modes share (connecting, decoding, progress); the
shared mode (a consumer group) is `supervisor.connectors.redis.group.GroupSource`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from supervisor.connectors.redis import entries
from supervisor.connectors.redis.config import RedisSourceConfig, parse_entry_id
from supervisor.connectors.redis.connection import (
    connect,
    execute,
    pairs,
    server_name,
    text,
    translated,
)
from supervisor.errors import BrokerRefused
from supervisor.protocols import Batch, Offset, Record, Rejected

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = structlog.get_logger("supervisor.connectors.redis")

PROGRESS_EVERY = 1.0
"""Seconds between refreshes of what `progress` shows (one XINFO each)."""


def check_replay_offset(offset: Offset) -> str:
    """The offset as an entry ID; ValueError saying why if it is not one."""
    if parse_entry_id(offset) is None:
        raise ValueError(
            f'a redis replay offset is a stream entry ID such as "1700000000000-0" '
            f"(milliseconds-sequence), got {offset!r}"
        )
    assert isinstance(offset, str)
    return offset


class StreamSource:
    """What both modes share: the client, decoding entries, and the cached progress."""

    def __init__(self, config: RedisSourceConfig, job: str) -> None:
        self._config = config
        self._job = job
        self._client: Redis | None = None
        self._id_key = config.id_key if config.include_id else None
        self._view: dict[str, object] = {}
        self._view_due = 0.0

    @property
    def client(self) -> Redis:
        if self._client is None:
            raise RuntimeError("redis source used before open()")
        return self._client

    async def _connect(self) -> None:
        config = self._config
        self._client = await connect(
            config,
            "source",
            socket_timeout=config.block + config.timeout,
            connect_timeout=config.timeout,
        )

    async def _call(self, *args: Any, key: str = "stream") -> Any:
        with translated(self._config, "source", key):
            return await execute(self.client, *args)

    async def _stream_info(self) -> dict[str, Any]:
        """XINFO STREAM as a dict; empty when the stream does not exist (yet)."""
        import redis.exceptions

        with translated(self._config, "source", "stream"):
            try:
                reply = await execute(self.client, "XINFO", "STREAM", self._config.stream)
            except redis.exceptions.ResponseError as exc:
                if "no such key" in str(exc):
                    return {}
                raise
        return pairs(reply)

    def _block_args(self, wait: float) -> list[object]:
        """``BLOCK ms`` for a read that may wait `wait` s (none for no wait: 0 is forever)."""
        wait = min(wait, self._config.block)
        return ["BLOCK", max(int(wait * 1000), 1)] if wait > 0 else []

    def _decode(self, raw: list[Any], records: list[Record], rejects: list[Rejected]) -> list[str]:
        """Append each raw entry to `records` or `rejects`; return their IDs in order."""
        ids = []
        for entry_id_raw, flat in raw:
            entry_id = text(entry_id_raw)
            ids.append(entry_id)
            if flat is None:  # deleted while pending: nothing to deliver, only to ack
                continue
            decoded = entries.decode(entry_id, flat, self._id_key)
            (rejects if isinstance(decoded, Rejected) else records).append(decoded)
        return ids

    def _progress_due(self) -> bool:
        now = anyio.current_time()
        if now < self._view_due:
            return False
        self._view_due = now + PROGRESS_EVERY
        return True

    def progress(self) -> Mapping[str, object] | None:
        return dict(self._view) if self._view else None

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


class ReplaySource(StreamSource):
    """XREAD from the last entry ID read; the snapshot holds the position."""

    replayable = True

    def __init__(self, config: RedisSourceConfig, job: str) -> None:
        super().__init__(config, job)
        self._last = "0-0"
        self._has_position = False
        self._pinned = False

    @staticmethod
    def check_offset(offset: Offset) -> None:
        check_replay_offset(offset)

    async def open(self, offset: Offset | None) -> None:
        if offset is not None:
            try:
                self._last = check_replay_offset(offset)
            except ValueError as exc:
                raise BrokerRefused(
                    f"source.group: the snapshot's offset {offset!r} is not an entry ID (was "
                    "the job in shared mode?); set one with `supervisor offset JOB --set ID`"
                ) from exc
            self._has_position = True
        await self._connect()
        info = await self._stream_info()
        if offset is None and self._config.start == "end":
            self._last = text(info.get("last-generated-id", b"0-0"))
            self._has_position = self._pinned = True
        elif offset is not None and info:
            self._warn_if_trimmed(info)
        self._show(info)

    def position(self) -> Offset | None:
        return self._last if self._pinned else None

    async def read(self, max_records: int, wait: float) -> Batch:
        reply = await self._call(
            "XREAD",
            "COUNT",
            max_records,
            *self._block_args(wait),
            "STREAMS",
            self._config.stream,
            self._last,
        )
        records: list[Record] = []
        rejects: list[Rejected] = []
        if reply:
            ids = self._decode(reply[0][1], records, rejects)
            if ids:
                self._last = ids[-1]
                self._has_position = True
        if self._progress_due():
            self._show(await self._stream_info())
        return Batch(records, self._last if self._has_position else None, rejects=rejects)

    def _warn_if_trimmed(self, info: Mapping[str, Any]) -> None:
        deleted = parse_entry_id(text(info.get("max-deleted-entry-id", b"0-0")))
        ours = parse_entry_id(self._last)
        if deleted is not None and ours is not None and deleted > ours:
            log.warning(
                "redis.entries_trimmed",
                job=self._job,
                offset=self._last,
                deleted_up_to=text(info["max-deleted-entry-id"]),
                server=server_name(self._config),
                stream=self._config.stream,
            )

    def _show(self, info: Mapping[str, Any]) -> None:
        stream_last = text(info.get("last-generated-id", b"0-0")) if info else "0-0"
        ours = parse_entry_id(self._last) or (0, 0)
        theirs = parse_entry_id(stream_last) or (0, 0)
        view: dict[str, object] = {
            "mode": "replay",
            "position": self._last if self._has_position else None,
            "stream_last_id": stream_last,
            "stream_length": int(info.get("length", 0)) if info else 0,
        }
        if ours >= theirs:
            view["lag"] = 0
        else:
            # XREAD keeps no count of what lies after an ID; entry IDs are milliseconds.
            view["behind_ms"] = theirs[0] - ours[0]
        self._view = view
