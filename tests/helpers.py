"""Builders shared by the tests."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from supervisor.config.model import CheckpointPolicy, JobConfig
from supervisor.connectors.basic import NullSinkConfig
from supervisor.connectors.generate import GenerateSourceConfig
from supervisor.connectors.registry import Role, installed


def make_job(name: str = "job", **changes: Any) -> JobConfig:
    """A valid job config; tests inject the real parts through `Components`."""
    job = JobConfig(
        name=name,
        path=Path(f"/nonexistent/{name}.toml"),
        source=GenerateSourceConfig(count=0),
        sink=NullSinkConfig(),
        checkpoint=CheckpointPolicy(every_records=100, interval=5.0),
    )
    return replace(job, **changes)


def run_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m supervisor ARGS -c CONFIG` as an operator runs it: output captured."""
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@contextlib.contextmanager
def throwaway_user(name: str, *, groups: Sequence[str] = ()) -> Iterator[str]:
    """A system user with no home and no login shell, made for one test and removed after
    it (one left by an interrupted run is removed first). Needs root and useradd."""
    subprocess.run(["userdel", name], capture_output=True, check=False)
    command = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
    if groups:
        command += ["--groups", ",".join(groups)]
    subprocess.run([*command, name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], capture_output=True, check=False)


def one_of(role: Role, *extra: str) -> str:
    """How a config error lists the types that can be `role`: every installed one, and
    `extra` (a test's own), as the loader words it."""
    names = sorted({*installed().types(role), *extra})
    return "expected one of " + ", ".join(f'"{name}"' for name in names)


def gone(pid: int, timeout: float = 10) -> bool:
    """Whether process `pid` has exited (or exits within `timeout`): its pidfd says so."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([pidfd], [], [], timeout)[0])
    finally:
        os.close(pidfd)
