"""`stripe-ledger reconcile`: process, by the live path, the events Stripe's Events API has
and the ledger lacks or has not finished."""

from __future__ import annotations

import argparse
import logging

from stripe_ledger import logs
from stripe_ledger.cli import render, wiring
from stripe_ledger.cli.arguments import (
    Commands,
    add_command,
    dry_run_argument,
    json_argument,
    positive,
    since_argument,
    workers_argument,
)

__all__ = ["add_commands"]


def add_commands(commands: Commands) -> None:
    """`reconcile`."""
    reconcile = add_command(
        commands,
        "reconcile",
        "process events Stripe has but the ledger lacks",
        "List events from Stripe's Events API (those whose delivery has not succeeded, or\n"
        "every event with --all) created in the window, and process through the live path\n"
        "those the ledger lacks or has not finished (failed, or processing with an expired\n"
        "lease). Completed and ignored events are left untouched; dead ones are reported\n"
        "(replay them). Needs STRIPE_API_KEY (read access to Events); STRIPE_API_BASE\n"
        "sends the requests elsewhere (tests). Stripe keeps events for 30 days. 429 and 5xx\n"
        "answers are retried with exponential backoff, and each retry is logged.",
        "examples:\n"
        "  stripe-ledger reconcile --since 3d --dry-run\n"
        "  stripe-ledger reconcile --since 2025-06-01T00:00:00Z --all --json",
    )
    since_argument(reconcile, "events created since then (default 3d, at most 30d)", "3d")
    reconcile.add_argument(
        "--all",
        dest="all_events",
        action="store_true",
        help="every event in the window, not only those whose delivery has not succeeded",
    )
    reconcile.add_argument(
        "--max-retries",
        type=positive,
        default=5,
        help="retries of one Stripe API request on 429, 409, 5xx or a connection error "
        "(exponential backoff from 0.5 s, with jitter; default 5)",
    )
    dry_run_argument(reconcile, "list and look up, process nothing")
    workers_argument(reconcile)
    json_argument(reconcile)
    reconcile.set_defaults(run=_reconcile, command="reconcile")


def _reconcile(args: argparse.Namespace) -> int:
    from stripe_ledger.ledger import utc_now
    from stripe_ledger.operations import parse_since
    from stripe_ledger.reconcile import ReconcileResult, check_window, reconcile
    from stripe_ledger.stripe_api import StripeApi

    since = parse_since(args.since)  # --since has a default
    check_window(since, utc_now())
    client = wiring.stripe_client()
    service = wiring.service()

    def report(result: ReconcileResult) -> None:
        if result.outcome is not None:
            render.log_event("reconcile", result.to_dict(), ok=result.ok)
        elif result.ledger_status == "dead":
            logs.log(
                logging.WARNING,
                f"reconcile: event {result.event_id} is dead in the ledger and was left so; "
                f"replay it with `stripe-ledger replay {result.event_id}` once its fault is fixed",
                command="reconcile",
                event_id=result.event_id,
                event_type=result.event_type,
                status="dead",
            )

    api = StripeApi(client, max_retries=args.max_retries, on_retry=wiring.log_retry("reconcile"))
    with render.progress_bars() as bars:
        checking = "Processing" if not args.dry_run else "Checking"
        outcome = reconcile(
            api,
            service,
            since=since,
            all_events=args.all_events,
            dry_run=args.dry_run,
            workers=args.workers,
            listing=bars.bar("Listing Stripe events", None),
            processing=lambda total: bars.bar(checking, total),
            on_result=report,
        )
    counts = outcome.counts()
    summary = (
        f"{len(outcome.results)} events listed in {outcome.pages} pages with "
        f"{outcome.api_retries} API retries; in the ledger: "
        f"{render.counted(counts['ledger_status']) or 'nothing'}"
        + (f"; processed: {render.counted(counts['outcomes'])}" if counts["outcomes"] else "")
    )
    logs.log(
        logging.INFO if outcome.ok else logging.ERROR,
        f"reconcile finished: {summary}",
        command="reconcile",
        listed=len(outcome.results),
        pages=outcome.pages,
        api_retries=outcome.api_retries,
        dry_run=args.dry_run,
    )
    if args.json:
        render.print_json(
            {
                "since": outcome.since,
                "all": outcome.all_events,
                "dry_run": outcome.dry_run,
                "listed": len(outcome.results),
                "pages": outcome.pages,
                "api_retries": outcome.api_retries,
                "counts": counts,
                "events": [result.to_dict() for result in outcome.results],
            }
        )
    else:
        rows = [
            (r.event_id, r.event_type, r.ledger_status or "missing", r.outcome or "-", r.error)
            for r in outcome.results
        ]
        columns = ("event ID", "type", "ledger had", "outcome", "error")
        render.print_results(columns, rows, None, "")
        render.stdout_console().print(summary, highlight=False)
    return render.EXIT_OK if outcome.ok else render.EXIT_FAILED
