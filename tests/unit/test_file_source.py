"""The file source: lines in order, exactly once, across rotation and restarts."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from supervisor.connectors.file import FileSourceConfig, LineFormat, StartAt
from supervisor.connectors.file.source import FileSource
from supervisor.protocols import Batch, Offset, Record

POLL = 0.01
WAIT = 0.05  # several polls, so one read() sees a rotated file through to the new one


def make_source(
    path: Path,
    *,
    follow: bool = True,
    format: LineFormat = "lines",
    start: StartAt = "beginning",
    poll_interval: float = POLL,
    chunk_bytes: int | None = None,
) -> FileSource:
    config = FileSourceConfig(
        path=path, format=format, follow=follow, start=start, poll_interval=poll_interval
    )
    if chunk_bytes is None:
        return FileSource(config)
    return FileSource(config, chunk_bytes=chunk_bytes)


async def opened(path: Path, offset: Offset | None = None, **options: Any) -> FileSource:
    source = make_source(path, **options)
    await source.open(offset)
    return source


async def read_one_line_then_stop(path: Path) -> Batch:
    """Write "a1", "a2"; read "a1" and close: a source stopped with one line unread."""
    path.write_text("a1\na2\n")
    source = await opened(path)
    batch = await source.read(1, WAIT)
    await source.close()
    return batch


async def read_until_idle(
    source: FileSource, max_records: int = 1000, wait: float = WAIT
) -> tuple[list[Record], Batch]:
    """Read until a batch comes back empty (or ends); return every record and the last batch."""
    records: list[Record] = []
    while True:
        batch = await source.read(max_records, wait)
        records.extend(batch.records)
        if not batch.records or batch.end:
            return records, batch


def offset_field(batch: Batch, key: str) -> Offset:
    assert isinstance(batch.offset, dict)
    return batch.offset[key]


def append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8", newline="") as file:
        file.write(text)


def rotate_by_rename(path: Path, suffix: str = ".1") -> Path:
    rotated = path.with_name(path.name + suffix)
    path.rename(rotated)
    path.touch()
    return rotated


def copytruncate(path: Path, suffix: str = ".1") -> Path:
    copy = path.with_name(path.name + suffix)
    shutil.copyfile(path, copy)
    os.truncate(path, 0)
    return copy


# --- reading ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_lines_come_in_order_without_their_newlines(tmp_path: Path) -> None:
    """Each complete line is one str record, in file order, without its "\\n"."""
    path = tmp_path / "app.log"
    path.write_text("one\ntwo\n\nfour\n")
    source = await opened(path)
    records, _ = await read_until_idle(source)
    assert records == ["one", "two", "", "four"]
    await source.close()


@pytest.mark.anyio
async def test_crlf_lines_lose_the_carriage_return(tmp_path: Path) -> None:
    """A "\\r\\n" ending is stripped whole; a "\\r" inside a line stays."""
    path = tmp_path / "app.log"
    path.write_bytes(b"one\r\ntw\ro\r\nthree\n")
    source = await opened(path)
    assert (await read_until_idle(source))[0] == ["one", "tw\ro", "three"]
    await source.close()


@pytest.mark.anyio
async def test_invalid_utf8_is_replaced_not_fatal(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 become U+FFFD; the line is still a record."""
    path = tmp_path / "app.log"
    path.write_bytes(b"ok\n\xffbad\n")
    source = await opened(path)
    assert (await read_until_idle(source))[0] == ["ok", "\ufffdbad"]
    await source.close()


@pytest.mark.anyio
async def test_partial_line_is_held_until_its_newline(tmp_path: Path) -> None:
    """While following, a last line without "\\n" is not returned until it is complete."""
    path = tmp_path / "app.log"
    path.write_text("one\ntw")
    source = await opened(path)
    assert (await read_until_idle(source))[0] == ["one"]
    append(path, "o\nthr")
    assert (await read_until_idle(source))[0] == ["two"]
    await source.close()


