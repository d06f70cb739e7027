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
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
        self.user: str | None = None
        """Run as this system user (a server that refuses to run as root)."""
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
                user=self.user,
                group=self.user,
                extra_groups=[] if self.user is not None else None,
            )
        self.starts += 1
        self._wait_accepting()

    def _wait_accepting(self) -> None:
        self._wait_port(self.port)

    def _wait_port(self, port: int) -> None:
        # Polling a port is waiting on the event "it accepts": no other signal exists.
        deadline = time.monotonic() + START_TIMEOUT
        delay = 0.005
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.process.returncode}: {self.tail()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=1),
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


class PostgresServer(ServerProcess):
    """A PostgreSQL cluster of its own (``initdb`` in a fresh temporary directory), with
    ``wal_level=logical``. `USER` logs in without a password (trust); `PASSWORD_USER`
    over TCP only with `password` (scram-sha-256), for the authentication tests.

    PostgreSQL refuses to run as root, so under root the cluster belongs to the
    ``postgres`` system user (its directory is under /tmp, owned by that user: pytest's
    own temporary directories are private to root). `kill` SIGKILLs the postmaster and
    every backend at once (its process group), as the OOM killer or a power cut would;
    `stop` is a fast shutdown (SIGINT).
    """

    USER = "supervisor_test"
    PASSWORD_USER = "supervisor_pw"
    DATABASE = "postgres"

    def __init__(
        self, port: int | None = None, *, password: str = "pg-Test-Secret-4711", tls: bool = False
    ) -> None:
        port = port or free_port()
        initdb = _postgres_binary("initdb")
        self.password = password
        system_user = "postgres" if os.geteuid() == 0 else None
        directory = Path(tempfile.mkdtemp(prefix="pg-test-"))
        self.data = directory / "data"
        self.sockets = directory / "sockets"
        self.sockets.mkdir()
        if system_user is not None:
            for path in (directory, self.sockets):
                shutil.chown(path, system_user, system_user)
        argv = [
            _postgres_binary("postgres"),
            "-D", str(self.data),
            "-p", str(port),
            "-k", str(self.sockets),
            "-c", "listen_addresses=127.0.0.1",
            "-c", "wal_level=logical",
            "-c", "max_connections=50",
            "-c", "shared_buffers=32MB",
            "-c", "log_min_messages=warning",
        ]  # fmt: skip
        self.ca_file: Path | None = None
        """With `tls`: the CA that signed the server's certificate (for 127.0.0.1)."""
        if tls:
            made = make_certificates(directory / "tls", "127.0.0.1")
            self.ca_file, cert, key = made.ca, made.cert, made.key
            if system_user is not None:
                shutil.chown(cert, system_user, system_user)
                shutil.chown(key, system_user, system_user)
            argv += ["-c", "ssl=on", "-c", f"ssl_cert_file={cert}", "-c", f"ssl_key_file={key}"]
        super().__init__("postgres", argv, port, directory)
        self.user = system_user
        subprocess.run(
            [initdb, "-D", str(self.data), "-U", self.USER, "--auth=trust", "--no-sync",
             "-E", "UTF8", "--locale=C"],
            cwd=directory, user=system_user, group=system_user,
            extra_groups=[] if system_user else None,
            check=True, capture_output=True,
        )  # fmt: skip
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            f"host all {self.PASSWORD_USER} 127.0.0.1/32 scram-sha-256\n"
            "host all all 127.0.0.1/32 trust\n"
        )
        self._role_created = False

    def start(self) -> None:
        # Right after a SIGKILL the old backends may still hold the shared memory for a
        # moment; the postmaster then refuses to start ("pre-existing shared memory
        # block is still in use"): try again.
        for attempt in range(20):
            try:
                super().start()
                break
            except RuntimeError:
                self.process = None
                if attempt == 19:
                    raise
                time.sleep(0.1)
        if not self._role_created:
            # DDL takes no parameters: the password is quoted as a literal.
            quoted = "'" + self.password.replace("'", "''") + "'"
            self.execute(f"CREATE ROLE {self.PASSWORD_USER} LOGIN PASSWORD {quoted}")
            self.execute(f"GRANT ALL ON SCHEMA public TO {self.PASSWORD_USER}")
            self._role_created = True

    def _wait_accepting(self) -> None:
        # Accepting TCP is not enough: while it recovers from a kill the server answers
        # "the database system is starting up". postmaster.pid says "ready" when it is.
        super()._wait_accepting()
        deadline = time.monotonic() + START_TIMEOUT
        pid_file = self.data / "postmaster.pid"
        assert self.process is not None
        while True:
            with contextlib.suppress(OSError):
                lines = pid_file.read_text().splitlines()
                if lines and lines[0] == str(self.process.pid) and lines[-1].strip() == "ready":
                    return
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.process.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready in {START_TIMEOUT}s: {self.tail()}")
            time.sleep(0.01)

    def _end(self, sig: signal.Signals) -> None:
        if self.process is None:
            return
        group = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            if sig == signal.SIGKILL:
                os.killpg(group, signal.SIGKILL)
            else:
                self.process.send_signal(signal.SIGINT)  # fast shutdown
        self.process.wait(timeout=60)
        self.process = None
        _wait_group_gone(group)

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"postgresql://{self.USER}@127.0.0.1:{self.port}/{self.DATABASE}"

    @property
    def password_url(self) -> str:
        """`PASSWORD_USER`'s URL, without the password."""
        return f"postgresql://{self.PASSWORD_USER}@127.0.0.1:{self.port}/{self.DATABASE}"

    def execute(self, statement: str, params: Sequence[Any] | None = None) -> None:
        """Run one statement as `USER` (autocommit)."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(statement, params)

    def query(self, statement: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """The rows of one query, as `USER`."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as connection:
            return connection.execute(statement, params).fetchall()


