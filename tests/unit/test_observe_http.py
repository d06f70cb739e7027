"""The listener's pieces: the address, the request head, the page and `top`'s screen."""

from __future__ import annotations

from typing import Any

import pytest

from supervisor.observe.address import is_loopback, parse_listen
from supervisor.observe.http import BadRequest, parse_head
from supervisor.observe.page import render_page, sparkline
from supervisor.observe.top import render, sort_jobs


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9321", ("127.0.0.1", 9321)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:80", ("localhost", 80)),
        ("0.0.0.0:65535", ("0.0.0.0", 65535)),
    ],
)
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    """host:port, IPv6 in brackets, port 0 for a free one."""
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    "text", ["9321", ":9321", "127.0.0.1", "::1:9321", "[nope]:1", "h:99999", "h:+1", "a b:1"]
)
def test_bad_listen_addresses(text: str) -> None:
    """Anything else is refused with the form expected."""
    with pytest.raises(ValueError, match="expected"):
        parse_listen(text)


def test_loopback() -> None:
    """Loopback addresses and localhost only."""
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1")
    assert not is_loopback("myhost")


def test_request_head() -> None:
    """Method, path, query; header names lower-cased, repeats joined."""
    request = parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nAccept: a\r\nACCEPT: b\r\nHost: h")
    assert (request.method, request.path, request.query) == ("GET", "/metrics", "x=1")
    assert request.headers == {"accept": "a, b", "host": "h"}


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /", 400),
        (b"GET metrics HTTP/1.1", 400),
        (b"GET / HTTP/3", 505),
        (b"GET / HTTP/1.1\r\nno colon", 400),
        (b"GET / HTTP/1.1\r\n : x", 400),
        (b"GET / HTTP/1.1" + b"\r\nA: b" * 65, 431),
        ("GET /é HTTP/1.1".encode(), 400),
    ],
)
def test_bad_request_heads(head: bytes, status: int) -> None:
    """Each malformed head is refused with its status."""
    with pytest.raises(BadRequest) as caught:
        parse_head(head)
    assert caught.value.status == status


def _view(job: str, state: str, **more: Any) -> dict[str, Any]:
    return {
        "job": job,
        "state": state,
        "offset": None,
        "records_per_s": None,
        "attempt": 0,
        "error": None,
        "cause": None,
        "final_checkpoint_error": None,
        "source": None,
        **more,
    }


def test_page_escapes_names_errors_and_offsets() -> None:
    """Markup in an error, an offset and a lag is shown as text, never as markup."""
    hostile = '<img src=x onerror="alert(1)">'
    page = render_page(
        [
            _view("a", "suspended", error=hostile, offset={"k": hostile}),
            _view("b", "running", source={"lag": hostile}),
        ],
        {"b": [1.0, 2.0]},
    ).decode()
    assert "<img" not in page
    assert page.count("&lt;img src=x onerror=") == 3  # error, offset (as JSON), lag
    assert page.index('data-job="a"') < page.index('data-job="b"')  # failures first


def test_sparkline_needs_two_samples() -> None:
    """No chart from one sample; a polyline from two, scaled to the largest."""
    assert sparkline([3.0]) == ""
    line = sparkline([0.0, 4.0])
    assert "<polyline" in line and "peak 4.0" in line


def test_top_fits_80x24_and_neutralises_control_codes() -> None:
    """A hundred jobs in 24 lines of at most 80 characters; an escape sequence in an error
    is shown escaped, not sent to the terminal."""
    jobs = [_view(f"job-{i:03d}", "running", records_per_s=float(i)) for i in range(100)]
    jobs.append(_view("evil", "failed", error="\x1b[2Jgone\x07"))
    lines = render(jobs, 80, 24, "name", reverse=False)
    assert len(lines) == 24
    assert all(len(line) <= 80 for line in lines)
    text = "\n".join(render(jobs, 80, 200, "state", reverse=False))
    assert "\x1b" not in text and "\\x1b[2Jgone\\x07" in text


def test_top_sorts() -> None:
    """By rate: fastest first; the same key again reverses."""
    jobs = [_view("a", "running", records_per_s=1.0), _view("b", "running", records_per_s=9.0)]
    assert [job["job"] for job in sort_jobs(jobs, "rate", reverse=False)] == ["b", "a"]
    assert [job["job"] for job in sort_jobs(jobs, "rate", reverse=True)] == ["a", "b"]


def test_page_shows_at_most_max_rows_failures_first() -> None:
    """Past MAX_ROWS jobs the page shows those that need a look first and counts the rest."""
    from supervisor.observe.page import MAX_ROWS

    views = [_view(f"job-{i:05d}", "running") for i in range(MAX_ROWS + 5)]
    views.append(_view("zz-broken", "suspended", error="boom"))
    page = render_page(views, {}).decode()
    assert page.count("<tr data-job=") == MAX_ROWS
    assert 'data-job="zz-broken"' in page
    assert "6 more job(s) not shown" in page
    assert f"{MAX_ROWS + 6:,} job(s)" in page
