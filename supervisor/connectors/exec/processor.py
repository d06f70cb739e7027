"""The ``exec`` processor: co-processes that answer each record with result lines.

Framing (docs/exec.md): the daemon writes each record as one JSON line on the program's
stdin; the program answers every record, in order, with zero or more lines, then one
empty line (the end-of-record marker). Each answer line is a result record (JSON); a
line starting with ``!`` says the record failed, the rest of the line being the reason
(the job's ``[records]`` policy then skips it, dead-letters it or fails the attempt).
Zero results drop the record, several fan it out.

`workers` co-processes run side by side: a batch is cut into that many consecutive
slices, each fed to one co-process while its answers are read (no deadlock on full
pipes), and the results are put back in the batch's order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import anyio

from supervisor.codec import JSON, Codec, dumps_ascii
from supervisor.connectors.exec.config import ExecProcessorConfig
from supervisor.connectors.exec.lines import LongLine, json_line_parser, shown
from supervisor.connectors.exec.program import Program, ProgramFailed, alongside, first_error
from supervisor.protocols import Record

_SEND_BYTES = 1 << 20
Answer = list[Record] | Exception


class RecordFailed(ValueError):
    """The co-process said a record failed (a ``!`` line)."""


class ExecProcessor:
    """`workers` co-processes, started on `open`, fed a batch at a time by `process`."""

    def __init__(self, config: ExecProcessorConfig, job: str, *, codec: Codec = JSON) -> None:
        self._parse_json = json_line_parser(codec)
        self._workers = [Program(config, job, "processor") for _ in range(config.workers)]
        self._timeout = config.answer_timeout

    async def open(self) -> None:
        for worker in self._workers:
            await worker.start()

    async def process(self, records: Sequence[Record]) -> Sequence[Answer]:
        size = -(-len(records) // len(self._workers))  # ceiling
        slices = [records[at : at + size] for at in range(0, len(records), size or 1)]
        answers: list[list[Answer]] = [[] for _ in slices]

        async def one(index: int) -> None:
            worker = self._workers[index]
            answers[index] = await worker.attended(
                lambda: _exchange(worker, slices[index], self._timeout, self._parse_json)
            )

        failure: Exception | None = None
        try:
            async with anyio.create_task_group() as group:
                for index in range(len(slices)):
                    group.start_soon(one, index)
        except BaseExceptionGroup as errors:
            failure = first_error(errors)
        if failure is not None:
            raise failure
        return [answer for part in answers for answer in part]

    async def close(self) -> None:
        for worker in self._workers:
            await worker.close()


async def _exchange(
    worker: Program, records: Sequence[Record], silence: float, parse: Callable[[bytes], Any]
) -> list[Answer]:
    """Feed `records` to one co-process while reading its framed answers."""
    answers: list[Answer] = []
    early = worker.receive_nowait()
    if early:
        # Answers to records it was never sent (one marker too many, say): they would
        # be taken for the answers of this batch's records.
        raise ProgramFailed(
            f"processor.command: {worker.name} wrote before it was sent a record (the "
            f"end-of-record marker is one empty line): {shown(early)}"
        )

    async def send() -> None:
        pieces: list[str] = []
        size = 0
        for record in records:
            piece = dumps_ascii(record) + "\n"
            pieces.append(piece)
            size += len(piece)
            if size >= _SEND_BYTES:
                await worker.send("".join(pieces).encode())
                pieces, size = [], 0
        if pieces:
            await worker.send("".join(pieces).encode())

    async def receive() -> None:
        results: list[Record] = []
        error: Exception | None = None
        while len(answers) < len(records):
            chunk: bytes | None = None
            with anyio.move_on_after(silence):
                chunk = await worker.receive()
            if chunk is None:
                raise ProgramFailed(
                    f"processor.command: {worker.name} wrote nothing for {silence:g} s with "
                    f"{len(records) - len(answers)} records unanswered (answer_timeout): does "
                    "it flush its output after each empty line?"
                )
            if not chunk:
                unanswered = len(records) - len(answers)
                raise await worker.exit_failure(
                    f"closed its stdout with {unanswered} records unanswered"
                )
            for line in worker.stdout.feed(chunk):
                if len(answers) == len(records):
                    raise ProgramFailed(
                        f"processor.command: {worker.name} answered more records than it was "
                        f"sent (the end-of-record marker is one empty line): {_show(line)}"
                    )
                if isinstance(line, LongLine):
                    error = error or RecordFailed(f"an answer line too long: {shown(line.start)}")
                elif line in (b"", b"\r"):
                    answers.append(error if error is not None else results)
                    results, error = [], None
                elif line.startswith(b"!"):
                    reason = line[1:].decode("utf-8", "replace").strip()
                    error = RecordFailed(f"{worker.name}: {reason}")
                else:
                    try:
                        results.append(parse(line))
                    except ValueError as exc:
                        error = error or RecordFailed(
                            f"{worker.name} answered with a line that is not JSON ({exc}): "
                            f"{shown(line)}"
                        )

    await alongside(send, receive)
    return answers


def _show(line: bytes | LongLine) -> str:
    return shown(line.start if isinstance(line, LongLine) else line)
