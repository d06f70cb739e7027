"""Hostile job files through `supervisor check` (issue 5): whatever the files hold,
`check` exits 0 or 2 without a traceback, and every error names the file and a
line and column or a dotted key; no job name reaches outside the state directory.

The Hypothesis runs call the CLI entry point in-process; a few inputs go through
the installed console script as a real subprocess.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.cli import main
from supervisor.config.loader import JOB_NAME_PATTERN, load_config
from supervisor.errors import ConfigError
from supervisor.snapshot_store import SnapshotStore
from tests.unit.test_config_properties import KNOWN_KEYS, documents, near_names, toml_values

CONFIGS = Path(__file__).parent.parent.parent / "configs"
EXAMPLE_FILES = [CONFIGS / "supervisor.toml", *sorted((CONFIGS / "jobs").glob("*.toml"))]
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VALID_JOB = {"source": {"type": "generate"}, "sink": {"type": "null"}}
_KEY_SEGMENT = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*")'
_WHERE = re.compile(rf"(?:line \d+, column \d+|{_KEY_SEGMENT}(?:\.{_KEY_SEGMENT})*): \S")
_WHOLE_FILE = re.compile(r"cannot read the file: \S")
UNICODE = st.characters(exclude_categories=["Cs"])
"""Any character a UTF-8 file can hold: a lone surrogate cannot be written at all."""
_HEADER = re.compile(r"supervisor: configuration invalid \((\d+) error\(s\)\):\Z")


def _is_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def run_check(daemon_file: Path) -> tuple[int, str, str]:
    """`supervisor check -c FILE` in-process: (exit code, stdout, stderr).

    An exception escaping `main` is not caught here: it fails the test, as a
    traceback would fail an operator.
    """
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["check", "-c", str(daemon_file)])
        except SystemExit as exc:  # argparse's own exit, never expected here
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def assert_check_promises(code: int, out: str, err: str, files: set[Path]) -> list[str]:
    """Exit 0 or 2, no traceback, each error line `FILE: LOCATION: MESSAGE`; the error lines."""
    assert code in (0, 2), (code, out, err)
    assert "Traceback" not in out + err
    if code == 0:
        assert err == "" and ": ok, " in out
        return []
    header, *lines = err.splitlines()
    count = _HEADER.match(header)
    assert count is not None, err
    assert len(lines) == int(count[1]), err
    for line in lines:
        file = next((f for f in files if line.startswith(f"{f}: ")), None)
        assert file is not None, f"error names no file of the set: {line!r}"
        rest = line[len(f"{file}: ") :]
        assert _WHERE.match(rest) or _WHOLE_FILE.match(rest), f"no line or key: {line!r}"
    return lines


def _write_set(root: Path, daemon: bytes, jobs: dict[str, bytes]) -> tuple[Path, set[Path]]:
    (root / "jobs").mkdir()
    (root / "supervisor.toml").write_bytes(daemon)
    for name, data in jobs.items():
        (root / "jobs" / name).write_bytes(data)
    return root / "supervisor.toml", {root / "supervisor.toml", *(root / "jobs").iterdir()}


def _check_set(daemon: bytes, jobs: dict[str, bytes]) -> list[str]:
    with tempfile.TemporaryDirectory() as directory:
        daemon_file, files = _write_set(Path(directory), daemon, jobs)
        return assert_check_promises(*run_check(daemon_file), files)


# --- random documents ------------------------------------------------------------------

odd_keys = st.one_of(
    st.sampled_from(["a.b", "a\nb", 'q"', "back\\slash", "", " ", "\u2028", "\x7f", "ключ"]),
    st.text(max_size=8),
)
hostile_values = st.recursive(
    st.one_of(
        toml_values,
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(alphabet=UNICODE, max_size=20),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(KNOWN_KEYS) | odd_keys, inner, max_size=4),
    ),
    max_leaves=12,
)
daemon_settings = st.dictionaries(
    st.sampled_from(
        [
            *["jobs", "state_dir", "control_socket", "socket_mode", "max_starts_in_flight"],
            *["shutdown_timeout", "log_format", "log_level"],
        ]
    )
    | odd_keys,
    st.one_of(
        st.sampled_from(["jobs/*.toml", "/", "**", "0660", "999", "json", "20s", "-1s", "x" * 120]),
        hostile_values,
    ),
    max_size=5,
)
job_documents = st.one_of(
    documents,
    documents.map(lambda job: {**VALID_JOB, **job}),
    st.dictionaries(st.sampled_from(KNOWN_KEYS) | odd_keys, hostile_values, max_size=6),
)


@FUZZ
@given(
    supervisor=daemon_settings,
    defaults=st.one_of(documents, st.dictionaries(odd_keys, hostile_values, max_size=3)),
    jobs=st.lists(job_documents, min_size=0, max_size=3),
)
def test_random_documents_check_cleanly(
    supervisor: dict[str, Any], defaults: dict[str, Any], jobs: list[dict[str, Any]]
) -> None:
    """Random daemon and job documents, plausible and not: exit 0 or 2, each error located."""
    supervisor = {key: value for key, value in supervisor.items() if key != "jobs"}
    daemon = tomli_w.dumps({"supervisor": supervisor, "defaults": defaults}).encode()
    _check_set(daemon, {f"j{i}.toml": tomli_w.dumps(job).encode() for i, job in enumerate(jobs)})


# --- mutations of the shipped examples -------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` after one to three byte flips, truncations, line edits or junk insertions."""
    for _ in range(draw(st.integers(1, 3))):
        lines = data.splitlines(keepends=True) or [b""]
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        line = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["flip", "truncate", "delete", "duplicate", "insert", "swap"]))
        if kind == "flip" and data:
            data = data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) + data[at + 1 :]
        elif kind == "truncate":
            data = data[:at]
        elif kind == "delete":
            data = b"".join(lines[:line] + lines[line + 1 :])
        elif kind == "duplicate":
            data = b"".join(lines[: line + 1] + lines[line:])
        elif kind == "swap" and len(lines) > 1:
            other = draw(st.integers(0, len(lines) - 1))
            lines[line], lines[other] = lines[other], lines[line]
            data = b"".join(lines)
        else:
            junk = draw(
                st.one_of(
                    st.binary(min_size=1, max_size=12),
                    st.sampled_from(
                        [
                            *[b"[", b"]]", b'"', b"'''", b"=", b"\n[source]\n", b"\x00"],
                            *[b"\xff\xfe", b"\\u0000", b"= [[[[", b"9" * 40, b"\r", b"#"],
                            b".x = 1\n",
                        ]
                    ),
                )
            )
            data = data[:at] + junk + data[at:]
    return data


