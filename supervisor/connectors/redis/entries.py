"""Stream entries as records, and records as stream entries.

Source side: an entry's fields become a dict of str (field name -> value), with its ID
under `id_key` when asked. A name or value that is not UTF-8 makes the entry a
`Rejected` record (the job's ``[records]`` policy decides), never a crash; the
dead-letter file then receives the entry with the undecodable bytes escaped.

Sink side: a dict record becomes one field per key, a ``str`` value as it is and any
other value as JSON; any other record (a list, a string, a number) becomes one field
``data`` holding its JSON. An empty dict is ``data = "{}"`` (an entry needs a field).
"""

from __future__ import annotations

from typing import Any

from supervisor.codec import Codec
from supervisor.protocols import Record, Rejected

RawEntry = tuple[bytes, list[bytes]]
"""An entry as RESP2 sends it: its ID and its flat list of names and values."""


class UndecodableEntry(ValueError):
    """A stream entry whose field names or values are not UTF-8 text."""


class PoisonEntry(ValueError):
    """A stream entry delivered more often than `max_deliveries` allows."""


def decode(entry_id: str, flat: list[bytes], id_key: str | None) -> Record | Rejected:
    """The entry as a record (a dict of str), or a `Rejected` if it is not UTF-8."""
    try:
        record: dict[str, Any] = {
            flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat) - 1, 2)
        }
    except UnicodeDecodeError as exc:
        return Rejected(
            escaped(entry_id, flat),
            UndecodableEntry(
                f"stream entry {entry_id} is not UTF-8 text ({exc.reason} at byte {exc.start} "
                "of a field name or value)"
            ),
        )
    if id_key is not None:
        record[id_key] = entry_id
    return record


def escaped(entry_id: str, flat: list[bytes]) -> dict[str, Any]:
    """The entry for a dead-letter file: bytes that are not UTF-8 as backslash escapes."""
    return {
        "id": entry_id,
        "fields": {
            flat[i].decode(errors="backslashreplace"): flat[i + 1].decode(errors="backslashreplace")
            for i in range(0, len(flat) - 1, 2)
        },
    }


def fields(record: Record, codec: Codec) -> dict[str, str]:
    """The fields a record is written as (see the module's doc); NaN and infinities as
    json writes them by default (``NaN``), as they always were here."""
    encode = codec.dumps_allow_nan
    if isinstance(record, dict) and record:
        return {
            str(name): value if isinstance(value, str) else encode(value)
            for name, value in record.items()
        }
    return {"data": encode(record)}
