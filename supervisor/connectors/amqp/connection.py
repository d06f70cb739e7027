"""One connection to a RabbitMQ broker for one attempt: secrets, TLS, errors translated.

The connection is aio-pika's plain (not robust) one: it never reconnects by itself.
A lost connection fails the attempt with `BrokerUnavailable`, so the job shows
RETRYING while the broker is away and the daemon's backoff reconnects it, each
attempt on a connection and channel of its own. That matters for the source: a
delivery tag names a message on one channel only, so after a reconnect every tag
read before is void, and acknowledging one of them could acknowledge another
message (or close the channel). A robust connection resuming behind our back
would do exactly that.

Every error of the client library becomes one of ours here (`translate`), naming
the job's key and the broker (its URL without a password): refused credentials or
permissions and a missing queue or exchange are `BrokerRefused` (retrying cannot
fix them), anything about reaching the broker `BrokerUnavailable`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread
import structlog

from supervisor import secrets
from supervisor.connectors.amqp.config import AmqpConnection
from supervisor.connectors.credentials import tls_refused
from supervisor.errors import BrokerRefused, BrokerUnavailable, FatalError, JobError
from supervisor.secrets import SecretRef

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel, AbstractConnection
    from aiormq.abc import AbstractChannel as RawChannel

T = TypeVar("T")

log = structlog.get_logger("supervisor.amqp")


class _ClientLog(logging.Handler):
    """The client libraries' own log lines (a connection blocked by a memory alarm, a
    frame they did not expect), as events of ours: redacted, and in the daemon's log
    format instead of bare lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = secrets.redact(record.getMessage())
        except Exception:  # noqa: BLE001 - a log line must never fail the caller
            text = record.msg if isinstance(record.msg, str) else repr(record.msg)
        log.warning("amqp.client_log", logger=record.name, level=record.levelname, text=text)


def _route_client_logs() -> None:
    for name in ("aiormq", "aio_pika"):
        logger = logging.getLogger(name)
        if not any(isinstance(handler, _ClientLog) for handler in logger.handlers):
            logger.addHandler(_ClientLog(logging.WARNING))
            logger.propagate = False


def translate(exc: BaseException, role: str, server: str, *, doing: str = "") -> JobError:
    """Our error for a client library's `exc` (see the module doc)."""
    import aiormq.exceptions as amqp

    if isinstance(exc, JobError):
        return exc
    text = secrets.redact(str(exc) or type(exc).__name__)
    context = f" ({doing})" if doing else ""
    if isinstance(exc, amqp.ProbableAuthenticationError) or "ACCESS_REFUSED" in text:
        return BrokerRefused(
            f"{role}.user: {server} refused the credentials or permissions{context}: {text}; "
            f"check {role}.user and {role}.password, and the user's permissions on the vhost"
        )
    if isinstance(exc, amqp.ConnectionNotAllowed) or "NOT_ALLOWED" in text:
        return BrokerRefused(f"{role}.url: {server} refused the connection{context}: {text}")
    refused = tls_refused(exc, role, f"{server}{context}", text)
    if refused is not None:
        return refused
    if isinstance(exc, amqp.ChannelPreconditionFailed):
        return BrokerRefused(f"{role}: {server} refused{context}: {text}")
    if isinstance(exc, amqp.ChannelClosed) and not isinstance(exc, amqp.ChannelInvalidStateError):
        return BrokerRefused(f"{role}: {server} closed the channel{context}: {text}")
    if isinstance(exc, ConnectionRefusedError | TimeoutError) or doing == "connecting":
        return BrokerUnavailable(f"{role}.url: cannot connect to {server}: {text}")
    return BrokerUnavailable(f"{role}: lost {server}{context}: {type(exc).__name__}: {text}")


def _tls_context(config: AmqpConnection) -> ssl.SSLContext | None:
    """Blocking (reads certificate files): call it in a worker thread."""
    return config.tls_context() if config.url.startswith("amqps://") else None


def _credentials(config: AmqpConnection) -> tuple[str | None, ssl.SSLContext | None]:
    """The password and the TLS context: blocking (files), for a worker thread."""
    return secrets.read(SecretRef.of(config, "password")), _tls_context(config)