@pytest.mark.anyio
async def test_lines_longer_than_a_chunk_and_split_characters_survive(tmp_path: Path) -> None:
    """Lines and multi-byte characters cut by chunk boundaries are put back together."""
    path = tmp_path / "app.log"
    lines = ["é" * 40, "", "aé" * 3, "z"]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    source = await opened(path, chunk_bytes=5)
    assert (await read_until_idle(source, max_records=2))[0] == lines
    await source.close()


@pytest.mark.anyio
async def test_unfollowed_file_ends_with_its_partial_line(tmp_path: Path) -> None:
    """With follow = false the last line counts even without "\\n", and the batch says end."""
    path = tmp_path / "app.log"
    path.write_text("one\ntwo")
    source = await opened(path, follow=False)
    last = await source.read(10, WAIT)
    assert (last.records, last.end) == (["one", "two"], True)
    assert offset_field(last, "pos") == len("one\ntwo")
    again = await source.read(10, WAIT)
    assert (again.records, again.end) == ([], True)
    await source.close()


@pytest.mark.anyio
async def test_empty_file(tmp_path: Path) -> None:
    """An empty file ends at once unfollowed, and gives empty batches with an offset followed."""
    path = tmp_path / "app.log"
    path.touch()
    unfollowed = await opened(path, follow=False)
    batch = await unfollowed.read(10, WAIT)
    assert (batch.records, batch.end) == ([], True)
    await unfollowed.close()
    followed = await opened(path)
    batch = await followed.read(10, WAIT)
    assert (batch.records, batch.end) == ([], False)
    assert offset_field(batch, "pos") == 0
    append(path, "first\n")
    assert (await read_until_idle(followed))[0] == ["first"]
    await followed.close()


@pytest.mark.anyio
async def test_start_end_skips_what_is_already_there(tmp_path: Path) -> None:
    """start = "end" reads only what is written after open."""
    path = tmp_path / "app.log"
    path.write_text("old\nolder\n")
    source = await opened(path, start="end")
    assert (await source.read(10, WAIT)).records == []
    append(path, "new\n")
    assert (await read_until_idle(source))[0] == ["new"]
    await source.close()


@pytest.mark.anyio
async def test_missing_file_is_waited_for_when_following(tmp_path: Path) -> None:
    """A followed file that does not exist yet gives empty batches, then all of its lines."""
    path = tmp_path / "app.log"
    source = await opened(path, start="end")
    batch = await source.read(10, WAIT)
    assert (batch.records, batch.offset) == ([], None)
    path.write_text("first\n")  # a new file: read from its start, whatever `start` says
    assert (await read_until_idle(source))[0] == ["first"]
    await source.close()


@pytest.mark.anyio
async def test_missing_file_is_an_error_when_not_following(tmp_path: Path) -> None:
    """With follow = false a missing file raises FileNotFoundError naming the path."""
    path = tmp_path / "app.log"
    with pytest.raises(FileNotFoundError) as raised:
        await opened(path, follow=False)
    assert raised.value.filename == str(path)


@pytest.mark.anyio
async def test_jsonl_parses_lines_and_skips_blank_ones(tmp_path: Path) -> None:
    """jsonl yields json.loads of each line; whitespace-only lines are skipped."""
    path = tmp_path / "app.jsonl"
    path.write_text('{"a": 1}\n  \n[2]\r\n"three"\n\n')
    source = await opened(path, format="jsonl")
    assert (await read_until_idle(source))[0] == [{"a": 1}, [2], "three"]
    await source.close()


@pytest.mark.anyio
async def test_a_line_that_is_not_json_is_a_reject_not_a_record(tmp_path: Path) -> None:
    """A bad line is returned in `rejects` with an error naming its byte; the good lines flow."""
    path = tmp_path / "app.jsonl"
    path.write_text('{"n": 1}\n{"n": 2}\n{bad\n{"n": 4}\n')
    source = await opened(path, format="jsonl")
    batch = await source.read(10, WAIT)
    assert batch.records == [{"n": 1}, {"n": 2}, {"n": 4}]
    assert [r.raw for r in batch.rejects] == ["{bad"]
    assert isinstance(batch.rejects[0].error, json.JSONDecodeError)
    assert f"byte 18 of {path}" in str(batch.rejects[0].error)
    assert offset_field(batch, "pos") == path.stat().st_size  # read past, policy decides
    await source.close()


