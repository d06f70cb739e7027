"""The control protocol: JSON request lines, each answered by one JSON response line.

Request:  ``{"v": 1, "verb": "pause", "jobs": ["orders"], "value": ...}``
Response: ``{"v": 1, "ok": true, "result": ...}`` or
          ``{"v": 1, "ok": false, "error": "why, and what to do"}``

A request line is decoded here, at the edge, into one typed request per verb
(`Status`, `Events`, `Reload`, `ShowOffset`, `SetOffset`, `JobCommand`); past this
module no verb travels as a string. The verbs themselves are the request types'.

A connection may carry several requests, one after another; each is answered in
order. Replies are strict JSON: a float JSON cannot hold (NaN, Infinity, from a
plugin's offset) is sent as the string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``.
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass
from typing import Any, ClassVar

VERSION = 1
MAX_REQUEST_BYTES = 64 * 1024
"""A longer request line is refused unread: no client can make the daemon buffer more."""
REQUEST_TIMEOUT = 5.0
"""Seconds a client has to send its whole request line."""
MAX_JOBS = 1000
"""Different job names one request may carry (repeats count once): a 64 KiB line could
otherwise name one job 16,000 times and be answered with 16,000 rows."""


class JobVerb(enum.StrEnum):
    """The commands run on each job a request names (at least one)."""

    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"
    START = "start"
    RESTART = "restart"
    RETRY = "retry"

    @property
    def idempotent(self) -> bool:
        """Succeeds, changing nothing, on a job already where it would put it."""
        return self in (JobVerb.PAUSE, JobVerb.STOP)


@dataclass(frozen=True, slots=True)
class Status:
    """`status`: every job, or the jobs named (one named: shown in detail)."""

    verb: ClassVar[str] = "status"
    jobs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Events:
    """`events`: the kept state changes of every job, or of the jobs named; with
    `follow`, then every new one as it happens."""

    verb: ClassVar[str] = "events"
    jobs: tuple[str, ...] = ()
    follow: bool = False


@dataclass(frozen=True, slots=True)
class Reload:
    """`reload`: re-read every file and apply the new set."""

    verb: ClassVar[str] = "reload"

    @property
    def jobs(self) -> tuple[str, ...]:
        return ()  # a reload names no job (any named in the line are not read)


@dataclass(frozen=True, slots=True)
class ShowOffset:
    """`offset JOB`: the job's committed offset."""

    verb: ClassVar[str] = "offset"
    job: str

    @property
    def jobs(self) -> tuple[str, ...]:
        return (self.job,)


@dataclass(frozen=True, slots=True)
class SetOffset:
    """`offset JOB --set VALUE`: make `value` the job's committed offset. `value` is as the
    client sent it: the daemon checks it (`supervisor.offsets.check_offset`)."""

    verb: ClassVar[str] = "offset"
    job: str
    value: Any

    @property
    def jobs(self) -> tuple[str, ...]:
        return (self.job,)


@dataclass(frozen=True, slots=True)
class JobCommand:
    """`pause`, `resume`, `stop`, `start`, `restart` or `retry` of each job named."""

    kind: JobVerb
    jobs: tuple[str, ...]

    @property
    def verb(self) -> str:
        return self.kind.value


Request = Status | Events | Reload | ShowOffset | SetOffset | JobCommand
"""Every request a client can send."""

VERBS = frozenset(
    {*(kind.verb for kind in (Status, Events, Reload, ShowOffset, SetOffset))}
    | {verb.value for verb in JobVerb}
)
"""Every verb, as it is spelled on the wire."""


class ProtocolError(ValueError):
    """A request that is not valid protocol; the message goes back to the client."""


def encode_request(request: Request) -> bytes:
    body: dict[str, Any] = {
        "v": VERSION,
        "verb": request.verb,
        "jobs": list(request.jobs),
        "value": None,
    }
    match request:
        case Events(follow=True):
            body["follow"] = True
        case SetOffset(value=value):
            body["value"] = value
            body["set"] = True
    return (json.dumps(body) + "\n").encode()


