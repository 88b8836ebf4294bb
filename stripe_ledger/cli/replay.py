"""`stripe-ledger replay`: run stored events through their handlers again, by the live path."""

from __future__ import annotations

import argparse

from stripe_ledger.cli import render, wiring
from stripe_ledger.cli.arguments import (
    Commands,
    add_command,
    dry_run_argument,
    json_argument,
    since_argument,
    since_time,
    workers_argument,
)
from stripe_ledger.operation_errors import UsageError

__all__ = ["add_commands"]


def add_commands(commands: Commands) -> None:
    """`replay`."""
    replay = add_command(
        commands,
        "replay",
        "run stored events through their handlers again",
        "Run stored events through exactly the path of a live delivery: claim the record,\n"
        "run the handlers in one transaction with the record's completion. A replay racing\n"
        "a live redelivery of the same event still applies it once. Without --force, only\n"
        "failed and dead events are replayed; --force also re-runs completed (and ignored)\n"
        "events' handlers in a new transaction, counted in the record's `replays`.\n"
        "Name events by ID, or select them with --status (and --type, --since).",
        "examples:\n"
        "  stripe-ledger replay evt_1Nx... evt_1Ny...\n"
        "  stripe-ledger replay --status dead --type invoice.paid --since 1d --dry-run\n"
        "  stripe-ledger replay --force evt_1Nx...",
    )
    replay.add_argument("event_ids", nargs="*", metavar="EVT_ID", help="events to replay")
    replay.add_argument(
        "--status",
        choices=("failed", "dead", "completed", "ignored"),
        help="replay every event in this status (completed and ignored need --force)",
    )
    replay.add_argument("--type", dest="event_type", metavar="TYPE", help="with --status")
    since_argument(replay, "with --status: only events received since then")
    replay.add_argument(
        "--force", action="store_true", help="also replay completed and ignored events"
    )
    dry_run_argument(replay, "list what would be replayed")
    workers_argument(replay)
    json_argument(replay)
    replay.set_defaults(run=_replay, command="replay")


def _replay(args: argparse.Namespace) -> int:
    from stripe_ledger.replay import FORCE_ONLY, ReplayResult, replay_events, select_event_ids

    if bool(args.event_ids) == bool(args.status):
        raise UsageError("replay: give event IDs or --status, not both (see --help)")
    if not args.status and (args.event_type or args.since):
        raise UsageError("replay: --type and --since select events with --status")
    if args.status in FORCE_ONLY and not args.force:
        raise UsageError(f"replay: --status {args.status} replays settled events: add --force")
    since = since_time(args.since)
    service = wiring.service()
    if args.status:
        event_ids = select_event_ids(
            service.ledger, status=args.status, event_type=args.event_type, since=since
        )
    else:
        event_ids = list(dict.fromkeys(args.event_ids))

    def report(result: ReplayResult) -> None:
        render.log_event("replay", result.to_dict(), ok=result.ok)

    with render.progress_bars() as bars:
        advance = bars.bar("Replaying" if not args.dry_run else "Checking", len(event_ids))
        results = replay_events(
            event_ids,
            service,
            force=args.force,
            dry_run=args.dry_run,
            workers=args.workers,
            progress=advance,
            on_result=report,
        )
    return render.finish(
        args,
        "replay",
        results,
        nothing="nothing to replay",
        summary={"force": args.force, "selected": len(event_ids)},
        items="events",
        columns=("event ID", "type", "was", "outcome", "attempt", "error"),
        row=lambda r: (r.event_id, r.event_type, r.status_before, r.outcome, r.attempt, r.error),
    )
