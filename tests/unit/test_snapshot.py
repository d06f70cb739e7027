"""The snapshot encoding: every field round-trips and every kind of damage is caught."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.errors import SnapshotCorrupt, SnapshotUnsupported
from supervisor.offsets import check_offset
from supervisor.protocols import Offset
from supervisor.snapshot import FailureRecord, Snapshot, decode, encode, seal
from supervisor.states import JobState

PATH = Path("/state/orders.snapshot.toml")
WHEN = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
FAILURE = FailureRecord(
    attempts=3,
    error_type="ConnectionError",
    message='refused: "db" \n down',
    traceback="Traceback (most recent call last):\n  ...\nConnectionError: refused\n",
    first_failure_at=WHEN - timedelta(minutes=5),
    last_failure_at=WHEN,
)


def make(**changes: Any) -> Snapshot:
    fields: dict[str, Any] = {
        "job": "orders",
        "generation": 7,
        "offset": 1234,
        "state": JobState.RUNNING,
        "written_at": WHEN,
    }
    return Snapshot(**{**fields, **changes})


def document(snapshot: Snapshot) -> dict[str, Any]:
    """The parsed TOML of an encoded snapshot, without its checksum."""
    parsed = tomllib.loads(encode(snapshot).decode())
    del parsed["checksum"]
    return parsed


def corrupt_reason(data: bytes, job: str = "orders") -> str:
    with pytest.raises(SnapshotCorrupt) as caught:
        decode(data, job=job, path=PATH)
    message = str(caught.value)
    assert str(PATH) in message
    return message


@pytest.mark.parametrize(
    "offset", [0, 2**63 - 1, -(2**63), "topic-3:0x1f", {"file": "/a b", "pos": {"line": 3}}, None]
)
@pytest.mark.parametrize("failure", [FAILURE, None])
def test_every_field_round_trips(offset: Offset | None, failure: FailureRecord | None) -> None:
    """decode(encode(s)) gives back s, whatever the offset and with or without a failure."""
    snapshot = make(offset=offset, failure=failure, state=JobState.SUSPENDED, attempts=3)
    assert decode(encode(snapshot), job="orders", path=PATH) == snapshot


def test_none_offset_and_failure_are_omitted() -> None:
    """TOML has no null: a missing offset or failure is an absent key."""
    parsed = document(make(offset=None))
    assert "offset" not in parsed
    assert "failure" not in parsed


def test_times_are_stored_in_utc() -> None:
    """A time in another zone is written as the same instant in UTC."""
    east = WHEN.astimezone(timezone(timedelta(hours=5)))
    decoded = decode(encode(make(written_at=east)), job="orders", path=PATH)
    assert decoded.written_at == WHEN
    assert decoded.written_at.tzinfo is UTC


def test_checksum_does_not_depend_on_layout() -> None:
    """The same values laid out differently (another tomli_w, say) still verify."""
    snapshot = make(offset={"file": "x", "pos": 9}, failure=FAILURE)
    parsed = tomllib.loads(encode(snapshot).decode())
    relaid = "\n\n".join(
        f"{key}   =   {tomli_w.dumps({key: value}).split('=', 1)[1].strip()}"
        for key, value in reversed(list(parsed.items()))
        if not isinstance(value, dict)
    )
    relaid += "\n\n" + tomli_w.dumps(
        {key: value for key, value in parsed.items() if isinstance(value, dict)},
        multiline_strings=True,
        indent=2,
    )
    assert decode(relaid.encode(), job="orders", path=PATH) == snapshot


def test_a_flipped_bit_in_the_offset_is_detected() -> None:
    """Changing one bit of the offset value fails the checksum."""
    data = encode(make(offset=1234))
    damaged = data.replace(b"offset = 1234", b"offset = 1235")
    assert damaged != data
    assert "checksum mismatch" in corrupt_reason(damaged)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\x00\xff\x13garbage\x8f" * 10, "not UTF-8"),
        (b"\xc3\x28 = 1", "not UTF-8"),
        (b"this is = not = toml", "not valid TOML"),
    ],
)
def test_unreadable_bytes_are_detected(data: bytes, reason: str) -> None:
    """Zero-length, garbage, non-UTF-8 and non-TOML files are corrupt, saying which."""
    assert reason in corrupt_reason(data)


def test_a_truncated_file_is_detected() -> None:
    """Every truncation of a snapshot file is corrupt, unless it cut only the final newline."""
    snapshot = make(failure=FAILURE)
    data = encode(snapshot)
    assert decode(data.rstrip(), job="orders", path=PATH) == snapshot
    for length in range(len(data.rstrip())):
        corrupt_reason(data[:length])


def test_a_snapshot_of_another_job_is_refused() -> None:
    """A file that names another job (copied over by mistake) is corrupt."""
    assert "'orders', not 'billing'" in corrupt_reason(encode(make()), job="billing")


def test_a_missing_checksum_is_detected() -> None:
    """A file without a checksum is corrupt."""
    data = tomli_w.dumps(document(make())).encode()
    assert "missing field 'checksum'" in corrupt_reason(data)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"format": 0}, "unknown format version 0"),
        ({"format": "1"}, "field 'format' must be int"),
        ({"generation": -1}, "field 'generation' is negative"),
        ({"generation": True}, "field 'generation' must be int, not bool"),
        ({"attempts": 1.5}, "field 'attempts' must be int"),
        ({"state": "sleeping"}, "unknown state 'sleeping'"),
        ({"job": 3}, "field 'job' must be str"),
        ({"written_at": "yesterday"}, "field 'written_at' must be datetime"),
        ({"written_at": datetime(2024, 1, 1)}, "field 'written_at' has no UTC offset"),
        ({"offset": {"at": datetime(2024, 1, 1, tzinfo=UTC)}}, "holds a datetime"),
        ({"failure": "boom"}, "field 'failure' must be a table"),
        ({"failure": {"attempts": 1}}, "missing field 'failure.error_type'"),
        ({"colour": "blue"}, "unknown field(s) 'colour'"),
    ],
)
def test_ill_formed_documents_are_refused(change: dict[str, Any], reason: str) -> None:
    """A correctly checksummed document with a wrong field is still corrupt, saying which."""
    assert reason in corrupt_reason(seal({**document(make()), **change}))


def test_an_intact_file_in_a_newer_format_is_unsupported_not_corrupt() -> None:
    """A newer supervisor's file is refused as such (naming path and version), not as damage."""
    with pytest.raises(SnapshotUnsupported) as caught:
        decode(seal({**document(make()), "format": 3}), job="orders", path=PATH)
    assert str(PATH) in str(caught.value)
    assert "newer stream-supervisor (format 3; this one reads format 2)" in str(caught.value)


