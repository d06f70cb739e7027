"""The control protocol: one JSON request line, one JSON response line.

Request:  ``{"v": 1, "verb": "pause", "jobs": ["orders"], "value": ...}``
Response: ``{"v": 1, "ok": true, "result": ...}`` or
          ``{"v": 1, "ok": false, "error": "why, and what to do"}``
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

VERSION = 1
MAX_REQUEST_BYTES = 64 * 1024
"""A longer request line is refused unread: no client can make the daemon buffer more."""
REQUEST_TIMEOUT = 5.0
"""Seconds a client has to send its whole request line."""

VERBS = frozenset(
    {"status", "pause", "resume", "stop", "start", "restart", "retry", "offset", "events", "reload"}
)


class ProtocolError(ValueError):
    """A request that is not valid protocol; the message goes back to the client."""


@dataclass(frozen=True, slots=True)
class Request:
    verb: str
    jobs: tuple[str, ...] = ()
    value: Any = None
    options: dict[str, Any] = field(default_factory=dict)


def encode_request(request: Request) -> bytes:
    body = {"v": VERSION, "verb": request.verb, "jobs": list(request.jobs), "value": request.value}
    return (json.dumps({**body, **request.options}) + "\n").encode()


def decode_request(line: bytes) -> Request:
    """Parse one request line, or raise ProtocolError saying what is wrong.

    Never raises anything else, whatever the bytes: a hostile client gets an answer.
    """
    try:
        body = json.loads(line, parse_constant=_not_json)
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
    options = {k: v for k, v in body.items() if k not in ("v", "verb", "jobs", "value")}
    for flag in ("set", "follow"):
        if not isinstance(options.get(flag, False), bool):
            raise ProtocolError(f"{flag} must be true or false, got {_short(options[flag])}")
    return Request(verb, tuple(jobs), body.get("value"), options)


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
    return (json.dumps(body, default=str) + "\n").encode()
