"""How the CLI prints what the daemon answers: an aligned table, or detail for one job.

Everything shown passes through `printable`: an error message can carry any text
(a file name, a plugin's exception), and a terminal obeys the escape sequences in
it (clear the screen, rewrite the title, reorder a line with bidi overrides).
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

COLUMNS = ("JOB", "STATE", "SINCE", "OFFSET", "REC/S", "LAG", "ATTEMPT", "NEXT RETRY", "LAST ERROR")


def status_table(jobs: list[dict[str, Any]]) -> str:
    """One aligned row per job, like `supervisorctl status`."""
    rows = [COLUMNS] + [
        (
            printable(job["job"]),
            job["state"].upper()
            + (" (persist pending)" if job["persist_pending"] else "")
            + (" (final checkpoint failed)" if job.get("final_checkpoint_error") else ""),
            printable(job["since"].replace("+00:00", "Z")),
            short_offset(job["offset"]),
            "-" if job["records_per_s"] is None else f"{job['records_per_s']:g}",
            _lag(job.get("source")),
            str(job["attempt"]),
            "-" if job["next_retry_in"] is None else f"in {job['next_retry_in']:g}s",
            _one_line(job["error"] or "-", 60),
        )
        for job in jobs
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + "  "
        + row[-1]
        for row in rows
    )


def job_detail(job: dict[str, Any]) -> str:
    """Everything about one job, the failure's traceback included."""
    lines = [
        f"job:         {printable(job['job'])}",
        f"state:       {job['state'].upper()}"
        + ("  (persist pending: retrying the write)" if job["persist_pending"] else ""),
        f"since:       {printable(job['since'])}"
        + (f"  ({printable(job['cause'])})" if job.get("cause") else ""),
        f"offset:      {json.dumps(job['offset'])}",
        f"attempt:     {job['attempt']}",
        f"snapshot:    {printable(job['snapshot']['path'])} "
        f"(generation {job['snapshot']['generation']})",
    ]
    if job["records_per_s"] is not None:
        lines.append(f"records/s:   {job['records_per_s']:g}")
    for key, value in (job.get("source") or {}).items():
        lines.append(f"{printable(key) + ':':<12} {printable(json.dumps(value))}")
    if job["next_retry_in"] is not None:
        lines.append(f"next retry:  in {job['next_retry_in']:g}s")
    if job.get("final_checkpoint_error"):
        lines.append(f"final checkpoint failed: {printable(job['final_checkpoint_error'])}")
    failure = job.get("failure")
    if failure:
        lines += [
            f"cause:       {printable(failure['type'])}: {printable(failure['message'])}",
            f"failures:    {failure['attempts']} attempt(s), "
            f"first {printable(failure['first_failure_at'])}, "
            f"last {printable(failure['last_failure_at'])}",
            "traceback:",
            *(
                "  " + line
                for line in printable(failure["traceback"].rstrip(), lines=True).split("\n")
            ),
        ]
    return "\n".join(lines)


def _lag(source: dict[str, Any] | None) -> str:
    """Entries the source has not read yet, as a broker source reports them (`progress`)."""
    lag = (source or {}).get("lag")
    return str(lag) if type(lag) is int else "-"


OFFSET_WIDTH = 30


def short_offset(offset: Any) -> str:
    """The OFFSET column: at most `OFFSET_WIDTH` characters, the part that moves first.

    A broker's offset is a table whose names say where (a group, a consumer, a queue) and
    whose counters say how far; as JSON, ``{"group": "g", "consumer": "web-1-orders",
    "read": 123456}`` was cut before the count, the one figure an operator watches. Tables
    are shown as ``name=value``, numbers first; `status JOB` shows the whole offset.
    """
    if offset is None:
        return "-"
    if isinstance(offset, dict):
        if "pos" in offset:
            return f"byte {offset['pos']}"
        counters = [key for key, value in offset.items() if _is_number(value)]
        rest = [key for key in offset if key not in counters]
        pairs = (f"{key}={_compact(offset[key])}" for key in (*counters, *rest))
        return _one_line(" ".join(pairs), OFFSET_WIDTH)
    return _one_line(_compact(offset), OFFSET_WIDTH)


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)


def _compact(value: Any) -> str:
    """A string as itself, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _one_line(text: str, limit: int) -> str:
    text = printable(" ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
"""Unicode categories a terminal may act on, or that may hide or reorder text: C0 and
C1 controls (ESC, DEL, ...), format characters (bidi overrides, zero-width),
lone surrogates (they cannot even be encoded) and line/paragraph separators."""


def printable(text: str, *, lines: bool = False) -> str:
    """`text` with every character a terminal could act on written as a Python escape
    (``\\x1b``, ``\\u202e``); with `lines`, newlines are kept as line breaks."""
    if text.isprintable():  # the common case, in C: nothing to escape
        return text
    return "".join(
        char
        if (lines and char == "\n") or unicodedata.category(char) not in _UNPRINTABLE
        else _escape(char)
        for char in text
    )


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
