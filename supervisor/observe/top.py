"""`supervisor top`: every job, refreshed, in a terminal; plain repeated tables otherwise.

It asks the daemon for ``status`` over the control socket every `interval` seconds
(no HTTP listener needed) and shows state, records/s, lag, attempt and the last
error of every job that fits. Keys: ``q`` quits; ``n`` ``s`` ``r`` ``l`` ``a`` sort
by name, state, rate, lag or attempt (the same key again reverses). It fits 80x24
and works over ssh (curses, no mouse, no colours needed). When stdout is not a
terminal it prints the table again every interval, each under a time stamp, for
`--iterations` rounds (default: until interrupted). Every daemon-supplied text goes
through `printable`, so an error message cannot drive the terminal.
"""

from __future__ import annotations

import curses
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final, TextIO

from supervisor.control.views import printable

SORTS: Final = {"n": "name", "s": "state", "r": "rate", "l": "lag", "a": "attempt"}
STATE_ORDER: Final = ("failed", "suspended", "retrying", "pending", "running", "paused")

Fetch = Callable[[], list[dict[str, Any]]]


def _lag(job: dict[str, Any]) -> int | None:
    source = job.get("source")
    lag = source.get("lag") if isinstance(source, dict) else None
    return lag if isinstance(lag, int) and not isinstance(lag, bool) else None


def sort_jobs(jobs: Sequence[dict[str, Any]], key: str, reverse: bool) -> list[dict[str, Any]]:
    """`jobs` by `key` (a value of `SORTS`), the job's name breaking ties."""
    rank = {state: index for index, state in enumerate(STATE_ORDER)}

    def value(job: dict[str, Any]) -> tuple[Any, ...]:
        if key == "state":
            return (rank.get(job["state"], len(rank)),)
        if key == "rate":
            return (-(job.get("records_per_s") or 0.0),)
        if key == "lag":
            return (-(_lag(job) or 0),)
        if key == "attempt":
            return (-(job.get("attempt") or 0),)
        return ()

    ordered = sorted(jobs, key=lambda job: (*value(job), job["job"]))
    return ordered[::-1] if reverse else ordered


def _fit(text: str, width: int) -> str:
    if width <= 0:
        return ""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "~"


def render(
    jobs: Sequence[dict[str, Any]], width: int, height: int, key: str, reverse: bool
) -> list[str]:
    """The screen as lines of at most `width` characters, at most `height` of them."""
    width = max(width, 20)
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job["state"]] = counts.get(job["state"], 0) + 1
    summary = " ".join(f"{state}={count}" for state, count in sorted(counts.items()))
    stamp = datetime.now(UTC).strftime("%H:%M:%S")
    arrow = "v" if not reverse else "^"
    head = f"supervisor top  {stamp}  {len(jobs)} job(s)  {summary}"
    keys = f"sort: {key}{arrow}  keys: q quit, n/s/r/l/a sort name/state/rate/lag/attempt"
    name_width = max(8, min(24, width - 56))
    columns = f"{'JOB':<{name_width}} {'STATE':<9} {'REC/S':>9} {'LAG':>10} {'ATT':>3} ERROR"
    lines = [_fit(head, width), _fit(keys, width), _fit(columns, width)]
    for job in sort_jobs(jobs, key, reverse)[: max(height - len(lines), 0)]:
        rate = job.get("records_per_s")
        lag = _lag(job)
        error = job.get("error") or job.get("final_checkpoint_error") or ""
        if not error and job["state"] not in ("running", "pending"):
            error = job.get("cause") or ""
        row = (
            f"{_fit(printable(job['job']), name_width):<{name_width}} "
            f"{job['state']:<9} "
            f"{'' if rate is None else f'{rate:,.1f}':>9} "
            f"{'' if lag is None else f'{lag:,}':>10} "
            f"{job.get('attempt', 0):>3} "
            f"{printable(' '.join(str(error).split()))}"
        )
        lines.append(_fit(row, width))
    return lines[:height]


def run_plain(fetch: Fetch, out: TextIO, interval: float, iterations: int | None, key: str) -> None:
    """The table every `interval`, `iterations` times (None: until interrupted)."""
    done = 0
    while iterations is None or done < iterations:
        if done:
            time.sleep(interval)
        jobs = fetch()
        lines = render(jobs, 200, 2 + len(jobs) + 1, key, reverse=False)
        out.write("\n".join(lines) + "\n\n")
        out.flush()
        done += 1


def run_curses(fetch: Fetch, interval: float, key: str) -> None:
    curses.wrapper(_loop, fetch, interval, key)


def _loop(screen: curses.window, fetch: Fetch, interval: float, key: str) -> None:
    curses.curs_set(0)
    screen.timeout(100)
    reverse = False
    jobs: list[dict[str, Any]] = []
    error = ""
    next_fetch = 0.0
    redraw = True
    while True:
        now = time.monotonic()
        if now >= next_fetch:
            next_fetch, redraw = now + interval, True
            try:
                jobs, error = fetch(), ""
            except Exception as exc:  # noqa: BLE001 - shown, and tried again next interval
                error = printable(str(exc))
        if redraw:
            _draw(screen, jobs, error, key, reverse)
            redraw = False
        pressed = screen.getch()
        if pressed in (ord("q"), ord("Q")):
            return
        if pressed == curses.KEY_RESIZE:
            redraw = True
        elif 0 <= pressed < 128 and chr(pressed) in SORTS:
            chosen = SORTS[chr(pressed)]
            reverse = not reverse if chosen == key else False
            key, redraw = chosen, True


def _draw(
    screen: curses.window, jobs: list[dict[str, Any]], error: str, key: str, reverse: bool
) -> None:
    height, width = screen.getmaxyx()
    lines = render(jobs, width - 1, height - (1 if error else 0), key, reverse)
    if error:
        lines.append(_fit(f"! {error}", width - 1))
    screen.erase()
    for row, line in enumerate(lines[:height]):
        screen.addnstr(row, 0, line, width - 1, curses.A_BOLD if row == 2 else 0)
    screen.refresh()
