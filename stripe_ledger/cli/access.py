"""`stripe-ledger access show`: what an app reads of one user's (or customer's) access."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from stripe_ledger.cli import render, wiring
from stripe_ledger.cli.arguments import Commands, add_command, json_argument
from stripe_ledger.operation_errors import OperationFailed, UsageError

__all__ = ["add_commands"]


def add_commands(commands: Commands) -> None:
    """`access` and its command."""
    access = add_command(
        commands,
        "access",
        "show what a user may use now",
        "Read the access documents the function keeps (docs/access.md).",
    )
    access_commands = access.add_subparsers(title="commands", metavar="COMMAND", required=True)
    show = add_command(
        access_commands,
        "show",
        "show one user's (or customer's) access",
        "Show user_access/USER_ID (or, with --customer, customer_access/CUS_ID): whether\n"
        "access is granted, the features, the customers and every subscription's entry.",
        "examples:\n"
        "  stripe-ledger access show user_42\n"
        "  stripe-ledger access show --customer cus_Nx... --json",
    )
    show.add_argument("user_id", metavar="USER_ID", nargs="?")
    show.add_argument("--customer", metavar="CUS_ID", help="a customer's access instead")
    json_argument(show)
    show.set_defaults(run=_access_show, command="access show")


def _access_show(args: argparse.Namespace) -> int:
    from handlers.access import stored_access

    if (args.user_id is None) == (args.customer is None):
        raise UsageError("access show: give a USER_ID or --customer CUS_ID (one of them)")
    service = wiring.service()
    try:
        document = stored_access(service.db, user=args.user_id, customer=args.customer)
    except ValueError as error:
        raise UsageError(f"access show: {error}") from None
    named = f"customer {args.customer}" if args.customer else f"user {args.user_id}"
    if document is None:
        raise OperationFailed(f"no access is recorded for {named}")
    if args.json:
        render.print_json(document)
        return render.EXIT_OK
    console = render.stdout_console()
    console.print(f"{named}: {'active' if document.get('active') else 'no access'}")
    for label, key in (
        ("app user", "app_user_id"),
        ("customers", "customers"),
        ("features", "features"),
        ("active prices", "active_price_ids"),
        ("active products", "active_product_ids"),
        ("updated (UTC)", "updated_at"),
    ):
        if key in document:
            console.print(f"  {label}: {_cell(document[key])}", highlight=False)
    rows = [
        (
            subscription,
            entry.get("customer", args.customer),
            entry.get("status"),
            _cell(entry.get("price_ids")),
            _epoch(entry.get("current_period_end")),
            entry.get("cancel_at_period_end"),
        )
        for subscription, entry in sorted((document.get("subscriptions") or {}).items())
    ]
    render.print_results(
        ("subscription", "customer", "status", "prices", "period end", "cancels at end"),
        rows,
        None,
        "access show",
    )
    return render.EXIT_OK


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) or "-"
    return render.plain(value)


def _epoch(value: Any) -> str:
    if isinstance(value, int):
        return render.when(datetime.fromtimestamp(value, UTC))
    return render.plain(value)
