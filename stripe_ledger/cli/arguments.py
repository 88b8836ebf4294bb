"""The flags several command groups share, written once so that `--since`, `--json`,
`--dry-run` and `--workers` read and parse alike in every command that takes them.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import TypeAlias

__all__ = [
    "Commands",
    "add_command",
    "dry_run_argument",
    "json_argument",
    "positive",
    "since_argument",
    "since_time",
    "workers_argument",
]

# What `add_subparsers` returns: a group's commands are added to it.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_command(
    commands: Commands, name: str, summary: str, description: str, epilog: str | None = None
) -> argparse.ArgumentParser:
    """A command whose `--help` keeps its description's and examples' line breaks."""
    return commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def positive(text: str) -> int:
    """A whole number of at least 1 (an argparse `type`)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def since_argument(parser: argparse.ArgumentParser, help_: str, default: str | None = None) -> None:
    parser.add_argument(
        "--since",
        default=default,
        metavar="WHEN",
        help=f"{help_}: 30m, 12h, 3d, 2w ago, or an ISO 8601 date/time (UTC unless given)",
    )


def since_time(text: str | None) -> datetime | None:
    """`--since`'s value as a time, or None when it was not given."""
    from stripe_ledger.operations import parse_since

    return parse_since(text) if text else None


def json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def dry_run_argument(parser: argparse.ArgumentParser, help_: str) -> None:
    parser.add_argument("--dry-run", action="store_true", help=f"{help_}; write nothing")


def workers_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        type=positive,
        default=4,
        help="events processed at once (different events never contend; default 4)",
    )
