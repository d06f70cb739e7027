"""The status page at ``/``: every job's state, records/s and chart, lag, attempt, error.

One self-contained HTML document: no script, no external asset (it works on a host
with no internet, and its Content-Security-Policy forbids anything else), a
``<meta http-equiv="refresh">`` to refresh itself, and each job's records/s of the
last 15 minutes as an inline SVG polyline. Every value shown (job names, errors,
offsets, lag) goes through `html.escape`. Read-only: there is nothing to click that
changes anything.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from supervisor import __version__

REFRESH_SECONDS: Final = 5
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
COLOURS: Final = {
    "running": "#1a7f37",
    "pending": "#6e7781",
    "retrying": "#bf8700",
    "paused": "#0969da",
    "stopped": "#57606a",
    "finished": "#8250df",
    "suspended": "#cf222e",
    "failed": "#a40e26",
}
ORDER: Final = ("failed", "suspended", "retrying", "pending", "running", "paused", "stopped")
"""Jobs that need a look first; within a state, by name."""
MAX_ROWS: Final = 1000
"""Jobs shown at most (those that need a look first); the rest are counted, and all are in
``/status`` and `supervisor top`. Past that a page is megabytes, refreshed every few
seconds."""
SPARK_WIDTH: Final = 120
SPARK_HEIGHT: Final = 24

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1f2328;background:#fff}
h1{font-size:1.3em;margin:0 0 .3em}
.meta{color:#57606a;margin-bottom:1em}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.35em .6em;border-bottom:1px solid #d0d7de;vertical-align:top}
th{background:#f6f8fa;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.state{display:inline-block;padding:.05em .5em;border-radius:1em;color:#fff;font-weight:600}
.error{color:#a40e26;font-family:ui-monospace,monospace;font-size:.9em;white-space:pre-wrap;
word-break:break-word;max-width:40em}
.offset{font-family:ui-monospace,monospace;font-size:.85em;color:#57606a;word-break:break-all}
.summary span{margin-right:1em}
svg polyline{fill:none;stroke:#0969da;stroke-width:1.5}
"""


def attention_order(state: str, job: str) -> tuple[int, str]:
    """Sort key: jobs that need a look first (`ORDER`), then by name."""
    return (_RANK.get(state, len(ORDER)), job)


_RANK: Final = {state: index for index, state in enumerate(ORDER)}


def render_page(
    views: Sequence[Mapping[str, Any]],
    rates: Mapping[str, Sequence[float]],
    counts: Mapping[str, int] | None = None,
) -> bytes:
    """The page for `views` (as `status --json` shows them; at most `MAX_ROWS` shown), each
    job's recent rates, and the number of jobs in each state (default: of `views`)."""
    e = html.escape
    rank = _RANK
    ordered = sorted(views, key=lambda view: attention_order(view["state"], view["job"]))
    if counts is None:
        tally: dict[str, int] = {}
        for view in views:
            tally[view["state"]] = tally.get(view["state"], 0) + 1
        counts = tally
    total = sum(counts.values())
    hidden = total - min(len(ordered), MAX_ROWS)
    more = (
        f'<p class="meta">{hidden:,} more job(s) not shown: every job is in '
        '<a href="/status">/status</a> and <code>supervisor top</code>.</p>'
        if hidden > 0
        else ""
    )
    summary = "".join(
        f'<span><span class="state" style="background:{COLOURS.get(state, "#57606a")}">'
        f"{e(state)}</span> {count}</span>"
        for state, count in sorted(counts.items(), key=lambda item: rank.get(item[0], 99))
    )
    rows = "".join(_row(view, rates.get(view["job"], ())) for view in ordered[:MAX_ROWS])
    generated = datetime.fromtimestamp(time.time(), UTC).isoformat(timespec="seconds")
    document = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>stream-supervisor: {total} job(s)</title>
<style>{_STYLE}</style></head>
<body>
<h1>stream-supervisor</h1>
<div class="meta">{total:,} job(s) &middot; {e(generated)} &middot; version {e(__version__)}
&middot; refreshes every {REFRESH_SECONDS}s &middot; read-only</div>
<div class="summary">{summary}</div>
<table id="jobs">
<thead><tr><th>Job</th><th>State</th><th>Records/s</th><th>Last 15 min</th><th>Lag</th>
<th>Attempt</th><th>Offset</th><th>Last error</th></tr></thead>
<tbody>
{rows}</tbody></table>
{more}
</body></html>
"""
    return document.encode()


def _row(view: Mapping[str, Any], rates: Sequence[float]) -> str:
    e = html.escape
    state = str(view["state"])
    colour = COLOURS.get(state, "#57606a")
    rate = rates[-1] if rates else view.get("records_per_s")
    source = view.get("source")
    lag = source.get("lag") if isinstance(source, Mapping) else None
    error = view.get("error") or view.get("final_checkpoint_error") or ""
    offset = json.dumps(view.get("offset"), ensure_ascii=False)
    if len(offset) > 120:
        offset = offset[:117] + "..."
    return (
        f'<tr data-job="{e(str(view["job"]))}" data-state="{e(state)}">'
        f'<td class="job">{e(str(view["job"]))}</td>'
        f'<td><span class="state" style="background:{colour}">{e(state)}</span></td>'
        f'<td class="num rate">{"" if rate is None else f"{rate:,.1f}"}</td>'
        f"<td>{sparkline(rates)}</td>"
        f'<td class="num lag">{"" if lag is None else e(_short(lag))}</td>'
        f'<td class="num attempt">{e(str(view.get("attempt", "")))}</td>'
        f'<td class="offset">{e(offset)}</td>'
        f'<td class="error">{e(str(error))}</td></tr>\n'
    )


def _short(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def sparkline(rates: Sequence[float]) -> str:
    """An inline SVG of `rates` (oldest first), scaled to its largest; empty if fewer
    than two samples."""
    if len(rates) < 2:
        return ""
    top = max(max(rates), 1e-9)
    step = SPARK_WIDTH / (len(rates) - 1)
    points = " ".join(
        f"{index * step:.1f},{SPARK_HEIGHT - 1 - (rate / top) * (SPARK_HEIGHT - 2):.1f}"
        for index, rate in enumerate(rates)
    )
    return (
        f'<svg width="{SPARK_WIDTH}" height="{SPARK_HEIGHT}" role="img" '
        f'aria-label="records per second, last 15 minutes, peak {top:,.1f}">'
        f'<polyline points="{points}"/></svg>'
    )
