"""`stripe-ledger stats`: the window's records counted by status and type, the failure rate
and the oldest unfinished event."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from stripe_ledger.cli import render, wiring
from stripe_ledger.cli.arguments import (
    Commands,
    add_command,
    json_argument,
    since_argument,
    since_time,
)

if TYPE_CHECKING:
    from stripe_ledger.operations import Stats

__all__ = ["add_commands"]


def add_commands(commands: Commands) -> None:
    """`stats`."""
    stats = add_command(
        commands,
        "stats",
        "count events by status and type",
        "Count the records received in the window by status and by type, the failure rate\n"
        "(failed + dead over completed + failed + dead) and the oldest unfinished event\n"
        "(processing, failed or dead). A window of over 5,000 records is counted with\n"
        "aggregation queries instead of being read.",
        "examples:\n  stripe-ledger stats --since 7d\n  stripe-ledger stats --json",
    )
    since_argument(stats, "records received since then (default 1d)", "1d")
    json_argument(stats)
    stats.set_defaults(run=_stats, command="stats")


def _stats(args: argparse.Namespace) -> int:
    from stripe_ledger.operations import stats

    since = since_time(args.since)
    service = wiring.service()
    with render.progress_bars() as bars:
        counted = stats(service.ledger, since=since, progress=bars.bar("Counting", None))
    document = _stats_document(counted)
    if args.json:
        render.print_json(document)
        return render.EXIT_OK
    from rich.table import Table

    console = render.stdout_console()
    window = f"since {render.when(since)} UTC" if since else "all time"
    console.print(f"[bold]{counted.total}[/] events received {window}")
    if not counted.total:
        return render.EXIT_OK
    statuses = [s for s in render.STATUSES if counted.by_status[s]]
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("type", no_wrap=True)
    for status in statuses:
        table.add_column(f"[{render.STATUS_STYLES[status]}]{status}[/]", justify="right")
    table.add_column("total", justify="right")
    for event_type, by_status in sorted(counted.by_type.items()):
        cells = [str(by_status[s] or "") for s in statuses]
        table.add_row(event_type, *cells, str(sum(by_status.values())))
    table.add_row(
        "[bold]all[/]",
        *[f"[bold]{counted.by_status[s]}[/]" for s in statuses],
        f"[bold]{counted.total}[/]",
    )
    console.print(table)
    rate = counted.failure_rate
    console.print(f"failure rate: {'-' if rate is None else f'{rate:.2%}'}")
    oldest = counted.oldest_unfinished
    if oldest:
        console.print(
            f"oldest unfinished: {oldest['id']} ({oldest['type']}, {oldest['status']}, "
            f"received {render.when(oldest['received_at'])} UTC)"
        )
    return render.EXIT_OK


def _stats_document(counted: Stats) -> dict[str, Any]:
    return {
        "since": counted.since,
        "total": counted.total,
        "by_status": {s: counted.by_status[s] for s in render.STATUSES},
        "by_type": {t: dict(c) for t, c in sorted(counted.by_type.items())},
        "failure_rate": counted.failure_rate,
        "oldest_unfinished": counted.oldest_unfinished,
    }
