"""The live-systemd tests run only when asked: they boot a container (minutes the first time).

`SUPERVISOR_LIVE_SYSTEMD=1 python -m pytest tests/system` runs them (as root, on a
Debian host; .ci/run does, after `tools/live-systemd prepare`). Otherwise they are
skipped with that message. A failing test shows the unit's journal.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.system.container import Container

ENABLE = "SUPERVISOR_LIVE_SYSTEMD"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = str(Path(__file__).parent)
    if os.environ.get(ENABLE) == "1":
        return
    skip = pytest.mark.skip(
        reason=f"live systemd test: run with {ENABLE}=1 python -m pytest tests/system "
        "(root, Debian host; `tools/live-systemd prepare` first)"
    )
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    container = getattr(item, "funcargs", {}).get("live")
    if report.failed and isinstance(container, Container):
        report.sections.append(("journal of stream-supervisor.service", container.journal_text()))
    return report


@pytest.fixture(scope="session")
def container() -> Iterator[Container]:
    """A freshly booted container, halted at the end of the session."""
    if os.geteuid() != 0:
        pytest.skip("the live systemd test needs root (systemd-nspawn)")
    booted = Container()
    try:
        yield booted
    finally:
        booted.halt()