def test_a_newer_format_number_that_does_not_verify_is_corrupt() -> None:
    """A version digit changed after sealing (a bit flip) is damage: the checksum says so."""
    data = encode(make()).replace(b"format = 2", b"format = 3")
    assert "unknown format version 3" in corrupt_reason(data)


@pytest.mark.parametrize("field", ["job", "generation", "state", "attempts", "written_at"])
def test_missing_fields_are_refused(field: str) -> None:
    """Each required field's absence is named."""
    parsed = document(make())
    del parsed[field]
    assert f"missing field '{field}'" in corrupt_reason(seal(parsed))


def test_a_format_1_file_loads_with_the_new_fields_at_their_defaults() -> None:
    """A snapshot written before format 2 (no since, next-retry time or chosen offset) loads."""
    parsed = document(make(failure=FAILURE))
    old = seal({**parsed, "format": 1})
    assert decode(old, job="orders", path=PATH) == make(failure=FAILURE)


def test_a_format_1_file_with_format_2_fields_is_corrupt() -> None:
    """Format 1 never held the new fields: finding one there is damage, not data."""
    parsed = {**document(make()), "format": 1, "since": WHEN}
    assert "unknown field(s) 'since'" in corrupt_reason(seal(parsed))


def test_format_2_fields_round_trip() -> None:
    """since, next_retry_at, offset_chosen and disabled are written and read back."""
    snapshot = make(
        since=WHEN, next_retry_at=WHEN + timedelta(seconds=9), offset_chosen=True, disabled=True
    )
    assert decode(encode(snapshot), job="orders", path=PATH) == snapshot
    assert b"offset_chosen = true" in encode(snapshot)
    assert b"disabled = true" in encode(snapshot)
    assert b"offset_chosen" not in encode(make())
    assert b"disabled" not in encode(make())