@FUZZ
@given(st.data(), st.sampled_from(EXAMPLE_FILES))
def test_mutated_examples_check_cleanly(data: st.DataObject, example: Path) -> None:
    """The shipped daemon file or one shipped job file, damaged: exit 0 or 2, each error located."""
    originals = {path.name: path.read_bytes() for path in EXAMPLE_FILES[1:]}
    daemon = EXAMPLE_FILES[0].read_bytes()
    if example == EXAMPLE_FILES[0]:
        daemon = data.draw(mutated(daemon), label="daemon file")
    else:
        originals[example.name] = data.draw(mutated(originals[example.name]), label=example.name)
    _check_set(daemon, originals)


def test_the_shipped_example_checks_ok() -> None:
    """The unmodified example set passes `check` with every job named."""
    code, out, err = run_check(CONFIGS / "supervisor.toml")
    assert assert_check_promises(code, out, err, set()) == []
    assert "3 job(s): countdown, counter, orders" in out


# --- job names and the state directory --------------------------------------------------

name_attempts = st.one_of(
    near_names.filter(_is_text),
    st.sampled_from(
        [
            *["..", ".", "../x", "x/../../etc", "/etc/passwd", "a\x00b", "a/b", "ORDERS"],
            *["Orders", "orders\n", "orders ", "x" * 63, "x" * 64, "x" * 5000, "-x", "_x"],
            *["\u0130", "\u0131", "\uff41", "orders\u200b", "con", "nul", "a.snapshot", "a..b"],
        ]
    ),
    st.text(UNICODE, min_size=1, max_size=80),
)


