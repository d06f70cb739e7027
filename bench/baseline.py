"""The practical limit: the same work as a throughput job, as a plain Python loop.

Reads the input line by line, (json mode) parses each line, adds the field
`bench.plugins.enrich` adds and serialises it as the jsonl sink does, and
every `--every` records writes the output, fsyncs it, then writes the byte
offset durably (temp file, fsync, rename, fsync of the directory): the
daemon's durability, with none of its machinery.

With ``--codec msgspec`` (the ``[fast]`` extra) the loop decodes each line with
msgspec and encodes the batch with msgspec's ``encode_lines``: the fastest plain
loop with that library, and no check that its output is json's.

Usage: python bench/baseline.py INPUT OUTPUT STATE_DIR [--mode json|lines] [--every N]
                                [--codec json|msgspec]
Prints one JSON line: {"records": n, "seconds": s} (time from the first read
to the last durable offset).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any, BinaryIO


def durable_offset_write(directory: Path, offset: int) -> None:
    """The raw durable-write cycle: temp file, fsync, rename over, fsync the directory."""
    temp = directory / "offset.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, f"offset = {offset}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    temp.replace(directory / "offset")
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def run(source: Path, target: Path, state: Path, *, mode: str, every: int, codec: str) -> int:
    """Copy `source` to `target` through the loop; the number of records."""
    if codec == "msgspec" and mode == "json":
        return run_msgspec(source, target, state, every=every)
    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
    loads = json.loads
    parse = mode == "json"
    count = offset = 0
    pending: list[str] = []
    with source.open("rb") as reader, target.open("ab") as writer:
        for raw in reader:
            offset += len(raw)
            if parse:
                record = loads(raw)
                record["n_items"] = len(record["items"])
                pending.append(encode(record))
            else:
                pending.append(raw.rstrip(b"\n").decode())
            count += 1
            if count % every == 0:
                _commit(writer, pending, state, offset)
        _commit(writer, pending, state, offset)
    return count


def run_msgspec(source: Path, target: Path, state: Path, *, every: int) -> int:
    """The JSON loop with msgspec: the same work and durability as `run`."""
    import msgspec

    loads = msgspec.json.Decoder().decode
    encode_lines = msgspec.json.Encoder().encode_lines
    count = offset = 0
    pending: list[Any] = []
    with source.open("rb") as reader, target.open("ab") as writer:
        for raw in reader:
            offset += len(raw)
            record = loads(raw)
            record["n_items"] = len(record["items"])
            pending.append(record)
            count += 1
            if count % every == 0:
                _commit_bytes(writer, encode_lines(pending), state, offset)
                pending.clear()
        _commit_bytes(writer, encode_lines(pending), state, offset)
    return count


def _commit_bytes(writer: BinaryIO, data: bytes, state: Path, offset: int) -> None:
    writer.write(data)
    writer.flush()
    os.fsync(writer.fileno())
    durable_offset_write(state, offset)


def _commit(writer: BinaryIO, pending: list[str], state: Path, offset: int) -> None:
    writer.write(("\n".join(pending) + "\n").encode() if pending else b"")
    pending.clear()
    writer.flush()
    os.fsync(writer.fileno())
    durable_offset_write(state, offset)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("state", type=Path)
    parser.add_argument("--mode", choices=("json", "lines"), default="json")
    parser.add_argument("--every", type=int, default=10_000)
    parser.add_argument("--codec", choices=("json", "msgspec"), default="json")
    args = parser.parse_args()
    args.state.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    count = run(
        args.input, args.output, args.state, mode=args.mode, every=args.every, codec=args.codec
    )
    print(json.dumps({"records": count, "seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
