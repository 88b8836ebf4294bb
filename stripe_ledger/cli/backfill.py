"""`stripe-ledger backfill`: fill the projections from Stripe's list endpoints."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from types import FrameType

from stripe_ledger import logs
from stripe_ledger.cli import render, wiring
from stripe_ledger.cli.arguments import (
    Commands,
    add_command,
    dry_run_argument,
    json_argument,
    positive,
    since_argument,
    since_time,
)
from stripe_ledger.operation_errors import UsageError

__all__ = ["add_commands"]


def add_commands(commands: Commands) -> None:
    """`backfill`."""
    backfill = add_command(
        commands,
        "backfill",
        "fill the projections with the objects Stripe already has",
        "Page Stripe's list endpoints (STRIPE_API_KEY; a restricted key with read access to\n"
        "the listed resources is enough) and project every object with the code and the\n"
        "ordering rule of a live event, as a state read when its page was answered: a\n"
        "webhook newer than the read wins, an older one loses. Each page is one Firestore\n"
        "commit with the collection's progress, so --resume continues after the last page\n"
        "written. Ctrl-C stops after the current pages. Nothing goes to the event ledger.",
        "examples:\n"
        "  stripe-ledger backfill --dry-run\n"
        "  stripe-ledger backfill customers subscriptions --since 2024-01-01\n"
        "  stripe-ledger backfill --account acct_1Nx... --resume",
    )
    backfill.add_argument(
        "collections",
        nargs="*",
        metavar="COLLECTION",
        help="projections to fill (default: all, catalog first)",
    )
    since_argument(backfill, "only objects created since then")
    backfill.add_argument(
        "--account", metavar="ACCT_ID", help="a connected account's objects (Stripe-Account)"
    )
    backfill.add_argument(
        "--workers",
        type=positive,
        default=4,
        help="collections listed at once (default 4: about 20 requests/s at most, well "
        "inside Stripe's read limits of 100/s live and 25/s in test mode)",
    )
    backfill.add_argument(
        "--max-retries",
        type=positive,
        default=8,
        help="retries of one page on 429, 409, 5xx or a connection error (default 8)",
    )
    backfill.add_argument(
        "--resume", action="store_true", help="continue an interrupted run where it stopped"
    )
    dry_run_argument(backfill, "read and count, write nothing")
    json_argument(backfill)
    backfill.set_defaults(run=_backfill, command="backfill")


def _backfill(args: argparse.Namespace) -> int:
    from handlers._projection import PROJECTIONS
    from stripe_ledger.backfill import backfill, families_named

    if args.account is not None and not args.account.startswith("acct_"):
        raise UsageError(
            f"backfill: --account must be an account ID (acct_...), not {args.account!r}"
        )
    since = since_time(args.since)
    fetcher = wiring.stripe_fetcher("backfill", args.max_retries)
    service = wiring.service()
    projections = {projection.collection: projection for projection in PROJECTIONS}
    try:
        families = families_named(args.collections, projections)
    except ValueError as error:
        raise UsageError(f"backfill: {error}") from None
    stop = threading.Event()

    def interrupted(signum: int, frame: FrameType | None) -> None:
        logs.log(logging.WARNING, "backfill: stopping after the current pages", command="backfill")
        stop.set()

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        with render.progress_bars() as bars:
            advance = {
                family.collection: bars.bar(family.collection, None, alongside=True)
                for family in families
            }
            results = backfill(
                families,
                db=service.db,
                fetcher=fetcher,
                projections=projections,
                settings=service.ledger.settings,
                clock=service.ledger.clock,
                outbox=wiring.outbox(service),
                since=since,
                account=args.account,
                workers=args.workers,
                dry_run=args.dry_run,
                resume=args.resume,
                stop=stop,
                progress=lambda collection, n: advance[collection](n),
            )
    finally:
        signal.signal(signal.SIGINT, previous)
    for result in results:
        message = f"backfill: {result.collection} {result.outcome}: {result.objects} objects "
        message += f"in {result.pages} pages, {result.written} written"
        logs.log(
            logging.INFO if result.ok else logging.ERROR,
            message + (f": {result.error}" if result.error else ""),
            command="backfill",
            **result.to_dict(),
        )
    return render.finish(
        args,
        "backfill",
        results,
        nothing="nothing to fill",
        summary={"account": args.account, "since": since, "resume": args.resume},
        items="collections",
        columns=("collection", "outcome", "pages", "objects", "written", "error"),
        row=lambda r: (r.collection, r.outcome, r.pages, r.objects, r.written, r.error),
    )
