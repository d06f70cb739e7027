"""The workers' framing and the batch search, as properties over arbitrary inputs."""

from __future__ import annotations

import os
import pickle
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.batch_calls import Done, Failed, bisecting
from supervisor.workers.frames import FrameReader, frame, read_frame, write_frame

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(st.lists(VALUES, max_size=8), st.lists(st.integers(1, 64), min_size=1))
def test_frames_survive_any_cut_of_the_stream(messages: list[Any], cuts: list[int]) -> None:
    """Whatever sizes the pipe hands the bytes over in, the same messages come out, whole."""
    stream = b"".join(frame(message) for message in messages)
    reader = FrameReader()
    out: list[Any] = []
    at, turn = 0, 0
    while at < len(stream):
        size = cuts[turn % len(cuts)]
        reader.feed(stream[at : at + size])
        at, turn = at + size, turn + 1
        while (blob := reader.next()) is not None:
            out.append(pickle.loads(blob))
    assert out == messages
    assert reader.pending() == 0


def test_blocking_frames_through_a_pipe_end_with_none() -> None:
    """The worker's side: frames read back as written, then None when the writer closes."""
    read_end, write_end = os.pipe()
    try:
        write_frame(write_end, pickle.dumps({"a": [1, 2]}))
        write_frame(write_end, pickle.dumps("x" * 10_000))
        os.close(write_end)
        first, second = read_frame(read_end), read_frame(read_end)
        assert first is not None and pickle.loads(first) == {"a": [1, 2]}
        assert second is not None and pickle.loads(second) == "x" * 10_000
        assert read_frame(read_end) is None
    finally:
        os.close(read_end)


@given(st.integers(1, 300), st.data())
def test_the_search_finds_exactly_the_bad_records(count: int, data: st.DataObject) -> None:
    """A call fails when its part holds a bad record: the search ends with each bad record
    failed alone and every other record in exactly one `Done`, in order."""
    bad = data.draw(st.sets(st.integers(0, count - 1), max_size=count))
    steps = bisecting(count, search=True)
    calls = 0
    try:
        start, end = next(steps)
        while True:
            calls += 1
            fails = any(start <= index < end for index in bad)
            start, end = steps.send(ValueError() if fails else list(range(start, end)))
    except StopIteration as done:
        pieces = done.value
    covered: list[int] = []
    for piece in pieces:
        if isinstance(piece, Failed):
            assert piece.index in bad
            covered.append(piece.index)
        else:
            assert isinstance(piece, Done)
            assert piece.outputs == list(range(piece.start, piece.start + piece.count))
            covered.extend(piece.outputs)
    assert covered == list(range(count))
    assert {piece.index for piece in pieces if isinstance(piece, Failed)} == bad
    assert calls <= 1 + 2 * len(bad) * max(count.bit_length(), 1)


def test_without_search_a_failing_call_is_one_failure() -> None:
    """Policy ``fail``: no search, the first call's exception is the answer."""
    steps = bisecting(10, search=False)
    assert next(steps) == (0, 10)
    error = ValueError("no")
    with pytest.raises(StopIteration) as done:
        steps.send(error)
    assert done.value.value == [Failed(0, error)]
