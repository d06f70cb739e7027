"""The OFFSET column of `supervisor status`: short, one printable line, the counter first."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from supervisor.control.views import OFFSET_WIDTH, short_offset

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def test_a_broker_offset_shows_its_counter_before_its_names() -> None:
    """The count is what moves: it must survive the cut (as JSON it came last, and went)."""
    offset = {"group": "orders", "consumer": "web-1.example.com-orders", "read": 123456}
    assert short_offset(offset).startswith("read=123456 group=orders")
    assert short_offset({"queue": "orders", "consumed": 50}) == "consumed=50 queue=orders"


def test_the_simple_offsets_read_as_before() -> None:
    assert short_offset(None) == "-"
    assert short_offset({"pos": 4096, "inode": 7}) == "byte 4096"
    assert short_offset(12) == "12"
    assert short_offset("1700000000000-0") == "1700000000000-0"


@given(_json)
def test_any_offset_fits_on_one_printable_line(offset: Any) -> None:
    shown = short_offset(offset)
    assert len(shown) <= OFFSET_WIDTH
    assert "\n" not in shown and "\x1b" not in shown


@given(st.dictionaries(st.text(min_size=1, max_size=8), st.integers(0, 10**6), min_size=1))
def test_a_table_of_counters_shows_the_first_whole(offset: dict[str, int]) -> None:
    first, value = next(iter(offset.items()))
    shown = short_offset(offset)
    if (
        len(f"{first}={value}") <= OFFSET_WIDTH - 3
        and first.isprintable()
        and first.split() == [first]
    ):
        assert shown.startswith(f"{first}={value}")
