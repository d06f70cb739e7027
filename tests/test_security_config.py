"""Configuration files as another local user would attack them (issue 13.7, 13.8).

A job file is code execution as the daemon's user, so a daemon or job file, or a
directory holding one, that anyone but root and the daemon's user may write is
refused, as sshd's StrictModes refuses such an ``authorized_keys``; and a ``**``
glob over symlink loops ends. Users other than root are throwaway ones
(``useradd``), removed after each test.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.config import job_glob
from supervisor.config.job_glob import expand
from supervisor.config.loader import load_config
from supervisor.errors import ConfigError
from tests.daemon_process import DAEMON_TOML, write_config

JOB = """\
    [source]
    type = "generate"
    [sink]
    type = "null"
    """
_users = itertools.count(1)


def check(daemon_file: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`supervisor check -c FILE` through the real console entry point."""
    return subprocess.run(
        [sys.executable, "-m", "supervisor", "check", "-c", str(daemon_file)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def other_uid() -> Iterator[int]:
    """The uid of a throwaway system user, deleted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root: creates a throwaway user to own the files")
    if shutil.which("useradd") is None:
        pytest.skip("needs useradd to create a throwaway user")
    name = f"ss-c-{os.getpid()}-{next(_users)}"
    subprocess.run(["useradd", "--system", "--no-create-home", name], check=True)
    try:
        yield int(subprocess.run(["id", "-u", name], capture_output=True, check=True).stdout)
    finally:
        subprocess.run(["userdel", name], check=False)


def _config(tmp_path: Path, **jobs: str) -> Path:
    return write_config(tmp_path, dict(jobs) or {"ok": JOB})


def _errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 2, (result.stdout, result.stderr)
    return result.stderr.splitlines()[1:]


# --- the jobs glob (13.8) ----------------------------------------------------------------


def test_a_recursive_glob_over_symlink_loops_ends(tmp_path: Path) -> None:
    """``jobs/**/*.toml`` over two symlinks to their own directory (2**40 paths to
    glob.glob: `check` hung) finds the one real job file at once; a symlinked directory
    is not entered by ``**``."""
    daemon = DAEMON_TOML.replace('jobs = "jobs/*.toml"', 'jobs = "jobs/**/*.toml"')
    config = write_config(tmp_path, {"real": JOB}, daemon)
    jobs = tmp_path / "jobs"
    (jobs / "a").symlink_to(".")
    (jobs / "b").symlink_to(".")
    (jobs / "sub").mkdir()
    (jobs / "sub" / "loop").symlink_to("..")
    result = check(config, timeout=60)  # the guard: it used to run forever
    assert result.returncode == 0, result.stderr
    assert "1 job(s)" in result.stdout


def test_a_glob_that_visits_too_many_entries_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A glob that looks at more directory entries than the limit is one error on
    `supervisor.jobs` saying so, not a walk of the whole disk."""
    monkeypatch.setattr(job_glob, "MAX_ENTRIES", 50)
    daemon = DAEMON_TOML.replace('jobs = "jobs/*.toml"', 'jobs = "**/*.toml"')
    config = write_config(tmp_path, {"real": JOB}, daemon)
    for index in range(60):
        (tmp_path / "jobs" / f"note{index}.txt").touch()
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    (issue,) = caught.value.issues
    assert (issue.path, issue.where) == (str(config), "supervisor.jobs")
    assert "visits more than 50 directory entries: narrow it" in issue.message


_NAMES = st.sampled_from(["a", "b", ".h", "x.toml", ".y.toml", "c.toml"])
_TREES: st.SearchStrategy[object] = st.recursive(
    st.just("file"),
    lambda inner: st.dictionaries(_NAMES, inner, max_size=4),
    max_leaves=12,
)
_PATTERNS = st.sampled_from(
    ["*.toml", "**/*.toml", "*/*.toml", "a/**/*.toml", ".*", "**/.*", "[ab]/*", "**/a",
     "**/**/c.toml", "./*.toml", "a//x.toml", "a/../*.toml", "**"]
)  # fmt: skip


def _build(directory: Path, tree: object) -> None:
    if isinstance(tree, dict):
        for name, below in tree.items():
            if below == "file":
                (directory / name).touch()
            else:
                (directory / name).mkdir()
                _build(directory / name, below)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=st.dictionaries(_NAMES, _TREES, max_size=4), pattern=_PATTERNS)
def test_the_bounded_glob_matches_what_glob_glob_matches(
    tmp_path_factory: pytest.TempPathFactory, tree: dict[str, object], pattern: str
) -> None:
    """Without symlinks, the bounded glob finds exactly what ``glob.glob(recursive=True)``
    finds (dot files skipped, case-sensitive, ``**`` as zero or more directories)."""
    root = tmp_path_factory.mktemp("tree")
    _build(root, tree)
    wanted = {
        os.path.normpath(os.path.join(root, match))  # noqa: PTH118
        for match in glob.glob(pattern, root_dir=root, recursive=True)  # noqa: PTH207
    }
    assert {os.path.normpath(match) for match in expand(pattern, str(root))} == wanted
