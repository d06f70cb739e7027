"""The retry decision: what a failed attempt leads to, as a pure function.

`retry_decision` takes the error, the consecutive failed attempts so far, the job's
`RetryPolicy` and a random source, and answers: give up (the error is fatal, and
why; or the budget is spent), or retry after a delay. The job's owner only acts on
the answer (transition, schedule, persist); nothing here touches a job.

Fatal or retryable (SPEC §4 rule 6): `fatal_on` names, `supervisor.FatalError`
(which includes the bad-record limit) and a plugin that cannot be loaded are fatal;
everything else is retried, `retry_on` names explicitly so, until the budget is
spent. A name matches the error's class or any of its bases: the class the name
resolves to, as users write it (a public alias such as ``supervisor.TransientError``
or ``json.JSONDecodeError``), or failing that the name the class was defined under,
``module.QualName`` (``builtins`` may be left out: ``ValueError``). An
ExceptionGroup from one attempt is one failure: matched by name itself first, then
fatal if any member is.

The delay is capped exponential backoff with full jitter (`backoff_delay`).
Describing the error for logs and the snapshot is `supervisor.failures`' part.
"""

from __future__ import annotations

import builtins
import inspect
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from supervisor.config.model import RetryPolicy
from supervisor.errors import FatalError, PluginError


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """What one failed attempt leads to: give up, or retry after `delay` seconds."""

    fatal_because: str | None
    """Why retrying cannot help (a `fatal_on` name, a FatalError, a plugin that cannot be
    loaded), or None when the error is retryable."""
    budget_spent: bool
    """`retry.max_attempts` consecutive attempts have failed (never, when it is 0)."""
    delay: float | None
    """Seconds to wait before the next attempt; None when the job gives up."""

    @property
    def fatal(self) -> bool:
        return self.fatal_because is not None

    @property
    def gives_up(self) -> bool:
        """The job fails (or is suspended): the error is fatal or the budget is spent."""
        return self.delay is None


def retry_decision(
    error: BaseException, *, attempts: int, policy: RetryPolicy, random: Callable[[], float]
) -> RetryDecision:
    """What a failed attempt ending in `error` leads to, with `attempts` consecutive
    failed attempts counted so far (this one included if it ran).

    Giving up wins over retrying, and both of its reasons are reported when both hold.
    `random` is drawn from only to retry, and then once (with jitter) or not at all.
    """
    fatal_because = fatal_reason(error, policy)
    spent = bool(policy.max_attempts) and attempts >= policy.max_attempts
    if fatal_because is not None or spent:
        return RetryDecision(fatal_because, spent, None)
    return RetryDecision(None, False, backoff_delay(attempts, policy, random))


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


def fatal_reason(error: BaseException, policy: RetryPolicy) -> str | None:
    """Why retrying `error` cannot help, or None when it is retryable."""
    pending = [error]
    while pending:  # a stack, not recursion: plugin code may nest groups arbitrarily deep
        current = pending.pop()
        cls = type(current)
        name = _matching_name(cls, policy.fatal_on)
        if name is not None:
            return f"fatal_on names {name}"
        if _matching_name(cls, policy.retry_on) is not None:
            continue
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        elif isinstance(current, PluginError):
            return f"{cls.__qualname__}: a plugin that cannot be loaded or called"
        elif isinstance(current, FatalError):
            return f"{cls.__qualname__} is a supervisor.FatalError"
    return None


def _matching_name(cls: type, names: Sequence[str]) -> str | None:
    """The first of `names` that `cls` or one of its bases is (see the module docstring)."""
    if not names:
        return None
    written = set(class_names(cls))
    mro = cls.__mro__
    for name in names:
        if name in written:
            return name
        target = _resolved(name)
        if target is not None and target in mro:
            return name
    return None


_resolved_names: dict[str, type] = {}


def _resolved(name: str) -> type | None:
    """The class `name` names, looked up among the modules already imported, or None.

    Nothing is imported here (this runs on the event loop): the module that raised
    an error, and its packages, are imported by then, and `supervisor check` imports
    every name. Module ``__getattr__`` hooks are not called (plugin code, maybe slow).
    """
    known = _resolved_names.get(name)
    if known is not None:
        return known
    parts = name.split(".")
    candidates: list[tuple[object, list[str]]] = []
    if len(parts) == 1:
        candidates.append((builtins, parts))
    for split in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:split]))
        if module is not None:
            candidates.append((module, parts[split:]))
            break
    for target, attributes in candidates:
        for attribute in attributes:
            target = inspect.getattr_static(target, attribute, None)
            if target is None:
                break
        if isinstance(target, type):
            _resolved_names[name] = target
            return target
    return None


def class_names(cls: type) -> Iterator[str]:
    """Every name the class and its bases were defined under, as `retry_on` / `fatal_on`
    may spell them."""
    for base in cls.__mro__:
        yield f"{base.__module__}.{base.__qualname__}"
        if base.__module__ == "builtins":
            yield base.__qualname__
