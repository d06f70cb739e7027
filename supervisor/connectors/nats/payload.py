"""Message payloads to records and back, by the ``format`` key.

A source's payload that does not decode is a `supervisor.protocols.Rejected` record,
never a crash: its ``raw`` keeps the stream sequence, the subject and the payload
(as text, or as base64 when it is not UTF-8), which is what a dead-letter file gets.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from supervisor.codec import Codec
from supervisor.connectors.nats.config import PayloadFormat
from supervisor.protocols import Record, Rejected


def decode(data: bytes, fmt: PayloadFormat, codec: Codec) -> Record:
    """The record a payload holds; ValueError if it does not decode as `fmt`."""
    if fmt == "json":
        return codec.loads(data)
    if fmt == "text":
        return data.decode("utf-8")
    return base64.b64encode(data).decode("ascii")


def rejected(data: bytes, subject: str, stream_seq: int, error: Exception) -> Rejected:
    """A message the job's `[records]` policy decides on, as a dead letter shows it."""
    raw: dict[str, Any] = {"stream_seq": stream_seq, "subject": subject}
    try:
        raw["data"] = data.decode("utf-8")
    except UnicodeDecodeError:
        raw["data_base64"] = base64.b64encode(data).decode("ascii")
    return Rejected(raw, error)


def encode(record: Record, fmt: PayloadFormat, codec: Codec) -> bytes:
    """A record's payload: ValueError (or TypeError) if it has none in `fmt`."""
    if fmt == "text" and isinstance(record, str):
        return record.encode("utf-8")
    if fmt == "bytes-base64" and isinstance(record, str):
        try:
            return base64.b64decode(record, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"record is not base64: {exc}") from None
    return codec.dumps_utf8(record)