@pytest.mark.anyio
async def test_a_bad_line_after_blank_ones_names_its_byte(tmp_path: Path) -> None:
    """Blank lines are skipped; a bad line after them is a reject naming its own byte."""
    path = tmp_path / "app.jsonl"
    path.write_text("\n \nnot json\n")
    source = await opened(path, format="jsonl")
    batch = await source.read(10, WAIT)
    assert batch.records == []
    assert [r.raw for r in batch.rejects] == ["not json"]
    assert "byte 3 of" in str(batch.rejects[0].error)
    await source.close()


# --- offsets and restarts ----------------------------------------------------------------


@pytest.mark.anyio
async def test_offset_is_toml_and_resumes_without_repeating(tmp_path: Path) -> None:
    """Restarting at any batch's offset (after a TOML round trip) continues with the next line."""
    path = tmp_path / "app.log"
    lines = [f"line {n}" for n in range(7)]
    path.write_text("".join(line + "\n" for line in lines))
    seen: list[Record] = []
    offset: Offset | None = None
    while len(seen) < len(lines):
        source = await opened(path, offset)
        batch = await source.read(3, WAIT)
        await source.close()
        seen.extend(batch.records)
        offset = tomllib.loads(tomli_w.dumps({"offset": batch.offset}))["offset"]
    assert seen == lines
    assert isinstance(offset, dict)
    assert set(offset) == {"dev", "ino", "pos", "fingerprint", "fingerprint_len"}


@pytest.mark.anyio
async def test_fingerprint_is_retaken_while_the_file_is_short(tmp_path: Path) -> None:
    """The fingerprint covers the first bytes of the file as it grows, up to 256."""
    path = tmp_path / "app.log"
    path.write_text("short\n")
    source = await opened(path)
    _, batch = await read_until_idle(source)
    assert offset_field(batch, "fingerprint_len") == 6
    append(path, "x" * 300 + "\n")
    _, batch = await read_until_idle(source)
    assert offset_field(batch, "fingerprint_len") == 256
    await source.close()


@pytest.mark.anyio
async def test_malformed_offset_is_rejected(tmp_path: Path) -> None:
    """An offset that is not this source's table is a ValueError, not a silent restart."""
    path = tmp_path / "app.log"
    path.touch()
    with pytest.raises(ValueError, match="file source offset"):
        await opened(path, 12)
    with pytest.raises(ValueError, match="bad pos"):
        await opened(
            path, {"dev": 1, "ino": 2, "pos": -1, "fingerprint": "0" * 64, "fingerprint_len": 0}
        )


@pytest.mark.anyio
async def test_close_is_idempotent(tmp_path: Path) -> None:
    """close() twice is fine, opened or not."""
    path = tmp_path / "app.log"
    path.touch()
    source = await opened(path)
    await source.close()
    await source.close()
    await make_source(path).close()


# --- rotation while following ------------------------------------------------------------


@pytest.mark.anyio
async def test_rename_rotation_mid_batch_drains_the_old_file_first(tmp_path: Path) -> None:
    """Lines left in a renamed file come before the new file's, none lost or repeated."""
    path = tmp_path / "app.log"
    path.write_text("a1\na2\na3\na4\n")
    source = await opened(path)
    assert (await source.read(2, WAIT)).records == ["a1", "a2"]
    rotate_by_rename(path)
    append(path, "b1\nb2\n")
    assert (await read_until_idle(source, max_records=2))[0] == ["a3", "a4", "b1", "b2"]
    await source.close()


@pytest.mark.anyio
async def test_rename_rotation_mid_line_keeps_the_line_whole(tmp_path: Path) -> None:
    """A line finished in the renamed file by its writer is one record."""
    path = tmp_path / "app.log"
    path.write_text("a1\npar")
    source = await opened(path)
    assert (await read_until_idle(source))[0] == ["a1"]
    rotated = rotate_by_rename(path)
    append(rotated, "tial\n")
    append(path, "b1\n")
    assert (await read_until_idle(source))[0] == ["partial", "b1"]
    await source.close()


