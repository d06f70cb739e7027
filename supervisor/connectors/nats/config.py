"""The ``nats`` source's and sink's settings: the keys of their tables, kinds, defaults, docs.

Apart from the declaration so that the implementation can import them without
importing its package's `__init__` back. Both roles share the connection keys
(`NatsConnection`): the servers, the user and password or token, and TLS files.
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
from supervisor.secrets import Secret

PayloadFormat: TypeAlias = Literal["json", "text", "bytes-base64"]
StartAt: TypeAlias = Literal["beginning", "end"]
MsgId: TypeAlias = Literal["auto", "none"]

SCHEMES = ("nats", "tls")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,255}", re.ASCII)
"""A stream or consumer name: the server refuses ``.``, ``*``, ``>`` and spaces."""
_LITERAL_SUBJECT = re.compile(r"[^\s.*>]+(\.[^\s.*>]+)*", re.ASCII)
_TOKEN = r"(?:[^\s.*>]+|\*)"
_SUBJECT = re.compile(rf"{_TOKEN}(?:\.{_TOKEN})*(?:\.>)?|>", re.ASCII)


def server_urls() -> kinds.Convert:
    """One server URL or an array of them: ``nats://host:port`` or ``tls://host:port``.

    A password inside a URL (``nats://user:pass@host``) is a secret too: it is
    remembered, so it is redacted from everything shown from now on.
    """

    def convert(value: Any, _base: Path) -> tuple[str, ...]:
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(item, str) for item in items):
            shown = kinds.describe([] if isinstance(value, list) else value)
            raise kinds.Invalid(
                f"expected a server URL (nats://host:4222) or an array of them, got {shown}"
            )
        urls: list[str] = []
        for item in items:
            shown = secrets.redact_url(item)
            try:
                parts = urlsplit(item)
                port = parts.port
            except ValueError as exc:
                raise kinds.Invalid(f"expected a server URL, got {shown!r} ({exc})") from None
            if parts.scheme not in SCHEMES or not parts.hostname:
                raise kinds.Invalid(f"expected nats://host:port or tls://host:port, got {shown!r}")
            if parts.path not in ("", "/") or parts.query or parts.fragment or port == 0:
                raise kinds.Invalid(f"expected nats://host:port, got {shown!r}")
            if parts.password:
                secrets.remember(parts.password)
            urls.append(item)
        return tuple(urls)

    return convert


def name() -> kinds.Convert:
    return kinds.text(_NAME, "a stream or consumer name (letters, digits, - and _)")


def subject() -> kinds.Convert:
    return kinds.text(_SUBJECT, "a NATS subject (tokens separated by dots; * and > wildcards)")


@dataclass(frozen=True, slots=True, kw_only=True)
class NatsConnection(LoginKeys):
    """The keys both roles share: where the server is and who we are to it."""

    url: tuple[str, ...] = field(
        metadata=setting(
            server_urls(),
            "The server: nats://host:4222 (tls://host:4222 for TLS), or an array of "
            "servers of one cluster.",
        )
    )
    user: str | None = field(
        default=None, metadata=setting(kinds.text(re.compile(r".+"), "a user name"), "User name.")
    )
    token: Secret | None = field(
        default=None, metadata=setting(kinds.secret(), "An authentication token instead of a user.")
    )
    token_env: str | None = field(
        default=None,
        metadata=setting(kinds.environment_name(), "Environment variable holding the token."),
    )
    token_file: Path | None = field(
        default=None, metadata=setting(kinds.path(), "File holding the token.")
    )
    token_credential: str | None = field(
        default=None,
        metadata=setting(
            kinds.credential_name(), "systemd credential (LoadCredential=) holding the token."
        ),
    )
    connect_timeout: float = field(
        default=5.0,
        metadata=setting(
            kinds.duration(positive=True),
            "How long connecting, and each request to the server, may take before the "
            "attempt fails (retryable).",
        ),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class NatsSourceConfig(NatsConnection):
    """``type = "nats"`` as a source: the messages of a JetStream stream."""

    stream: str = field(metadata=setting(name(), "The JetStream stream to read."))
    subject: str | None = field(
        default=None,
        metadata=setting(subject(), "Only messages whose subject matches this filter."),
    )
    durable: str | None = field(
        default=None,
        metadata=setting(
            name(),
            "Shared mode: the durable pull consumer (explicit ack) every daemon of the "
            "job shares. Unset: replay mode, the position is the snapshot's stream sequence.",
        ),
    )
    start: StartAt = field(
        default="beginning",
        metadata=setting(
            kinds.choice(*get_args(StartAt)),
            "Where a job without a snapshot (replay) or a consumer we create (shared) starts.",
        ),
    )
    create_consumer: bool = field(
        default=True,
        metadata=setting(
            kinds.boolean(), "Shared mode: create the durable consumer if it does not exist."
        ),
    )
    ack_wait: float = field(
        default=30.0,
        metadata=setting(
            kinds.duration(positive=True),
            "Shared mode: how long the server waits for an ack before redelivering; "
            "checkpoint.interval must be at most half of it.",
        ),
    )
    max_ack_pending: int = field(
        default=20_000,
        metadata=setting(
            kinds.integer(1),
            "Shared mode: messages delivered but not acknowledged, per consumer; at least "
            "checkpoint.every_records.",
        ),
    )
    max_deliveries: int = field(
        default=5,
        metadata=setting(
            kinds.integer(1),
            "Shared mode: a message delivered more often than this goes to the [records] "
            "policy (a poison message) and is acknowledged at the next checkpoint.",
        ),
    )
    format: PayloadFormat = field(
        default="json",
        metadata=setting(
            kinds.choice(*get_args(PayloadFormat)),
            '"json": the payload parsed as JSON; "text": as a UTF-8 string; '
            '"bytes-base64": the bytes as a base64 string. A payload that does not '
            "decode is a bad record.",
        ),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class NatsSinkConfig(NatsConnection):
    """``type = "nats"`` as a sink: publish each record to a JetStream subject."""

    subject: str = field(
        metadata=setting(
            kinds.text(
                re.compile(r"[^\s.*>]+(\.[^\s.*>]+)*", re.ASCII), "a subject (no wildcards)"
            ),
            "The subject each record is published to.",
        )
    )
    stream: str | None = field(
        default=None,
        metadata=setting(
            name(), "The stream that must capture the subject (checked at open and by the server)."
        ),
    )
    msg_id: MsgId = field(
        default="auto",
        metadata=setting(
            kinds.choice(*get_args(MsgId)),
            '"auto": with a replayable source, a Nats-Msg-Id from the source position, so '
            "the stream's duplicate window drops a crash's repeats; \"none\": no id.",
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