@dataclass(frozen=True)
class Certificates:
    """A CA, a server certificate it signed, and a client certificate it signed (PEM)."""

    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path


def make_certificates(directory: Path, ip: str = "127.0.0.1") -> Certificates:
    """A fresh CA, and a server certificate (for `ip`) and a client certificate it signed,
    made with the ``openssl`` command (EC keys: fast)."""
    openssl = require("openssl", "openssl")
    directory.mkdir(mode=0o755)
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    extensions = directory / "ext"
    extensions.write_text(f"subjectAltName=IP:{ip}\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    commands = [
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=test-ca"]
    ]
    for name, subject in (("server", ip), ("client", "test-client")):
        request = directory / f"{name}.req"
        commands += [
            ["req", *ec, "-keyout", directory / f"{name}.key", "-out", request,
             "-subj", f"/CN={subject}"],
            ["x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
             "-out", directory / f"{name}.crt", "-days", "2", "-extfile", extensions],
        ]  # fmt: skip
    for command in commands:
        subprocess.run([openssl, *map(str, command)], check=True, capture_output=True)
    for name in ("server", "client"):
        (directory / f"{name}.key").chmod(0o600)
    return Certificates(
        ca,
        directory / "server.crt",
        directory / "server.key",
        directory / "client.crt",
        directory / "client.key",
    )


def _postgres_binary(name: str) -> str:
    found = sorted(str(path) for path in Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not found:
        _missing(f"PostgreSQL's {name} is not installed: apt-get install postgresql")
    return found[-1]


def _wait_group_gone(group: int) -> None:
    """Until no live process is left in process group `group` (zombies do not count)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        alive = False
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if fields[0] != "Z" and int(fields[2]) == group:
                    alive = True
                    break
        if not alive:
            return
        time.sleep(0.01)


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


@pytest.fixture
def postgres_server() -> Iterator[PostgresServer]:
    """A fresh PostgreSQL cluster of this test's own, started."""
    require_module("psycopg", "postgres")
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


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
        tls: Certificates | None = None,
    ):
        port = port or free_port()
        self.tls_port: int | None = None
        """With `tls`: an amqps:// listener that wants a client certificate signed by its CA."""
        tls_lines = ""
        if tls is not None:
            self.tls_port = free_port()
            tls_lines = (
                f"listeners.ssl.default = 127.0.0.1:{self.tls_port}\n"
                f"ssl_options.cacertfile = {tls.ca}\n"
                f"ssl_options.certfile = {tls.cert}\n"
                f"ssl_options.keyfile = {tls.key}\n"
                "ssl_options.verify = verify_peer\n"
                "ssl_options.fail_if_no_peer_cert = true\n"
                # TLS 1.2: a client certificate is refused inside the handshake, so the
                # client always hears why. Under 1.3 the client's handshake is over before
                # the server judges its certificate, and the alert races the client's
                # first write (now and then the client sees a reset connection instead).
                "ssl_options.versions.1 = tlsv1.2\n"
            )
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
            f"log.file = {directory / 'node.log'}\n" + tls_lines
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
        if self.tls_port is not None:
            self._wait_port(self.tls_port)

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

    @property
    def tls_url(self) -> str:
        assert self.tls_port is not None, "started without tls"
        return f"amqps://{self.USER}:{self.PASSWORD}@127.0.0.1:{self.tls_port}/"


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
