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
import pwd
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.config import job_glob
from supervisor.config.job_glob import expand
from supervisor.config.loader import load_config, load_daemon_config
from supervisor.errors import ConfigError
from tests.daemon_process import DAEMON_TOML, DaemonProcess, write_config
from tests.helpers import run_cli as cli
from tests.helpers import throwaway_user
from tests.integration.test_control import DAEMON

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
    with throwaway_user(f"ss-c-{os.getpid()}-{next(_users)}") as name:
        yield pwd.getpwnam(name).pw_uid


def _config(tmp_path: Path, **jobs: str) -> Path:
    return write_config(tmp_path, dict(jobs) or {"ok": JOB})


def _errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 2, (result.stdout, result.stderr)
    return result.stderr.splitlines()[1:]


# --- files others may write -------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666], ids=lambda mode: f"{mode:04o}")
def test_a_job_file_its_group_or_others_may_write_is_refused(tmp_path: Path, mode: int) -> None:
    """`check` refuses a group- or world-writable job file: exit 2, the file, its mode and
    the chmod that fixes it."""
    config = _config(tmp_path, ok=JOB, open=JOB)
    job = tmp_path / "jobs" / "open.toml"
    job.chmod(mode)
    assert _errors(check(config)) == [
        f"{job}: the file is writable by its group or others (mode {mode:04o}): refused, since "
        f"they could make the supervisor run any code; `chmod go-w {job}`"
    ]
    job.chmod(0o644)
    assert check(config).returncode == 0


def test_a_daemon_file_its_group_may_write_is_refused(tmp_path: Path) -> None:
    """A group-writable daemon file is refused before anything in it is used."""
    config = _config(tmp_path)
    config.chmod(0o660)
    (line,) = _errors(check(config))
    assert line.startswith(f"{config}: the file is writable by its group or others (mode 0660)")
    assert line.endswith(f"`chmod go-w {config}`")


