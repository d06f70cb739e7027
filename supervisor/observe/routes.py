"""What each path of the HTTP listener answers (`supervisor.observe.http` serves them).

``/metrics`` Prometheus metrics (`supervisor.observe.metrics`), ``/healthz`` the event
loop answers, ``/readyz`` configuration loaded, state directory usable and control
socket listening (503 with the failed checks otherwise), ``/status`` the JSON of
``supervisor status --json``, ``/`` the status page (`supervisor.observe.page`).
Whatever is slow for thousands of jobs (writing the exposition, encoding the JSON,
the page) runs in a worker thread, one of each kind at a time; what reads the jobs
runs on the event loop, a slice at a time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.abc
import anyio.to_thread
import structlog
from anyio.streams.stapled import MultiListener

from supervisor.control.commands import Listing
from supervisor.observe.address import is_loopback
from supervisor.observe.http import Request, Response, serve_http
from supervisor.observe.metrics import ExpositionWriter, read_jobs, render
from supervisor.observe.page import (
    CONTENT_SECURITY_POLICY,
    MAX_ROWS,
    attention_order,
    render_page,
)
from supervisor.observe.sampler import Sampler

if TYPE_CHECKING:
    from supervisor.config.model import Config
    from supervisor.job_owner import JobOwner

log = structlog.get_logger("supervisor.http")

JSON = "application/json"


class Observed(Protocol):
    """What the routes need of the daemon."""

    @property
    def owners(self) -> Mapping[str, JobOwner]: ...

    @property
    def ready(self) -> bool:
        """Configuration loaded and every job launched."""
        ...

    @property
    def control_listening(self) -> bool | None:
        """The control socket accepts (None: the daemon runs without one)."""
        ...

    @property
    def config(self) -> Config: ...


class Routes:
    def __init__(self, daemon: Observed, sampler: Sampler) -> None:
        self._daemon = daemon
        self._sampler = sampler
        self._writer = ExpositionWriter()
        self._busy = anyio.Lock()
        """One exposition, status or page at a time: a burst of them is queued, not
        multiplied (each is a good part of a second of CPU at 10,000 jobs)."""

    async def __call__(self, request: Request) -> Response:
        if not self._daemon.config.daemon.http_allow_remote and not _local_host(
            request.headers.get("host", "")
        ):
            # A name of another site's, rebound to 127.0.0.1, must not read the jobs.
            return Response(421, b"Host must be localhost or a loopback address\n")
        match request.path:
            case "/metrics":
                return await self.metrics(request.headers.get("accept", ""))
            case "/healthz":
                return Response(200, b"ok\n")
            case "/readyz":
                return await self.readyz()
            case "/status":
                return await self.status()
            case "/" | "/index.html":
                return await self.page()
            case _:
                return Response(404, b"not found: try /, /metrics, /status, /healthz, /readyz\n")

    async def metrics(self, accept: str) -> Response:
        if not metrics_available():
            return Response(503, f"{MISSING_EXTRA}\n".encode())
        async with self._busy:
            jobs = read_jobs(self._daemon.owners.values())
            body, content_type = await anyio.to_thread.run_sync(
                render, jobs, self._sampler.loop_lag, accept, self._writer
            )
        return Response(200, body, content_type)

    async def readyz(self) -> Response:
        daemon = self._daemon
        checks = {
            "configuration_loaded": daemon.ready,
            "state_dir_usable": await anyio.to_thread.run_sync(
                _usable, daemon.config.daemon.state_dir
            ),
            "control_socket_listening": daemon.control_listening is not False,
        }
        ready = all(checks.values())
        body = json.dumps({"ready": ready, "checks": checks}, indent=2) + "\n"
        return Response(200 if ready else 503, body.encode(), JSON)

    async def _views(self) -> list[dict[str, Any]]:
        return await Listing(sorted_owners(self._daemon.owners), detail=False).collect()

    async def status(self) -> Response:
        async with self._busy:
            views = await self._views()
            body = await anyio.to_thread.run_sync(_json, views)
        return Response(200, body, JSON)

    async def page(self) -> Response:
        async with self._busy:
            owners = list(self._daemon.owners.values())
            counts: dict[str, int] = {}
            for owner in owners:
                counts[owner.state.value] = counts.get(owner.state.value, 0) + 1
            owners.sort(key=lambda owner: attention_order(owner.state.value, owner.name))
            shown = owners[:MAX_ROWS]
            views = await Listing(shown, detail=False).collect()
            history = self._sampler.history
            rates = {
                owner.name: history[owner.name].rates() for owner in shown if owner.name in history
            }
            body = await anyio.to_thread.run_sync(render_page, views, rates, counts)
        return Response(
            200,
            body,
            "text/html; charset=utf-8",
            {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Frame-Options": "DENY"},
        )


MISSING_EXTRA = (
    "/metrics needs prometheus_client: install stream-supervisor[metrics] "
    "(the other paths work without it)"
)


def metrics_available() -> bool:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


async def serve_observer(
    daemon: Observed,
    listener: MultiListener[anyio.abc.SocketStream],
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """The sampler and the HTTP listener, until cancelled; started once listening."""
    if not metrics_available():
        log.warning("http.metrics_unavailable", reason=MISSING_EXTRA)
    sampler = Sampler(lambda: daemon.owners, daemon.config.daemon.sample_interval)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(sampler.run)
        await tasks.start(serve_http, listener, Routes(daemon, sampler))
        task_status.started()


def sorted_owners(owners: Mapping[str, JobOwner]) -> list[JobOwner]:
    return [owners[name] for name in sorted(owners)]


def _json(views: list[dict[str, Any]]) -> bytes:
    # As `supervisor status --json` prints it.
    return (json.dumps(views, indent=2) + "\n").encode()


def _local_host(host: str) -> bool:
    """Whether a Host header names this machine by a loopback address or localhost (or is
    missing, as HTTP/1.0 allows)."""
    if not host:
        return True
    name = host.rpartition("]")[0].lstrip("[") if host.startswith("[") else host.partition(":")[0]
    return is_loopback(name)


def _usable(directory: Path) -> bool:
    return directory.is_dir() and os.access(directory, os.W_OK | os.X_OK)