class Connection:
    """A connection and one channel for one attempt: `open`, use `call`, `close`.

    `lost` is set (from the client's callbacks) once the connection or the channel
    closed; `on_lost` is called then too, so a waiting read wakes up.
    """

    def __init__(
        self,
        config: AmqpConnection,
        role: str,
        name: str,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self._config = config
        self.role = role
        self._name = name
        self.server = secrets.redact_url(config.url)
        self._on_lost = on_lost
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._raw: RawChannel | None = None
        self.lost: str | None = None
        """Why the connection or the channel ended, once it has."""

    @property
    def channel(self) -> AbstractChannel:
        if self._channel is None:
            raise RuntimeError("amqp connection used before open()")
        return self._channel

    @property
    def raw(self) -> RawChannel:
        """The channel of the protocol library underneath (aiormq): the fast paths."""
        if self._raw is None:
            raise RuntimeError("amqp connection used before open()")
        return self._raw

    async def open(self, *, confirms: bool = False, prefetch: int | None = None) -> None:
        try:
            import aio_pika
            from yarl import URL
        except ImportError as exc:
            raise FatalError(
                f"{self.role}.type: the amqp connector needs aio-pika ({exc}): "
                "pip install 'stream-supervisor[amqp]'"
            ) from None
        _route_client_logs()
        try:
            password, tls = await anyio.to_thread.run_sync(_credentials, self._config)
        except (OSError, ssl.SSLError) as exc:
            raise BrokerRefused(f"{self.role}.tls_cert_file: {exc}") from None
        url = URL(self._config.url)
        if self._config.user is not None:
            url = url.with_user(self._config.user)
        if password is not None:
            url = url.with_password(password)
        url = url.update_query(heartbeat=max(1, round(self._config.heartbeat)))
        options: dict[str, Any] = {
            "timeout": self._config.connect_timeout,
            "client_properties": {"connection_name": self._name},
        }
        if tls is not None:
            options["ssl_context"] = tls
        timeout = self._config.connect_timeout
        with anyio.move_on_after(timeout * 2) as scope:
            connection = await self.call(aio_pika.connect(url, **options), "connecting")
            self._connection = connection
            connection.close_callbacks.add(self._closed)
            channel = await self.call(
                connection.channel(publisher_confirms=confirms, on_return_raises=confirms),
                "opening a channel",
            )
            self._channel = channel
            channel.close_callbacks.add(self._closed)
            self._raw = raw = await channel.get_underlay_channel()
            if prefetch is not None:
                await self.call(raw.basic_qos(prefetch_count=prefetch), "setting prefetch")
        if scope.cancelled_caught:
            raise BrokerUnavailable(
                f"{self.role}.url: cannot connect to {self.server} within {timeout:g} s"
            )

    def _closed(self, _sender: object, exc: BaseException | None = None) -> None:
        if self.lost is None:
            self.lost = secrets.redact(f"{type(exc).__name__}: {exc}") if exc else "closed"
            if self._on_lost is not None:
                self._on_lost()

    async def call(self, awaitable: Awaitable[T], doing: str) -> T:
        """Await a client call, its errors translated. A future the client cancels when
        its connection closes is a lost connection too, not our cancellation."""
        import aiormq.exceptions

        try:
            with anyio.fail_after(self._config.connect_timeout * 2):
                return await awaitable
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            raise BrokerUnavailable(
                f"{self.role}: lost {self.server} ({doing}): {self.lost or 'connection closed'}"
            ) from None
        except TimeoutError:
            raise BrokerUnavailable(
                f"{self.role}: {self.server} did not answer ({doing}) within "
                f"{self._config.connect_timeout * 2:g} s"
            ) from None
        except (OSError, ssl.SSLError, aiormq.exceptions.AMQPError) as exc:
            raise translate(exc, self.role, self.server, doing=doing) from None
        except RuntimeError as exc:  # ChannelInvalidStateError: the channel closed
            if isinstance(exc, aiormq.exceptions.ChannelInvalidStateError):
                raise BrokerUnavailable(
                    f"{self.role}: lost {self.server} ({doing}): {self.lost or exc}"
                ) from None
            raise

    def usable(self) -> None:
        """Raise `BrokerUnavailable` if the connection or channel has closed."""
        if self.lost is not None:
            raise BrokerUnavailable(f"{self.role}: lost {self.server}: {self.lost}")

    async def close(self) -> None:
        connection, self._connection, self._channel, self._raw = (
            self._connection,
            None,
            None,
            None,
        )
        if connection is not None and not connection.is_closed:
            with anyio.move_on_after(self._config.connect_timeout):
                await connection.close()