@pytest.mark.anyio
async def test_unfinished_last_line_of_a_renamed_file_is_a_record(tmp_path: Path) -> None:
    """A renamed file's last line without "\\n" is returned on its own when the file is left."""
    path = tmp_path / "app.log"
    path.write_text("a1\nunfinished")
    source = await opened(path)
    assert (await read_until_idle(source))[0] == ["a1"]
    rotate_by_rename(path)
    append(path, "b1\n")
    assert (await read_until_idle(source))[0] == ["unfinished", "b1"]
    await source.close()


@pytest.mark.anyio
async def test_writes_to_the_renamed_file_after_rotation_are_not_lost(tmp_path: Path) -> None:
    """A renamed file is drained until it stops growing for a poll, new file or not."""
    path = tmp_path / "app.log"
    path.write_text("a1\n")
    source = await opened(path, poll_interval=10.0)
    assert (await read_until_idle(source))[0] == ["a1"]
    rotated = rotate_by_rename(path)
    append(path, "b1\n")
    assert (await source.read(10, WAIT)).records == []  # the old file might still grow
    append(rotated, "a2\n")
    records, last = await read_until_idle(source)
    assert records == ["a2"]
    await source.close()
    # Restart with a short poll interval to see the switch to the new file.
    resumed = await opened(path, last.offset, poll_interval=POLL)
    assert (await read_until_idle(resumed))[0] == ["b1"]
    await resumed.close()


@pytest.mark.anyio
async def test_deleted_and_recreated_file_is_drained_then_read(tmp_path: Path) -> None:
    """A file deleted under the reader is read to its end, then the new file from its start."""
    path = tmp_path / "app.log"
    path.write_text("a1\n")
    source = await opened(path)
    assert (await source.read(10, WAIT)).records == ["a1"]
    append(path, "a2\n")
    path.unlink()
    assert (await read_until_idle(source))[0] == ["a2"]  # no new file yet: keep waiting
    path.write_text("b1\n")
    assert (await read_until_idle(source))[0] == ["b1"]
    await source.close()


@pytest.mark.anyio
async def test_file_renamed_away_and_back_is_not_read_twice(tmp_path: Path) -> None:
    """A file renamed away and back before the switch is the same file: nothing repeats."""
    path = tmp_path / "app.log"
    path.write_text("a1\n")
    source = await opened(path, poll_interval=10.0)
    assert (await read_until_idle(source))[0] == ["a1"]
    moved = path.with_name("app.log.1")
    path.rename(moved)
    assert (await source.read(10, WAIT)).records == []
    moved.rename(path)
    append(path, "a2\n")
    assert (await read_until_idle(source))[0] == ["a2"]
    await source.close()


@pytest.mark.anyio
async def test_copytruncate_reads_the_unread_rest_from_the_copy(tmp_path: Path) -> None:
    """After copytruncate, lines not yet read come from the copy, then the file from 0."""
    path = tmp_path / "app.log"
    path.write_text("a1\na2\n")
    source = await opened(path)
    assert (await source.read(1, WAIT)).records == ["a1"]
    append(path, "a3\n")
    copytruncate(path)
    append(path, "b1\nb2\n")
    assert (await read_until_idle(source))[0] == ["a2", "a3", "b1", "b2"]
    await source.close()


@pytest.mark.anyio
async def test_copytruncate_mid_line_splits_the_line_at_the_copy_end(tmp_path: Path) -> None:
    """A line cut by copytruncate is two records: the copy's end and the new file's start."""
    path = tmp_path / "app.log"
    path.write_text("a1\nab")
    source = await opened(path)
    assert (await read_until_idle(source))[0] == ["a1"]
    copytruncate(path)
    append(path, "cd\nb1\n")
    assert (await read_until_idle(source))[0] == ["ab", "cd", "b1"]
    await source.close()


