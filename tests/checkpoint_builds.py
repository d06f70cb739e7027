"""Launch the daemon as a build with a slow jsonl flush and, optionally, a broken checkpoint.

Usage: python tests/checkpoint_builds.py {real,broken} run -c FILE [...]

Both builds make the jsonl sink's flush wait `SLOW_FLUSH` seconds first (a
busy disk), so a kill often lands during a checkpoint. The `broken` build also
reorders the checkpoint, as a mutation of `supervisor.attempt.Attempt`: the
offset is written to the snapshot *before* the sink's flush. The jsonl sink
holds records in memory until its flush (kill -9 keeps what reached write(),
but not that), so a kill during the flush loses records the snapshot already
counts as delivered. The soak's checks must fail on `broken` and pass on `real`.
Nothing in the product knows about this: the patch is applied here, then
`supervisor.cli.main` runs as usual.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

from supervisor import attempt, cli
from supervisor.connectors.jsonl.sink import JsonlSink
from supervisor.protocols import Offset, Sink, Source

SLOW_FLUSH = 0.3
"""Seconds every jsonl flush waits before writing: a slow disk."""

COMMAND = (sys.executable, str(Path(__file__).resolve()))
"""Prefix of the daemon command line; add `real` or `broken`, then `run -c FILE`."""

_flush = JsonlSink.flush


async def _slow_flush(self: JsonlSink, offset: Offset | None) -> None:
    await anyio.sleep(SLOW_FLUSH)
    await _flush(self, offset)


async def _offset_before_flush(
    self: attempt.Attempt, source: Source, sink: Sink, offset: Offset | None
) -> None:
    snapshot = await self._ledger.write(offset=offset)  # the mutation: offset first
    await sink.flush(offset)
    self.checkpoints += 1
    attempt.log.debug(
        "job.checkpoint", job=self.job.name, offset=offset, generation=snapshot.generation
    )


def main() -> int:
    build, *argv = sys.argv[1:]
    JsonlSink.flush = _slow_flush  # type: ignore[method-assign]
    if build == "broken":
        attempt.Attempt._checkpoint = _offset_before_flush  # type: ignore[method-assign]
    elif build != "real":
        raise SystemExit(f"usage: {sys.argv[0]} {{real,broken}} run -c FILE")
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
