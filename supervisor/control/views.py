"""How the CLI prints what the daemon answers: an aligned table, or detail for one job."""

from __future__ import annotations

import json
from typing import Any

COLUMNS = ("JOB", "STATE", "SINCE", "OFFSET", "REC/S", "ATTEMPT", "NEXT RETRY", "LAST ERROR")


def status_table(jobs: list[dict[str, Any]]) -> str:
    """One aligned row per job, like `supervisorctl status`."""
    rows = [COLUMNS] + [
        (
            job["job"],
            job["state"].upper() + (" (persist pending)" if job["persist_pending"] else ""),
            job["since"].replace("+00:00", "Z"),
            short_offset(job["offset"]),
            "-" if job["records_per_s"] is None else f"{job['records_per_s']:g}",
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
        f"job:         {job['job']}",
        f"state:       {job['state'].upper()}"
        + ("  (persist pending: retrying the write)" if job["persist_pending"] else ""),
        f"since:       {job['since']}" + (f"  ({job['cause']})" if job.get("cause") else ""),
        f"offset:      {json.dumps(job['offset'])}",
        f"attempt:     {job['attempt']}",
        f"snapshot:    {job['snapshot']['path']} (generation {job['snapshot']['generation']})",
    ]
    if job["records_per_s"] is not None:
        lines.append(f"records/s:   {job['records_per_s']:g}")
    if job["next_retry_in"] is not None:
        lines.append(f"next retry:  in {job['next_retry_in']:g}s")
    failure = job.get("failure")
    if failure:
        lines += [
            f"cause:       {failure['type']}: {failure['message']}",
            f"failures:    {failure['attempts']} attempt(s), first {failure['first_failure_at']}, "
            f"last {failure['last_failure_at']}",
            "traceback:",
            *("  " + line for line in failure["traceback"].rstrip().splitlines()),
        ]
    return "\n".join(lines)


def short_offset(offset: Any) -> str:
    if offset is None:
        return "-"
    if isinstance(offset, dict) and "pos" in offset:
        return f"byte {offset['pos']}"
    return _one_line(json.dumps(offset), 30)


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
