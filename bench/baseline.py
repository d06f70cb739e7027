"""The practical limit: the same work as a throughput job, as a plain Python loop.

Reads the input line by line, (json mode) parses each line, adds the field
`bench.plugins.enrich` adds and serialises it as the jsonl sink does, and
every `--every` records writes the output, fsyncs it, then writes the byte
offset durably (temp file, fsync, rename, fsync of the directory): the
daemon's durability, with none of its machinery.

Usage: python bench/baseline.py INPUT OUTPUT STATE_DIR [--mode json|lines] [--every N]
Prints one JSON line: {"records": n, "seconds": s} (time from the first read
to the last durable offset).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import BinaryIO


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


def run(source: Path, target: Path, state: Path, *, mode: str, every: int) -> int:
    """Copy `source` to `target` through the loop; the number of records."""
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
    args = parser.parse_args()
    args.state.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    count = run(args.input, args.output, args.state, mode=args.mode, every=args.every)
    print(json.dumps({"records": count, "seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
