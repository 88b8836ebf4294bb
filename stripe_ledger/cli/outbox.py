"""`stripe-ledger outbox list`, `outbox run` and `outbox retry`: see and run the side-effect
tasks handlers enqueued (docs/outbox.md)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from stripe_ledger.cli import render, wiring
from stripe_ledger.cli.arguments import (
    Commands,
    add_command,
    dry_run_argument,
    json_argument,
    positive,
    workers_argument,
)
from stripe_ledger.operation_errors import UsageError

if TYPE_CHECKING:
    from stripe_ledger.outbox import Outbox

__all__ = ["add_commands"]

_TASK_STATUSES = ("pending", "running", "done", "dead")


def add_commands(commands: Commands) -> None:
    """`outbox` and its three commands."""
    outbox = add_command(
        commands,
        "outbox",
        "list and run the side-effect tasks handlers enqueued",
        "See and run the outbox: the tasks handlers enqueue with ctx.enqueue, created in\n"
        "their event's transaction and run after its commit by their @task executor.\n"
        "See docs/outbox.md.",
    )
    outbox_commands = outbox.add_subparsers(title="commands", metavar="COMMAND", required=True)
    tasks = add_command(
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
        "--limit", type=positive, default=50, help="at most this many tasks (default 50)"
    )
    json_argument(tasks)
    tasks.set_defaults(run=_outbox_list, command="outbox list")

    run = add_command(
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
        "--limit", type=positive, default=100, help="at most this many tasks (default 100)"
    )
    dry_run_argument(run, "list the tasks that would run")
    workers_argument(run)
    json_argument(run)
    run.set_defaults(run=_outbox_run, command="outbox run")

    retry = add_command(
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
    dry_run_argument(retry, "list the tasks that would run again")
    json_argument(retry)
    retry.set_defaults(run=_outbox_retry, command="outbox retry")


def _outbox_list(args: argparse.Namespace) -> int:
    service = wiring.service()
    page = wiring.outbox(service).list_tasks(status=args.status, task=args.task, limit=args.limit)
    if args.json:
        render.print_json({"tasks": page.records, "more": page.more})
        return render.EXIT_OK
    rows = [
        (
            record.get("key"),
            record.get("task"),
            record.get("status"),
            record.get("attempts"),
            record.get("next_attempt_at"),
            record.get("event_id"),
            render.shorten(record.get("last_error"), 80) or None,
        )
        for record in page.records
    ]
    columns = ("key", "task", "status", "runs", "next run (UTC)", "event", "last error")
    render.print_results(columns, rows, None, "")
    console = render.stdout_console()
    if not rows:
        console.print("no tasks match")
    if page.more:
        console.print(f"more: raise --limit (now {args.limit}) to see them")
    return render.EXIT_OK


def _outbox_run(args: argparse.Namespace) -> int:
    service = wiring.service()
    outbox = wiring.outbox(service)
    with render.progress_bars() as bars:
        advance = bars.bar("Running tasks" if not args.dry_run else "Checking", None)
        results = outbox.run_due(
            limit=args.limit,
            dry_run=args.dry_run,
            workers=args.workers,
            on_result=lambda result: advance(1),
        )
    return render.finish(
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
    service = wiring.service()
    outbox = wiring.outbox(service)
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
    with render.progress_bars() as bars:
        advance = bars.bar("Retrying" if not args.dry_run else "Checking", len(keys))
        for key in keys:
            result = outbox.revive(key, note=note, dry_run=args.dry_run)
            if result.outcome == "revived":
                result = outbox.run_key(key)
            results.append(result)
            advance(1)
    return render.finish(
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
    """Every task selected, not one page: `--dead` means all of them."""
    from stripe_ledger.operations import scan

    query = outbox.list_query(status=status, task=task).select(["key", "created_at"])
    return [snapshot.to_dict() or {} for snapshot in scan(query)]