def test_a_job_file_owned_by_another_user_does_not_run_its_code(
    tmp_path: Path, other_uid: int
) -> None:
    """A job file another user owns (and so may rewrite) naming ``subprocess:Popen`` is
    refused by `supervisor run`, exit 2, and its command never runs as the daemon's user."""
    marker = tmp_path / "ran-as-the-daemon"
    evil = f"""\
        [source]
        type = "python"
        class = "subprocess:Popen"
        args = ["touch", "{marker}"]
        [sink]
        type = "null"
        """
    config = _config(tmp_path, ok=JOB, evil=evil)
    job = tmp_path / "jobs" / "evil.toml"
    os.chown(job, other_uid, -1)
    result = subprocess.run(
        [sys.executable, "-m", "supervisor", "run", "--exit-when-idle", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert (
        f"{job}: the file is owned by uid {other_uid}, not by root or uid 0 that the supervisor "
        f"runs as: refused, since its owner could make the supervisor run any code; "
        f"`chown 0 {job}`"
    ) in result.stderr
    assert not marker.exists()


def test_a_jobs_directory_others_may_write_is_one_error_and_its_files_are_not_read(
    tmp_path: Path,
) -> None:
    """A world-writable jobs directory (another user could add or swap job files) is one
    error naming it and the fix; none of its files is read."""
    config = _config(tmp_path, ok=JOB, broken="not toml [")
    jobs = tmp_path / "jobs"
    jobs.chmod(0o1777)  # sticky is no help here: anyone may still add a job file
    assert _errors(check(config)) == [
        f"{jobs}: the directory is writable by its group or others (mode 1777): refused, since "
        "they could replace the configuration files below it, and so make the supervisor run "
        f"any code; `chmod go-w {jobs}`"
    ]


def test_a_directory_above_owned_by_another_user_is_refused(tmp_path: Path, other_uid: int) -> None:
    """A directory anywhere above the daemon file owned by another user (who could rename
    the whole configuration away and put theirs in its place) is refused."""
    above = tmp_path / "etc"
    config = _config(above / "stream-supervisor")
    os.chown(above, other_uid, -1)
    (line,) = _errors(check(config))
    assert line.startswith(
        f"{above}: the directory (above a configuration file) is owned by uid {other_uid}"
    )
    assert line.endswith(f"`chown 0 {above}`")


def test_a_sticky_directory_above_passes_but_not_a_plain_world_writable_one(
    tmp_path: Path,
) -> None:
    """A sticky world-writable directory above (like /tmp) passes; without the sticky bit
    it is refused (anyone could rename the configuration's directory away)."""
    shared = tmp_path / "shared"
    config = _config(shared / "conf")
    shared.chmod(0o1777)
    assert check(config).returncode == 0
    shared.chmod(0o777)
    (line,) = _errors(check(config))
    assert line.startswith(f"{shared}: the directory (above a configuration file) is writable")


# --- symlinked job files ----------------------------------------------------------------


def test_a_symlinked_job_file_owned_by_another_user_is_not_followed(
    tmp_path: Path, other_uid: int
) -> None:
    """A job file that is another user's symlink (to a perfectly good file) is refused
    without being followed; the same link owned by root is followed."""
    config = _config(tmp_path, ok=JOB)
    target = tmp_path / "elsewhere.toml"
    target.write_text(textwrap.dedent(JOB))
    link = tmp_path / "jobs" / "linked.toml"
    link.symlink_to(target)
    os.lchown(link, other_uid, -1)
    assert _errors(check(config)) == [
        f"{link}: it is a symlink owned by uid {other_uid}, not by root or uid 0 that the "
        "supervisor runs as: not followed, since its owner could point it at any file; replace "
        f"it with the file it points to, or `chown -h 0 {link}`"
    ]
    os.lchown(link, 0, -1)
    result = check(config)
    assert result.returncode == 0, result.stderr
    assert "2 job(s)" in result.stdout


def test_a_symlinked_job_file_into_a_directory_others_may_write_is_refused(
    tmp_path: Path,
) -> None:
    """A root-owned link whose target lies in a world-writable directory is refused: the
    target could be swapped."""
    config = _config(tmp_path, ok=JOB)
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "job.toml").write_text(textwrap.dedent(JOB))
    drop.chmod(0o777)
    link = tmp_path / "jobs" / "linked.toml"
    link.symlink_to(drop / "job.toml")
    (line,) = _errors(check(config))
    assert line.startswith(
        f"{link}: it is a symlink to {drop}/job.toml, and {drop}: the directory is writable by "
        "its group or others (mode 0777)"
    )


# --- where the rule applies -------------------------------------------------------------


@pytest.mark.slow
def test_reload_refuses_a_job_file_others_may_write_and_changes_nothing(tmp_path: Path) -> None:
    """`supervisor reload` with a new group-writable job file exits 2 naming it; the
    running set of jobs is unchanged."""
    config = write_config(tmp_path, {"keep": JOB}, DAEMON)
    process = DaemonProcess(config)
    try:
        process.wait_for("control.listening")
        process.keep_draining()
        job = tmp_path / "jobs" / "planted.toml"
        job.write_text(textwrap.dedent(JOB))
        job.chmod(0o666)
        result = cli(config, "reload")
        assert result.returncode == 2
        assert f"{job}: the file is writable by its group or others (mode 0666)" in result.stderr
        status = cli(config, "status", "--json")
        assert '"planted"' not in status.stdout and '"keep"' in status.stdout
    finally:
        process.stop()


def test_control_commands_read_a_daemon_file_owned_by_another_user(
    tmp_path: Path, other_uid: int
) -> None:
    """The control commands only look up the socket in the daemon file and run nothing from
    it: an operator who is neither root nor the daemon's user still finds the daemon."""
    config = _config(tmp_path)
    os.chown(config, other_uid, -1)
    assert load_daemon_config(config).control_socket == tmp_path / "supervisor.sock"
    with pytest.raises(ConfigError, match="owned by uid"):
        load_config(config)


def test_the_shipped_example_and_fresh_files_pass() -> None:
    """The repository's example, as checked out (0644 files owned by the user), passes."""
    example = Path(__file__).parent.parent.parent / "configs" / "supervisor.toml"
    result = check(example)
    assert result.returncode == 0, result.stderr


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
