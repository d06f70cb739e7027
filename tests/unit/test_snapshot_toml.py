"""The fast reader of snapshot TOML: tomli's answer, sooner, or tomli itself."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import tomli
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.snapshot import Snapshot, encode
from supervisor.snapshot_toml import _dumps_layout, _parse_layout, dumps, parse
from supervisor.states import JobState
from tests.unit.test_snapshot import failures, moments, snapshots


def tomli_or_error(text: str) -> dict[str, Any] | type[Exception]:
    try:
        return tomli.loads(text)
    except tomli.TOMLDecodeError:
        return tomli.TOMLDecodeError


def parse_or_error(text: str) -> dict[str, Any] | type[Exception]:
    try:
        return parse(text)
    except tomli.TOMLDecodeError:
        return tomli.TOMLDecodeError


@given(snapshots)
def test_every_encoded_snapshot_reads_as_tomllib_reads_it(snapshot: Snapshot) -> None:
    """Whatever the writer puts in a file, parse returns exactly tomli's document."""
    text = encode(snapshot).decode("utf-8")
    assert parse(text) == tomli.loads(text)


common = st.builds(
    Snapshot,
    job=st.from_regex(r"[a-z0-9][a-z0-9_-]{0,62}", fullmatch=True),
    generation=st.integers(0, 2**60),
    # What the built-in sources write: a count, or a file position's table.
    offset=st.none()
    | st.integers(-(2**63), 2**63 - 1)
    | st.dictionaries(
        st.from_regex(r"[a-z_]{1,16}", fullmatch=True),
        st.integers(0, 2**63 - 1) | st.text(alphabet="0123456789abcdef", max_size=64),
        max_size=6,
    ),
    state=st.sampled_from(JobState),
    attempts=st.integers(0, 1000),
    failure=st.none()
    | failures.map(
        lambda failure: failure.__class__(
            attempts=failure.attempts,
            error_type="ValueError",
            message='bad "line"\n\tat\r\\ 3',
            traceback="Traceback:\n  File x\n",
            first_failure_at=failure.first_failure_at,
            last_failure_at=failure.last_failure_at,
        )
    ),
    written_at=moments,
    since=st.none() | moments,
    next_retry_at=st.none() | moments,
    offset_chosen=st.booleans(),
    disabled=st.booleans(),
)


@given(common)
def test_the_layout_the_daemon_writes_takes_the_fast_path(snapshot: Snapshot) -> None:
    """Integer offsets, plain and escaped text and UTC times never fall back to tomli:
    a fallback would be correct but would cost what the reader exists to save."""
    text = encode(snapshot).decode("utf-8")
    assert _parse_layout(text) == tomli.loads(text)


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(snapshot=common, data=st.data())
def test_a_changed_file_reads_as_tomllib_reads_it(snapshot: Snapshot, data: Any) -> None:
    """Damage anywhere (a byte replaced, inserted or removed) gets tomli's answer: the
    same document, or a TOMLDecodeError."""
    text = encode(snapshot).decode("utf-8")
    index = data.draw(st.integers(0, len(text)), label="index")
    edit = data.draw(st.sampled_from(["replace", "insert", "delete"]), label="edit")
    char = data.draw(
        st.sampled_from('0123456789-+:. "\\\n\t[]=_abcxyzT#\r\x00\x7fé') | st.characters(),
        label="char",
    )
    if edit == "replace":
        text = text[:index] + char + text[index + 1 :]
    elif edit == "insert":
        text = text[:index] + char + text[index:]
    else:
        text = text[:index] + text[index + 1 :]
    assert parse_or_error(text) == tomli_or_error(text)


@pytest.mark.parametrize(
    "text",
    [
        "a = 007\n",  # leading zeros: not TOML
        "a = -0\n",
        "a = 1\na = 2\n",  # a key twice
        "failure = 1\n[failure]\nb = 2\n",  # a key, then a table of that name
        "[failure]\n[failure]\n",
        "a = 2024-02-30 00:00:00+00:00\n",  # no such day
        "a = 2024-01-01 24:00:00+00:00\n",
        "a = 2024-01-01 00:00:00.1234567+00:00\n",
        "a = 2024-01-01 00:00:00+01:00\n",
        'a = "\\u00e9"\n',
        'a = "\\ud800"\n',  # an escaped surrogate: not TOML
        'a = "tab\there"\n',
        "a = 12345678901234567890123\n",
        "a = 1 # comment\n",
        "a = 1\r\n",
        "a = 1.5\n",
        "a = true\n",
        "[other]\nb = 1\n",
        "",
        "\n\n",
    ],
)
def test_edge_cases_read_as_tomllib_reads_them(text: str) -> None:
    assert parse_or_error(text) == tomli_or_error(text)


def test_times_are_utc_datetimes() -> None:
    document = parse("written_at = 2026-11-30 15:22:21.192210+00:00\n")
    assert document["written_at"] == datetime(2026, 11, 30, 15, 22, 21, 192210, tzinfo=UTC)
    assert document["written_at"].utcoffset() == UTC.utcoffset(None)


# --- writing ---------------------------------------------------------------------------


def document_of(snapshot: Snapshot) -> dict[str, Any]:
    return tomli.loads(encode(snapshot).decode("utf-8"))


@given(snapshots)
def test_every_snapshot_is_written_as_tomli_w_writes_it(snapshot: Snapshot) -> None:
    """Byte for byte: the fast writer changes no file, only how soon it is ready."""
    document = document_of(snapshot)
    assert dumps(document) == tomli_w.dumps(document)


flat_values = st.booleans() | st.integers() | st.text() | moments
flat_tables = st.dictionaries(st.text(max_size=6), flat_values, max_size=5)


@given(
    st.dictionaries(
        st.text(max_size=6), flat_values | flat_tables | st.floats() | st.lists(st.integers())
    )
)
def test_flat_documents_are_written_as_tomli_w_writes_them(document: dict[str, Any]) -> None:
    """Any keys, any text (control characters, quotes, surrogate-free Unicode), tables of
    scalars; a float or a list goes to tomli-w itself."""
    assert dumps(document) == tomli_w.dumps(document)


@given(common)
def test_the_layout_the_daemon_writes_is_written_on_the_fast_path(snapshot: Snapshot) -> None:
    document = document_of(snapshot)
    assert _dumps_layout(document) == tomli_w.dumps(document)
