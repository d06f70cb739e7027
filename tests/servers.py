"""Real broker servers for connector tests: each test gets its own process on a free
port with its data in a temporary directory, so it can kill and restart it mid-stream.

A server whose binary is missing skips the test with the Debian package to install,
except under CI (``CI`` set), where it fails: there `.ci/run` installs every server,
and a connector test that silently skipped would prove nothing. The same holds for a
connector's client library (the extra to install).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

START_TIMEOUT = 30.0
"""Seconds a server may take to accept connections (JetStream recovers its streams first)."""


def require(binary: str, package: str) -> str:
    """The path of `binary`; skip (fail under CI) naming the Debian `package` if missing."""
    found = shutil.which(binary) or next(
        (str(p) for p in (Path("/usr/sbin") / binary, Path("/usr/bin") / binary) if p.exists()),
        None,
    )
    if found is None:
        _missing(f"{binary} is not installed: apt-get install {package}")
    assert found is not None
    return found


def require_module(module: str, extra: str) -> None:
    """Skip (fail under CI) naming the extra if `module` cannot be imported."""
    if importlib.util.find_spec(module) is None:
        _missing(f"{module} is not installed: pip install 'stream-supervisor[{extra}]'")


def _missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI requires it)", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerProcess:
    """A server on 127.0.0.1:`port`: `start`, `kill` (SIGKILL), `stop` (SIGTERM) and
    start again on the same port and directory, as often as a test likes."""

    def __init__(self, name: str, argv: Sequence[str], port: int, directory: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.directory = directory
        self.log = directory / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        assert self.process is None, f"{self.name} is running"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        self._wait_accepting()

    def _wait_accepting(self) -> None:
        # Polling a port is waiting on the event "it accepts": no other signal exists.
        deadline = time.monotonic() + START_TIMEOUT
        delay = 0.005
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.process.returncode}: {self.tail()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not accept in {START_TIMEOUT}s: {self.tail()}")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def kill(self) -> None:
        """SIGKILL, and wait until it is gone."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), and wait until it is gone."""
        self._end(signal.SIGTERM)

    def restart(self, *, kill: bool = True) -> None:
        self.kill() if kill else self.stop()
        self.start()

    def _end(self, sig: signal.Signals) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(sig)
        self.process.wait(timeout=60)
        self.process = None

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def url(self) -> str:
        raise NotImplementedError


class RedisServer(ServerProcess):
    """``redis-server`` that fsyncs every write (``appendfsync always``): a SIGKILL then
    loses nothing it acknowledged, so a test that kills it measures us, not Redis."""

    def __init__(self, directory: Path, port: int | None = None, *, password: str | None = None):
        port = port or free_port()
        argv = [
            require("redis-server", "redis-server"),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(directory),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--daemonize", "no",
        ]  # fmt: skip
        if password is not None:
            argv += ["--requirepass", password]
        super().__init__("redis", argv, port, directory)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


class NatsServer(ServerProcess):
    """``nats-server -js`` with its JetStream store in the test's directory."""

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        *,
        user: str | None = None,
        password: str | None = None,
    ):
        port = port or free_port()
        argv = [
            require("nats-server", "nats-server"),
            "-a", "127.0.0.1",
            "-p", str(port),
            "-js",
            "-sd", str(directory / "jetstream"),
        ]  # fmt: skip
        if user is not None and password is not None:
            argv += ["--user", user, "--pass", password]
        super().__init__("nats", argv, port, directory)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A fresh ``redis-server`` of this test's own, started."""
    require_module("redis", "redis")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A fresh ``nats-server -js`` of this test's own, started."""
    require_module("nats", "nats")
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    try:
        yield server
    finally:
        server.kill()


class RabbitServer(ServerProcess):
    """A RabbitMQ node of the test session's own: its name, AMQP and distribution ports,
    database, logs, config and Erlang cookie (``HOME``) all in `directory`, no plugins.

    Run as the current user (the Debian wrapper in /usr/sbin would switch to the
    ``rabbitmq`` user, who cannot write the temporary directory). Its only user is
    `user` with `password`, allowed from anywhere (not just loopback).
    """

    USER = "supervisor"
    PASSWORD = "rabbit-test-secret-4f9c"

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        *,
        max_message_size: int = 1024 * 1024,
    ):
        port = port or free_port()
        require("rabbitmq-server", "rabbitmq-server")
        binary = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
        if not binary.exists():
            binary = Path(require("rabbitmq-server", "rabbitmq-server"))
        (directory / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{port}\n"
            "loopback_users = none\n"
            f"default_user = {self.USER}\n"
            f"default_pass = {self.PASSWORD}\n"
            f"max_message_size = {max_message_size}\n"
            "disk_free_limit.absolute = 1MB\n"
            "log.console = false\n"
            f"log.file = {directory / 'node.log'}\n"
        )
        (directory / "enabled_plugins").write_text("[].\n")
        self.environment = {
            **os.environ,
            "HOME": str(directory),
            "RABBITMQ_NODENAME": f"supervisor-test-{port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(directory / "log"),
            "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(directory / "plugins-expand"),
            "RABBITMQ_PID_FILE": str(directory / "rabbit.pid"),
        }
        super().__init__("rabbitmq", [str(binary)], port, directory)

    def start(self) -> None:
        assert self.process is None, f"{self.name} is running"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.directory,
                env=self.environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        self._wait_accepting()

    def _end(self, sig: signal.Signals) -> None:
        # The script and the Erlang VM it starts share the process group.
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        self.process.wait(timeout=60)
        self.process = None
        # The VM may outlive the script for a moment: wait until the port is free.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
            except OSError:
                return
            time.sleep(0.05)

    def tail(self, lines: int = 20) -> str:
        text = super().tail(lines)
        node_log = self.directory / "node.log"
        with contextlib.suppress(OSError):
            text += "\n" + "\n".join(node_log.read_text(errors="replace").splitlines()[-lines:])
        return text

    @property
    def url(self) -> str:
        return f"amqp://{self.USER}:{self.PASSWORD}@127.0.0.1:{self.port}/"

    @property
    def url_without_password(self) -> str:
        return f"amqp://127.0.0.1:{self.port}/"


@pytest.fixture(scope="session")
def rabbit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitServer]:
    """A RabbitMQ node for the whole test session (it takes seconds to start), started.

    A test that kills or restarts it must leave it running; each test uses queues and
    exchanges of its own."""
    require_module("aio_pika", "amqp")
    server = RabbitServer(tmp_path_factory.mktemp("rabbitmq"))
    server.start()
    try:
        yield server
    finally:
        server.kill()
