"""Classifying an attempt's failure (retry or give up) and recording its cause.

SPEC §4 rule 6: `fatal_on` names, `supervisor.FatalError` (which includes the
bad-record limit) and a plugin that cannot be loaded are fatal; everything
else is retried, `retry_on` names explicitly so, until the budget is spent.
Names match the error's class or any of its bases, written as
``module.QualName`` (``builtins`` may be left out: ``ValueError``).
An ExceptionGroup from one attempt is one failure, fatal if any member is.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from datetime import UTC, datetime

from supervisor.config.model import RetryPolicy
from supervisor.errors import FatalError, PluginError
from supervisor.snapshot import FailureRecord

TRACEBACK_LIMIT = 16_000
"""Characters of traceback kept in the snapshot: enough to debug, not a disk hog."""


def is_fatal(error: BaseException, policy: RetryPolicy) -> bool:
    """True when retrying cannot help and the job should fail (or be suspended) now."""
    return any(_leaf_is_fatal(leaf, policy) for leaf in _leaves(error))


def _leaf_is_fatal(error: BaseException, policy: RetryPolicy) -> bool:
    names = set(class_names(type(error)))
    if names & set(policy.fatal_on):
        return True
    if names & set(policy.retry_on):
        return False
    return isinstance(error, FatalError | PluginError)


def _leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for member in error.exceptions:
            yield from _leaves(member)
    else:
        yield error


def class_names(cls: type) -> Iterator[str]:
    """Every name the class and its bases can be matched by in `retry_on` / `fatal_on`."""
    for base in cls.__mro__:
        yield f"{base.__module__}.{base.__qualname__}"
        if base.__module__ == "builtins":
            yield base.__qualname__


def qualified_name(cls: type) -> str:
    """``module.QualName``, or the bare name for builtins."""
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def describe_failure(
    error: BaseException, *, attempts: int, previous: FailureRecord | None
) -> FailureRecord:
    """The failure record for `error`, continuing the streak of `previous` if any."""
    now = datetime.now(UTC)
    text = "".join(traceback.format_exception(error))
    if len(text) > TRACEBACK_LIMIT:
        text = "...\n" + text[-TRACEBACK_LIMIT:]
    return FailureRecord(
        attempts=attempts,
        error_type=qualified_name(type(error)),
        message=str(error),
        traceback=text,
        first_failure_at=previous.first_failure_at if previous else now,
        last_failure_at=now,
    )