def decode_request(line: bytes) -> Request:
    """Parse one request line, or raise ProtocolError saying what is wrong.

    Never raises anything else, whatever the bytes: a hostile client gets an answer.
    """
    try:
        body = json.loads(line, parse_constant=_not_json, object_pairs_hook=_unique_keys)
    except ProtocolError:
        raise
    except RecursionError:
        raise ProtocolError("request is nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"request is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ProtocolError("request must be a JSON object")
    version = body.get("v")
    if type(version) is not int or version != VERSION:  # not true, not 1.0
        raise ProtocolError(
            f"unsupported protocol version {_short(version)}; this daemon speaks {VERSION}"
        )
    verb = body.get("verb")
    if not isinstance(verb, str) or verb not in VERBS:
        raise ProtocolError(f"unknown verb {_short(verb)}")
    jobs = body.get("jobs", [])
    if not isinstance(jobs, list) or not all(isinstance(job, str) for job in jobs):
        raise ProtocolError("jobs must be a list of job names")
    jobs = list(dict.fromkeys(jobs))  # in the order given; a repeat adds nothing
    if len(jobs) > MAX_JOBS:
        raise ProtocolError(
            f"a request names at most {MAX_JOBS} different jobs (this one names {len(jobs)}): "
            "split it, or name none to mean every job"
        )
    for flag in ("set", "follow"):
        if not isinstance(body.get(flag, False), bool):
            raise ProtocolError(f"{flag} must be true or false, got {_short(body[flag])}")
    return _typed(verb, tuple(jobs), body)


def _typed(verb: str, jobs: tuple[str, ...], body: dict[str, Any]) -> Request:
    """The request `verb` makes of `jobs` and the rest of a checked `body`."""
    match verb:
        case Status.verb:
            return Status(jobs)
        case Events.verb:
            return Events(jobs, follow=body.get("follow", False))
        case Reload.verb:
            return Reload()
        case ShowOffset.verb:
            if len(jobs) != 1:
                raise ProtocolError("offset takes exactly one job")
            if body.get("set", False):
                return SetOffset(jobs[0], body.get("value"))
            return ShowOffset(jobs[0])
    if not jobs:
        raise ProtocolError(f"{verb} needs at least one job name")
    return JobCommand(JobVerb(verb), jobs)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of two equal keys: {"verb": "status", "verb": "reload"}
    # would run a reload that a reader (or a log line) of the request takes for a status.
    body: dict[str, Any] = {}
    for key, value in pairs:
        if key in body:
            raise ProtocolError(f"request has the key {_short(key)} more than once")
        body[key] = value
    return body


def _not_json(constant: str) -> Any:
    # json.loads takes NaN, Infinity and -Infinity by default; JSON has none of them.
    raise ValueError(f"{constant} is not a JSON value")


def _short(value: Any) -> str:
    """A value from the request, shown in an error no longer than a line."""
    try:
        shown = json.dumps(value)
    except (ValueError, RecursionError):
        shown = type(value).__name__
    return shown if len(shown) <= 60 else shown[:57] + "..."


def encode_response(*, ok: bool, result: Any = None, error: str | None = None) -> bytes:
    body: dict[str, Any] = {"v": VERSION, "ok": ok}
    if ok:
        body["result"] = result
    else:
        body["error"] = error
    return (encode_json(body) + "\n").encode()


def encode_json(value: Any) -> str:
    """`value` as strict JSON: a non-finite float becomes the string "NaN", "Infinity" or
    "-Infinity", anything else JSON has no type for becomes its `str`.

    Plain `json.dumps` writes a bare NaN, which no strict JSON reader (jq, JavaScript,
    Go) accepts: one plugin's NaN offset made every `status --json` unreadable.
    """
    try:
        return json.dumps(value, default=str, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), default=str, allow_nan=False)


def _finite(value: Any) -> Any:
    """`value` with every non-finite float (also as a key) replaced by its name."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {_finite(key): _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