@pytest.mark.anyio
async def test_truncation_without_a_copy_warns_and_restarts_at_zero(tmp_path: Path) -> None:
    """A truncated file with no copy to be found is logged and read again from byte 0."""
    path = tmp_path / "app.log"
    path.write_text("a1\na2\n")
    source = await opened(path)
    assert (await read_until_idle(source))[0] == ["a1", "a2"]
    os.truncate(path, 0)
    append(path, "b1\n")
    with capture_logs() as logs:
        assert (await read_until_idle(source))[0] == ["b1"]
    [warning] = [entry for entry in logs if entry["event"] == "source.file.truncated"]
    assert warning["log_level"] == "warning"
    assert (warning["path"], warning["pos"], warning["copy_found"]) == (str(path), 6, False)
    await source.close()


@pytest.mark.anyio
async def test_file_truncated_to_part_of_itself_is_read_again_from_zero(tmp_path: Path) -> None:
    """A file cut short behind the reader (its start intact) counts as new: read from 0."""
    path = tmp_path / "app.log"
    path.write_text("".join(f"{n:09}\n" for n in range(60)))
    source = await opened(path)
    assert len((await read_until_idle(source))[0]) == 60
    os.truncate(path, 300)
    with capture_logs() as logs:
        records, _ = await read_until_idle(source)
    assert records == [f"{n:09}" for n in range(30)]
    assert [entry["event"] for entry in logs] == ["source.file.truncated"]
    await source.close()


# --- rotation while stopped --------------------------------------------------------------


@pytest.mark.anyio
async def test_rename_while_stopped_finishes_the_rotated_copy(tmp_path: Path) -> None:
    """After a restart, the rest of the renamed file comes before the new file's lines."""
    path = tmp_path / "app.log"
    batch = await read_one_line_then_stop(path)
    rotate_by_rename(path, "-20260101")
    path.with_name("app.log.2.gz").write_text("a1\na2\n")  # compressed copies are never read
    append(path, "b1\n")
    resumed = await opened(path, batch.offset)
    assert (await read_until_idle(resumed))[0] == ["a2", "b1"]
    await resumed.close()


def rotate_in_sequence(path: Path, contents: list[str]) -> None:
    """Rename-rotate `path` once per entry: the new file gets that entry, then is rotated
    itself (`.1`, `.2`, ... oldest first). Modification times a second apart fix the order."""
    base = path.stat().st_mtime
    for number, text in enumerate(contents, start=1):
        rotated = rotate_by_rename(path, f".{number}")
        os.utime(rotated, (base + number, base + number))
        append(path, text)
    os.utime(path, (base + len(contents) + 1,) * 2)


@pytest.mark.anyio
async def test_several_rotations_while_stopped_lose_no_file(tmp_path: Path) -> None:
    """Fallen three rotations behind: the rest of the first copy, then each later copy in
    the order written, then the file at the path."""
    path = tmp_path / "app.log"
    batch = await read_one_line_then_stop(path)
    rotate_in_sequence(path, ["b1\n", "c1\nc2\n", "d1\n"])
    path.with_name("app.log.old").write_text("stale\n")  # written before: never read
    os.utime(path.with_name("app.log.old"), (1, 1))
    resumed = await opened(path, batch.offset)
    assert (await read_until_idle(resumed))[0] == ["a2", "b1", "c1", "c2", "d1"]
    await resumed.close()


@pytest.mark.anyio
async def test_two_rotations_between_polls_lose_no_file(tmp_path: Path) -> None:
    """Following, with two rename rotations before the next read: both files are read."""
    path = tmp_path / "app.log"
    path.write_text("a1\n")
    source = await opened(path)
    assert (await read_until_idle(source))[0] == ["a1"]
    append(path, "a2\n")
    rotate_in_sequence(path, ["b1\n", "c1\n"])
    assert (await read_until_idle(source))[0] == ["a2", "b1", "c1"]
    await source.close()


