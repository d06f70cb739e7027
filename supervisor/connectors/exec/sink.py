"""The ``exec`` sink: a program that reads Singer messages on stdin and confirms flushes.

On start the program gets one ``{"type": "SCHEMA", "stream": S, "schema": {},
"key_properties": []}`` line; then each record as ``{"type": "RECORD", "stream": S,
"record": R}``. A checkpoint's flush sends ``{"type": "STATE", "value": {"flush": N}}``
(N counts the flushes of this run from 1) and waits until the program writes, on its
stdout, a line that is that state: either the message itself or its ``value`` alone
(``{"flush": N}``, what Singer targets emit once they persisted what came before
it). Only then is the offset written to the snapshot. A later flush's echo confirms the
earlier ones too; every other stdout line is passed over.

The program is stopped by closing its stdin (Singer targets finish and exit there),
then SIGTERM and SIGKILL after `stop_timeout` each. Exiting while the job runs fails
the attempt (retried, or fatal for `fatal_exit_codes`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import anyio

from supervisor.codec import dumps_ascii
from supervisor.connectors.exec.config import ExecSinkConfig
from supervisor.connectors.exec.lines import LongLine
from supervisor.connectors.exec.program import Program, ProgramFailed, alongside
from supervisor.protocols import Offset, Record

_SEND_BYTES = 1 << 20
"""Encoded records are sent in pieces about this big."""


class ExecSink:
    """Runs the program on `open`; `write` feeds it, `flush` waits for its echo."""

    def __init__(self, config: ExecSinkConfig, job: str) -> None:
        self._config = config
        self._job = job
        self._program: Program | None = None
        stream = config.stream or job
        self._stream = json.dumps(stream)
        self._prefix = f'{{"type":"RECORD","stream":{self._stream},"record":'
        self._flushes = 0
        self._confirmed = 0
        self._stdout_ended = False
        self._unflushed = False

    async def open(self) -> Offset | None:
        await self._start()
        return None

    async def write(self, records: Sequence[Record]) -> None:
        if not records:
            return
        if self._program is None:
            await self._start()
        self._unflushed = True
        prefix, dumps = self._prefix, dumps_ascii
        pieces: list[str] = []
        size = 0
        for record in records:
            piece = f"{prefix}{dumps(record)}}}\n"
            pieces.append(piece)
            size += len(piece)
            if size >= _SEND_BYTES:
                await self._send("".join(pieces).encode())
                pieces, size = [], 0
        if pieces:
            await self._send("".join(pieces).encode())

    async def flush(self, offset: Offset | None) -> None:
        program = self._program
        if program is None:
            return  # "exit" mode, nothing written since the last run ended
        self._flushes += 1
        number = self._flushes
        line = f'{{"type":"STATE","value":{{"flush":{number}}}}}\n'.encode()
        if self._config.confirm == "exit":
            if self._unflushed:
                await self._end_run(program, line)
            return
        await program.attended(lambda: self._flush(program, line, number))
        self._unflushed = False

    async def close(self) -> None:
        program, self._program = self._program, None
        if program is not None:
            await program.close()

    async def _start(self) -> None:
        self._program = program = Program(self._config, self._job, "sink")
        self._stdout_ended = False
        await program.start()
        schema = {
            "type": "SCHEMA",
            "stream": json.loads(self._stream),
            "schema": {},
            "key_properties": [],
        }
        await self._send(json.dumps(schema).encode() + b"\n")

    async def _end_run(self, program: Program, line: bytes) -> None:
        """`confirm = "exit"`: the STATE, stdin closed, and an exit 0 within the timeout."""
        await self._send(line)
        program.close_stdin()
        with anyio.move_on_after(self._config.flush_timeout):
            await program.attended(lambda: alongside(self._read_stdout, program.wait))
        code = program.returncode
        if code != 0:
            raise program.failure(
                code,
                f"did not exit 0 within {self._config.flush_timeout:g} s "
                "(flush_timeout) after its stdin was closed to flush",
            )
        self._program = None
        self._unflushed = False
        await program.close()

    async def _send(self, data: bytes) -> None:
        """Send `data` while reading (and judging) what the program writes back."""
        program = self._running()
        await program.attended(lambda: alongside(self._read_stdout, lambda: program.send(data)))

    def _running(self) -> Program:
        if self._program is None:
            raise RuntimeError("the sink is used before open()")
        return self._program

    async def _flush(self, program: Program, line: bytes, number: int) -> None:
        async def confirmed() -> None:
            with anyio.fail_after(self._config.flush_timeout):
                while self._confirmed < number:
                    if self._stdout_ended:
                        raise await program.exit_failure(
                            f"closed its stdout before confirming flush {number}"
                        )
                    await self._read_stdout_once()

        try:
            # Sent alongside: a program blocked on a full stdout reads no stdin.
            await alongside(lambda: program.send(line), confirmed)
        except TimeoutError:
            raise ProgramFailed(
                f"sink.command: {program.name} did not echo the STATE of flush {number} "
                f"within {self._config.flush_timeout:g} s (flush_timeout): does it write "
                "each STATE it gets to stdout once what came before it is durable?"
            ) from None

    async def _read_stdout(self) -> None:
        while not self._stdout_ended:
            await self._read_stdout_once()

    async def _read_stdout_once(self) -> None:
        program = self._running()
        chunk = await program.receive()
        if not chunk:
            self._stdout_ended = True
            return
        for line in program.stdout.feed(chunk):
            if not isinstance(line, LongLine):
                self._judge(line)

    def _judge(self, line: bytes) -> None:
        if b"flush" not in line:
            return
        try:
            value = json.loads(line)
        except ValueError:
            return
        if isinstance(value, dict) and value.get("type") == "STATE":
            value = value.get("value")
        if isinstance(value, dict):
            number = value.get("flush")
            if isinstance(number, int) and not isinstance(number, bool):
                self._confirmed = max(self._confirmed, min(number, self._flushes))
