"""Processors the worker tests run in worker processes (imported there by name)."""

from __future__ import annotations

from typing import Any


def double(record: dict[str, Any]) -> Any:
    """Drop odd numbers, fan out multiples of 3, fail on a non-number."""
    n = record["n"]
    if not isinstance(n, int):
        raise ValueError(f"not a number: {n!r}")
    if n % 2:
        return None
    if n % 3 == 0:
        return [{"n": n}, {"n": n, "copy": True}]
    return {"n": n * 2}


def double_all(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Double every number; a non-number fails the whole call."""
    return [{"n": record["n"] * 2 + 0} for record in records if _number(record)]


def _number(record: dict[str, Any]) -> bool:
    if not isinstance(record["n"], int):
        raise ValueError(f"not a number: {record['n']!r}")
    return True
