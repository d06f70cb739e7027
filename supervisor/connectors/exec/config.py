"""The ``exec`` connector's settings: the keys of its tables, their kinds, defaults, docs.

The keys that say how to run the program (`ProgramConfig`) are shared by the source and
the sink; each adds its own. Apart from the declaration so that the implementation can
import them without importing its package's `__init__` back.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, get_args

from supervisor.connectors import kinds, setting

if TYPE_CHECKING:
    from supervisor.config.model import CheckpointPolicy

SourceProtocol: TypeAlias = Literal["singer", "plain"]
PlainFormat: TypeAlias = Literal["jsonl", "lines"]
Confirm: TypeAlias = Literal["echo", "exit"]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}", re.ASCII)
_USER = re.compile(r"[a-z_][a-z0-9_.-]{0,31}\$?|[0-9]{1,10}", re.ASCII)
_ARGUMENT = re.compile(r"(-{1,2}[A-Za-z0-9][A-Za-z0-9_.-]{0,62}=?)?", re.ASCII)


def command() -> kinds.Convert:
    """A non-empty array of strings: the program and its arguments. A program named with
    a ``/`` and relative is relative to the file's directory (a bare name is looked up
    on ``PATH`` when it starts)."""

    def convert(value: Any, directory: Path) -> tuple[str, ...]:
        if not (
            isinstance(value, list)
            and value
            and all(isinstance(part, str) and "\x00" not in part for part in value)
            and value[0]
        ):
            raise kinds.Invalid(
                "expected a non-empty array of strings (the program, then its arguments), "
                f"got {kinds.describe(value)}"
            )
        program = value[0]
        if "/" in program and not program.startswith("/"):
            program = os.path.normpath(directory / program)
        return (program, *value[1:])

    return convert


def environment() -> kinds.Convert:
    """A table of variable names to strings."""

    def convert(value: Any, directory: Path) -> Mapping[str, str]:
        if not isinstance(value, dict):
            raise kinds.Invalid(f"expected a table of strings, got {kinds.describe(value)}")
        for name, text in value.items():
            if not _ENV_NAME.fullmatch(name):
                raise kinds.Invalid(f"expected environment variable names, got {name!r}")
            if not isinstance(text, str) or "\x00" in text:
                raise kinds.Invalid(f"expected a string for {name}, got {kinds.describe(text)}")
        return dict(value)

    return convert


def exit_codes() -> kinds.Convert:
    """An array of exit codes, 1 to 255."""

    def convert(value: Any, directory: Path) -> frozenset[int]:
        if not isinstance(value, list) or not all(
            isinstance(code, int) and not isinstance(code, bool) and 1 <= code <= 255
            for code in value
        ):
            raise kinds.Invalid(
                f"expected an array of exit codes from 1 to 255, got {kinds.describe(value)}"
            )
        return frozenset(value)

    return convert


@dataclass(frozen=True, slots=True, kw_only=True)
class ProgramConfig:
    """How to run the program: shared by ``[source]`` and ``[sink]`` of ``type = "exec"``."""

    command: tuple[str, ...] = field(
        metadata=setting(
            command(),
            'The program and its arguments, e.g. ["./tap.sh", "--config", "tap.json"]. '
            "Run directly, not through a shell.",
        )
    )
    working_directory: Path | None = field(
        default=None,
        metadata=setting(kinds.path(), "The program's working directory (default: the daemon's)."),
    )
    environment: Mapping[str, str] = field(
        default_factory=dict,
        metadata=setting(
            environment(), "Variables added to (or replacing) the daemon's environment."
        ),
    )
    user: str | None = field(
        default=None,
        metadata=setting(
            kinds.text(_USER, "a user name or id"),
            "Run the program as this user (the daemon must be root to switch).",
        ),
    )
    stop_timeout: float = field(
        default=10.0,
        metadata=setting(
            kinds.duration(positive=True),
            "On stop: stdin is closed, then SIGTERM after this long, then SIGKILL after as "
            "long again.",
        ),
    )
    fatal_exit_codes: frozenset[int] = field(
        default=frozenset(),
        metadata=setting(
            exit_codes(),
            "Exit codes that fail the job at once (no retry); any other failure is retried.",
        ),
    )
    max_line_bytes: int = field(
        default=1 << 20,
        metadata=setting(
            kinds.integer(64),
            "A longer line from the program is a bad record (its start is shown).",
        ),
    )
    stderr_lines_per_second: int = field(
        default=20,
        metadata=setting(
            kinds.integer(1),
            "Lines of the program's stderr logged per second at most; the rest are counted.",
        ),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecSourceConfig(ProgramConfig):
    """``type = "exec"`` source: a program writing records on stdout, one JSON line each."""

    protocol: SourceProtocol = field(
        default="singer",
        metadata=setting(
            kinds.choice(*get_args(SourceProtocol)),
            '"singer": RECORD and STATE messages (a STATE is the offset); "plain": each '
            "line is a record and the program has no position.",
        ),
    )
    format: PlainFormat = field(
        default="jsonl",
        metadata=setting(
            kinds.choice(*get_args(PlainFormat)),
            'Plain protocol only: "jsonl" parses each line as JSON; "lines" keeps it as text.',
        ),
    )
    state_argument: str = field(
        default="--state",
        metadata=setting(
            kinds.text(_ARGUMENT, 'an option such as "--state" or "--state=", or ""'),
            "Given the committed state, the program gets this argument and a file holding it "
            '(`--state FILE`; "--state=" gives `--state=FILE`); "" for none.',
        ),
    )
    state_env: str = field(
        default="",
        metadata=setting(
            kinds.text(re.compile(f"|{_ENV_NAME.pattern}"), 'an environment variable name, or ""'),
            "Also name the state file in this environment variable (unset when there is no "
            'state); "" for none.',
        ),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecSinkConfig(ProgramConfig):
    """``type = "exec"`` sink: a program reading Singer messages on stdin."""

    stream: str = field(
        default="",
        metadata=setting(
            kinds.text(re.compile(r".{0,200}", re.DOTALL), "a stream name"),
            "The Singer stream the RECORD and SCHEMA messages name (default: the job's name).",
        ),
    )
    confirm: Confirm = field(
        default="echo",
        metadata=setting(
            kinds.choice(*get_args(Confirm)),
            '"echo": a flush waits for the program to echo the STATE it was sent; "exit": a '
            "flush sends the STATE, closes stdin and waits for exit 0 (one run per checkpoint, "
            "for Singer targets that write their state only at the end).",
        ),
    )
    flush_timeout: float = field(
        default=60.0,
        metadata=setting(
            kinds.duration(positive=True),
            "How long a flush waits for the program's confirmation; then the attempt fails "
            "(retried).",
        ),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecProcessorConfig(ProgramConfig):
    """``[processor] type = "exec"``: co-processes answering each record on stdin with
    result lines and an empty line."""

    workers: int = field(
        default=1,
        metadata=setting(
            kinds.integer(1),
            "Co-processes run side by side; a batch is split between them in order.",
        ),
    )
    answer_timeout: float = field(
        default=60.0,
        metadata=setting(
            kinds.duration(positive=True),
            "Longest a co-process may write nothing while records wait for its answers; "
            "then the attempt fails (retried).",
        ),
    )


def check_program(config: ProgramConfig, _: CheckpointPolicy) -> Iterable[tuple[str, str]]:
    """`supervisor check`: the program can be found and run; the directory exists."""
    program = config.command[0]
    if "/" in program:
        if not (Path(program).is_file() and os.access(program, os.X_OK)):
            yield "command", f"{program} is not an executable file"
    elif shutil.which(program) is None:
        yield "command", f"no program {program!r} on PATH"
    directory = config.working_directory
    if directory is not None and not directory.is_dir():
        yield "working_directory", f"{directory} is not a directory"
