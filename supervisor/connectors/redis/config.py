"""The ``redis`` source's and sink's settings: the keys of their tables, kinds, defaults
and docs.

Apart from the declaration so that the implementation can import them without
importing its package's `__init__` back. Nothing here imports the client library.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias, get_args
from urllib.parse import urlsplit

from supervisor import secrets
from supervisor.connectors import kinds, setting
from supervisor.connectors.credentials import LoginKeys

StartAt: TypeAlias = Literal["beginning", "end"]

ENTRY_ID = re.compile(r"(?P<ms>[0-9]{1,20})-(?P<seq>[0-9]{1,20})", re.ASCII)
"""A complete stream entry ID, ``<milliseconds>-<sequence>``."""
_U64 = 2**64 - 1


def parse_entry_id(text: object) -> tuple[int, int] | None:
    """``(ms, seq)`` of a complete entry ID, or None if `text` is not one."""
    if not isinstance(text, str):
        return None
    match = ENTRY_ID.fullmatch(text)
    if match is None:
        return None
    ms, seq = int(match["ms"]), int(match["seq"])
    return (ms, seq) if ms <= _U64 and seq <= _U64 else None


def redis_url() -> kinds.Convert:
    """``redis://[[user]:password@]host[:port][/db]`` or ``rediss://`` (TLS). A password
    in it is remembered as a secret at once, so no later message shows it."""

    def convert(value: Any, _base: Path) -> str:
        if not isinstance(value, str):
            raise kinds.Invalid(
                f"expected a redis:// or rediss:// URL, got {kinds.describe(value)}"
            )
        shown = secrets.redact_url(value)
        try:
            parts = urlsplit(value)
            if parts.password:
                secrets.remember(parts.password)
            port = parts.port  # ValueError when not a number in range
        except ValueError as exc:
            raise kinds.Invalid(f"expected a redis:// URL, got {shown!r} ({exc})") from None
        if parts.scheme not in {"redis", "rediss"}:
            raise kinds.Invalid(f"expected a redis:// or rediss:// URL, got {shown!r}")
        if not parts.hostname:
            raise kinds.Invalid(f"expected a URL with a host name, got {shown!r}")
        if port == 0:
            raise kinds.Invalid(f"expected a port from 1 to 65535, got {shown!r}")
        database = parts.path.strip("/")
        if database and not database.isdigit():
            raise kinds.Invalid(f"expected a database number as the URL's path, got {shown!r}")
        if parts.query or parts.fragment:
            raise kinds.Invalid(
                f"expected no ?options in the URL (use the job's keys), got {shown!r}"
            )
        return value

    return convert


_NAME = re.compile(r"[^\x00-\x20\x7f]{1,512}")


def _name(what: str) -> kinds.Convert:
    return kinds.text(_NAME, f"a {what} (1 to 512 characters, no spaces or control characters)")


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisConnectionConfig(LoginKeys):
    """The keys both roles share: where the server is and how to log in."""

    url: str = field(
        default="redis://127.0.0.1:6379/0",
        metadata=setting(
            redis_url(),
            "The server: redis://host:port/db, or rediss:// for TLS. A password in it is "
            "a secret too, but prefer password_file or password_credential.",
        ),
    )
    username: str | None = field(
        default=None, metadata=setting(_name("user name"), "The ACL user (Redis 6+).")
    )
    stream: str = field(metadata=setting(_name("stream key"), "The stream's key."))


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisSourceConfig(RedisConnectionConfig):
    """``type = "redis"`` as a ``[source]``: the entries of a stream."""

    group: str | None = field(
        default=None,
        metadata=setting(
            _name("consumer group name"),
            "Shared mode: read through this consumer group (daemons in one group split the "
            "stream). Absent: replay mode, the position is the job's snapshot.",
        ),
    )
    consumer: str | None = field(
        default=None,
        metadata=setting(
            _name("consumer name"),
            "Shared mode: this daemon's consumer name; default host name + '-' + job name. "
            "Unique per daemon, and the same across its restarts.",
        ),
    )
    start: StartAt = field(
        default="beginning",
        metadata=setting(
            kinds.choice(*get_args(StartAt)),
            "Replay mode: where a job without a snapshot starts. Shared mode: where a group "
            "created by the job starts (0 or $).",
        ),
    )
    create_group: bool = field(
        default=True,
        metadata=setting(
            kinds.boolean(),
            "Shared mode: create the group (and the stream) if absent; false: a missing "
            "group is an error.",
        ),
    )
    claim_idle: float = field(
        default=60.0,
        metadata=setting(
            kinds.duration(positive=True),
            "Shared mode: claim entries pending this long with another consumer (one that "
            "died); at least twice checkpoint.interval.",
        ),
    )
    max_deliveries: int = field(
        default=10,
        metadata=setting(
            kinds.integer(1),
            "Shared mode: an entry delivered more often goes to the [records] policy.",
        ),
    )
    include_id: bool = field(
        default=False, metadata=setting(kinds.boolean(), "Add the entry's ID to each record.")
    )
    id_key: str = field(
        default="_id",
        metadata=setting(_name("field name"), "The record key include_id puts the ID under."),
    )
    block: float = field(
        default=1.0,
        metadata=setting(
            kinds.duration(positive=True),
            "Longest a single blocking read waits on the server (XREAD BLOCK).",
        ),
    )
    timeout: float = field(
        default=10.0,
        metadata=setting(
            kinds.duration(positive=True),
            "Connecting, and any reply beyond `block`: longer is a broken connection.",
        ),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisSinkConfig(RedisConnectionConfig):
    """``type = "redis"`` as a ``[sink]``: one stream entry per record (XADD)."""

    maxlen: int | None = field(
        default=None,
        metadata=setting(
            kinds.integer(1),
            "Trim the stream to about this many entries (XADD MAXLEN ~); absent: no trimming.",
        ),
    )
    timeout: float = field(
        default=10.0,
        metadata=setting(kinds.duration(positive=True), "Connecting, and waiting for any reply."),
    )
