"""`stripe-ledger`: see, replay, reconcile and backfill the ledger's events from one command.

`main` assembles the parser from the command groups, one module each (`events`, `replay`,
`reconcile`, `backfill`, `send`, `stats`, `outbox`, `access`) holding its flags next to its
body, runs the command chosen and maps how it ended to the exit status: 0 ok, 1 some events
failed (or the operation could not be carried out), 2 usage or configuration error. The
groups share `arguments` (common flags), `wiring` (the function's own settings, Firestore client and
handlers) and `render` (tables or `--json` on stdout; on stderr one JSON log line per event
processed and per problem, and a progress bar when stderr is a terminal); no group imports
another. Heavy modules are imported when a command runs, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from typing import NoReturn

from stripe_ledger.cli import (
    access,
    backfill,
    events,
    outbox,
    reconcile,
    render,
    replay,
    send,
    stats,
    wiring,
)
from stripe_ledger.cli.render import EXIT_FAILED, EXIT_USAGE
from stripe_ledger.errors import ConfigurationError
from stripe_ledger.operation_errors import OperationFailed, UsageError

__all__ = ["main"]

PROG = "stripe-ledger"
_GROUPS = (
    events,
    replay,
    reconcile,
    backfill,
    send,
    stats,
    outbox,
    access,
)  # in the order --help lists them


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status (the console script exits with it)."""
    # gRPC's C core writes its own plain-text lines to stderr; every line there must be JSON,
    # and the tool reports Firestore errors itself. GRPC_VERBOSITY=ERROR brings them back.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    render.configure_logging()
    args = _parser().parse_args(argv)
    command: str = args.command
    try:
        return int(args.run(args))
    except (ConfigurationError, UsageError) as error:
        level = logging.CRITICAL if isinstance(error, ConfigurationError) else None
        render.log_error(str(error), command, level)
        return EXIT_USAGE
    except OperationFailed as error:
        render.log_error(str(error), command)
        return EXIT_FAILED
    except KeyboardInterrupt:
        render.log_error("interrupted", command)
        return 130
    except Exception as error:  # noqa: BLE001 - one clear line, never a traceback
        message, status = wiring.describe_unexpected(error)
        render.log_error(message, command)
        return status


class _Parser(argparse.ArgumentParser):
    """Reports a bad argument as one JSON log line and exit status 2 (its subcommands' parsers
    are of this class too: `add_subparsers` makes them so)."""

    def error(self, message: str) -> NoReturn:
        render.log_error(f"{self.prog}: {message} (see {self.prog} --help)", None)
        raise SystemExit(EXIT_USAGE)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "See, replay and reconcile the Stripe events recorded in the ledger, against the\n"
            "same Firestore as the function (FIRESTORE_EMULATOR_HOST for the emulator, else\n"
            "GOOGLE_CLOUD_PROJECT with Application Default Credentials), with the same\n"
            "handlers (STRIPE_HANDLER_MODULES)."
        ),
        epilog=(
            "Output: tables (or --json) on stdout; JSON log lines and progress on stderr.\n"
            "Exit status: 0 ok, 1 some events failed, 2 usage or configuration error.\n"
            "Run `stripe-ledger COMMAND --help` for each command. See docs/operations.md."
        ),
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for group in _GROUPS:
        group.add_commands(commands)
    return parser
