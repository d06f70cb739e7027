"""The retry decision: give up (fatal, or the budget spent) or retry after a delay; pure."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.config.model import RetryPolicy
from supervisor.errors import FatalError, PluginError, TooManyBadRecords, TransientError
from supervisor.retry import RetryDecision, backoff_delay, fatal_reason, retry_decision

policies = st.builds(
    lambda initial, factor, multiplier, jitter: RetryPolicy(
        initial=initial, max=initial * factor, multiplier=multiplier, jitter=jitter
    ),
    initial=st.floats(0.001, 100),
    factor=st.floats(1, 1000),
    multiplier=st.floats(1, 10),
    jitter=st.booleans(),
)


def _never() -> float:
    raise AssertionError("the random source was drawn from")


def test_a_fatal_error_gives_up_at_once_saying_why() -> None:
    """A fatal error gives up on the first attempt, names why, and draws no delay."""
    decision = retry_decision(
        KeyError("x"), attempts=1, policy=RetryPolicy(fatal_on=("KeyError",)), random=_never
    )
    assert decision == RetryDecision("fatal_on names KeyError", budget_spent=False, delay=None)
    assert decision.gives_up and decision.fatal


@pytest.mark.parametrize(
    ("error", "why"),
    [
        (FatalError("x"), "FatalError is a supervisor.FatalError"),
        (TooManyBadRecords("x"), "TooManyBadRecords is a supervisor.FatalError"),
        (PluginError("x"), "PluginError: a plugin that cannot be loaded or called"),
        (
            ExceptionGroup("g", [TransientError("a"), FatalError("b")]),
            "FatalError is a supervisor.FatalError",
        ),
    ],
)
def test_fatal_by_default_says_which_kind(error: BaseException, why: str) -> None:
    """FatalError (the bad-record limit included), PluginError and a group with a fatal
    member are fatal without any `fatal_on`; the decision says which."""
    decision = retry_decision(error, attempts=1, policy=RetryPolicy(), random=_never)
    assert decision.fatal_because == why


def test_retry_on_wins_over_a_default_fatal() -> None:
    """A FatalError named in `retry_on` is retried."""
    policy = RetryPolicy(retry_on=("supervisor.FatalError",), jitter=False)
    decision = retry_decision(FatalError("x"), attempts=1, policy=policy, random=_never)
    assert decision == RetryDecision(None, budget_spent=False, delay=policy.initial)


def test_the_budget_is_spent_at_max_attempts() -> None:
    """With max_attempts = 3 the first two failures are retried and the third gives up."""
    policy = RetryPolicy(max_attempts=3, jitter=False)
    decisions = [
        retry_decision(ValueError("x"), attempts=n, policy=policy, random=_never) for n in (1, 2, 3)
    ]
    assert [d.delay for d in decisions] == [1.0, 2.0, None]
    assert decisions[2] == RetryDecision(None, budget_spent=True, delay=None)


def test_fatal_and_spent_are_both_reported() -> None:
    """A fatal error on the last attempt of the budget reports both reasons."""
    policy = RetryPolicy(max_attempts=1)
    decision = retry_decision(FatalError("x"), attempts=1, policy=policy, random=_never)
    assert decision.fatal and decision.budget_spent and decision.gives_up


@given(attempts=st.integers(1, 10**9))
def test_a_zero_budget_is_never_spent(attempts: int) -> None:
    """max_attempts = 0 retries a retryable error forever."""
    policy = RetryPolicy(max_attempts=0)
    decision = retry_decision(ValueError("x"), attempts=attempts, policy=policy, random=lambda: 0.5)
    assert not decision.budget_spent and decision.delay is not None


@given(
    policy=policies,
    max_attempts=st.integers(0, 20),
    attempts=st.integers(1, 40),
    fatal=st.booleans(),
    r=st.floats(0, 1, exclude_max=True),
)
def test_the_decision_is_fatal_or_budget_else_the_backoff(
    policy: RetryPolicy, max_attempts: int, attempts: int, fatal: bool, r: float
) -> None:
    """It gives up exactly when the error is fatal or the budget is spent; otherwise the
    delay is `backoff_delay` for the same attempt and the same draw."""
    policy = replace(policy, max_attempts=max_attempts)
    error = FatalError("x") if fatal else TransientError("x")
    draws: list[float] = []

    def draw() -> float:
        draws.append(r)
        return r

    decision = retry_decision(error, attempts=attempts, policy=policy, random=draw)
    spent = max_attempts > 0 and attempts >= max_attempts
    assert decision.fatal is fatal is (fatal_reason(error, policy) is not None)
    assert decision.budget_spent is spent
    if fatal or spent:
        assert decision.delay is None and not draws
    else:
        assert decision.delay == backoff_delay(attempts, policy, lambda: r)
        assert len(draws) == (1 if policy.jitter else 0)


def test_the_same_draws_give_the_same_delays() -> None:
    """A run of decisions on a seeded random source gives the delays `backoff_delay` gives
    on the same seed: the decision adds no draws of its own."""
    policy = RetryPolicy(max_attempts=0)
    ours, theirs = random.Random(16), random.Random(16)
    decided = [
        retry_decision(OSError("x"), attempts=n, policy=policy, random=ours.random).delay
        for n in range(1, 50)
    ]
    assert decided == [backoff_delay(n, policy, theirs.random) for n in range(1, 50)]


def test_a_retry_before_any_counted_attempt_is_a_caller_bug() -> None:
    """A retryable failure with no attempt counted has no backoff: attempts count from 1."""
    with pytest.raises(ValueError, match="from 1"):
        retry_decision(OSError("x"), attempts=0, policy=RetryPolicy(), random=random.random)
