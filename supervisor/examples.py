"""Example plugins used by the shipped `configs/` and shown in the README.

`enrich_order` is a processor, `enrich_orders` the same as a batch function;
`CountdownSource` is a complete third-party source, the same code the README walks
through.
"""

from __future__ import annotations

from typing import Any

import anyio

from supervisor.protocols import Batch, Offset


def enrich_order(record: dict[str, Any]) -> dict[str, Any] | None:
    """Add `total` to an order; drop orders with no items."""
    items = record.get("items") or []
    if not items:
        return None
    total = sum(item["price"] * item["quantity"] for item in items)
    return {**record, "total": round(total, 2)}


def enrich_orders(orders: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`enrich_order` as a batch function: the whole batch in one call."""
    return [enriched for order in orders if (enriched := enrich_order(order)) is not None]


class CountdownSource:
    """Counts down from `start` to 1, then ends. The offset is the next number to emit."""

    def __init__(self, start: int = 10, delay: float = 0.0) -> None:
        self._start = start
        self._delay = delay
        self._next = start

    async def open(self, offset: Offset | None) -> None:
        self._next = offset if isinstance(offset, int) else self._start

    async def read(self, max_records: int, wait: float) -> Batch:
        if self._delay:
            await anyio.sleep(min(self._delay, wait))
        stop = max(self._next - max_records, 0)
        records = [{"n": n} for n in range(self._next, stop, -1)]
        self._next = stop
        return Batch(records, offset=self._next, end=self._next == 0)

    async def close(self) -> None:
        pass