def test_failure_traceback_defaults_to_empty() -> None:
    """A failure table without a traceback decodes with an empty one."""
    parsed = document(make(failure=FAILURE))
    del parsed["failure"]["traceback"]
    decoded = decode(seal(parsed), job="orders", path=PATH)
    assert decoded.failure is not None
    assert decoded.failure.traceback == ""


@pytest.mark.parametrize(
    "offset", [2**63, {"a": [1, None]}, {1: "x"}, ("a", 1), "\udcff", b"bytes", float]
)
def test_offsets_toml_cannot_hold_are_refused_on_encode(offset: Any) -> None:
    """An offset that would not read back the same is a ValueError before any byte is written."""
    with pytest.raises(ValueError, match="offset"):
        encode(make(offset=offset))


def test_naive_times_are_refused_on_encode() -> None:
    """A time without a zone is ambiguous: refused rather than guessed."""
    with pytest.raises(ValueError, match="timezone-aware"):
        encode(make(written_at=datetime(2024, 1, 1)))


def test_undecodable_text_in_a_failure_is_kept_visible() -> None:
    """A lone surrogate in an error message (an undecodable file name) is escaped, not fatal."""
    failure = FailureRecord(
        attempts=1,
        error_type="OSError",
        message="cannot open b\udcffd",
        first_failure_at=WHEN,
        last_failure_at=WHEN,
    )
    decoded = decode(encode(make(failure=failure)), job="orders", path=PATH)
    assert decoded.failure is not None
    assert decoded.failure.message == "cannot open b\\udcffd"


def test_successor_increments_the_generation() -> None:
    """successor() is the next generation with the changes applied."""
    nxt = make(generation=7).successor(offset=99, state=JobState.PAUSED)
    assert (nxt.generation, nxt.offset, nxt.state) == (8, 99, JobState.PAUSED)


# --- properties ------------------------------------------------------------------------

keys = st.text(min_size=1, max_size=8)
scalars = st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20)
# The empty table is a leaf: an extend step that may draw nothing from `inner`
# trips Hypothesis's "doesn't use its argument" check (an error under -W error).
offsets: st.SearchStrategy[Any] = st.recursive(
    scalars | st.builds(dict),
    lambda inner: st.dictionaries(keys, inner, min_size=1, max_size=4),
    max_leaves=8,
)
moments = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(9000, 1, 1), timezones=st.just(UTC)
)
failures = st.builds(
    FailureRecord,
    attempts=st.integers(0, 1000),
    error_type=st.text(max_size=30),
    message=st.text(max_size=60),
    traceback=st.text(max_size=60),
    first_failure_at=moments,
    last_failure_at=moments,
)
snapshots = st.builds(
    Snapshot,
    job=st.from_regex(r"[a-z0-9][a-z0-9_-]{0,62}", fullmatch=True),
    generation=st.integers(0, 2**63 - 1),
    offset=st.none() | offsets,
    state=st.sampled_from(JobState),
    attempts=st.integers(0, 1000),
    failure=st.none() | failures,
    written_at=moments,
    since=st.none() | moments,
    next_retry_at=st.none() | moments,
    offset_chosen=st.booleans(),
    disabled=st.booleans(),
)


@given(snapshots)
def test_any_valid_snapshot_round_trips(snapshot: Snapshot) -> None:
    """Every representable snapshot decodes to itself."""
    assert decode(encode(snapshot), job=snapshot.job, path=PATH) == snapshot


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(snapshot=snapshots, data=st.data())
def test_any_single_byte_change_is_detected_or_harmless(snapshot: Snapshot, data: Any) -> None:
    """Changing any one byte either makes the file corrupt or leaves the same snapshot."""
    encoded = bytearray(encode(snapshot))
    index = data.draw(st.integers(0, len(encoded) - 1), label="index")
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != encoded[index]), label="byte")
    encoded[index] = byte
    try:
        decoded = decode(bytes(encoded), job=snapshot.job, path=PATH)
    except SnapshotCorrupt:
        return
    assert decoded == snapshot


