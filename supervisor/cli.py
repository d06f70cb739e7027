"""The `supervisor` command. Exit codes are chosen here and nowhere else.

0 done; 1 refused or failed (or the output's reader went away; or, for
`run --exit-when-idle`, a job ended SUSPENDED or FAILED); 2 usage or configuration
error; 3 (`status`) a job shown is SUSPENDED or FAILED; 4 daemon not reachable (or
what answers is not the daemon, or it went away during `events --follow`).

Whatever the daemon says is shown through `views.printable`: a message may carry a
file name or a plugin's text, and the operator's terminal must not obey it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import structlog

from supervisor import __version__
from supervisor.config.loader import load_config, load_daemon_config, parse_duration
from supervisor.control.client import call, follow
from supervisor.control.protocol import (
    Events,
    JobCommand,
    JobVerb,
    Reload,
    Request,
    SetOffset,
    ShowOffset,
    Status,
)
from supervisor.control.views import job_detail, printable, status_table
from supervisor.errors import (
    CommandRefused,
    ConfigError,
    DaemonUnreachable,
    SnapshotError,
    SupervisorError,
)
from supervisor.offsets import check_offset

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_JOB_FAILED = 3
EXIT_UNREACHABLE = 4

DEFAULT_CONFIG = Path("/etc/stream-supervisor/supervisor.toml")
CONTROL_TIMEOUT = 10.0
"""Seconds to connect, and to wait for a reply before asking whether the daemon is up."""

log = structlog.get_logger("supervisor.cli")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(_joined_set_value(sys.argv[1:] if argv is None else argv))
    try:
        code: int = args.handler(args)
        sys.stdout.flush()  # here, not at exit, so a reader that went away is handled below
    except BrokenPipeError:
        # `supervisor status | head`: the reader has what it wanted. Quietly, as Python's
        # docs advise: stdout now goes nowhere, so the interpreter's last flush cannot fail.
        # (The control socket's errors never get here: the client makes them exit 4.)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_REFUSED
    except ConfigError as exc:
        _error(f"configuration invalid ({len(exc.issues)} error(s)):\n{exc}")
        return EXIT_USAGE
    except DaemonUnreachable as exc:
        _error(str(exc))
        return EXIT_UNREACHABLE
    except (CommandRefused, SnapshotError) as exc:
        _error(str(exc))
        return EXIT_REFUSED
    except SupervisorError as exc:
        _error(str(exc))
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 130
    return code


def config_path(args: argparse.Namespace) -> Path:
    """`-c`, then `$SUPERVISOR_CONFIG`, then the system-wide default."""
    if args.config:
        return Path(args.config)
    if env := os.environ.get("SUPERVISOR_CONFIG"):
        return Path(env)
    return DEFAULT_CONFIG


def _run(args: argparse.Namespace) -> int:
    from supervisor.daemon import Supervisor
    from supervisor.logs import configure_logging
    from supervisor.states import JobState

    config = load_config(config_path(args))
    configure_logging(config.daemon.log_format, config.daemon.log_level)
    supervisor = Supervisor(config, exit_when_idle=args.exit_when_idle)
    anyio.run(supervisor.run)
    if args.exit_when_idle:
        # A batch run whose job gave up did not do its work: its caller must see that.
        failed = sorted(
            name
            for name, owner in supervisor.owners.items()
            if owner.state in (JobState.SUSPENDED, JobState.FAILED)
        )
        if failed:
            log.error("daemon.exit_with_failed_jobs", jobs=failed)
            return EXIT_REFUSED
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    path = config_path(args)
    config = load_config(path, import_plugins=True)  # imports plugins; constructs or calls none
    print(f"{path}: ok, {len(config.jobs)} job(s): {', '.join(j.name for j in config.jobs)}")
    return EXIT_OK


def _call(args: argparse.Namespace, request: Request, *, patient: bool = False) -> Any:
    """The daemon's answer to `request`; `patient`: wait as long as the daemon is up."""
    daemon = load_daemon_config(config_path(args))

    def still_working() -> None:
        _error(
            f"still waiting for `{request.verb}`: the daemon is up and working on it "
            "(a final checkpoint can take a while); Ctrl-C stops waiting, not the command"
        )

    return call(
        daemon.control_socket,
        request,
        timeout=CONTROL_TIMEOUT,
        still_working=still_working if patient else None,
    )


