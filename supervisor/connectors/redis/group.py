"""The ``redis`` source in shared mode (``group`` set): XREADGROUP through a consumer group.

The group owns the position and spreads entries over every consumer (daemon) in it.
At open, the group is created if absent (``start``: from ``0`` or ``$``, with
MKSTREAM) and this consumer first re-reads its own pending entries (ID ``0``): the ones
a crash left unacknowledged. Then new entries (``>``), and every ``claim_idle / 2``
XAUTOCLAIM of entries pending longer than ``claim_idle`` with any consumer (one that
died). Consumers are never deleted: XGROUP DELCONSUMER drops their pending entries.

An entry is acknowledged (XACK) only in `commit`, after the snapshot covering it is
durable. Re-read and claimed entries have their delivery counts looked up (XPENDING);
one delivered more than ``max_deliveries`` times becomes a `Rejected` record for the
job's ``[records]`` policy, and is acknowledged with the rest.

The offset is informational (``{"group", "last", "read"}``: the last entry ID
delivered and a running count of deliveries, so it changes with every batch);
`offset --set` is refused.
"""

from __future__ import annotations

import socket
from typing import Any

import anyio

from supervisor.connectors.redis.config import RedisSourceConfig
from supervisor.connectors.redis.connection import execute, pairs, server_name, text, translated
from supervisor.connectors.redis.entries import PoisonEntry, escaped
from supervisor.connectors.redis.source import StreamSource
from supervisor.errors import BrokerRefused
from supervisor.protocols import Batch, Offset, Record, Rejected

ACK_SLICE = 4096
"""IDs per XACK command."""


def default_consumer(job: str) -> str:
    return f"{socket.gethostname()}-{job}"


def refuse_offset() -> None:
    raise ValueError(
        "in shared mode (source.group set) the consumer group owns the position: move it on "
        "the server instead, e.g. XGROUP SETID <stream> <group> <entry-id>"
    )


