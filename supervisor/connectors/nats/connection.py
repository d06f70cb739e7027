"""One connection to a NATS server for one attempt: secrets, TLS, and errors translated.

The client never reconnects by itself (``allow_reconnect=False``): a lost connection
fails the attempt with `BrokerUnavailable`, so the job shows RETRYING while the
server is away and the daemon's own backoff reconnects it, each attempt resuming
from its last checkpoint. A client reconnecting behind our back would keep the job
RUNNING on a dead server, and lose the pull requests and acks in flight meanwhile.

Every error of the client library becomes one of ours here (`translate`), naming
the job's key and the server (its URL without a password): a refused login is
`BrokerRefused` (retrying cannot fix it), anything about reaching the server
`BrokerUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread

from supervisor import secrets
from supervisor.connectors.credentials import tls_refused
from supervisor.connectors.nats.config import NatsConnection
from supervisor.errors import BrokerRefused, BrokerUnavailable, FatalError, JobError
from supervisor.secrets import SecretRef

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext

T = TypeVar("T")

PING_INTERVAL = 10
"""Seconds between the client's pings: a server gone silent is noticed in about 3 of them."""

PUBLISH_MAX_PENDING = 1 << 20
"""Asynchronous publishes awaiting their PubAck at once: the client's limit, far above what
one checkpoint publishes (`flush` awaits them all)."""


def server_of(config: NatsConnection) -> str:
    """The servers as messages show them: URLs without their passwords."""
    return ", ".join(secrets.redact_url(url) for url in config.url)


def translate(exc: BaseException, role: str, server: str, *, doing: str = "") -> JobError:
    """Our error for a client library's `exc`: refused credentials are `BrokerRefused`,
    everything else about the connection `BrokerUnavailable`."""
    import nats.errors
    import nats.js.errors

    if isinstance(exc, JobError):
        return exc
    text = secrets.redact(str(exc) or type(exc).__name__)
    lowered = text.lower()
    context = f" ({doing})" if doing else ""
    if isinstance(exc, nats.errors.AuthorizationError) or "authorization violation" in lowered:
        return BrokerRefused(
            f"{role}.user: {server} refused the credentials{context}: {text}; check "
            f"{role}.user and {role}.password (or {role}.token)"
        )
    refused = tls_refused(exc, role, f"{server}{context}", text)
    if refused is not None:
        return refused
    if isinstance(exc, nats.js.errors.APIError) and exc.code not in (None, 408, 503):
        return BrokerRefused(f"{role}: {server} refused{context}: {text}")
    if isinstance(exc, nats.errors.NoRespondersError):
        return BrokerUnavailable(
            f"{role}: JetStream does not answer on {server}{context} (is it enabled, "
            "nats-server -js?)"
        )
    if isinstance(exc, nats.errors.NoServersError):
        return BrokerUnavailable(f"{role}.url: cannot connect to {server}{context}")
    return BrokerUnavailable(f"{role}: lost {server}{context}: {type(exc).__name__}: {text}")


def _tls_context(config: NatsConnection) -> ssl.SSLContext | None:
    """Blocking (reads certificate files): call it in a worker thread."""
    wants_tls = any(url.startswith("tls://") for url in config.url)
    return config.tls_context() if wants_tls or config.tls_files_set() else None


def _credentials(config: NatsConnection) -> tuple[str | None, str | None, ssl.SSLContext | None]:
    """The password, the token and the TLS context: blocking (files), for a worker thread."""
    password = secrets.read(SecretRef.of(config, "password"))
    token = secrets.read(SecretRef.of(config, "token"))
    return password, token, _tls_context(config)


class Connection:
    """A connected client for one attempt: `open`, use `call`, `close`."""

    def __init__(self, config: NatsConnection, role: str, name: str) -> None:
        self._config = config
        self.role = role
        self._name = name
        self.server = server_of(config)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self.lost: str | None = None
        """Why the connection ended, once it has."""

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise RuntimeError("nats connection used before open()")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("nats connection used before open()")
        return self._js

    async def open(self) -> None:
        try:
            from nats.aio.client import Client
        except ImportError:
            raise FatalError(
                "the nats connector needs nats-py: pip install 'stream-supervisor[nats]'"
            ) from None

        try:
            password, token, tls = await anyio.to_thread.run_sync(_credentials, self._config)
        except (OSError, ssl.SSLError) as exc:
            raise BrokerRefused(
                f"{self.role}.tls_ca_file, tls_cert_file, tls_key_file: {exc}"
            ) from None
        timeout = self._config.connect_timeout
        options: dict[str, Any] = {
            "servers": list(self._config.url),
            "name": self._name,
            "allow_reconnect": False,
            "max_reconnect_attempts": 1,
            "reconnect_time_wait": 0.1,
            "connect_timeout": timeout,
            "ping_interval": PING_INTERVAL,
            "error_cb": self._on_error,
            "closed_cb": self._on_closed,
        }
        if self._config.user is not None:
            options["user"] = self._config.user
        if password is not None:
            options["password"] = password
        if token is not None:
            options["token"] = token
        if tls is not None:
            options["tls"] = tls
        nc = self._nc = Client()
        try:
            # Each server is tried twice (the client's smallest retry budget), each bounded.
            with anyio.move_on_after(timeout * (2 * len(self._config.url) + 1)) as scope:
                await self.call(nc.connect(**options), "connecting")
        except BaseException:
            await self._abandon(nc)
            raise
        if scope.cancelled_caught:
            await self._abandon(nc)
            raise BrokerUnavailable(
                f"{self.role}.url: cannot connect to {self.server} within {timeout:g} s"
            )
        self._js = self.nc.jetstream(timeout=timeout, publish_async_max_pending=PUBLISH_MAX_PENDING)

    async def _abandon(self, nc: Client) -> None:
        """Close a client whose connect failed: a refused login leaves its socket open."""
        self._nc = None
        transport = getattr(nc, "_transport", None)
        with anyio.move_on_after(1.0, shield=True), contextlib.suppress(Exception):
            await nc.close()
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.close()

    async def _on_error(self, exc: Exception) -> None:
        # The client reports here what it also raises or acts on (a lost connection ends
        # in `_on_closed`); its default handler would log a traceback of its own.
        self.lost = self.lost or f"{type(exc).__name__}: {secrets.redact(str(exc))}"

    async def _on_closed(self) -> None:
        self.lost = self.lost or "connection closed"

    async def call(self, awaitable: Awaitable[T], doing: str) -> T:
        """Await a client call, its errors translated. A future the client cancels when
        its connection closes is a lost connection too, not our cancellation."""
        try:
            return await awaitable
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            raise BrokerUnavailable(
                f"{self.role}: lost {self.server} ({doing}): {self.lost or 'connection closed'}"
            ) from None
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            raise translate(exc, self.role, self.server, doing=doing) from None
        except Exception as exc:
            import nats.errors

            if isinstance(exc, nats.errors.Error):
                raise translate(exc, self.role, self.server, doing=doing) from None
            raise

    async def close(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            with anyio.move_on_after(self._config.connect_timeout):
                await nc.close()
