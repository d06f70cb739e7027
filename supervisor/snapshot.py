"""What a job persists, and its checksummed TOML encoding (SPEC §5).

A snapshot file is a TOML document, laid out as tomli-w lays it out
(`supervisor.snapshot_toml` reads and writes it)::

    format = 2
    job = "orders"
    generation = 42
    state = "retrying"
    attempts = 0
    written_at = 2024-05-01 12:00:00.123456+00:00
    since = 2024-05-01 11:59:58.001000+00:00           # format 2: when `state` began
    next_retry_at = 2024-05-01 12:00:04.500000+00:00   # format 2: while a retry is due
    offset_chosen = true     # format 2: only when true
    disabled = true          # format 2: only when true
    checksum = "sha256:…"
    offset = 1234            # absent when None: TOML has no null
    [failure]                # absent when there is none
    attempts = 3
    ...

The checksum covers a canonical JSON form of the *parsed* document minus the
checksum, not the TOML bytes: another tomli_w version may lay the file out
differently and it still verifies, while any change of a value does not.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, TypeVar

import tomli

from supervisor.errors import SnapshotCorrupt, SnapshotUnsupported
from supervisor.offsets import check_offset
from supervisor.protocols import Offset
from supervisor.snapshot_toml import dumps as dumps_toml
from supervisor.snapshot_toml import parse as parse_toml
from supervisor.states import JobState

FORMAT_VERSION = 2
"""The format this module writes; a new layout gets a new number. Format 2 added `since`,
`next_retry_at`, `offset_chosen` and `disabled` (all optional); format 1 files still load."""

READABLE_FORMATS = frozenset({1, 2})

_ALGORITHM = "sha256:"
_TOP_KEYS = {"format", "job", "generation", "state", "attempts", "offset", "written_at", "failure"}
_FORMAT_2_KEYS = _TOP_KEYS | {"since", "next_retry_at", "offset_chosen", "disabled"}
_FAILURE_KEYS = {"attempts", "error_type", "message", "traceback"}
_FAILURE_KEYS |= {"first_failure_at", "last_failure_at"}
# Built once: json.dumps with options builds an encoder per call.
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=lambda value: _iso(value)
)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True, kw_only=True)
class FailureRecord:
    """Why a job last failed, and since when it has been failing."""

    attempts: int
    error_type: str
    message: str
    traceback: str = ""
    first_failure_at: datetime
    last_failure_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """One generation of a job's persisted progress and state."""

    job: str
    generation: int
    offset: Offset | None
    state: JobState
    attempts: int = 0
    """Consecutive failed attempts spent from the retry budget."""
    failure: FailureRecord | None = None
    written_at: datetime
    since: datetime | None = None
    """When the job entered `state` (wall clock); None in a format-1 file."""
    next_retry_at: datetime | None = None
    """When a RETRYING job's backoff ends (wall clock): a daemon restart waits until then."""
    offset_chosen: bool = False
    """The operator chose `offset` (`offset --set`, or the fresh start of a FAILED job): the
    next attempt starts there, even over an offset-keeping sink's own offset, and `start` of
    a FAILED job begins there rather than afresh. The next checkpoint clears it."""
    disabled: bool = False
    """The STOPPED `state` came from the job file's `enabled = false` (a reload), not from an
    operator's `stop`: once the file says `enabled = true` again the job starts, at the
    daemon's next start as at a reload."""

    def successor(self, **changes: Any) -> Snapshot:
        """The next generation with `changes`; the store sets `written_at` when it writes it."""
        return replace(self, generation=self.generation + 1, **changes)


class _Invalid(ValueError):
    """A reason a document is not a snapshot; `decode` adds the path."""


class _Newer(ValueError):
    """The document is intact but in a newer format; `decode` adds the path."""


def checksum(document: Mapping[str, Any]) -> str:
    """``"sha256:<hex>"`` of the canonical JSON form of `document` (without its checksum)."""
    canonical = _CANONICAL.encode(document)
    return _ALGORITHM + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def seal(document: Mapping[str, Any]) -> bytes:
    """`document` as TOML bytes with its checksum added."""
    return dumps_toml({**document, "checksum": checksum(document)}).encode("utf-8")


def encode(snapshot: Snapshot) -> bytes:
    """The snapshot file's bytes; ValueError if the offset is not TOML-representable."""
    document: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "job": snapshot.job,
        "generation": snapshot.generation,
        "state": snapshot.state.value,
        "attempts": snapshot.attempts,
        "written_at": _utc(snapshot.written_at),
    }
    if snapshot.since is not None:
        document["since"] = _utc(snapshot.since)
    if snapshot.next_retry_at is not None:
        document["next_retry_at"] = _utc(snapshot.next_retry_at)
    if snapshot.offset_chosen:
        document["offset_chosen"] = True
    if snapshot.disabled:
        document["disabled"] = True
    if snapshot.offset is not None:
        check_offset(snapshot.offset)
        document["offset"] = snapshot.offset
    if (failure := snapshot.failure) is not None:
        document["failure"] = {
            "attempts": failure.attempts,
            "error_type": _text(failure.error_type),
            "message": _text(failure.message),
            "traceback": _text(failure.traceback),
            "first_failure_at": _utc(failure.first_failure_at),
            "last_failure_at": _utc(failure.last_failure_at),
        }
    return seal(document)