@pytest.mark.anyio
async def test_rename_while_stopped_waits_for_the_new_file(tmp_path: Path) -> None:
    """With the path still missing after a restart, the renamed file is finished, then waited on."""
    path = tmp_path / "app.log"
    batch = await read_one_line_then_stop(path)
    path.rename(tmp_path / "app.log.1")
    resumed = await opened(path, batch.offset)
    assert (await read_until_idle(resumed))[0] == ["a2"]
    path.write_text("b1\n")
    assert (await read_until_idle(resumed))[0] == ["b1"]
    await resumed.close()


@pytest.mark.anyio
async def test_vanished_file_without_copy_is_waited_for(tmp_path: Path) -> None:
    """After a restart with the file gone for good, the old offset stands until a new file comes."""
    path = tmp_path / "app.log"
    batch = await read_one_line_then_stop(path)
    path.unlink()
    resumed = await opened(path, batch.offset)
    assert (await resumed.read(10, WAIT)).offset == batch.offset
    path.write_text("b1\n")
    assert (await read_until_idle(resumed))[0] == ["b1"]
    await resumed.close()


@pytest.mark.anyio
async def test_copytruncate_while_stopped_finishes_the_copy(tmp_path: Path) -> None:
    """After a restart, a truncated file's unread lines are read from its copy first."""
    path = tmp_path / "app.log"
    batch = await read_one_line_then_stop(path)
    copytruncate(path)
    append(path, "b1\n")
    resumed = await opened(path, batch.offset)
    assert (await read_until_idle(resumed))[0] == ["a2", "b1"]
    await resumed.close()


@pytest.mark.anyio
async def test_other_file_after_restart_without_copy_warns(tmp_path: Path) -> None:
    """A different file at the path and no rotated copy: warn with the old keys, read from 0."""
    path = tmp_path / "app.log"
    batch = await read_one_line_then_stop(path)
    replacement = tmp_path / "replacement"
    replacement.write_text("b1\n")
    replacement.replace(path)  # a new inode: the old one is freed only after it exists
    with capture_logs() as logs:
        resumed = await opened(path, batch.offset)
    assert (await read_until_idle(resumed))[0] == ["b1"]
    [warning] = logs
    assert warning["event"] == "source.file.rotated_copy_missing"
    assert isinstance(batch.offset, dict)
    assert {key: warning[key] for key in batch.offset} == batch.offset
    await resumed.close()


@pytest.mark.anyio
async def test_new_file_reusing_the_inode_is_read_from_its_start(tmp_path: Path) -> None:
    """A file recreated at the path (often on the freed inode) is told apart by its fingerprint."""
    path = tmp_path / "app.log"
    batch = await read_one_line_then_stop(path)
    path.unlink()
    path.write_text("b1\nb2\nb3\n")
    resumed = await opened(path, batch.offset)
    assert (await read_until_idle(resumed))[0] == ["b1", "b2", "b3"]
    await resumed.close()


@pytest.mark.anyio
async def test_restart_mid_drain_finishes_the_old_file(tmp_path: Path) -> None:
    """A restart while a renamed file is drained resumes in that file, then the new one."""
    path = tmp_path / "app.log"
    path.write_text("a1\na2\na3\n")
    source = await opened(path)
    assert (await source.read(1, WAIT)).records == ["a1"]
    rotate_by_rename(path)
    append(path, "b1\n")
    batch = await source.read(1, WAIT)
    assert batch.records == ["a2"]
    await source.close()
    resumed = await opened(path, batch.offset)
    assert (await read_until_idle(resumed))[0] == ["a3", "b1"]
    await resumed.close()


@pytest.mark.anyio
async def test_unfollowed_restart_finishes_the_rotated_copy_then_ends(tmp_path: Path) -> None:
    """With follow = false, a rotated copy is finished, then the new file, then end."""
    path = tmp_path / "app.log"
    path.write_text("a1\na2")
    source = await opened(path)
    batch = await source.read(10, WAIT)
    await source.close()
    rotate_by_rename(path)
    append(path, "b1\nb2")
    resumed = await opened(path, batch.offset, follow=False)
    records, last = await read_until_idle(resumed)
    assert (records, last.end) == (["a2", "b1", "b2"], True)
    await resumed.close()


