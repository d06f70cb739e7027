"""Property tests for the configuration parsers: they accept exactly what they
should and turn any other input into a ConfigError, never a traceback."""

from __future__ import annotations

import math
import re
import string
import tempfile
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.config.loader import JOB_NAME_PATTERN, load_config, parse_duration
from supervisor.errors import ConfigError

EXAMPLE_JOBS = sorted((Path(__file__).parent.parent.parent / "configs" / "jobs").glob("*.toml"))
UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@given(st.integers(0, 10**6), st.integers(0, 999), st.sampled_from(sorted(UNITS)))
def test_durations_round_trip(whole: int, thousandths: int, unit: str) -> None:
    """ "<n>[.<fraction>]<unit>" is n times the unit in seconds, and those seconds parse as-is."""
    seconds = parse_duration(f"{whole}.{thousandths:03d}{unit}")
    assert seconds == pytest.approx((whole + thousandths / 1000) * UNITS[unit])
    assert parse_duration(f"{whole}{unit}") == pytest.approx(whole * UNITS[unit])
    assert parse_duration(seconds) == seconds


@given(st.one_of(st.integers(0, 10**12), st.floats(0, 1e12)))
def test_plain_numbers_are_seconds(value: float) -> None:
    """A finite non-negative int or float is that many seconds."""
    assert parse_duration(value) == float(value)


junk = st.one_of(
    st.text(max_size=12),
    st.text(alphabet="0123456789.smh -+eE_", max_size=8),
    st.booleans(),
    st.none(),
    st.integers(),
    st.integers(10**300, 10**400),
    st.floats(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.datetimes(),
    st.binary(max_size=4),
)


@given(junk)
def test_anything_else_is_a_value_error(value: Any) -> None:
    """Any other input raises ValueError saying what was expected, or is a valid duration."""
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        assert "expected" in str(exc)
    else:
        assert math.isfinite(seconds) and seconds >= 0
        assert not isinstance(value, bool)
        if isinstance(value, str):
            assert re.fullmatch(r"[0-9]+(\.[0-9]+)?(ms|s|m|h)", value)


def _is_safe_name(name: str) -> bool:
    """The rule, written without a regex: 1-63 of [a-z0-9_-], not starting with _ or -."""
    allowed = set(string.ascii_lowercase + string.digits + "_-")
    return 1 <= len(name) <= 63 and set(name) <= allowed and name[0] not in "_-"


near_names = st.text(
    alphabet=st.one_of(
        st.sampled_from(list("az09_-") * 8 + list("./\\AZ\x00\n\t :\u043e\u0430\u0131\uff41")),
        st.characters(),
    ),
    max_size=70,
)


@given(st.one_of(near_names, st.text(alphabet="abc-_9", min_size=60, max_size=66)))
def test_job_names_are_exactly_the_safe_language(name: str) -> None:
    """The pattern accepts exactly the safe names, whichever re method is used."""
    accepted = JOB_NAME_PATTERN.fullmatch(name) is not None
    assert accepted == _is_safe_name(name)
    assert (JOB_NAME_PATTERN.match(name) is not None) == accepted
    assert (JOB_NAME_PATTERN.search(name) is not None) == accepted
    if accepted:
        assert "/" not in name and ".." not in name and "\x00" not in name and name.isascii()


KNOWN_KEYS = [
    *["name", "enabled", "suspend_on_failure", "source", "sink", "processor", "checkpoint"],
    *["retry", "records", "type", "path", "format", "follow", "start", "poll_interval"],
    *["count", "rate", "class", "table", "function", "every_records", "interval", "initial"],
    *["max", "multiplier", "jitter", "max_attempts", "reset_after", "retry_on", "fatal_on"],
    *["on_error", "dead_letter", "max_errors", "supervisor", "defaults", "jobs"],
]
toml_scalars = st.one_of(
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(
        [
            *["file", "generate", "python", "jsonl", "sqlite", "stdout", "null", "dead_letter"],
            *["5s", "250ms", "0", "a.b:C", "x", "../x", "~/x", "0660", "lines", "end"],
        ]
    ),
    st.datetimes(),
    st.dates(),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=6), inner, max_size=5),
    ),
    max_leaves=15,
)
documents = st.dictionaries(st.sampled_from(KNOWN_KEYS), toml_values, max_size=7)


def _load_only_config_errors(daemon: bytes, job: bytes) -> None:
    """Load a daemon file and one job file; anything but a Config or ConfigError fails."""
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        (root / "jobs").mkdir()
        (root / "supervisor.toml").write_bytes(daemon)
        (root / "jobs" / "j.toml").write_bytes(job)
        try:
            load_config(root / "supervisor.toml", environ={})
        except ConfigError as exc:
            assert exc.issues
            for issue in exc.issues:
                assert issue.path in (str(root / "supervisor.toml"), str(root / "jobs" / "j.toml"))
                assert issue.message
                assert issue.where or "TOML" in issue.message or "read" in issue.message


VALID_JOB = {"source": {"type": "generate"}, "sink": {"type": "null"}}


@settings(max_examples=200)
@given(job=documents, defaults=documents, over_a_valid_job=st.booleans())
def test_random_documents_give_a_config_or_config_errors(
    job: dict[str, Any], defaults: dict[str, Any], over_a_valid_job: bool
) -> None:
    """Random TOML job files, with random [defaults], load or fail with ConfigError only."""
    if over_a_valid_job:  # so that some documents get past the required keys
        job = {**VALID_JOB, **job}
        defaults = {key: value for key, value in defaults.items() if key != "name"}
    daemon = tomli_w.dumps({"defaults": defaults}).encode()
    _load_only_config_errors(daemon, tomli_w.dumps(job).encode())


@settings(max_examples=200)
@given(daemon=st.binary(max_size=200), job=st.binary(max_size=200))
def test_arbitrary_bytes_give_config_errors(daemon: bytes, job: bytes) -> None:
    """Any bytes as the daemon file or as a job file fail with ConfigError, never a traceback."""
    _load_only_config_errors(daemon, job)


@settings(max_examples=200)
@given(
    example=st.sampled_from(EXAMPLE_JOBS),
    position=st.integers(0, 10_000),
    length=st.integers(0, 8),
    junk=st.binary(min_size=1, max_size=8),
)
def test_mutated_examples_give_a_config_or_config_errors(
    example: Path, position: int, length: int, junk: bytes
) -> None:
    """Bytes spliced into a shipped job file (near-valid TOML) never cause a traceback."""
    data = example.read_bytes()
    at = position % (len(data) + 1)
    _load_only_config_errors(b"", data[:at] + junk + data[at + length :])
