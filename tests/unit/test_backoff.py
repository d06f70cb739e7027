"""Retry delays: a pure, clamped function of attempt, policy and a random source."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.config.model import RetryPolicy
from supervisor.retry import backoff_delay

policies = st.builds(
    lambda initial, factor, multiplier, jitter: RetryPolicy(
        initial=initial, max=initial * factor, multiplier=multiplier, jitter=jitter
    ),
    initial=st.floats(0.001, 100),
    factor=st.floats(1, 1000),
    multiplier=st.floats(1, 10),
    jitter=st.booleans(),
)


@given(policy=policies, attempt=st.integers(1, 100_000), r=st.floats(0, 1, exclude_max=True))
def test_delay_stays_within_zero_and_max(policy: RetryPolicy, attempt: int, r: float) -> None:
    """Every delay is between 0 and `max`, even at attempt 100,000."""
    delay = backoff_delay(attempt, policy, lambda: r)
    assert 0 <= delay <= policy.max


@given(policy=policies, attempt=st.integers(1, 60))
def test_delay_without_jitter_is_the_capped_exponential(policy: RetryPolicy, attempt: int) -> None:
    """Without jitter the delay is initial * multiplier^(attempt-1), clamped to max."""
    from dataclasses import replace

    policy = replace(policy, jitter=False)
    expected = min(policy.initial * policy.multiplier ** (attempt - 1), policy.max)
    assert backoff_delay(attempt, policy, random.random) == pytest.approx(expected, rel=1e-9)


@given(policy=policies, attempt=st.integers(1, 60), r=st.floats(0, 1, exclude_max=True))
def test_full_jitter_scales_the_ceiling(policy: RetryPolicy, attempt: int, r: float) -> None:
    """With jitter the delay is the ceiling times the random draw."""
    from dataclasses import replace

    ceiling = backoff_delay(attempt, replace(policy, jitter=False), random.random)
    assert backoff_delay(attempt, replace(policy, jitter=True), lambda: r) == pytest.approx(
        ceiling * r, rel=1e-9, abs=1e-12
    )


def test_delays_grow_then_hold_at_max() -> None:
    """1s, 2s, 4s, ... then 60s forever for the default policy without jitter."""
    policy = RetryPolicy(jitter=False)
    delays = [backoff_delay(n, policy, random.random) for n in range(1, 10)]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_attempt_zero_is_a_caller_bug() -> None:
    """Attempts count from 1."""
    with pytest.raises(ValueError, match="from 1"):
        backoff_delay(0, RetryPolicy(), random.random)
