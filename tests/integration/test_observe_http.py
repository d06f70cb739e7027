"""The HTTP listener of a real daemon: /metrics, /healthz, /readyz, /status, the page, and
clients that are slow, silent or malformed."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.daemon_process import DaemonProcess, write_config
from tests.observed import HOSTILE_ERROR, Observed, observed, start_observed
from tests.servers import require_module

__all__ = ["observed"]


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_metrics_show_records_rising_states_and_errors(observed: Observed) -> None:
    """/metrics counts the running job's records (rising), and shows each job's state and
    the suspended job's processor error."""
    require_module("prometheus_client", "metrics")
    status, headers, body = observed.get("/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    first = _samples(body.decode())
    job = frozenset({("job", "flowing")})
    read = ("stream_supervisor_records_read_total", job)

    def more() -> bool:
        return _samples(observed.get("/metrics")[2].decode())[read] > first[read]

    _until(more)
    broken_suspended = frozenset({("job", "broken"), ("state", "suspended")})
    assert first[("stream_supervisor_job_state", broken_suspended)] == 1.0
    assert first[("stream_supervisor_job_state", frozenset({*job, ("state", "running")}))] == 1.0
    stage = frozenset({("job", "broken"), ("stage", "processor")})
    assert first[("stream_supervisor_errors_total", stage)] >= 1
    assert first[("stream_supervisor_attempts_total", job)] == 1
    assert ("stream_supervisor_event_loop_lag_seconds", frozenset()) in first
    build = [key for key in first if key[0] == "stream_supervisor_build_info"]
    assert build and dict(build[0][1])["version"]


def test_metrics_negotiate_openmetrics(observed: Observed) -> None:
    """An OpenMetrics Accept header (as Prometheus sends) gets OpenMetrics, ending in # EOF."""
    require_module("prometheus_client", "metrics")
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    status, headers, body = observed.get("/metrics", accept)
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n")
    assert b"# TYPE stream_supervisor_records_read counter" in body


def test_health_ready_and_status_as_the_cli_shows_it(observed: Observed) -> None:
    """/healthz answers, /readyz passes every check, /status is `status --json`'s JSON."""
    assert observed.get("/healthz")[:1] == (200,)
    ready = observed.json("/readyz")
    assert ready == {
        "ready": True,
        "checks": {
            "configuration_loaded": True,
            "state_dir_usable": True,
            "control_socket_listening": True,
        },
    }
    over_http = observed.json("/status")
    cli = json.loads(_cli(observed.config, "status", "--json").stdout)
    assert [view["job"] for view in over_http] == [view["job"] for view in cli]
    for http_view, cli_view in zip(over_http, cli, strict=True):
        assert http_view.keys() == cli_view.keys()
        for key in ("state", "attempt", "error", "cause"):
            assert http_view[key] == cli_view[key]
    broken = next(view for view in over_http if view["job"] == "broken")
    assert broken["state"] == "suspended"
    assert HOSTILE_ERROR in broken["error"]


def test_page_escapes_every_value_and_allows_no_script(observed: Observed) -> None:
    """The page shows the markup in an error as text, and its policy forbids any script."""
    status, headers, body = observed.get("/")
    assert status == 200
    page = body.decode()
    assert "<script" not in page
    assert "&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt;" in page
    assert "&lt;b onclick=&quot;x()&quot;&gt;" in page
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert 'http-equiv="refresh"' in page
    assert 'data-job="flowing" data-state="running"' in page
    assert 'data-job="broken" data-state="suspended"' in page


def _exchange(url: str, raw: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(raw)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_malformed_requests_get_a_status_not_a_crash(observed: Observed) -> None:
    """Garbage, other methods, oversized heads, unknown paths, a Host naming another site
    (DNS rebinding) and HEAD get their status."""
    cases = {
        b"garbage\r\n\r\n": b"HTTP/1.1 400 ",
        b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n": b"HTTP/1.1 405 ",
        b"GET /nope HTTP/1.1\r\n\r\n": b"HTTP/1.1 404 ",
        b"GET / HTTP/2.0\r\n\r\n": b"HTTP/1.1 505 ",
        b"GET / HTTP/1.1\r\nX: " + b"a" * 10_000 + b"\r\n\r\n": b"HTTP/1.1 431 ",
        b"GET /\xff HTTP/1.1\r\n\r\n": b"HTTP/1.1 400 ",
    }
    for raw, expected in cases.items():
        assert _exchange(observed.url, raw).startswith(expected), raw[:40]
    rebound = b"GET /status HTTP/1.1\r\nHost: attacker.example:9321\r\n\r\n"
    assert _exchange(observed.url, rebound).startswith(b"HTTP/1.1 421 ")
    for host in (b"localhost:1", b"127.0.0.1", b"[::1]:9321"):
        request = b"GET /healthz HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
        assert _exchange(observed.url, request).startswith(b"HTTP/1.1 200 "), host
    head = _exchange(observed.url, b"HEAD /healthz HTTP/1.1\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
    assert observed.get("/healthz")[0] == 200


@pytest.mark.slow
def test_silent_and_slow_clients_never_stall_jobs(observed: Observed) -> None:
    """A client sending a byte at a time and a hundred that send nothing: jobs keep
    checkpointing and the control socket answers; those past the connection limit get 503
    at once, the others are dropped after the head timeout, and then the listener serves."""
    from supervisor.observe.http import HEAD_TIMEOUT, MAX_CLIENTS

    host, port = observed.url.removeprefix("http://").split(":")
    slow = socket.create_connection((host, int(port)), timeout=30)
    silent = [socket.create_connection((host, int(port)), timeout=30) for _ in range(100)]
    opened = time.monotonic()

    def offset() -> int:
        return int(json.loads(_cli(observed.config, "offset", "flowing").stdout) or 0)

    before = offset()
    for byte in b"GET /metr":
        slow.send(bytes([byte]))
        time.sleep(0.2)
    _until(lambda: offset() > before, HEAD_TIMEOUT / 2)  # checkpoints go on meanwhile
    turned_away = 0
    for sock in [slow, *silent]:  # each is answered 503 (past the limit) or closed
        sock.settimeout(HEAD_TIMEOUT + 10)
        reply = sock.recv(4096)
        turned_away += reply.startswith(b"HTTP/1.1 503 ")
        sock.close()
    assert turned_away >= 101 - MAX_CLIENTS
    assert time.monotonic() - opened < HEAD_TIMEOUT + 10
    assert observed.get("/healthz")[0] == 200


def test_listen_address_taken_is_a_clear_config_error(tmp_path: Path) -> None:
    """A port already taken: exit 2 naming supervisor.http_listen, no socket left behind."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (tmp_path / "jobs").mkdir()
        (tmp_path / "supervisor.toml").write_text(
            f'[supervisor]\nhttp_listen = "127.0.0.1:{port}"\n'
        )
        result = _cli(tmp_path / "supervisor.toml", "run")
    assert result.returncode == 2
    assert f"supervisor.http_listen: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert not (tmp_path / "supervisor.sock").exists()


def test_remote_address_needs_allow_remote(tmp_path: Path) -> None:
    """0.0.0.0 is refused unless http_allow_remote = true."""
    (tmp_path / "jobs").mkdir()
    daemon_file = tmp_path / "supervisor.toml"
    daemon_file.write_text('[supervisor]\nhttp_listen = "0.0.0.0:9321"\n')
    result = _cli(daemon_file, "check")
    assert result.returncode == 2
    assert "supervisor.http_listen: 0.0.0.0 is not a loopback address" in result.stderr
    daemon_file.write_text('[supervisor]\nhttp_listen = "0.0.0.0:9321"\nhttp_allow_remote = true\n')
    assert _cli(daemon_file, "check").returncode == 0


def _listening_ports(pid: int) -> set[int]:
    """TCP ports process `pid` listens on (from /proc: its socket inodes in LISTEN state)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = str(fd.readlink())
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_no_listener_by_default(tmp_path: Path) -> None:
    """Without http_listen the daemon listens on no TCP port; with it, on that one only."""
    config = write_config(tmp_path / "plain", {})
    plain = DaemonProcess(config)
    try:
        plain.wait_for("daemon.started")
        plain.keep_draining()
        assert _listening_ports(plain.process.pid) == set()
    finally:
        plain.stop()
    assert not any(event.get("event") == "http.listening" for event in plain.events)
    (tmp_path / "observed").mkdir()
    running = start_observed(tmp_path / "observed", {})
    try:
        port = int(running.url.rsplit(":", 1)[1])
        assert _listening_ports(running.daemon.process.pid) == {port}
    finally:
        running.daemon.stop()