# --- property: nothing lost, nothing repeated --------------------------------------------

Operation = (
    tuple[Literal["append"], str]
    | tuple[Literal["read"], int]
    | tuple[Literal["rename", "copytruncate"], bool]
    | tuple[Literal["restart"]]
)

operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.text(alphabet="ab\n\ré", max_size=10)),
        st.tuples(st.just("read"), st.integers(1, 4)),
        st.tuples(st.sampled_from(["rename", "copytruncate"]), st.booleans()),
        st.tuples(st.just("restart")),
    ),
    max_size=20,
)


class Writer:
    """A log writer and its rotator; remembers every generation of the file for the oracle."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.generations = [""]
        self.appends = 0
        path.touch()

    def append(self, text: str) -> None:
        # A unique token starts every write, so no two generations share a fingerprint.
        self.appends += 1
        text = f"<{self.appends}>{text}"
        append(self.path, text)
        self.generations[-1] += text

    def rotate(self, kind: str) -> None:
        rotated = len(self.generations) - 1
        for n in range(rotated, 0, -1):  # logrotate shifts: app.log.1 -> app.log.2 ...
            self.path.with_name(f"app.log.{n}").rename(self.path.with_name(f"app.log.{n + 1}"))
        if kind == "rename":
            rotate_by_rename(self.path)
        else:
            copytruncate(self.path)
        self.generations.append("")

    def expected_records(self) -> list[str]:
        """Every line of every generation; a generation's unfinished last line counts alone."""
        records: list[str] = []
        for text in self.generations:
            *lines, last = text.split("\n")
            records.extend(lines + ([last] if last else []))
        return [record.removesuffix("\r") for record in records]

    def read_to(self, offset: Offset | None) -> bool:
        """Whether `offset` is at the last complete line of the current file, all of it seen."""
        if not isinstance(offset, dict):
            return False
        data = self.generations[-1].encode()
        head = data[:256]
        return (offset["ino"], offset["pos"], offset["fingerprint"]) == (
            self.path.stat().st_ino,
            data.rfind(b"\n") + 1,
            hashlib.sha256(head).hexdigest(),
        )


@pytest.mark.anyio
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operations=operations, chunk_bytes=st.sampled_from([3, 16, 1 << 20]))
async def test_no_line_is_lost_or_repeated(
    tmp_path_factory: pytest.TempPathFactory,
    operations: Sequence[Operation],
    chunk_bytes: int,
) -> None:
    """Any mix of appends, reads, rotations and restarts yields each line once, in order."""
    path = tmp_path_factory.mktemp("rotation") / "app.log"
    writer = Writer(path)
    options: dict[str, Any] = {"poll_interval": 0.002, "chunk_bytes": chunk_bytes}
    source = await opened(path, **options)
    emitted: list[Record] = []
    offset: Offset | None = None

    async def read(max_records: int) -> None:
        nonlocal offset
        batch = await source.read(max_records, 0.01)
        emitted.extend(batch.records)
        offset = batch.offset

    for operation in operations:
        if operation[0] == "append":
            writer.append(operation[1])
        elif operation[0] == "read":
            await read(operation[1])
        elif operation[0] == "restart":
            await source.close()
            source = await opened(path, offset, **options)
        else:
            # One rotation at a time here: this writer rotates faster than file
            # timestamps tick, so copies could not be ordered. Several rotations
            # before the reader catches up: the `lose_no_file` tests above.
            for _ in range(100):
                if writer.read_to(offset):
                    break
                await read(1000)
            else:
                raise AssertionError(f"reader stuck at {offset} of {writer.generations}")
            if operation[1]:  # while the source is stopped
                await source.close()
                writer.rotate(operation[0])
                source = await opened(path, offset, **options)
            else:
                writer.rotate(operation[0])
    await source.close()
    finisher = await opened(path, offset, **options, follow=False)
    while not (batch := await finisher.read(1000, 0.01)).end:
        emitted.extend(batch.records)
    emitted.extend(batch.records)
    await finisher.close()
    assert emitted == writer.expected_records(), (emitted, writer.generations)