def decode(data: bytes, *, job: str, path: Path) -> Snapshot:
    """The snapshot in `data`, which was read from `path`.

    SnapshotCorrupt says what is wrong with a damaged file. SnapshotUnsupported
    means an intact file from a newer supervisor: not damage, so it must not be
    set aside for an older generation (that would silently rewind the job).
    """
    try:
        return _decode(data, job)
    except _Invalid as exc:
        raise SnapshotCorrupt(f"corrupt snapshot {path}: {exc}") from None
    except _Newer as exc:
        raise SnapshotUnsupported(
            f"snapshot {path} {exc}: run that version, or move the file away to start "
            "from the previous generation (or the source's start)"
        ) from None


def _decode(data: bytes, job: str) -> Snapshot:
    if not data:
        raise _Invalid("the file is empty (zero bytes)")
    try:
        document = parse_toml(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _Invalid(f"not UTF-8 text (bad byte at {exc.start})") from None
    except tomli.TOMLDecodeError as exc:
        raise _Invalid(f"not valid TOML ({exc})") from None
    # The format first: an intact newer file is refused as such, not taken for damage.
    version = _get(document, "format", int)
    stored = {"checksum": document.pop("checksum")} if "checksum" in document else {}
    if version not in READABLE_FORMATS:
        if version > FORMAT_VERSION and _sealed(document, stored):
            raise _Newer(
                f"was written by a newer stream-supervisor (format {version}; "
                f"this one reads format {FORMAT_VERSION})"
            )
        # A damaged digit, or a newer layout that does not verify: damage either way.
        raise _Invalid(f"unknown format version {version} (this supervisor reads {FORMAT_VERSION})")
    if not _sealed(document, stored):
        raise _Invalid("checksum mismatch: the file was changed or damaged after it was written")
    _no_unknown_keys(document, _TOP_KEYS if version == 1 else _FORMAT_2_KEYS, "")
    if (owner := _get(document, "job", str)) != job:
        raise _Invalid(f"it belongs to job {owner!r}, not {job!r}")
    state_name = _get(document, "state", str)
    try:
        state = JobState(state_name)
    except ValueError:
        raise _Invalid(f"unknown state {state_name!r}") from None
    offset = document.get("offset")
    if offset is not None:
        try:
            check_offset(offset)
        except ValueError as exc:
            raise _Invalid(str(exc)) from None
    failure = document.get("failure")
    return Snapshot(
        job=owner,
        generation=_count(document, "generation"),
        offset=offset,
        state=state,
        attempts=_count(document, "attempts"),
        failure=None if failure is None else _failure(failure),
        written_at=_moment(document, "written_at"),
        since=_optional_moment(document, "since"),
        next_retry_at=_optional_moment(document, "next_retry_at"),
        offset_chosen="offset_chosen" in document and _get(document, "offset_chosen", bool),
        disabled="disabled" in document and _get(document, "disabled", bool),
    )


def _sealed(document: Mapping[str, Any], stored: Mapping[str, Any]) -> bool:
    """Whether ``stored["checksum"]`` is the checksum of `document`, the file without it;
    _Invalid if the file had no checksum."""
    expected = _get(stored, "checksum", str)
    return hmac.compare_digest(expected.encode("utf-8"), checksum(document).encode("utf-8"))


def _failure(table: object) -> FailureRecord:
    if not isinstance(table, dict):
        raise _Invalid(f"field 'failure' must be a table, not {type(table).__name__}")
    _no_unknown_keys(table, _FAILURE_KEYS, "failure.")
    return FailureRecord(
        attempts=_count(table, "attempts", "failure."),
        error_type=_get(table, "error_type", str, "failure."),
        message=_get(table, "message", str, "failure."),
        traceback=_get(table, "traceback", str, "failure.") if "traceback" in table else "",
        first_failure_at=_moment(table, "first_failure_at", "failure."),
        last_failure_at=_moment(table, "last_failure_at", "failure."),
    )


def _get(table: Mapping[str, Any], key: str, kind: type[_T], where: str = "") -> _T:
    if key not in table:
        raise _Invalid(f"missing field '{where}{key}'")
    value = table[key]
    # bool is an int to Python, never to a snapshot.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _Invalid(f"field '{where}{key}' must be {kind.__name__}, not {type(value).__name__}")
    return value


def _count(table: Mapping[str, Any], key: str, where: str = "") -> int:
    value = _get(table, key, int, where)
    if value < 0:
        raise _Invalid(f"field '{where}{key}' is negative ({value})")
    return value


def _moment(table: Mapping[str, Any], key: str, where: str = "") -> datetime:
    value = _get(table, key, datetime, where)
    if value.tzinfo is None:
        raise _Invalid(f"field '{where}{key}' has no UTC offset")
    return value.astimezone(UTC)


def _optional_moment(table: Mapping[str, Any], key: str) -> datetime | None:
    return _moment(table, key) if key in table else None


def _no_unknown_keys(table: Mapping[str, Any], known: set[str], where: str) -> None:
    # A newer writer's field would be silently dropped by the next write: refuse instead.
    if unknown := sorted(set(table) - known):
        raise _Invalid("unknown field(s) " + ", ".join(f"'{where}{key}'" for key in unknown))


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"snapshot times must be timezone-aware, got {moment.isoformat()}")
    return moment.astimezone(UTC)


def _text(text: str) -> str:
    # An error message may carry lone surrogates (undecodable file names): keep them visible.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _iso(value: object) -> str:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} in a snapshot document")