class GroupSource(StreamSource):
    """XREADGROUP as one consumer of a group; XACK at each checkpoint."""

    replayable = False

    def __init__(self, config: RedisSourceConfig, job: str) -> None:
        super().__init__(config, job)
        assert config.group is not None
        self._group = config.group
        self._consumer = config.consumer or default_consumer(job)
        self._read = 0
        """Entries delivered so far (all attempts): the offset's ``read``."""
        self._last: str | None = None
        self._history: str | None = "0"
        """Where the re-reading of our own pending entries stands; None once done."""
        self._claim_cursor = "0-0"
        self._claim_due = 0.0
        self._unacked: list[tuple[int, list[str]]] = []
        """(``read`` after a batch, its entry IDs), oldest first: what `commit` acks."""
        self._held: set[str] = set()
        """Every ID delivered and not yet acknowledged: never claimed back from ourselves."""

    @staticmethod
    def check_offset(offset: Offset) -> None:
        refuse_offset()

    async def open(self, offset: Offset | None) -> None:
        if isinstance(offset, dict) and offset.get("group") == self._group:
            read, last = offset.get("read"), offset.get("last")
            self._read = read if isinstance(read, int) and not isinstance(read, bool) else 0
            self._last = last if isinstance(last, str) else None
        await self._connect()
        await self._join_group()
        self._claim_due = anyio.current_time()
        await self._refresh()

    async def _join_group(self) -> None:
        config = self._config
        if config.create_group:
            import redis.exceptions

            start = "0" if config.start == "beginning" else "$"
            with translated(config, "source", "group"):
                try:
                    await execute(
                        self.client,
                        "XGROUP",
                        "CREATE",
                        config.stream,
                        self._group,
                        start,
                        "MKSTREAM",
                    )
                except redis.exceptions.ResponseError as exc:
                    if not str(exc).startswith("BUSYGROUP"):  # the group exists: fine
                        raise
            return
        groups = await self._groups()
        if groups is None:
            raise BrokerRefused(
                f'source.stream: no stream "{config.stream}" on {server_name(config)} '
                "(create_group = false)"
            )
        if self._group not in groups:
            raise BrokerRefused(
                f'source.group: no consumer group "{self._group}" on stream "{config.stream}" '
                f"at {server_name(config)} (create it with XGROUP CREATE, or set "
                "create_group = true)"
            )

    async def _groups(self) -> dict[str, dict[str, Any]] | None:
        """XINFO GROUPS by name; None when the stream does not exist."""
        import redis.exceptions

        with translated(self._config, "source", "stream"):
            try:
                reply = await execute(self.client, "XINFO", "GROUPS", self._config.stream)
            except redis.exceptions.ResponseError as exc:
                if "no such key" in str(exc):
                    return None
                raise
        found = {}
        for item in reply:
            group = pairs(item)
            found[text(group.get("name", b""))] = group
        return found

    async def read(self, max_records: int, wait: float) -> Batch:
        records: list[Record] = []
        rejects: list[Rejected] = []
        ids: list[str] = []
        if self._history is not None:
            # Our own pending entries first: delivered before a crash, never acknowledged.
            raw = await self._readgroup(max_records, self._history, [])
            if raw:
                self._history = text(raw[-1][0])
                ids = await self._deliver(raw, records, rejects, counted=True)
            else:
                self._history = None
        if not ids and anyio.current_time() >= self._claim_due:
            ids = await self._claim(max_records, records, rejects)
        if not ids:
            until_claim = max(self._claim_due - anyio.current_time(), 0.0)
            raw = await self._readgroup(max_records, ">", self._block_args(min(wait, until_claim)))
            ids = await self._deliver(raw, records, rejects, counted=False)
        if ids:
            self._read += len(ids)
            self._last = ids[-1]
            self._unacked.append((self._read, ids))
            self._held.update(ids)
        if self._progress_due():
            await self._refresh()
        return Batch(records, self._offset(), rejects=rejects)

    def _offset(self) -> Offset | None:
        if self._last is None:
            return None
        return {"group": self._group, "last": self._last, "read": self._read}

    async def _readgroup(self, count: int, start: str, block: list[object]) -> list[Any]:
        reply = await self._call(
            "XREADGROUP",
            "GROUP",
            self._group,
            self._consumer,
            "COUNT",
            count,
            *block,
            "STREAMS",
            self._config.stream,
            start,
            key="group",
        )
        return list(reply[0][1]) if reply else []

    async def _claim(self, count: int, records: list[Record], rejects: list[Rejected]) -> list[str]:
        """One XAUTOCLAIM step of entries idle longer than `claim_idle`."""
        config = self._config
        reply = await self._call(
            "XAUTOCLAIM",
            config.stream,
            self._group,
            self._consumer,
            int(config.claim_idle * 1000),
            self._claim_cursor,
            "COUNT",
            count,
            key="group",
        )
        self._claim_cursor = text(reply[0])
        if self._claim_cursor == "0-0":  # a full pass: the next one in claim_idle / 2
            self._claim_due = anyio.current_time() + max(config.claim_idle / 2, 0.1)
        raw = [
            entry for entry in reply[1] if entry is not None and text(entry[0]) not in self._held
        ]
        return await self._deliver(raw, records, rejects, counted=True)

    async def _deliver(
        self,
        raw: list[Any],
        records: list[Record],
        rejects: list[Rejected],
        *,
        counted: bool,
    ) -> list[str]:
        """Decode `raw`; with `counted`, send entries delivered too often to `rejects`."""
        if not raw:
            return []
        if not counted:
            return self._decode(raw, records, rejects)
        deliveries = await self._deliveries(text(raw[0][0]), text(raw[-1][0]), len(raw))
        limit = self._config.max_deliveries
        fresh = []
        for entry in raw:
            entry_id = text(entry[0])
            times = deliveries.get(entry_id, 0)
            if times > limit and entry[1] is not None:
                rejects.append(
                    Rejected(
                        escaped(entry_id, entry[1]),
                        PoisonEntry(
                            f"stream entry {entry_id} was delivered {times} times, more than "
                            f"source.max_deliveries = {limit}: the job never got past it"
                        ),
                    )
                )
            else:
                fresh.append(entry)
        self._decode(fresh, records, rejects)
        return [text(entry[0]) for entry in raw]

    async def _deliveries(self, first: str, last: str, count: int) -> dict[str, int]:
        """Delivery counts of our pending entries from `first` to `last` (XPENDING)."""
        reply = await self._call(
            "XPENDING",
            self._config.stream,
            self._group,
            first,
            last,
            count + len(self._held),
            self._consumer,
            key="group",
        )
        return {text(item[0]): int(item[3]) for item in reply}

    async def commit(self, offset: Offset) -> None:
        upto = offset.get("read") if isinstance(offset, dict) else None
        if not isinstance(upto, int):
            return
        done = 0
        while done < len(self._unacked) and self._unacked[done][0] <= upto:
            done += 1
        ids = [entry_id for _, chunk in self._unacked[:done] for entry_id in chunk]
        for start in range(0, len(ids), ACK_SLICE):
            await self._call(
                "XACK",
                self._config.stream,
                self._group,
                *ids[start : start + ACK_SLICE],
                key="group",
            )
        del self._unacked[:done]
        self._held.difference_update(ids)
        if self._progress_due():
            await self._refresh()

    async def _refresh(self) -> None:
        groups = await self._groups() or {}
        group = groups.get(self._group, {})
        lag = group.get("lag")
        view: dict[str, object] = {
            "mode": "shared",
            "group": self._group,
            "consumer": self._consumer,
            "position": self._last,
            "unacked": len(self._held),
            "group_pending": int(group.get("pending", 0)),
            "group_last_delivered": text(group.get("last-delivered-id", b"")),
        }
        if isinstance(lag, int):
            view["lag"] = lag  # entries added to the stream that the group has not read
        self._view = view
