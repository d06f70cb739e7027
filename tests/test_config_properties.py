"""Property tests for the configuration parsers: they accept what they should and
turn any other input into a ConfigError, never a traceback."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.cli import main
from supervisor.config.loader import JOB_NAME_PATTERN, load_config
from supervisor.config.schema import Invalid, parse_duration
from supervisor.errors import ConfigError

EXAMPLE_JOBS = sorted((Path(__file__).parent.parent / "configs" / "jobs").glob("*.toml"))


@given(st.integers(0, 10**6), st.sampled_from([("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]))
def test_durations_with_units_parse_to_seconds(amount: int, unit: tuple[str, float]) -> None:
    """ "<n><unit>" is n times the unit in seconds."""
    assert parse_duration(f"{amount}{unit[0]}") == pytest.approx(amount * unit[1])


@given(st.one_of(st.integers(0, 10**9), st.floats(0, 1e9)))
def test_plain_numbers_are_seconds(value: float) -> None:
    """A non-negative number is a number of seconds."""
    assert parse_duration(value) == float(value)


@given(st.one_of(st.text(), st.booleans(), st.none(), st.lists(st.integers()), st.floats()))
def test_anything_else_is_invalid_not_a_crash(value: Any) -> None:
    """Junk raises Invalid (a ValueError) with a message, or parses to a sane duration."""
    try:
        seconds = parse_duration(value)
    except Invalid as exc:
        assert "expected" in str(exc)
    else:
        assert seconds >= 0


@given(st.text(max_size=80))
def test_job_names_are_exactly_the_safe_language(name: str) -> None:
    """Accepted names are lowercase ASCII file names that cannot leave a directory."""
    accepted = JOB_NAME_PATTERN.fullmatch(name) is not None
    assert accepted == (re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", name, re.ASCII) is not None)
    if accepted:
        assert "/" not in name and "\x00" not in name and name.isascii()
        assert not name.startswith(".") and len(name) <= 63


toml_scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)
job_keys = st.sampled_from(
    ["name", "enabled", "source", "sink", "type", "path", "retry", "max", "records", "x", "class"]
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(job_keys | st.text(max_size=8), inner, max_size=4),
    ),
    max_leaves=12,
)
documents = st.dictionaries(job_keys, toml_values, max_size=6)


def _load_only_config_errors(daemon_file: Path) -> None:
    try:
        load_config(daemon_file, environ={})
    except ConfigError as exc:
        for issue in exc.issues:
            assert issue.path and issue.message
            assert issue.where or "cannot read" in issue.message or issue.path.endswith(".toml")


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=documents)
def test_random_job_documents_give_a_config_or_config_errors(document: dict[str, Any]) -> None:
    """Random TOML job files load or fail with ConfigErrors naming file and key, nothing else."""
    with tempfile.TemporaryDirectory() as root:
        (Path(root) / "jobs").mkdir()
        (Path(root) / "supervisor.toml").write_text("")
        (Path(root) / "jobs" / "j.toml").write_text(tomli_w.dumps(document))
        _load_only_config_errors(Path(root) / "supervisor.toml")


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    example=st.sampled_from(EXAMPLE_JOBS),
    position=st.integers(0, 10_000),
    junk=st.binary(min_size=1, max_size=8),
)
def test_mutated_examples_never_crash_check(
    example: Path, position: int, junk: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bytes spliced into a shipped job file never make `supervisor check` show a traceback."""
    data = example.read_bytes()
    at = position % (len(data) + 1)
    with tempfile.TemporaryDirectory() as root:
        (Path(root) / "jobs").mkdir()
        (Path(root) / "supervisor.toml").write_text("")
        (Path(root) / "jobs" / "j.toml").write_bytes(data[:at] + junk + data[at:])
        code = main(["check", "-c", str(Path(root) / "supervisor.toml")])
    out, err = capsys.readouterr()
    assert code in (0, 2)
    assert "Traceback" not in out + err
    if code == 2:
        assert f"{root}/jobs/j.toml" in err
