"""The status page in a real browser: headless Chromium renders the table of a running
and a suspended job, shows a hostile error message as text, and runs no script.

The screenshot is kept as a test artifact: in $TEST_ARTIFACTS if set (the README's
docs/status-page.png is made this way), else in the test's temporary directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

from tests.observed import HOSTILE_ERROR, Observed, observed
from tests.servers import require

__all__ = ["observed"]


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    binary = require("chromium", "chromium")
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )


class _Table(HTMLParser):
    """The rendered table's rows (cell texts by class) and every element's tag."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, str]] = {}
        self.tags: set[str] = set()
        self._row: dict[str, str] | None = None
        self._cell: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        found = dict(attrs)
        if tag == "tr" and found.get("data-job"):
            self._row = self.rows[str(found["data-job"])] = {"state": str(found["data-state"])}
        elif tag == "td" and self._row is not None:
            self._cell = (found.get("class") or "").split(" ")[-1]
            self._row.setdefault(self._cell, "")
        elif tag == "polyline" and self._row is not None:
            self._row["chart"] = str(found.get("points"))

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row = None
        if tag == "td":
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._row is not None and self._cell:
            self._row[self._cell] += data


def test_chromium_renders_running_and_suspended_jobs(observed: Observed, tmp_path: Path) -> None:
    """The DOM Chromium builds has a RUNNING row with a rate and chart and a SUSPENDED row
    whose error is the hostile message as text; no script element anywhere."""
    deadline = time.monotonic() + 30
    while b"<polyline" not in observed.get("/")[2]:  # two samples make a chart
        assert time.monotonic() < deadline
        time.sleep(0.2)
    result = _chromium(tmp_path, "--dump-dom", observed.url + "/")
    assert result.returncode == 0, result.stderr[-2000:]
    table = _Table()
    table.feed(result.stdout.decode())
    assert "script" not in table.tags
    flowing, broken = table.rows["flowing"], table.rows["broken"]
    assert flowing["state"] == "running"
    assert float(flowing["rate"].replace(",", "")) > 0
    assert flowing["chart"]
    assert broken["state"] == "suspended"
    assert HOSTILE_ERROR in broken["error"]


def test_chromium_screenshot_of_the_page(observed: Observed, tmp_path: Path) -> None:
    """A screenshot of the page, kept as an artifact."""
    deadline = time.monotonic() + 30
    while observed.get("/")[2].count(b"<polyline") < 1 or _points(observed) < 6:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    shot = tmp_path / "status-page.png"
    result = _chromium(
        tmp_path, f"--screenshot={shot}", "--window-size=1280,360", observed.url + "/"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.read_bytes().startswith(b"\x89PNG")
    if artifacts := os.environ.get("TEST_ARTIFACTS"):
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / "status-page.png")


def _points(observed: Observed) -> int:
    page = observed.get("/")[2].decode()
    start = page.find('points="')
    return page[start : page.find('"', start + 8)].count(",") if start >= 0 else 0
