"""Where the event loop's time goes, per step: put this directory on a daemon's PYTHONPATH.

    PYTHONPATH=bench/loop_probe python -m supervisor run -c FILE
    BENCH_PRODUCT_SRC=bench/loop_probe python bench/storm.py   # the benchmarks' daemons

Python imports `sitecustomize` at start-up, so this wraps asyncio's
`Handle._run` (one step of one task, or one callback) and, when the process
exits, writes `loop-steps-<pid>.txt` in the working directory: per kind of
step, its total time, count and mean, the kind named by the chain of
coroutine frames the step stopped in (``function:line/...``). It also logs
every turn of the loop whose steps took over `LONG_TURN_S` together, with its
costliest kinds: the bursts that make event-loop lag. The timing costs a few
microseconds a step: compare kinds with each other, not with unprobed runs.
It found the memory-stream receives, the limiter waits and the 512-writer
group-commit wake-ups of 2026-11-30 (bench/README.md).
"""

from __future__ import annotations

import asyncio.base_events
import asyncio.events
import atexit
import os
import time
from collections import Counter
from typing import Any

LONG_TURN_S = 0.02

_run_step = asyncio.events.Handle._run
_run_turn = asyncio.base_events.BaseEventLoop._run_once
_total: Counter[str] = Counter()
_count: Counter[str] = Counter()
_turn: Counter[str] = Counter()
_long_turns: list[str] = []


def _kind(handle: asyncio.events.Handle) -> str:
    callback = getattr(handle, "_callback", None)
    coroutine = getattr(getattr(callback, "__self__", None), "_coro", None)
    if coroutine is None:
        return getattr(callback, "__qualname__", repr(callback))[:80]
    names = []
    while coroutine is not None:
        frame = getattr(coroutine, "cr_frame", None) or getattr(coroutine, "ag_frame", None)
        if frame is not None:
            names.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
        coroutine = getattr(coroutine, "cr_await", None) or getattr(coroutine, "ag_await", None)
    if len(names) > 1:
        return "/".join(names[1:])
    # A task's first step (its coroutine has not awaited yet), or its last.
    first = getattr(callback.__self__, "_coro", None)
    inner = getattr(getattr(first, "cr_frame", None), "f_locals", {}).get("self")
    code = getattr(getattr(inner, "_coro", None), "cr_code", None)  # anyio's TaskHandle
    return f"(first step) {code.co_qualname}" if code is not None else "(task ended)"


def _timed_step(self: asyncio.events.Handle) -> None:
    kind = _kind(self)
    started = time.perf_counter()
    _run_step(self)
    spent = time.perf_counter() - started
    _total[kind] += spent
    _count[kind] += 1
    _turn[kind] += spent


def _timed_turn(self: Any) -> None:
    _turn.clear()
    _run_turn(self)
    spent = sum(_turn.values())
    if spent > LONG_TURN_S:
        top = ", ".join(f"{kind} {cost * 1000:.1f} ms" for kind, cost in _turn.most_common(3))
        _long_turns.append(f"{time.time():.3f} {spent * 1000:.1f} ms: {top}")


def _write() -> None:
    with open(f"loop-steps-{os.getpid()}.txt", "w") as out:  # noqa: PTH123 - at exit, no pathlib
        for kind, spent in _total.most_common(60):
            mean = spent / _count[kind] * 1e6
            out.write(f"{spent * 1000:10.1f} ms {_count[kind]:8d} {mean:8.1f} us  {kind}\n")
        out.write("\nturns over %.0f ms:\n" % (LONG_TURN_S * 1000))
        out.writelines(line + "\n" for line in _long_turns)


asyncio.events.Handle._run = _timed_step  # type: ignore[method-assign]
asyncio.base_events.BaseEventLoop._run_once = _timed_turn  # type: ignore[attr-defined]
atexit.register(_write)
