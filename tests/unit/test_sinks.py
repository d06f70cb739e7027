"""The built-in sinks: what they store, and what flush makes durable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from supervisor.connectors.basic import NullSink, StdoutSink
from supervisor.connectors.jsonl import JsonlSinkConfig
from supervisor.connectors.jsonl.sink import JsonlSink
from supervisor.connectors.sqlite import SqliteSinkConfig
from supervisor.connectors.sqlite.sink import SqliteSink, table_rows

pytestmark = pytest.mark.anyio


async def test_jsonl_sink_appends_one_document_per_line(tmp_path: Path) -> None:
    """Records become compact JSON lines appended after what the file held."""
    path = tmp_path / "out.jsonl"
    path.write_text('{"old":true}\n')
    sink = JsonlSink(JsonlSinkConfig(path=path))
    assert await sink.open() is None
    await sink.write([{"a": 1}, "text", ["x", "é"]])
    await sink.flush(3)
    await sink.close()
    assert path.read_text(encoding="utf-8") == '{"old":true}\n{"a":1}\n"text"\n["x","é"]\n'


async def test_jsonl_sink_fsyncs_on_flush(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Flush is fsync: the data is on disk when flush returns."""
    import os

    synced: list[int] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    sink = JsonlSink(JsonlSinkConfig(path=tmp_path / "out.jsonl"))
    await sink.open()
    synced.clear()
    await sink.write([1])
    await sink.flush(1)
    await sink.close()
    assert synced


async def test_jsonl_sink_cuts_a_torn_last_line_on_open(tmp_path: Path) -> None:
    """A partial line left by a crash is removed, so replayed records start on a fresh line."""
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"seq":1}\n{"seq":2}\n{"se')
    sink = JsonlSink(JsonlSinkConfig(path=path))
    await sink.open()
    await sink.write([{"seq": 3}])
    await sink.flush(3)
    await sink.close()
    assert [json.loads(line)["seq"] for line in path.read_text().splitlines()] == [1, 2, 3]


async def test_jsonl_sink_drops_unflushed_records_on_close(tmp_path: Path) -> None:
    """Close does not flush: only a checkpoint's flush decides what is delivered."""
    path = tmp_path / "out.jsonl"
    sink = JsonlSink(JsonlSinkConfig(path=path))
    await sink.open()
    await sink.write([{"a": 1}])
    await sink.close()
    assert path.read_bytes() == b""


async def test_sqlite_sink_commits_rows_and_offset_together(tmp_path: Path) -> None:
    """Rows and the job's offset land in one transaction and the offset comes back on open."""
    path = tmp_path / "out.db"
    sink = SqliteSink(SqliteSinkConfig(path=path), "orders")
    assert await sink.open() is None
    await sink.write([{"seq": 0}, {"seq": 1}])
    await sink.flush({"pos": 2, "ino": 7})
    await sink.write([{"seq": 2}])  # never flushed: must not appear
    await sink.close()

    again = SqliteSink(SqliteSinkConfig(path=path), "orders")
    assert await again.open() == {"pos": 2, "ino": 7}
    await again.close()
    assert [json.loads(row) for row in table_rows(path)] == [{"seq": 0}, {"seq": 1}]


async def test_sqlite_sink_keeps_offsets_per_job(tmp_path: Path) -> None:
    """Two jobs writing to one database each get their own offset back."""
    path = tmp_path / "out.db"
    for job, offset in (("a", 1), ("b", 2)):
        sink = SqliteSink(SqliteSinkConfig(path=path, table=f"t_{job}"), job)
        await sink.open()
        await sink.flush(offset)
        await sink.close()
    for job, offset in (("a", 1), ("b", 2)):
        sink = SqliteSink(SqliteSinkConfig(path=path, table=f"t_{job}"), job)
        assert await sink.open() == offset
        await sink.close()


def test_sqlite_sink_refuses_a_table_name_that_is_not_an_identifier(tmp_path: Path) -> None:
    """A table name is interpolated into SQL, so only identifiers are accepted."""
    with pytest.raises(ValueError, match="identifier"):
        SqliteSink(SqliteSinkConfig(path=tmp_path / "x.db", table='x"; DROP'), "job")


async def test_stdout_sink_writes_json_lines_on_flush(
    capfdbinary: pytest.CaptureFixture[bytes],
) -> None:
    """Records reach standard output when flushed."""
    sink = StdoutSink()
    await sink.open()
    await sink.write([{"n": 1}, {"n": 2}])
    assert capfdbinary.readouterr().out == b""
    await sink.flush(2)
    await sink.close()
    assert capfdbinary.readouterr().out == b'{"n":1}\n{"n":2}\n'


async def test_null_sink_accepts_everything() -> None:
    """The null sink takes records and flushes without storing anything."""
    sink = NullSink()
    assert await sink.open() is None
    await sink.write([1, 2, 3])
    await sink.flush(3)
    await sink.close()
