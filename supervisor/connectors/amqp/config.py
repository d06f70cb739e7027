"""The ``amqp`` source's and sink's settings: the keys of their tables, kinds, defaults, docs.

Apart from the declaration so that the implementation can import them without
importing its package's `__init__` back. Both roles share the connection keys
(`AmqpConnection`): the broker's URL, the user and password, and TLS files.
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

PayloadFormat: TypeAlias = Literal["json", "text", "bytes-base64"]
Poison: TypeAlias = Literal["records", "dead_letter_exchange"]

SCHEMES = ("amqp", "amqps")
MAX_PREFETCH = 65_535
"""AMQP's prefetch count is a 16-bit field."""

_QUEUE = re.compile(r"[^\x00-\x1f]{1,255}")
_EXCHANGE = re.compile(r"[A-Za-z0-9_.:-]{0,255}", re.ASCII)
"""An exchange name as RabbitMQ accepts it; empty is the default exchange."""
_ROUTING_KEY = re.compile(r"[^\x00]{0,255}")
_FIELD = re.compile(r".{1,255}")


def broker_url() -> kinds.Convert:
    """``amqp://[user[:password]@]host[:port][/vhost]`` or ``amqps://...`` (TLS).

    A password inside the URL is a secret too: it is remembered, so it is redacted
    from everything shown from now on, and the URL is only ever shown redacted.
    """

    def convert(value: Any, _base: Path) -> str:
        if not isinstance(value, str):
            raise kinds.Invalid(
                f"expected a broker URL (amqp://host:5672/vhost), got {kinds.describe(value)}"
            )
        shown = secrets.redact_url(value)
        try:
            parts = urlsplit(value)
            port = parts.port
            password = parts.password
        except ValueError as exc:
            raise kinds.Invalid(f"expected a broker URL, got {shown!r} ({exc})") from None
        if password:
            secrets.remember(password)
        if parts.scheme not in SCHEMES or not parts.hostname:
            raise kinds.Invalid(
                f"expected amqp://host:port/vhost or amqps://host:port/vhost, got {shown!r}"
            )
        if port == 0 or parts.fragment or parts.path.count("/") > 1:
            raise kinds.Invalid(f"expected amqp://host:port/vhost, got {shown!r}")
        return value

    return convert


@dataclass(frozen=True, slots=True, kw_only=True)
class AmqpConnection(LoginKeys):
    """The keys both roles share: where the broker is and who we are to it."""

    url: str = field(
        metadata=setting(
            broker_url(),
            "The broker: amqp://host:5672/vhost (amqps:// for TLS). A user and password "
            "may be in it (prefer the keys below).",
        )
    )
    user: str | None = field(
        default=None,
        metadata=setting(
            kinds.text(re.compile(r".{1,255}"), "a user name"), "User name (overrides the URL's)."
        ),
    )
    connect_timeout: float = field(
        default=5.0,
        metadata=setting(
            kinds.duration(positive=True),
            "How long connecting, and each request to the broker, may take before the "
            "attempt fails (retryable).",
        ),
    )
    heartbeat: float = field(
        default=10.0,
        metadata=setting(
            kinds.duration(positive=True),
            "AMQP heartbeat: a broker silent for about twice this is taken as lost.",
        ),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class AmqpSourceConfig(AmqpConnection):
    """``type = "amqp"`` as a source: the messages of a queue, acknowledged at checkpoints."""

    queue: str = field(metadata=setting(kinds.text(_QUEUE, "a queue name"), "The queue to read."))
    prefetch: int | None = field(
        default=None,
        metadata=setting(
            kinds.integer(1),
            "Messages the broker hands us before we acknowledge (basic.qos). At least "
            "checkpoint.every_records; default twice that (at most 65535).",
        ),
    )
    max_deliveries: int = field(
        default=5,
        metadata=setting(
            kinds.integer(1),
            "A message delivered more often than this is poison (see `poison`).",
        ),
    )
    poison: Poison = field(
        default="records",
        metadata=setting(
            kinds.choice(*get_args(Poison)),
            '"records": a poison message goes to the job\'s [records] policy and is '
            'acknowledged at the next checkpoint; "dead_letter_exchange": it is rejected '
            "without requeue, so the queue's dead-letter exchange gets it.",
        ),
    )
    max_message_bytes: int = field(
        default=16 * 1024 * 1024,
        metadata=setting(
            kinds.integer(1),
            "A larger message is a bad record (the [records] policy), not a record.",
        ),
    )
    format: PayloadFormat = field(
        default="json",
        metadata=setting(
            kinds.choice(*get_args(PayloadFormat)),
            '"json": the body parsed as JSON; "text": as a UTF-8 string; '
            '"bytes-base64": the bytes as a base64 string. A body that does not decode '
            "is a bad record.",
        ),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class AmqpSinkConfig(AmqpConnection):
    """``type = "amqp"`` as a sink: publish each record to an exchange, confirmed at flush."""

    exchange: str = field(
        metadata=setting(
            kinds.text(_EXCHANGE, "an exchange name (letters, digits, - _ . :)"),
            'The exchange to publish to; "" is the default exchange (routing key = queue).',
        )
    )
    routing_key: str = field(
        default="",
        metadata=setting(
            kinds.text(_ROUTING_KEY, "a routing key (at most 255 characters)"),
            "The routing key of every message (or of those without routing_key_field).",
        ),
    )
    routing_key_field: str | None = field(
        default=None,
        metadata=setting(
            kinds.text(_FIELD, "a field name"),
            "Take each message's routing key from this field of the record (a string).",
        ),
    )
    persistent: bool = field(
        default=True,
        metadata=setting(
            kinds.boolean(), "Delivery mode 2: durable queues keep the message across restarts."
        ),
    )
    mandatory: bool = field(
        default=True,
        metadata=setting(
            kinds.boolean(),
            "A message the exchange routes to no queue fails the flush (else it is dropped "
            "by the broker).",
        ),
    )
    format: PayloadFormat = field(
        default="json",
        metadata=setting(
            kinds.choice(*get_args(PayloadFormat)),
            '"json": each record as compact JSON; "text": a string record as UTF-8 '
            '(others as JSON); "bytes-base64": a string record decoded from base64.',
        ),
    )
