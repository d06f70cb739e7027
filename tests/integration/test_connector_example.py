"""docs/connectors.md's example package, installed as a user would and run for real.

The page shows the example's files verbatim, which the first test keeps true.

It is built and installed into a directory of its own (``pip install --target``,
so this venv is not modified) and found by the subprocesses through PYTHONPATH:
`supervisor check` then knows ``type = "words"`` and checks its keys strictly,
and a daemon moves its records into a sink.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon_process import DaemonProcess, write_config

ROOT = Path(__file__).parent.parent.parent
EXAMPLE = ROOT / "examples" / "connector-example"


def test_the_page_shows_the_example_as_it_is() -> None:
    """Each code block the page marks with ``<!-- file: PATH -->`` is that file, whole."""
    page = (ROOT / "docs" / "connectors.md").read_text()
    shown = re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```\n", page, re.DOTALL)
    assert {path for path, _ in shown} == {
        "examples/connector-example/pyproject.toml",
        "examples/connector-example/words_connector/__init__.py",
    }
    for path, text in shown:
        assert text == (ROOT / path).read_text(), path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the installed example (its code and its dist-info)."""
    work = tmp_path_factory.mktemp("example")
    # Built from a copy: a build leaves build/ and *.egg-info next to the sources.
    ignored = shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    source = shutil.copytree(EXAMPLE, work / "source", ignore=ignored)
    target = work / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
    result = subprocess.run(
        [*pip, "--no-build-isolation", "--target", str(target), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return target


def _env(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(site)}


def _check(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=_env(site),
    )


@pytest.mark.slow
def test_check_knows_the_installed_type_and_checks_its_keys(tmp_path: Path, site: Path) -> None:
    """An unknown key gets a did-you-mean; a bad value is named; the type is listed."""
    config = write_config(
        tmp_path,
        {
            "typo": '[source]\ntype = "words"\nwords = ["a"]\nrepet = 2\n[sink]\ntype = "null"\n',
            "empty": '[source]\ntype = "words"\nwords = []\n[sink]\ntype = "null"\n',
            "unknown": '[source]\ntype = "word"\n[sink]\ntype = "words"\n',
        },
    )
    result = _check(config, site)
    assert result.returncode == 2, result.stderr
    jobs = tmp_path / "jobs"
    for line in (
        f'{jobs}/typo.toml: source.repet: unknown key "repet"; did you mean "repeat"?',
        f"{jobs}/empty.toml: source.words: expected a non-empty array of strings, "
        "got an array ([])",
        f'{jobs}/unknown.toml: source.type: expected one of "file", "generate", "nats", "python", '
        "\"words\", got a string ('word')",
        f'{jobs}/unknown.toml: sink.type: expected one of "jsonl", "nats", "null", "python", '
        '"sqlite", "stdout", got a string (\'words\')',
    ):
        assert line in result.stderr


@pytest.mark.slow
def test_a_daemon_moves_records_through_the_installed_connector(tmp_path: Path, site: Path) -> None:
    """`supervisor run --exit-when-idle`: every word reaches the sink, then the daemon ends."""
    config = write_config(
        tmp_path,
        {
            "words": """
                [source]
                type = "words"
                words = ["alpha", "beta", "gamma"]
                repeat = 2
                [sink]
                type = "jsonl"
                path = "../out.jsonl"
            """
        },
    )
    assert _check(config, site).returncode == 0
    daemon = DaemonProcess(config, "--exit-when-idle", env=_env(site))
    assert daemon.finish() == 0
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == ["alpha", "beta", "gamma"] * 2
