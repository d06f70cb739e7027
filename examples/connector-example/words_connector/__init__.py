"""A toy connector for stream-supervisor: the words of a list, one record each.

    [source]
    type = "words"
    words = ["alpha", "beta", "gamma"]
    repeat = 2

The source ends after `repeat` passes over the list. Its offset is how many
records it has returned, so a restarted job goes on from the next word.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supervisor.config.model import JobConfig
from supervisor.connectors import Connector, SourceRole, kinds, setting
from supervisor.protocols import Batch, Offset


def word_list() -> kinds.Convert:
    """A kind of value of our own: a non-empty array of strings, as a tuple."""

    def convert(value: Any, directory: Path) -> tuple[str, ...]:
        if not (isinstance(value, list) and value and all(isinstance(w, str) for w in value)):
            raise kinds.Invalid(
                f"expected a non-empty array of strings, got {kinds.describe(value)}"
            )
        return tuple(value)

    return convert


@dataclass(frozen=True, slots=True, kw_only=True)
class WordsConfig:
    """The ``[source]`` table, less its ``type``: each field declares one key."""

    words: tuple[str, ...] = field(metadata=setting(word_list(), "The words, in order."))
    repeat: int = field(
        default=1, metadata=setting(kinds.integer(1), "How many passes over the list.")
    )


class WordsSource:
    """The `supervisor.protocols.Source` protocol: open, read, close."""

    def __init__(self, config: WordsConfig) -> None:
        self._words = config.words
        self._total = len(config.words) * config.repeat
        self._next = 0

    @staticmethod
    def check_offset(offset: Offset) -> None:
        """Refuse what `open` could not resume from (`supervisor offset --set` asks)."""
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise ValueError(f"a words offset is a count of records, got {offset!r}")

    async def open(self, offset: Offset | None) -> None:
        if offset is not None:
            self.check_offset(offset)
        self._next = offset if isinstance(offset, int) else 0

    async def read(self, max_records: int, wait: float) -> Batch:
        stop = min(self._next + max_records, self._total)
        records = [self._words[n % len(self._words)] for n in range(self._next, stop)]
        self._next = stop
        return Batch(records, offset=self._next, end=self._next >= self._total)

    async def close(self) -> None:
        return None


def _build(config: WordsConfig, job: JobConfig) -> WordsSource:
    return WordsSource(config)


def _check_offset(config: WordsConfig, offset: Offset) -> None:
    WordsSource.check_offset(offset)


CONNECTOR = Connector(
    type="words",
    doc="The words of a list, one record each (a toy).",
    source=SourceRole(config=WordsConfig, build=_build, check_offset=_check_offset),
)
