"""A jsonl -> jsonl job writes the same bytes, dead letters and failures with either codec,
on input chosen to tell them apart (the real daemon, one run per codec)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.daemon_process import DaemonProcess, write_config

pytestmark = pytest.mark.slow
pytest.importorskip("msgspec")  # the [fast] extra; CI installs it

GOOD_AND_BAD = [
    b'{"n": 1, "big": 123456789012345678901234567890, "neg": -9223372036854775809}',
    b'{"f": [1e16, 1e-05, 2.5e-7, 0.1, -0.0, 1E+2, 1.7976931348623157e308, 5e-324]}',
    b'{"pair": "\\ud83d\\ude00", "u": "\xc3\xa9\xe2\x80\xa8 \\u0000 \\"q\\" \x7f", "k\\u00e9": 1}',
    b'{"dup": 1, "other": 0, "dup": 2}',
    b'{"bad": ',
    b"",
    b"   \t",
    b'\xff\xfe{"x": 1}',
    b'{"x": "\xff invalid UTF-8 inside a string"}',
    b'{"crlf": true}\r',
    b'[1, 2, {"float key": 1.5}]',
    b'"just a string"',
    b"null",
    b'{"a": 1} {"b": 2}',
    b'\xef\xbb\xbf{"bom": 1}',
    b"\x0c{}",
    b"[1,]",
    b"-0",
    b"12345678901234567890123456789012345678901234567890.5e-30",
]
"""Lines json reads (wide integers, floats repr writes with an exponent, escapes, a
duplicate key, invalid UTF-8 in a string) and lines it does not (each a dead letter)."""


def _run(root: Path, codec: str, lines: list[bytes], records: str) -> DaemonProcess:
    root.mkdir()
    (root / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    job = f"""
        codec = "{codec}"
        suspend_on_failure = true
        [source]
        type = "file"
        path = "../in.jsonl"
        format = "jsonl"
        follow = false
        [sink]
        type = "jsonl"
        path = "../out.jsonl"
        [retry]
        max_attempts = 1
        [records]
        {records}
    """
    return DaemonProcess(write_config(root, {"codec": job}), "--exit-when-idle")


def _dead_letters(root: Path) -> list[str]:
    """The dead-letter file's entries without what differs per run: their time (`at`)
    and the directory named in the error."""
    entries = [json.loads(line) for line in (root / "rejects.jsonl").read_text().splitlines()]
    return [
        str({key: value for key, value in entry.items() if key != "at"}).replace(str(root), "")
        for entry in entries
    ]


def test_both_codecs_write_the_same_bytes_and_dead_letters(tmp_path: Path) -> None:
    """Every good line comes out byte for byte as json writes it, every bad one is the
    same dead letter with json's error, whether the job's codec is msgspec or json."""
    dead_letter = 'on_error = "dead_letter"\ndead_letter = "../rejects.jsonl"'
    for codec in ("msgspec", "json"):
        assert _run(tmp_path / codec, codec, GOOD_AND_BAD, dead_letter).finish() == 0
    out = (tmp_path / "msgspec" / "out.jsonl").read_bytes()
    assert out == (tmp_path / "json" / "out.jsonl").read_bytes()
    assert b"1e+16,1e-05,2.5e-07" in out
    assert b"123456789012345678901234567890" in out
    fast, plain = _dead_letters(tmp_path / "msgspec"), _dead_letters(tmp_path / "json")
    assert fast == plain
    assert len(fast) == 6
    assert "Expecting value (the line at byte 256 of /in.jsonl): line 1 column 9" in fast[0]


UNWRITABLE = [
    (b'{"n": NaN}', "ValueError: Out of range float values are not JSON compliant"),
    (b"[-Infinity]", "ValueError: Out of range float values are not JSON compliant"),
    (b"1e400", "ValueError: Out of range float values are not JSON compliant"),
    (b'{"s": "\\ud800"}', "surrogates not allowed"),
]
"""Lines both codecs read (as json does) that JSON output cannot hold."""


@pytest.mark.parametrize(("line", "error"), UNWRITABLE)
def test_a_record_json_cannot_write_fails_both_the_same_way(
    tmp_path: Path, line: bytes, error: str
) -> None:
    """With ``on_error = "fail"`` the sink's refusal fails the attempt with json's words,
    under both codecs: the job is SUSPENDED (one attempt) and nothing after it is written."""
    causes = []
    for codec in ("msgspec", "json"):
        daemon = _run(tmp_path / codec, codec, [b'{"n": 1}', line], 'on_error = "fail"')
        suspended = daemon.wait_for("job.state_changed", to="suspended")
        assert daemon.finish() == 1
        cause = str(suspended["cause"])
        assert error in cause
        causes.append(cause.splitlines()[0])
    assert causes[0] == causes[1]


@pytest.mark.parametrize(("line", "error"), UNWRITABLE)
def test_a_record_json_cannot_write_is_a_bad_record_for_the_policy(
    tmp_path: Path, line: bytes, error: str
) -> None:
    """The sink hands it to ``[records]``: dead-lettered with json's error (as JSON that
    reads back as the record), its neighbours written, the job FINISHED; the same under
    both codecs. (It failed every attempt, and each retry dead-lettered the records read
    before it again.)"""
    dead_letter = 'on_error = "dead_letter"\ndead_letter = "../rejects.jsonl"'
    lines = [b'{"n": 1}', line, b'{"n": 2}']
    for codec in ("msgspec", "json"):
        root = tmp_path / codec
        assert _run(root, codec, lines, dead_letter).finish() == 0
        assert (root / "out.jsonl").read_bytes() == b'{"n":1}\n{"n":2}\n'
        (entry,) = [json.loads(text) for text in (root / "rejects.jsonl").read_text().splitlines()]
        assert error in entry["error"]
        assert json.dumps(entry["record"]) == json.dumps(json.loads(line))
    assert _dead_letters(tmp_path / "msgspec") == _dead_letters(tmp_path / "json")
