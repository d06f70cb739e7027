"""A real Prometheus scrapes a running daemon; promtool checks the exposition and the
alert rules."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.observed import Observed, observed
from tests.servers import free_port, require, require_module

__all__ = ["observed"]

ALERTS = Path(__file__).parents[2] / "configs" / "alerts"


@pytest.fixture
def prometheus(tmp_path: Path, observed: Observed) -> Iterator[str]:
    """Prometheus scraping `observed` every second; yields its URL."""
    binary = require("prometheus", "prometheus")
    port = free_port()
    target = observed.url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files: ['{ALERTS / 'stream-supervisor.rules.yml'}']\n"
        "scrape_configs:\n"
        "  - job_name: stream-supervisor\n"
        "    honor_labels: true\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n"
    )
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _query(prometheus: str, expression: str) -> list[dict[str, Any]]:
    url = f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': expression})}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            answer = json.load(response)
    except OSError:
        return []  # not up yet
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def _eventually(prometheus: str, expression: str, timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while not (result := _query(prometheus, expression)):
        assert time.monotonic() < deadline, f"no result for {expression} in {timeout} s"
        time.sleep(0.25)
    return result


def test_prometheus_scrapes_records_rising_and_states(prometheus: str) -> None:
    """Prometheus finds the running job's records counter rising, both jobs' state
    series, and the suspended job's alert pending or firing."""
    _eventually(prometheus, 'up{job="stream-supervisor"} == 1')
    rising = _eventually(
        prometheus, 'rate(stream_supervisor_records_read_total{job="flowing"}[5s]) > 0'
    )
    assert float(rising[0]["value"][1]) > 0
    states = _eventually(prometheus, "stream_supervisor_job_state == 1")
    assert {(s["metric"]["job"], s["metric"]["state"]) for s in states} == {
        ("flowing", "running"),
        ("broken", "suspended"),
    }
    alerts = _eventually(prometheus, 'ALERTS{alertname="StreamJobSuspended"}')
    assert alerts[0]["metric"]["job"] == "broken"


def test_promtool_accepts_the_exposition(observed: Observed) -> None:
    """`promtool check metrics` finds nothing wrong with what /metrics serves."""
    require_module("prometheus_client", "metrics")
    promtool = require("promtool", "prometheus")
    body = observed.get("/metrics")[2]
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == b""  # not even a lint warning


def test_promtool_checks_and_unit_tests_the_alert_rules() -> None:
    """The documented alert rules are valid, and fire on the series the daemon exposes."""
    promtool = require("promtool", "prometheus")
    for command in (
        ["check", "rules", "stream-supervisor.rules.yml"],
        ["test", "rules", "stream-supervisor.rules.test.yml"],
    ):
        result = subprocess.run(
            [promtool, *command], cwd=ALERTS, capture_output=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
