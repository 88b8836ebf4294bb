"""`stripe-ledger events list` and `events show`: read the ledger, write nothing."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from stripe_ledger.cli import render, wiring
from stripe_ledger.cli.arguments import (
    Commands,
    add_command,
    json_argument,
    positive,
    since_argument,
    since_time,
)
from stripe_ledger.operation_errors import OperationFailed

__all__ = ["add_commands"]


def add_commands(commands: Commands) -> None:
    """`events` and its two commands."""
    events = add_command(
        commands, "events", "list the ledger's events, or show one", "Read the ledger."
    )
    event_commands = events.add_subparsers(title="commands", metavar="COMMAND", required=True)
    listing = add_command(
        event_commands,
        "list",
        "list events, newest first",
        "List ledger records newest first: event ID, type, status, attempts, when received\n"
        "and the last error. Filters combine; pages continue with --after.",
        "examples:\n"
        "  stripe-ledger events list --status dead --since 1d\n"
        "  stripe-ledger events list --type invoice.paid --limit 200 --json\n"
        "  stripe-ledger events list --status failed --after evt_1Nx...  # the next page",
    )
    listing.add_argument("--status", choices=render.STATUSES, help="only records in this status")
    listing.add_argument("--type", dest="event_type", metavar="TYPE", help="only this type")
    since_argument(listing, "only records received since then")
    listing.add_argument(
        "--limit", type=positive, default=50, help="at most this many records (default 50)"
    )
    listing.add_argument(
        "--after", metavar="EVT_ID", help="start after this event (the previous page's next)"
    )
    json_argument(listing)
    listing.set_defaults(run=_events_list, command="events list")

    show = add_command(
        event_commands,
        "show",
        "show one event's record",
        "Show one ledger record: status, attempts, times, last error, notes, replays;\n"
        "with --payload also the event's body exactly as it was received.",
    )
    show.add_argument("event_id", metavar="EVT_ID")
    show.add_argument("--payload", action="store_true", help="also print the stored payload")
    json_argument(show)
    show.set_defaults(run=_events_show, command="events show")


def _events_list(args: argparse.Namespace) -> int:
    from stripe_ledger.operations import list_events

    since = since_time(args.since)
    service = wiring.service()
    page = list_events(
        service.ledger,
        status=args.status,
        event_type=args.event_type,
        since=since,
        limit=args.limit,
        after=args.after,
    )
    if args.json:
        render.print_json({"events": page.records, "next_after": page.next_after})
        return render.EXIT_OK
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column, justify in (
        ("event ID", "left"),
        ("type", "left"),
        ("status", "left"),
        ("attempts", "right"),
        ("received (UTC)", "left"),
        ("last error", "left"),
    ):
        table.add_column(column, justify=justify, no_wrap=column != "last error")  # type: ignore[arg-type]
    for record in page.records:
        status = str(record.get("status"))
        table.add_row(
            record["id"],
            str(record.get("type")),
            f"[{render.STATUS_STYLES.get(status, '')}]{status}[/]",
            str(record.get("attempts", "")),
            render.when(record.get("received_at")),
            render.shorten(record.get("last_error"), 80),
        )
    console = render.stdout_console()
    if page.records:
        console.print(table)
    else:
        console.print("no events match")
    if page.next_after:
        console.print(f"more: add --after {page.next_after} for the next page")
    return render.EXIT_OK


def _events_show(args: argparse.Namespace) -> int:
    from stripe_ledger.ledger import stored_payload
    from stripe_ledger.operations import get_record

    service = wiring.service()
    record = get_record(service.ledger, args.event_id)
    if record is None:
        raise OperationFailed(f"{args.event_id} is not in the ledger")
    shown: dict[str, Any] = {"id": args.event_id}
    shown.update({k: record[k] for k in sorted(record) if k not in ("payload", "payload_zlib")})
    payload = stored_payload(record) if args.payload else None
    if args.json:
        if args.payload:
            shown["payload"] = payload
        render.print_json(shown)
        return render.EXIT_OK
    from rich.table import Table

    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in shown.items():
        table.add_row(
            key, render.when(value) if isinstance(value, datetime) else render.plain(value)
        )
    console = render.stdout_console()
    console.print(table)
    if args.payload:
        console.print()
        console.out(payload if payload is not None else "(no payload stored)", highlight=False)
    return render.EXIT_OK