def _assert_inside_state_dir(root: Path, name: str) -> None:
    state_dir = root / "state"
    snapshot = SnapshotStore(state_dir).path_for(name)
    assert snapshot.resolve().parent == state_dir.resolve()
    assert snapshot.name == f"{name}.snapshot.toml"


@settings(max_examples=150, deadline=None)
@given(name_attempts)
def test_a_name_key_never_leaves_the_state_directory(name: str) -> None:
    """`name = ...`: accepted names map inside the state directory; others are refused at name."""
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        daemon_file, _ = _write_set(
            root, b"", {"j.toml": tomli_w.dumps({"name": name, **VALID_JOB}).encode()}
        )
        try:
            config = load_config(daemon_file, environ={})
        except ConfigError as exc:
            assert not JOB_NAME_PATTERN.fullmatch(name)
            assert [(i.path, i.where) for i in exc.issues] == [
                (str(root / "jobs" / "j.toml"), "name")
            ]
        else:
            assert [job.name for job in config.jobs] == [name]
            _assert_inside_state_dir(root, name)


file_stems = st.text(
    st.characters(exclude_characters="/\x00", exclude_categories=["Cs"]),
    min_size=1,
    max_size=60,
).filter(lambda stem: len(os.fsencode(stem + ".toml")) <= 255)


@settings(max_examples=150, deadline=None)
@given(st.one_of(file_stems, name_attempts.filter(lambda n: "/" not in n and "\x00" not in n)))
def test_a_file_stem_never_leaves_the_state_directory(stem: str) -> None:
    """A job named by its file: accepted stems map inside the state directory; the rest are
    refused at "name"; dot files are not jobs at all."""
    if not stem or len(os.fsencode(stem + ".toml")) > 255:
        return
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        daemon_file, _ = _write_set(root, b"", {f"{stem}.toml": tomli_w.dumps(VALID_JOB).encode()})
        try:
            config = load_config(daemon_file, environ={})
        except ConfigError as exc:
            assert not JOB_NAME_PATTERN.fullmatch(stem)
            assert [i.where for i in exc.issues] == ["name"]
            assert exc.issues[0].path == str(root / "jobs" / f"{stem}.toml")
        else:
            if stem.startswith("."):
                assert config.jobs == ()
                return
            assert [job.name for job in config.jobs] == [stem]
            _assert_inside_state_dir(root, stem)


# --- files that are not files -----------------------------------------------------------


def _console_script() -> str:
    """The installed `supervisor` script of this interpreter's environment."""
    script = Path(sys.executable).parent / "supervisor"
    return str(script) if script.exists() else shutil.which("supervisor") or "supervisor"


def _check_subprocess(daemon_file: Path, **options: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_console_script(), "check", "-c", str(daemon_file)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        **options,
    )


def _limit_memory() -> None:
    # Without the fix, reading /dev/zero ends in MemoryError here, not in the machine's OOM killer.
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def test_hostile_files_through_the_console_script(tmp_path: Path) -> None:
    """Through the real `supervisor` script: a FIFO, /dev/zero, a directory, bad UTF-8, deep
    nesting, a huge number and odd keys are each one located error; exit 2 without hanging."""
    daemon_file, _ = _write_set(tmp_path, b"[supervisor]\n", {})
    jobs = tmp_path / "jobs"
    os.mkfifo(jobs / "fifo.toml")
    (jobs / "zero.toml").symlink_to("/dev/zero")
    (jobs / "dir.toml").mkdir()
    (jobs / "latin1.toml").write_bytes(b'name = "caf\xe9"\n')
    (jobs / "deep.toml").write_text("x = " + "[" * 3000 + "\n")
    (jobs / "digits.toml").write_text("\nx = " + "9" * 5000 + "\n")
    (jobs / "keys.toml").write_text('"a\\nb.c" = 1\n[source]\ntype = "generate"\n"x.y" = 2\n')
    result = _check_subprocess(daemon_file, preexec_fn=_limit_memory)
    files = {daemon_file, *jobs.iterdir()}
    lines = assert_check_promises(result.returncode, result.stdout, result.stderr, files)
    assert result.returncode == 2
    assert sorted(lines) == sorted(
        [
            f"{jobs}/deep.toml: line 1, column 105: invalid TOML: arrays or tables nested too "
            "deeply to read",
            f"{jobs}/digits.toml: line 2, column 5: invalid TOML: a number with too many digits "
            "to read",
            f"{jobs}/dir.toml: cannot read the file: Is a directory",
            f"{jobs}/fifo.toml: cannot read the file: it is a FIFO, not a regular file",
            f'{jobs}/keys.toml: "a\\u000ab.c": unknown key "a\\u000ab.c"',
            f'{jobs}/keys.toml: source."x.y": unknown key "x.y"',
            f"{jobs}/keys.toml: sink: required table [sink] is missing",
            f"{jobs}/latin1.toml: line 1, column 12: expected UTF-8 text, found the byte 0xe9",
            f"{jobs}/zero.toml: cannot read the file: it is a character device, not a regular file",
        ]
    )