# --- the one offset rule (issues 13.13 and 16) -----------------------------------------

# Anything a plugin source or an operator could hand over, and then some: null, NaN,
# infinities, 2**64, lone surrogates, non-text keys, tuples, sets, bytes.
wild_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=4)
    | st.sampled_from(["\ud800", "a\udcffb"])
)
wild_keys = st.text(max_size=6) | st.integers(-3, 3) | st.none() | st.sampled_from(["\udfff"])
wild_offsets: st.SearchStrategy[Any] = st.recursive(
    wild_scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(wild_keys, inner, max_size=3)
        | st.tuples(inner)
        | st.frozensets(st.integers(0, 3), max_size=2)
    ),
    max_leaves=12,
)


def nested(depth: int, leaf: object = 0, *, tables: bool = False) -> object:
    """`leaf` inside `depth` arrays (or tables)."""
    value = leaf
    for _ in range(depth):
        value = {"k": value} if tables else [value]
    return value


@given(wild_offsets.filter(lambda offset: offset is not None))  # None: "no offset yet"
def test_check_offset_raises_only_value_error_and_what_it_accepts_round_trips(
    offset: Any,
) -> None:
    """`check_offset` refuses with ValueError alone, and any offset it accepts is decoded
    from its encoding unchanged."""
    try:
        check_offset(offset)
    except ValueError:
        with pytest.raises(ValueError, match="offset"):
            encode(make(offset=offset))
        return
    assert decode(encode(make(offset=offset)), job="orders", path=PATH).offset == offset


@pytest.mark.parametrize("tables", [False, True], ids=["arrays", "tables"])
@pytest.mark.parametrize("depth", [33, 300, 100_000])
def test_an_offset_nested_too_deep_is_a_value_error_not_a_recursion_error(
    depth: int, tables: bool
) -> None:
    """An offset more than 32 arrays or tables deep (a plugin's, 300 deep, raised
    RecursionError from the encoder) is refused with a ValueError naming the limit."""
    offset = nested(depth, tables=tables)
    with pytest.raises(ValueError, match="nested more than 32 deep"):
        check_offset(offset)
    with pytest.raises(ValueError, match="nested more than 32 deep"):
        encode(make(offset=offset))


def test_an_offset_32_deep_is_stored() -> None:
    """32 arrays or tables deep is the limit, and such an offset round-trips."""
    for offset in (nested(32), nested(32, tables=True)):
        check_offset(offset)
        assert decode(encode(make(offset=offset)), job="orders", path=PATH).offset == offset


@pytest.mark.parametrize(
    ("offset", "reason"),
    [
        (None, "holds null"),
        ([1, None], "holds null"),
        (float("nan"), "not finite"),
        ({"at": float("-inf")}, "not finite"),
        (2**64, "64-bit range"),
        (10**5000, "of 16610 bits is outside"),
        ({"\ud800": 1}, "offset key '\\\\ud800' is not valid Unicode"),
        ({(1,) * 5000: 1}, "offset key .* is not text"),
    ],
    ids=["null", "null-inside", "nan", "minus-infinity", "2**64", "huge", "bad-key", "tuple-key"],
)
def test_check_offset_says_why_it_refuses(offset: Any, reason: str) -> None:
    """Each refusal names what is wrong with the offset."""
    with pytest.raises(ValueError, match=reason):
        check_offset(offset)


def test_a_stored_offset_the_rule_refuses_is_corrupt() -> None:
    """A sealed file whose offset breaks the rule (NaN: it would never read back equal)
    is refused as corrupt when read, by the same rule."""
    parsed = document(make())
    message = corrupt_reason(seal({**parsed, "offset": float("nan")}))
    assert "offset number nan is not finite" in message
