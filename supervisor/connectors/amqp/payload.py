"""Message bodies to records and back, by the ``format`` key.

A body that does not decode is a `supervisor.protocols.Rejected` record, never a
crash: its ``raw`` keeps the queue, the message id and routing key, and the body (as
text, or as base64 when it is not UTF-8), which is what a dead-letter file gets.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from supervisor.codec import Codec
from supervisor.connectors.amqp.config import PayloadFormat
from supervisor.protocols import Record, Rejected

PREVIEW_BYTES = 4096
"""How much of a body too large to be a record a dead letter keeps."""

CONTENT_TYPES: dict[PayloadFormat, str] = {
    "json": "application/json",
    "text": "text/plain",
    "bytes-base64": "application/octet-stream",
}


def decode(data: bytes, fmt: PayloadFormat, codec: Codec) -> Record:
    """The record a body holds; ValueError if it does not decode as `fmt`."""
    if fmt == "json":
        return codec.loads(data)
    if fmt == "text":
        return data.decode("utf-8")
    return base64.b64encode(data).decode("ascii")


def rejected(
    data: bytes, queue: str, message_id: str | None, routing_key: str, error: Exception
) -> Rejected:
    """A message the job's `[records]` policy decides on, as a dead letter shows it."""
    raw: dict[str, Any] = {"queue": queue, "routing_key": routing_key}
    if message_id is not None:
        raw["message_id"] = message_id
    if len(data) > PREVIEW_BYTES:
        raw["size"] = len(data)
        data = data[:PREVIEW_BYTES]
    try:
        raw["data"] = data.decode("utf-8")
    except UnicodeDecodeError:
        raw["data_base64"] = base64.b64encode(data).decode("ascii")
    return Rejected(raw, error)


def encode(record: Record, fmt: PayloadFormat, codec: Codec) -> bytes:
    """A record's body: ValueError (or TypeError) if it has none in `fmt`."""
    if fmt == "text" and isinstance(record, str):
        return record.encode("utf-8")
    if fmt == "bytes-base64" and isinstance(record, str):
        try:
            return base64.b64decode(record, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"record is not base64: {exc}") from None
    return codec.dumps_utf8(record)