@pytest.mark.parametrize("seed", range(4))
def test_mutated_examples_through_the_console_script(tmp_path: Path, seed: int) -> None:
    """The real `supervisor` script on the shipped set with one file damaged (seeded flips,
    cuts, deleted and repeated lines): exit 0 or 2, each error located."""
    rng = random.Random(seed)
    files = {path.name: bytearray(path.read_bytes()) for path in EXAMPLE_FILES}
    data = files[rng.choice(sorted(files))]
    for _ in range(3):
        at = rng.randrange(len(data))
        kind = rng.choice(["flip", "cut", "insert"])
        if kind == "flip":
            data[at] ^= 1 << rng.randrange(8)
        elif kind == "cut":
            del data[at : at + rng.randrange(1, 20)]
        else:
            data[at:at] = rng.choice([b"\n[source]\n", b"\xff", b'"', b"= [[", b"\nx.y = 1\n"])
    daemon = bytes(files.pop("supervisor.toml"))
    daemon_file, paths = _write_set(tmp_path, daemon, {n: bytes(d) for n, d in files.items()})
    result = _check_subprocess(daemon_file)
    assert_check_promises(result.returncode, result.stdout, result.stderr, paths)


def test_the_shipped_example_through_the_console_script() -> None:
    """The real `supervisor check` on the shipped example exits 0."""
    result = _check_subprocess(CONFIGS / "supervisor.toml")
    assert (result.returncode, result.stderr) == (0, "")
    assert "ok, 3 job(s)" in result.stdout


def test_a_huge_job_file_is_refused_unread(tmp_path: Path) -> None:
    """A job file over 1 MiB is one error naming it, not read into memory whole."""
    daemon_file, files = _write_set(tmp_path, b"", {"big.toml": b"# " + b"x" * (1 << 21) + b"\n"})
    (line,) = assert_check_promises(*run_check(daemon_file), files)
    assert line == (
        f"{tmp_path}/jobs/big.toml: cannot read the file: it is larger than 1048576 bytes, "
        "too large to be one"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-000 file anyway")
def test_an_unreadable_job_file_is_named(tmp_path: Path) -> None:
    """A job file without read permission is one error naming it."""
    daemon_file, files = _write_set(
        tmp_path, b"", {"secret.toml": tomli_w.dumps(VALID_JOB).encode()}
    )
    (tmp_path / "jobs" / "secret.toml").chmod(0)
    (line,) = assert_check_promises(*run_check(daemon_file), files)
    assert line == f"{tmp_path}/jobs/secret.toml: cannot read the file: Permission denied"


def test_an_unreadable_daemon_file_exits_2(tmp_path: Path) -> None:
    """A daemon file that is a directory or a FIFO is one error naming it, exit 2."""
    (tmp_path / "dir.toml").mkdir()
    os.mkfifo(tmp_path / "fifo.toml")
    for name, why in (
        ("dir.toml", "Is a directory"),
        ("fifo.toml", "it is a FIFO, not a regular file"),
    ):
        code, out, err = run_check(tmp_path / name)
        (line,) = assert_check_promises(code, out, err, {tmp_path / name})
        assert line == f"{tmp_path}/{name}: cannot read the file: {why}"
