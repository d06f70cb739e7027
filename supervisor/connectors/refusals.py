"""Records a sink cannot encode: each a bad record for the job's ``[records]`` policy.

A record can reach a sink that its format cannot hold: ``NaN`` or an infinity for JSON
(the ``jsonl`` source reads them, as `json` does), a lone surrogate for UTF-8, a value
`json` cannot write at all (a processor's ``datetime`` with ``codec = "json"``). Failing
the attempt for it stops the job on one record, and a retry meets the same record again.
So a sink encodes a batch record by record when the batch as a whole fails to encode,
and hands the records that fail on their own to the job's ``[records]`` policy (the
sink's optional ``reject_with`` hook, `supervisor.protocols`): skipped and counted,
dead-lettered with the encoder's error, or (``on_error = "fail"``) the attempt fails
with that error, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from supervisor.protocols import Record, Rejected, RejectRecords

T = TypeVar("T")

ENCODE_ERRORS = (TypeError, ValueError, RecursionError)
"""What `json`, msgspec and `str.encode` raise for a value they cannot write (a
UnicodeEncodeError is a ValueError)."""


class RefusesRecords:
    """A sink that hands the records it cannot encode to the records policy: the sink's
    optional `reject_with` hook (`supervisor.protocols`), and `_refuse` to use it."""

    _reject: RejectRecords | None = None

    def reject_with(self, reject: RejectRecords) -> None:
        self._reject = reject

    async def _refuse(
        self, refused: Sequence[Rejected], unjudged: Callable[[Rejected], Exception] | None = None
    ) -> None:
        """Hand `refused` to the records policy; with no policy attached (a sink used on its
        own), raise the first one's error, as `unjudged` makes it (default: the error)."""
        if not refused:
            return
        if self._reject is None:
            first = refused[0]
            raise (unjudged(first) if unjudged is not None else first.error)
        await self._reject(refused)


def encode_each(
    records: Sequence[Record], encode: Callable[[Record], T]
) -> tuple[list[T], list[Rejected]]:
    """Each record encoded on its own, in order, and those that fail with their error."""
    encoded: list[T] = []
    refused: list[Rejected] = []
    for record in records:
        try:
            encoded.append(encode(record))
        except ENCODE_ERRORS as exc:
            refused.append(Rejected(record, exc))
    return encoded, refused
