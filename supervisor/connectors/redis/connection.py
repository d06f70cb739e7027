"""Connecting to Redis, and the client library's exceptions turned into ours.

`connect` reads the password (in a worker thread: it may be a file), builds a
`redis.asyncio.Redis` that never retries by itself (a retried XREADGROUP could hand
entries to this consumer that nobody then reads) and parses no reply (the
connector reads the raw RESP2 replies itself), and PINGs, so wrong credentials
show at open. `translate` maps the library's exceptions onto `BrokerUnavailable`
(the connection: retried) and `BrokerRefused` (credentials, permissions, a missing
group, a key that is not a stream: fatal), naming the job's key and the server's
URL without its password.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import anyio

from supervisor import secrets
from supervisor.connectors.credentials import tls_refused
from supervisor.connectors.redis.config import RedisConnectionConfig
from supervisor.errors import BrokerRefused, BrokerUnavailable, FatalError, JobError

if TYPE_CHECKING:
    from redis.asyncio import Redis


def server_name(config: RedisConnectionConfig) -> str:
    """The server as messages show it: the URL with no password."""
    return secrets.redact_url(config.url)


async def connect(
    config: RedisConnectionConfig,
    role: str,
    *,
    socket_timeout: float | None,
    connect_timeout: float,
) -> Redis:
    """A connected client (PINGed); `BrokerUnavailable` / `BrokerRefused` otherwise."""
    try:
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
    except ImportError as exc:
        raise FatalError(
            f"{role}.type: the redis connector needs the redis package ({exc}): "
            "pip install 'stream-supervisor[redis]'"
        ) from None

    ref = secrets.SecretRef.of(config, "password")
    password = await anyio.to_thread.run_sync(secrets.read, ref)
    options: dict[str, Any] = {
        "protocol": 2,
        "decode_responses": False,
        "retry": Retry(NoBackoff(), 0),
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "health_check_interval": 0,
    }
    # No CLIENT SETINFO: building it reads the package metadata (blocking) per connection.
    if importlib.util.find_spec("redis.driver_info") is not None:
        options["driver_info"] = None
    else:  # redis < 7
        options["lib_name"] = options["lib_version"] = None
    if config.username is not None:
        options["username"] = config.username
    if password is not None:
        options["password"] = password
    if config.url.startswith("rediss://"):
        for key, path in (
            ("ssl_ca_certs", config.tls_ca_file),
            ("ssl_certfile", config.tls_cert_file),
            ("ssl_keyfile", config.tls_key_file),
        ):
            if path is not None:
                options[key] = str(path)
    client: Redis = redis.asyncio.Redis.from_url(config.url, **options)
    # Raw replies: the connector parses the few it uses (see the module's doc).
    client.response_callbacks.clear()
    try:
        with translated(config, role, "url"):
            await client.ping()
    except BaseException:
        await client.aclose()
        raise
    return client


@contextmanager
def translated(config: RedisConnectionConfig, role: str, key: str) -> Iterator[None]:
    """Turn the client library's exceptions raised inside into ours; `key` is the job key
    a refusal is about (``group`` for a missing group, say)."""
    import redis.exceptions as errors

    server = server_name(config)
    try:
        yield
    except JobError:
        raise
    except errors.AuthenticationError as exc:
        stem = "username" if config.username and not _has_password(config) else "password"
        raise BrokerRefused(
            f"{role}.{stem}: {server} refused the credentials ({_said(exc)})"
        ) from None
    except (errors.ConnectionError, errors.TimeoutError, OSError, TimeoutError) as exc:
        refused = tls_refused(exc, role, server, _said(exc))
        if refused is not None:
            raise refused from None
        raise BrokerUnavailable(f"{role}.url: {server} is unreachable: {_said(exc)}") from None
    except errors.NoPermissionError as exc:
        raise BrokerRefused(f"{role}.username: {server} refused a command: {_said(exc)}") from None
    except errors.ResponseError as exc:
        text = str(exc)
        if text.startswith(("NOAUTH", "WRONGPASS")):
            raise BrokerRefused(
                f"{role}.password: {server} refused the credentials ({_said(exc)})"
            ) from None
        if text.startswith("NOGROUP"):
            group = getattr(config, "group", None)
            raise BrokerRefused(
                f'{role}.group: no consumer group "{group}" on stream "{config.stream}" at '
                f"{server} (create it with XGROUP CREATE, or set create_group = true)"
            ) from None
        if text.startswith("WRONGTYPE"):
            raise BrokerRefused(
                f'{role}.stream: the key "{config.stream}" on {server} is not a stream'
            ) from None
        if text.startswith(("LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN")):
            raise BrokerUnavailable(f"{role}.url: {server} is not ready: {_said(exc)}") from None
        raise BrokerRefused(f"{role}.{key}: {server} refused: {_said(exc)}") from None


def _has_password(config: RedisConnectionConfig) -> bool:
    from urllib.parse import urlsplit

    return secrets.SecretRef.of(config, "password").is_set() or bool(urlsplit(config.url).password)


def _said(exc: BaseException) -> str:
    """What the server or the library said, with any secret masked."""
    text = str(exc) or type(exc).__name__
    return secrets.redact(text.strip().rstrip("."))


async def execute(client: Redis, *args: Any) -> Any:
    """One command, its raw reply (the client parses none, see `connect`)."""
    return await client.execute_command(*args)  # type: ignore[no-untyped-call]


def text(value: object) -> str:
    """A reply's bytes as text (IDs, names and counts are ASCII)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def pairs(reply: object) -> dict[str, Any]:
    """A RESP2 flat ``[name, value, name, value, ...]`` reply as a dict."""
    items = list(reply) if isinstance(reply, list | tuple) else []
    return {text(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}