def _status(args: argparse.Namespace) -> int:
    jobs: list[dict[str, Any]] = _call(args, Status(tuple(args.jobs)))
    if args.json:
        print(json.dumps(jobs, indent=2))
    elif len(args.jobs) == 1:
        print(job_detail(jobs[0]))
    else:
        print(status_table(jobs))
    failed = any(job["state"] in ("suspended", "failed") for job in jobs)
    return EXIT_JOB_FAILED if failed else EXIT_OK


def _top(args: argparse.Namespace) -> int:
    from supervisor.observe import top

    def fetch() -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = _call(args, Status(()))
        return jobs

    interval = parse_duration(args.interval)
    if sys.stdout.isatty() and args.iterations is None:
        top.run_curses(fetch, interval, args.sort)
    else:
        top.run_plain(fetch, sys.stdout, interval, args.iterations, args.sort)
    return EXIT_OK


def _job_command(args: argparse.Namespace) -> int:
    # pause/stop wait for the final checkpoint, however long a slow sink takes.
    results = _call(args, JobCommand(JobVerb(args.command), tuple(args.jobs)), patient=True)
    code = EXIT_OK
    for result in results:
        if result["ok"]:
            note = f" ({result['note']})" if result.get("note") else ""
            print(printable(f"{result['job']}: {result['state'].upper()}{note}"))
        else:
            _error(result["error"])
            code = EXIT_REFUSED
    return code


def _offset(args: argparse.Namespace) -> int:
    if args.set is None:
        if args.text:
            args.parser.error("--text says how to read the value of --set, which is missing")
        result = _call(args, ShowOffset(args.job))
        print(json.dumps(result["offset"]))
        return EXIT_OK
    try:
        value = args.set if args.text else parse_offset(args.set)
        check_offset(value)  # the daemon checks it again, with the size cap
    except ValueError as exc:
        args.parser.error(printable(f"--set {_shown(args.set)}: {exc}"))
    before = _call(args, ShowOffset(args.job))
    result = _call(args, SetOffset(args.job, value))
    print(f"{args.job}: offset {json.dumps(before['offset'])} -> {json.dumps(result['offset'])}")
    return EXIT_OK


_INT64 = range(-(2**63), 2**63)


def parse_offset(text: str) -> Any:
    """The JSON value `text`; ValueError saying what is wrong if it is not one an offset
    can be (a typo'd table must not become a string; NaN, 1e999 and a 5,000-digit
    number are not numbers a snapshot can hold)."""
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_int=_int64, parse_float=_finite)
    except _NotAnOffset:
        raise
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except ValueError as exc:
        raise ValueError(
            f"not JSON ({exc}); for a text offset add --text, or quote it: '\"text\"'"
        ) from None
    if value is None:
        raise ValueError("null is not an offset")
    return value


class _NotAnOffset(ValueError):
    """Valid JSON syntax, but not a value an offset can be."""


def _no_constant(name: str) -> Any:
    raise _NotAnOffset(f"{name} is not a JSON number; an offset is a finite number")


def _int64(text: str) -> int:
    digits = text.lstrip("-")
    if len(digits) > 19 or int(text) not in _INT64:
        shown = text if len(text) <= 24 else f"an integer of {len(digits)} digits"
        raise _NotAnOffset(f"{shown} is outside the 64-bit range an offset can hold")
    return int(text)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotAnOffset(f"{_shown(text)} is beyond the range of a 64-bit float")
    return value


