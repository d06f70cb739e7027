"""The `supervisor` command. Exit codes are chosen here and nowhere else.

0 done; 1 refused or failed (or the output's reader went away); 2 usage or
configuration error; 3 (`status`) a job shown is SUSPENDED or FAILED; 4 daemon not
reachable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from supervisor import __version__
from supervisor.config.loader import load_config, load_daemon_config
from supervisor.control.client import call, follow
from supervisor.control.protocol import Request
from supervisor.control.views import job_detail, status_table
from supervisor.errors import (
    CommandRefused,
    ConfigError,
    DaemonUnreachable,
    SnapshotError,
    SupervisorError,
)

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_JOB_FAILED = 3
EXIT_UNREACHABLE = 4

DEFAULT_CONFIG = Path("/etc/stream-supervisor/supervisor.toml")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
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

    config = load_config(config_path(args))
    configure_logging(config.daemon.log_format, config.daemon.log_level)
    anyio.run(Supervisor(config, exit_when_idle=args.exit_when_idle).run)
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    path = config_path(args)
    config = load_config(path)
    print(f"{path}: ok, {len(config.jobs)} job(s): {', '.join(j.name for j in config.jobs)}")
    return EXIT_OK


def _call(args: argparse.Namespace, request: Request, *, timeout: float = 10.0) -> Any:
    daemon = load_daemon_config(config_path(args))
    return call(daemon.control_socket, request, timeout=timeout)


def _status(args: argparse.Namespace) -> int:
    jobs: list[dict[str, Any]] = _call(args, Request("status", tuple(args.jobs)))
    if args.json:
        print(json.dumps(jobs, indent=2))
    elif len(args.jobs) == 1:
        print(job_detail(jobs[0]))
    else:
        print(status_table(jobs))
    failed = any(job["state"] in ("suspended", "failed") for job in jobs)
    return EXIT_JOB_FAILED if failed else EXIT_OK


def _job_command(args: argparse.Namespace) -> int:
    # pause/stop wait for the final checkpoint, which may take up to shutdown_timeout.
    results = _call(args, Request(args.command, tuple(args.jobs)), timeout=120.0)
    code = EXIT_OK
    for result in results:
        if result["ok"]:
            note = f" ({result['note']})" if result.get("note") else ""
            print(f"{result['job']}: {result['state'].upper()}{note}")
        else:
            _error(result["error"])
            code = EXIT_REFUSED
    return code


def _offset(args: argparse.Namespace) -> int:
    if args.set is None:
        result = _call(args, Request("offset", (args.job,)))
        print(json.dumps(result["offset"]))
        return EXIT_OK
    before = _call(args, Request("offset", (args.job,)))
    result = _call(args, Request("offset", (args.job,), _parse_offset(args.set), {"set": True}))
    print(f"{args.job}: offset {json.dumps(before['offset'])} -> {json.dumps(result['offset'])}")
    return EXIT_OK


def _parse_offset(text: str) -> Any:
    """JSON if it parses (numbers, objects), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _reload(args: argparse.Namespace) -> int:
    result = _call(args, Request("reload"), timeout=120.0)
    if not result["applied"]:
        _error(
            f"reload refused, nothing changed ({len(result['errors'])} error(s)):\n"
            + "\n".join(result["errors"])
        )
        return EXIT_USAGE
    for key in ("added", "removed", "changed"):
        print(f"{key}: {', '.join(result[key]) or '-'}")
    return EXIT_OK


def _events(args: argparse.Namespace) -> int:
    if args.follow:
        daemon = load_daemon_config(config_path(args))
        request = Request("events", tuple(args.jobs), options={"follow": True})
        for event in follow(daemon.control_socket, request):
            print(json.dumps(event), flush=True)
        return EXIT_OK
    for event in _call(args, Request("events", tuple(args.jobs))):
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
    run.add_argument("--exit-when-idle", action="store_true", help="exit 0 once no job is active")
    add("check", _check, "validate the daemon file and every job file")
    status = add("status", _status, "show jobs: state, offset, attempts, last error")
    status.add_argument("jobs", nargs="*", metavar="JOB")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    for verb, text in (
        ("pause", "pause jobs (graceful: final checkpoint)"),
        ("resume", "resume PAUSED or SUSPENDED jobs"),
        ("stop", "stop jobs after a final checkpoint"),
        ("start", "start STOPPED, FINISHED or FAILED jobs"),
        ("restart", "stop then start jobs"),
    ):
        add(verb, _job_command, text).add_argument("jobs", nargs="+", metavar="JOB")
    add("retry", _job_command, "end the backoff wait of a RETRYING job now").add_argument(
        "jobs", nargs=1, metavar="JOB"
    )
    offset = add("offset", _offset, "show or set the committed offset of a job")
    offset.add_argument("job", metavar="JOB")
    offset.add_argument("--set", metavar="VALUE", help="new offset (JSON, or plain text)")
    add("reload", _reload, "re-read all TOML: start added, stop removed, restart changed jobs")
    events = add("events", _events, "state changes as JSON lines")
    events.add_argument("jobs", nargs="*", metavar="JOB")
    events.add_argument(
        "--follow", action="store_true", help="keep printing changes as they happen"
    )
    return parser


def _error(message: str) -> None:
    print(f"supervisor: {message}", file=sys.stderr)
