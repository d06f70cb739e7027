"""The `supervisor` command. Exit codes are chosen here and nowhere else.

0 done; 1 refused or failed; 2 usage or configuration error; 3 (`status`) a
job shown is SUSPENDED or FAILED; 4 daemon not reachable.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

from supervisor import __version__
from supervisor.config.loader import load_config
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
    return parser


def _error(message: str) -> None:
    print(f"supervisor: {message}", file=sys.stderr)