def _shown(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def _joined_set_value(argv: Sequence[str]) -> list[str]:
    """`offset JOB --set -5` as `--set=-5`: argparse takes a value that starts with a
    dash (`-Infinity`, `-1e3`) for an option, unless it is joined to its flag."""
    argv = list(argv)
    if not argv or argv[0] != ShowOffset.verb:
        return argv
    for i, arg in enumerate(argv[:-1]):
        value = argv[i + 1]
        if arg == "--set" and value.startswith("-") and value not in _OFFSET_FLAGS:
            return [*argv[:i], f"--set={value}", *argv[i + 2 :]]
    return argv


_OFFSET_FLAGS = frozenset({"-c", "--config", "--text", "-h", "--help"})


def _reload(args: argparse.Namespace) -> int:
    result = _call(args, Reload(), patient=True)
    if not result["applied"]:
        _error(
            f"reload refused, nothing changed ({len(result['errors'])} error(s)):\n"
            + "\n".join(result["errors"])
        )
        return EXIT_USAGE
    for key in ("added", "removed", "changed"):
        print(printable(f"{key}: {', '.join(result[key]) or '-'}"))
    return EXIT_OK


def _events(args: argparse.Namespace) -> int:
    if args.follow:
        daemon = load_daemon_config(config_path(args))
        request = Events(tuple(args.jobs), follow=True)
        for event in follow(daemon.control_socket, request):
            print(json.dumps(event), flush=True)
        return EXIT_OK
    for event in _call(args, Events(tuple(args.jobs))):
        print(json.dumps(event))
    return EXIT_OK


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="supervisor", description="Keep streaming jobs running, checkpointed and honest."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: object, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "-c",
            "--config",
            metavar="FILE",
            help=f"daemon file (default: $SUPERVISOR_CONFIG, then {DEFAULT_CONFIG})",
        )
        sub.set_defaults(handler=handler)
        return sub

    run = add("run", _run, "run the daemon in the foreground")
    run.add_argument(
        "--exit-when-idle",
        action="store_true",
        help="exit once no job is active: 0, or 1 if a job ended SUSPENDED or FAILED",
    )
    add("check", _check, "validate the daemon file and every job file")
    status = add(Status.verb, _status, "show jobs: state, offset, attempts, last error")
    status.add_argument("jobs", nargs="*", metavar="JOB")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    top = add("top", _top, "a live view of every job: state, rate, lag, attempt, error")
    top.add_argument("--interval", default="1s", help="time between refreshes (default 1s)")
    top.add_argument(
        "--sort",
        default="name",
        choices=["name", "state", "rate", "lag", "attempt"],
        help="initial sort (keys n/s/r/l/a change it)",
    )
    top.add_argument(
        "--iterations",
        type=int,
        metavar="N",
        help="print the table N times, then exit (as when stdout is not a terminal)",
    )
    for verb in JobVerb:
        # retry: one job at a time, as an operator looks at one backoff at a time.
        jobs = 1 if verb is JobVerb.RETRY else "+"
        add(verb, _job_command, _JOB_HELP[verb]).add_argument("jobs", nargs=jobs, metavar="JOB")
    offset = add(ShowOffset.verb, _offset, "show or set the committed offset of a job")
    offset.add_argument("job", metavar="JOB")
    offset.add_argument("--set", metavar="VALUE", help="new offset, as JSON (e.g. 42)")
    offset.add_argument(
        "--text", action="store_true", help="take VALUE of --set as literal text, not JSON"
    )
    offset.set_defaults(parser=offset)
    add(Reload.verb, _reload, "re-read all TOML: start added, stop removed, restart changed jobs")
    events = add(Events.verb, _events, "state changes as JSON lines")
    events.add_argument("jobs", nargs="*", metavar="JOB")
    events.add_argument(
        "--follow", action="store_true", help="keep printing changes as they happen"
    )
    return parser


_JOB_HELP = {
    JobVerb.PAUSE: "pause jobs (graceful: final checkpoint)",
    JobVerb.RESUME: "resume PAUSED or SUSPENDED jobs",
    JobVerb.STOP: "stop jobs after a final checkpoint",
    JobVerb.START: "start STOPPED, FINISHED or FAILED jobs",
    JobVerb.RESTART: "stop then start jobs",
    JobVerb.RETRY: "end the backoff wait of a RETRYING job now",
}


def _error(message: str) -> None:
    print(f"supervisor: {printable(message, lines=True)}", file=sys.stderr)
