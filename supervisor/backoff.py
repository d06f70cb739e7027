"""Retry delays: capped exponential backoff with full jitter, as a pure function."""

from __future__ import annotations

import math
from collections.abc import Callable

from supervisor.config.model import RetryPolicy


def backoff_delay(attempt: int, policy: RetryPolicy, random: Callable[[], float]) -> float:
    """Seconds to wait before retrying after the `attempt`-th consecutive failure.

    The ceiling is ``initial * multiplier ** (attempt - 1)`` clamped to `max`
    (computed in log space, so attempt 10,000 does not overflow); with jitter the
    delay is uniform in ``[0, ceiling]`` ("full jitter"), which spreads a storm of
    jobs that failed together instead of retrying them in lockstep.
    `random` returns a float in [0, 1).
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    growth = (attempt - 1) * math.log(policy.multiplier) if policy.multiplier > 1 else 0.0
    if growth >= math.log(policy.max / policy.initial):
        ceiling = policy.max
    else:
        # Below the cap, so the power cannot overflow; exact for whole multipliers.
        ceiling = min(policy.initial * policy.multiplier ** (attempt - 1), policy.max)
    if not policy.jitter:
        return ceiling
    return min(ceiling * random(), ceiling)
