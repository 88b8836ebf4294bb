"""`stripe-ledger`: see, replay and reconcile the ledger's events from one command.

This module parses arguments, wires the function's own settings, Firestore client and
handlers (`service.build_service`), runs an operation (`operations`, `replay`, `reconcile`,
`webhook_sender`) and renders its result: a table or `--json` on stdout; on stderr, one JSON
log line per event processed and per problem, and a progress bar when stderr is a terminal.
Exit status: 0 ok, 1 some events failed (or the operation could not be carried out),
2 usage or configuration error. Heavy modules are imported when a command runs, so `--help`
answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import socket
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

from stripe_ledger import logs
from stripe_ledger.errors import ConfigurationError
from stripe_ledger.operation_errors import OperationFailed, UsageError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress as RichProgress

    from stripe_ledger.operations import Progress, Stats
    from stripe_ledger.outbox import Outbox
    from stripe_ledger.service import WebhookService

__all__ = ["main"]

PROG = "stripe-ledger"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_STATUSES = ("processing", "completed", "ignored", "failed", "dead")
_TASK_STATUSES = ("pending", "running", "done", "dead")
_STATUS_STYLES = {
    "completed": "green",
    "ignored": "dim",
    "processing": "cyan",
    "failed": "yellow",
    "dead": "bold red",
}
_EMULATOR_PROBE_SECONDS = 1.0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status (the console script exits with it)."""
    global _command_name
    # gRPC's C core writes its own plain-text lines to stderr; every line there must be JSON,
    # and the tool reports Firestore errors itself. GRPC_VERBOSITY=ERROR brings them back.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    _configure_logging()
    args = _parser().parse_args(argv)
    _command_name = args.command
    try:
        return int(args.run(args))
    except (ConfigurationError, UsageError) as error:
        _log_error(str(error), logging.CRITICAL if isinstance(error, ConfigurationError) else None)
        return EXIT_USAGE
    except OperationFailed as error:
        _log_error(str(error))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _log_error("interrupted")
        return 130
    except Exception as error:  # noqa: BLE001 - one clear line, never a traceback
        message, status = _describe_unexpected(error)
        _log_error(message)
        return status


