"""`stripe-ledger send`: sign a payload like Stripe and POST it to a function."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
from pathlib import Path

from stripe_ledger import logs
from stripe_ledger.cli import render
from stripe_ledger.cli.arguments import Commands, add_command

__all__ = ["add_commands"]


def add_commands(commands: Commands) -> None:
    """`send`."""
    send = add_command(
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
    return render.EXIT_OK if sent.ok else render.EXIT_FAILED


def _first(value: str) -> str | None:
    """The first entry of a comma-separated list (STRIPE_WEBHOOK_SECRET may hold several)."""
    entries = [part.strip() for part in value.split(",") if part.strip()]
    return entries[0] if entries else None


def _event_id(payload: str) -> str | None:
    with contextlib.suppress(ValueError, AttributeError):
        value = json.loads(payload).get("id")
        return value if isinstance(value, str) else None
    return None