# --- arguments ---------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """Reports a bad argument as one JSON log line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        _log_error(f"{self.prog}: {message} (see {self.prog} --help)")
        raise SystemExit(EXIT_USAGE)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


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

    events = _command(
        commands, "events", "list the ledger's events, or show one", "Read the ledger."
    )
    event_commands = events.add_subparsers(title="commands", metavar="COMMAND", required=True)
    listing = _command(
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
    listing.add_argument("--status", choices=_STATUSES, help="only records in this status")
    listing.add_argument("--type", dest="event_type", metavar="TYPE", help="only this type")
    _since_argument(listing, "only records received since then")
    listing.add_argument(
        "--limit", type=_positive, default=50, help="at most this many records (default 50)"
    )
    listing.add_argument(
        "--after", metavar="EVT_ID", help="start after this event (the previous page's next)"
    )
    _json_argument(listing)
    listing.set_defaults(run=_events_list, command="events list")

    show = _command(
        event_commands,
        "show",
        "show one event's record",
        "Show one ledger record: status, attempts, times, last error, notes, replays;\n"
        "with --payload also the event's body exactly as it was received.",
    )
    show.add_argument("event_id", metavar="EVT_ID")
    show.add_argument("--payload", action="store_true", help="also print the stored payload")
    _json_argument(show)
    show.set_defaults(run=_events_show, command="events show")

    replay = _command(
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
    _since_argument(replay, "with --status: only events received since then")
    replay.add_argument(
        "--force", action="store_true", help="also replay completed and ignored events"
    )
    _dry_run_argument(replay, "list what would be replayed")
    _workers_argument(replay)
    _json_argument(replay)
    replay.set_defaults(run=_replay, command="replay")

    reconcile = _command(
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
    _since_argument(reconcile, "events created since then (default 3d, at most 30d)", "3d")
    reconcile.add_argument(
        "--all",
        dest="all_events",
        action="store_true",
        help="every event in the window, not only those whose delivery has not succeeded",
    )
    reconcile.add_argument(
        "--max-retries",
        type=_positive,
        default=5,
        help="retries of one Stripe API request on 429, 409, 5xx or a connection error "
        "(exponential backoff from 0.5 s, with jitter; default 5)",
    )
    _dry_run_argument(reconcile, "list and look up, process nothing")
    _workers_argument(reconcile)
    _json_argument(reconcile)
    reconcile.set_defaults(run=_reconcile, command="reconcile")

    send = _command(
        commands,
        "send",
        "sign a payload like Stripe and POST it to a function",
        "Sign FILE with a webhook signing secret the way Stripe does (Stripe-Signature over\n"
        "the exact body, timestamped now) and POST it to the function. Prints the HTTP\n"
        "status and body; exit status 0 on 2xx, 1 otherwise. Writes nothing itself.",
        "examples:\n"
        "  make run   # in another terminal: the function on http://localhost:8080/\n"
        "  stripe-ledger send \\\n"
        "      tests/fixtures/stripe-events/sync-engine/payment_intent_succeeded.json --new-id",
    )
    send.add_argument("file", type=Path, metavar="FILE", help="the event JSON to send")
    send.add_argument("--url", help="where to POST (default http://localhost:8080/)")
    send.add_argument(
        "--secret",
        help="signing secret (default: STRIPE_WEBHOOK_SECRET's first entry, else the "
        "whsec_local_development_only of `make run`)",
    )
    send.add_argument(
        "--new-id",
        action="store_true",
        help="give the event a fresh evt_ ID and created=now (so it is not a duplicate)",
    )
    send.set_defaults(run=_send, command="send")

    stats = _command(
        commands,
        "stats",
        "count events by status and type",
        "Count the records received in the window by status and by type, the failure rate\n"
        "(failed + dead over completed + failed + dead) and the oldest unfinished event\n"
        "(processing, failed or dead). One projected scan of the window.",
        "examples:\n  stripe-ledger stats --since 7d\n  stripe-ledger stats --json",
    )
    _since_argument(stats, "records received since then (default 1d)", "1d")
    _json_argument(stats)
    stats.set_defaults(run=_stats, command="stats")

    outbox = _command(
        commands,
        "outbox",
        "list and run the side-effect tasks handlers enqueued",
        "See and run the outbox: the tasks handlers enqueue with ctx.enqueue, created in\n"
        "their event's transaction and run after its commit by their @task executor.\n"
        "See docs/outbox.md.",
    )
    outbox_commands = outbox.add_subparsers(title="commands", metavar="COMMAND", required=True)
    tasks = _command(
        outbox_commands,
        "list",
        "list tasks, newest first",
        "List outbox tasks newest first: key, task, status, runs, next run (UTC), event and\n"
        "the last error. pending: waiting for its first run, or for its next one after a\n"
        "failure; running: claimed by a run (until its lease ends); done; dead: failed on\n"
        "its last allowed run (STRIPE_TASK_MAX_ATTEMPTS).",
        "examples:\n"
        "  stripe-ledger outbox list --status dead\n"
        "  stripe-ledger outbox list --status pending --task send_receipt --json",
    )
    tasks.add_argument("--status", choices=_TASK_STATUSES, help="only tasks in this status")
    tasks.add_argument("--task", metavar="NAME", help="only tasks of this name")
    tasks.add_argument(
        "--limit", type=_positive, default=50, help="at most this many tasks (default 50)"
    )
    _json_argument(tasks)
    tasks.set_defaults(run=_outbox_list, command="outbox list")

    run = _command(
        outbox_commands,
        "run",
        "run the tasks that are due",
        "Run the due tasks with the handlers' executors (STRIPE_HANDLER_MODULES): pending\n"
        "tasks whose next run has come (a failed run is retried after 30 s, 1 min, 2 min,\n"
        "... up to 1 h, with jitter), and running tasks whose lease ended (their process\n"
        "died). Each is claimed first, so a run racing the scheduled job or another\n"
        "operator still runs a task once; one whose executor fails is rescheduled, or dead\n"
        "after STRIPE_TASK_MAX_ATTEMPTS runs. Exit status 1 if any run failed.",
        "examples:\n"
        "  stripe-ledger outbox run --dry-run\n"
        "  stripe-ledger outbox run --limit 500 --json",
    )
    run.add_argument(
        "--limit", type=_positive, default=100, help="at most this many tasks (default 100)"
    )
    _dry_run_argument(run, "list the tasks that would run")
    _workers_argument(run)
    _json_argument(run)
    run.set_defaults(run=_outbox_run, command="outbox run")

    retry = _command(
        outbox_commands,
        "retry",
        "run dead tasks again, once their cause is fixed",
        "Make dead tasks pending again, due now and with their runs counted from 0 (the\n"
        "task records who did it in last_note, and how often in revived), then run them\n"
        "like `outbox run`. Name tasks by key, or select every dead one with --dead\n"
        "(and --task). Tasks that are not dead are left alone.",
        "examples:\n"
        "  stripe-ledger outbox retry --dead --task send_receipt --dry-run\n"
        "  stripe-ledger outbox retry receipt:in_1Nx...",
    )
    retry.add_argument("keys", nargs="*", metavar="KEY", help="idempotency keys of tasks")
    retry.add_argument("--dead", action="store_true", help="every dead task (see --task)")
    retry.add_argument("--task", metavar="NAME", help="with --dead: only tasks of this name")
    _dry_run_argument(retry, "list the tasks that would run again")
    _json_argument(retry)
    retry.set_defaults(run=_outbox_retry, command="outbox retry")
    return parser


def _command(
    commands: Any, name: str, summary: str, description: str, epilog: str | None = None
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def _since_argument(
    parser: argparse.ArgumentParser, help_: str, default: str | None = None
) -> None:
    parser.add_argument(
        "--since",
        default=default,
        metavar="WHEN",
        help=f"{help_}: 30m, 12h, 3d, 2w ago, or an ISO 8601 date/time (UTC unless given)",
    )


def _json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _dry_run_argument(parser: argparse.ArgumentParser, help_: str) -> None:
    parser.add_argument("--dry-run", action="store_true", help=f"{help_}; write nothing")


def _workers_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        type=_positive,
        default=4,
        help="events processed at once (different events never contend; default 4)",
    )


# --- commands ----------------------------------------------------------------------------


def _events_list(args: argparse.Namespace) -> int:
    from stripe_ledger.operations import list_events

    since = _since(args.since)
    service = _service()
    page = list_events(
        service.ledger,
        status=args.status,
        event_type=args.event_type,
        since=since,
        limit=args.limit,
        after=args.after,
    )
    if args.json:
        _print_json({"events": page.records, "next_after": page.next_after})
        return EXIT_OK
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
            f"[{_STATUS_STYLES.get(status, '')}]{status}[/]",
            str(record.get("attempts", "")),
            _when(record.get("received_at")),
            _shorten(record.get("last_error"), 80),
        )
    console = _stdout()
    if page.records:
        console.print(table)
    else:
        console.print("no events match")
    if page.next_after:
        console.print(f"more: add --after {page.next_after} for the next page")
    return EXIT_OK


def _events_show(args: argparse.Namespace) -> int:
    from stripe_ledger.ledger import stored_payload
    from stripe_ledger.operations import get_record

    service = _service()
    record = get_record(service.ledger, args.event_id)
    if record is None:
        raise OperationFailed(f"{args.event_id} is not in the ledger")
    shown: dict[str, Any] = {"id": args.event_id}
    shown.update({k: record[k] for k in sorted(record) if k not in ("payload", "payload_zlib")})
    payload = stored_payload(record) if args.payload else None
    if args.json:
        if args.payload:
            shown["payload"] = payload
        _print_json(shown)
        return EXIT_OK
    from rich.table import Table

    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in shown.items():
        table.add_row(key, _when(value) if isinstance(value, datetime) else _plain(value))
    console = _stdout()
    console.print(table)
    if args.payload:
        console.print()
        console.out(payload if payload is not None else "(no payload stored)", highlight=False)
    return EXIT_OK


def _replay(args: argparse.Namespace) -> int:
    from stripe_ledger.replay import FORCE_ONLY, ReplayResult, replay_events, select_event_ids

    if bool(args.event_ids) == bool(args.status):
        raise UsageError("replay: give event IDs or --status, not both (see --help)")
    if not args.status and (args.event_type or args.since):
        raise UsageError("replay: --type and --since select events with --status")
    if args.status in FORCE_ONLY and not args.force:
        raise UsageError(f"replay: --status {args.status} replays settled events: add --force")
    since = _since(args.since)
    service = _service()
    if args.status:
        event_ids = select_event_ids(
            service.ledger, status=args.status, event_type=args.event_type, since=since
        )
    else:
        event_ids = list(dict.fromkeys(args.event_ids))

    def report(result: ReplayResult) -> None:
        _log_event("replay", result.to_dict(), ok=result.ok)

    with _progress() as bars:
        advance = bars.bar("Replaying" if not args.dry_run else "Checking", len(event_ids))
        results = replay_events(
            event_ids,
            db=service.db,
            ledger=service.ledger,
            registry=service.registry,
            force=args.force,
            dry_run=args.dry_run,
            workers=args.workers,
            progress=advance,
            on_result=report,
        )
    return _finish(
        args,
        "replay",
        results,
        nothing="nothing to replay",
        summary={"force": args.force, "selected": len(event_ids)},
        items="events",
        columns=("event ID", "type", "was", "outcome", "attempt", "error"),
        row=lambda r: (r.event_id, r.event_type, r.status_before, r.outcome, r.attempt, r.error),
    )


def _reconcile(args: argparse.Namespace) -> int:
    from stripe_ledger.ledger import utc_now
    from stripe_ledger.operations import parse_since
    from stripe_ledger.reconcile import ReconcileResult, check_window, reconcile
    from stripe_ledger.stripe_api import ApiRetry, StripeApi, client_from_env

    since = parse_since(args.since)  # --since has a default
    check_window(since, utc_now())
    client = client_from_env(os.environ)
    service = _service()

    def retried(retry: ApiRetry) -> None:
        logs.log(
            logging.WARNING,
            f"Stripe API: {retry.request}: {retry.error}; retry {retry.retry} of "
            f"{retry.max_retries} in {retry.delay_seconds:.2f} s",
            command="reconcile",
            http_status=retry.http_status,
            retry=retry.retry,
            delay_s=retry.delay_seconds,
        )

    def report(result: ReconcileResult) -> None:
        if result.outcome is not None:
            _log_event("reconcile", result.to_dict(), ok=result.ok)
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

    api = StripeApi(client, max_retries=args.max_retries, on_retry=retried)
    with _progress() as bars:
        checking = "Processing" if not args.dry_run else "Checking"
        outcome = reconcile(
            api,
            db=service.db,
            ledger=service.ledger,
            registry=service.registry,
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
        f"{_counted(counts['ledger_status']) or 'nothing'}"
        + (f"; processed: {_counted(counts['outcomes'])}" if counts["outcomes"] else "")
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
        _print_json(
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
        _print_results(("event ID", "type", "ledger had", "outcome", "error"), rows, None, "")
        _stdout().print(summary, highlight=False)
    return EXIT_OK if outcome.ok else EXIT_FAILED


def _send(args: argparse.Namespace) -> int:
    import time

    from stripe_ledger.ledger import utc_now
    from stripe_ledger.webhook_sender import DEFAULT_URL, LOCAL_SECRET, post_signed, read_payload

    secret = args.secret or _first(os.environ.get("STRIPE_WEBHOOK_SECRET", "")) or LOCAL_SECRET
    url = args.url or DEFAULT_URL
    payload = read_payload(args.file, new_id=args.new_id, now=utc_now())
    event_id = _event_id(payload)
    started = time.perf_counter()
    sent = post_signed(payload, url=url, secret=secret)
    logs.log(
        logging.INFO if sent.ok else logging.ERROR,
        f"sent {event_id or args.file} to {url}: HTTP {sent.http_status}",
        command="send",
        event_id=event_id,
        http_status=sent.http_status,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
    )
    print(f"HTTP {sent.http_status}")
    print(sent.body)
    return EXIT_OK if sent.ok else EXIT_FAILED


def _stats(args: argparse.Namespace) -> int:
    from stripe_ledger.operations import stats

    since = _since(args.since)
    service = _service()
    with _progress() as bars:
        counted = stats(service.ledger, since=since, progress=bars.bar("Counting", None))
    document = _stats_document(counted)
    if args.json:
        _print_json(document)
        return EXIT_OK
    from rich.table import Table

    console = _stdout()
    window = f"since {_when(since)} UTC" if since else "all time"
    console.print(f"[bold]{counted.total}[/] events received {window}")
    if not counted.total:
        return EXIT_OK
    statuses = [s for s in _STATUSES if counted.by_status[s]]
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("type", no_wrap=True)
    for status in statuses:
        table.add_column(f"[{_STATUS_STYLES[status]}]{status}[/]", justify="right")
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
            f"received {_when(oldest['received_at'])} UTC)"
        )
    return EXIT_OK


def _outbox_list(args: argparse.Namespace) -> int:
    service = _service()
    page = _outbox(service).list_tasks(status=args.status, task=args.task, limit=args.limit)
    if args.json:
        _print_json({"tasks": page.records, "more": page.more})
        return EXIT_OK
    rows = [
        (
            record.get("key"),
            record.get("task"),
            record.get("status"),
            record.get("attempts"),
            record.get("next_attempt_at"),
            record.get("event_id"),
            _shorten(record.get("last_error"), 80) or None,
        )
        for record in page.records
    ]
    columns = ("key", "task", "status", "runs", "next run (UTC)", "event", "last error")
    _print_results(columns, rows, None, "")
    console = _stdout()
    if not rows:
        console.print("no tasks match")
    if page.more:
        console.print(f"more: raise --limit (now {args.limit}) to see them")
    return EXIT_OK


def _outbox_run(args: argparse.Namespace) -> int:
    service = _service()
    outbox = _outbox(service)
    with _progress() as bars:
        advance = bars.bar("Running tasks" if not args.dry_run else "Checking", None)
        results = outbox.run_due(
            limit=args.limit,
            dry_run=args.dry_run,
            workers=args.workers,
            on_result=lambda result: advance(1),
        )
    return _finish(
        args,
        "outbox run",
        results,
        nothing="no task is due",
        summary={"due": len(results)},
        items="tasks",
        columns=("key", "task", "was", "outcome", "run", "next run (UTC)", "error"),
        row=lambda r: (
            r.key,
            r.task,
            r.status_before,
            r.outcome,
            r.attempt,
            r.next_attempt_at,
            r.error,
        ),
    )


def _outbox_retry(args: argparse.Namespace) -> int:
    import getpass

    from stripe_ledger.outbox import TaskResult

    if bool(args.keys) == args.dead:
        raise UsageError("outbox retry: give task keys or --dead, not both (see --help)")
    if args.task and not args.dead:
        raise UsageError("outbox retry: --task selects tasks with --dead")
    service = _service()
    outbox = _outbox(service)
    if args.dead:
        keys = [str(record["key"]) for record in _all_tasks(outbox, status="dead", task=args.task)]
    else:
        keys = list(dict.fromkeys(args.keys))
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    note = (
        f"revived by stripe-ledger (user {user}) at {outbox.clock().isoformat(timespec='seconds')}"
    )
    results: list[TaskResult] = []
    with _progress() as bars:
        advance = bars.bar("Retrying" if not args.dry_run else "Checking", len(keys))
        for key in keys:
            result = outbox.revive(key, note=note, dry_run=args.dry_run)
            if result.outcome == "revived":
                result = outbox.run_key(key)
            results.append(result)
            advance(1)
    return _finish(
        args,
        "outbox retry",
        results,
        nothing="no dead task",
        summary={"selected": len(keys)},
        items="tasks",
        columns=("key", "task", "was", "outcome", "run", "error"),
        row=lambda r: (r.key, r.task, r.status_before, r.outcome, r.attempt, r.error),
    )


def _all_tasks(outbox: Outbox, *, status: str, task: str | None) -> list[dict[str, Any]]:
    from stripe_ledger.operations import scan

    query = outbox.list_query(status=status, task=task).select(["key", "created_at"])
    return [snapshot.to_dict() or {} for snapshot in scan(query)]


def _outbox(service: WebhookService) -> Outbox:
    from stripe_ledger.outbox import Outbox

    return Outbox(service.db, service.settings, service.registry, service.ledger.clock)


def _stats_document(counted: Stats) -> dict[str, Any]:
    return {
        "since": counted.since,
        "total": counted.total,
        "by_status": {s: counted.by_status[s] for s in _STATUSES},
        "by_type": {t: dict(c) for t, c in sorted(counted.by_type.items())},
        "failure_rate": counted.failure_rate,
        "oldest_unfinished": counted.oldest_unfinished,
    }


# --- wiring ------------------------------------------------------------------------------


def _service() -> WebhookService:
    """The function's wiring without its signing secret, after a quick emulator check."""
    from stripe_ledger.service import build_service

    host = os.environ.get("FIRESTORE_EMULATOR_HOST")
    if host is not None:
        if not host.strip():
            raise ConfigurationError(
                "FIRESTORE_EMULATOR_HOST is set but empty: set it to the emulator's host:port, "
                "or unset it to use Firestore in GOOGLE_CLOUD_PROJECT"
            )
        _probe_emulator(host)
    # The function imports STRIPE_HANDLER_MODULES from its source directory; the tool, run
    # from the project's directory, finds them there too.
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        return build_service(os.environ, require_secret=False)
    except OSError as error:  # google.cloud.client: no project could be determined
        raise ConfigurationError(
            f"no Google Cloud project: set GOOGLE_CLOUD_PROJECT ({error})"
        ) from error


def _probe_emulator(host: str) -> None:
    """Fail in a second, not after the client's retries, when no emulator listens on `host`."""
    name, _, port = host.rpartition(":")
    try:
        with socket.create_connection(
            (name.strip("[]") or "localhost", int(port)), timeout=_EMULATOR_PROBE_SECONDS
        ):
            return
    except (OSError, ValueError):
        pass
    raise ConfigurationError(
        f"no Firestore emulator answers at FIRESTORE_EMULATOR_HOST={host}: start one "
        "(`make run`, or `python -m stripe_ledger.emulator -- COMMAND`), or unset the "
        "variable to use Firestore in GOOGLE_CLOUD_PROJECT"
    )


def _describe_unexpected(error: Exception) -> tuple[str, int]:
    """One line, and the exit status, for an error no operation turned into its own."""
    import google.auth.exceptions
    from google.api_core import exceptions as gexc

    if isinstance(
        error,
        gexc.PermissionDenied | gexc.Unauthenticated | google.auth.exceptions.GoogleAuthError,
    ):
        return f"Firestore refused the credentials: {_first_line(error)}", EXIT_USAGE
    if isinstance(error, gexc.FailedPrecondition):  # e.g. a composite index is missing
        return f"Firestore: {_first_line(error)}", EXIT_USAGE
    if isinstance(error, gexc.GoogleAPICallError | gexc.RetryError):
        return f"Firestore unavailable: {_first_line(error)}", EXIT_FAILED
    return f"unexpected error: {type(error).__name__}: {_first_line(error)}", EXIT_FAILED


# --- output ------------------------------------------------------------------------------


class _LogStream(io.TextIOBase):
    """stderr for log lines; while a progress bar is drawn, lines are printed above it."""

    def __init__(self) -> None:
        super().__init__()
        self.console: Console | None = None

    def write(self, text: str) -> int:
        console = self.console
        if console is None:
            sys.stderr.write(text)
        elif text.strip():
            console.print(
                text.rstrip("\n"), soft_wrap=True, markup=False, highlight=False, emoji=False
            )
        return len(text)

    def flush(self) -> None:
        if self.console is None:
            sys.stderr.flush()


_log_stream = _LogStream()


def _configure_logging() -> None:
    """Every line on stderr is one JSON object: ours, other libraries' and warnings'."""
    stream: IO[str] = _log_stream  # type: ignore[assignment]
    logs.configure(stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logging.root.handlers = [handler]
    logging.root.setLevel(logging.WARNING)
    logging.captureWarnings(True)


_command_name: str | None = None


def _log_error(message: str, level: int | None = None) -> None:
    logs.log(level or logging.ERROR, message, command=_command_name)


def _log_event(command: str, result: Mapping[str, Any], *, ok: bool) -> None:
    """One line per event processed, with the fields the function's delivery line has."""
    outcome = result.get("outcome")
    event_id = result["event_id"]
    message = f"{command}: event {event_id} {outcome or 'left as ' + str(result['ledger_status'])}"
    if result.get("error"):
        message += f": {result['error']}"
    logs.log(
        logging.INFO if ok else logging.ERROR,
        message,
        command=command,
        event_id=event_id,
        event_type=result.get("event_type"),
        status=outcome or result.get("ledger_status"),
        status_before=result.get("status_before", result.get("ledger_status")) or "missing",
        attempt=result.get("attempt"),
        duration_ms=result.get("duration_ms"),
        error=result.get("error"),
    )


class _Bars:
    """The progress bars of one run, drawn together (none when stderr is no terminal)."""

    def __init__(self, progress: RichProgress | None) -> None:
        self._progress = progress

    def bar(self, description: str, total: int | None) -> Progress:
        """A new bar (a spinner while `total` is unknown); returns its advance function."""
        progress = self._progress
        if progress is None:
            return lambda done: None
        for task in progress.tasks:  # a new phase begins: earlier open-ended ones are done
            if task.total is None:
                progress.update(task.id, total=task.completed)
        task_id = progress.add_task(description, total=total)
        return lambda done: progress.advance(task_id, done)


@contextlib.contextmanager
def _progress() -> Iterator[_Bars]:
    """Progress bars on stderr while it is a terminal; elsewhere none (the logs tell it)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress

    console = Console(file=sys.stderr)
    if not console.is_terminal:
        yield _Bars(None)
        return
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    with RichProgress(
        *columns, console=console, redirect_stdout=False, redirect_stderr=False
    ) as progress:
        previous, _log_stream.console = _log_stream.console, console
        try:
            yield _Bars(progress)
        finally:
            _log_stream.console = previous


def _stdout() -> Console:
    from rich.console import Console

    console = Console(file=sys.stdout)
    if not console.is_terminal:
        console = Console(file=sys.stdout, width=200, no_color=True)
    return console


def _print_json(document: Any) -> None:
    json.dump(document, sys.stdout, indent=2, default=_json_value, ensure_ascii=False)
    sys.stdout.write("\n")


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return str(value)


def _finish(
    args: argparse.Namespace,
    command: str,
    results: Sequence[Any],
    *,
    nothing: str,
    summary: Mapping[str, Any],
    items: str,
    columns: Sequence[str],
    row: Callable[[Any], Sequence[Any]],
) -> int:
    """End a command that acted on events or tasks: one log line with the counts, then the
    results as JSON or as a table; exit 1 if any result is not ok."""
    counts = Counter(result.outcome for result in results)
    ok = all(result.ok for result in results)
    logs.log(
        logging.INFO if ok else logging.ERROR,
        f"{command} finished: {_counted(counts) or nothing}",
        command=command,
        counts=dict(counts),
        dry_run=args.dry_run,
    )
    if args.json:
        _print_json(
            {
                "dry_run": args.dry_run,
                **summary,
                "counts": dict(counts),
                items: [result.to_dict() for result in results],
            }
        )
    else:
        _print_results(columns, [row(result) for result in results], counts, command)
    return EXIT_OK if ok else EXIT_FAILED


def _print_results(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    counts: Counter[str] | None,
    command: str,
) -> None:
    from rich.table import Table

    console = _stdout()
    if rows:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in columns:
            table.add_column(column, no_wrap=column != "error", overflow="fold")
        for row in rows:
            table.add_row(*(_plain(cell) for cell in row))
        console.print(table)
    if counts is not None:
        console.print(f"{command}: {_counted(counts) or 'nothing to do'}", highlight=False)


def _counted(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {what}" for what, n in sorted(counts.items()) if n)


def _plain(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return _when(value)
    return str(value)


def _when(value: Any) -> str:
    if not isinstance(value, datetime):
        return _plain(value)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _shorten(value: Any, width: int) -> str:
    text = "" if value is None else " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _since(text: str | None) -> datetime | None:
    from stripe_ledger.operations import parse_since

    return parse_since(text) if text else None


def _first(value: str) -> str | None:
    entries = [part.strip() for part in value.split(",") if part.strip()]
    return entries[0] if entries else None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _event_id(payload: str) -> str | None:
    with contextlib.suppress(ValueError, AttributeError):
        value = json.loads(payload).get("id")
        return value if isinstance(value, str) else None
    return None
