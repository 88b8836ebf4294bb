"""Stripe events for the benchmark: real payloads with fresh IDs, signed as Stripe signs them."""

from __future__ import annotations

import copy
import json
import secrets
import string
import time
from functools import cache
from pathlib import Path
from typing import Any

import stripe

__all__ = [
    "COUNTER_EFFECTS",
    "COUNTER_TYPE",
    "SECRET",
    "counter_event",
    "payment_event",
    "signed",
    "stripe_id",
]

SECRET = "whsec_bench_0123456789abcdef0123456789abcdef"  # noqa: S105 - a test secret
"""The signing secret the benchmark configures and signs with (not a real one)."""

COUNTER_TYPE = "bench.counter"
"""The event type of `bench._counter_handler.count`."""

COUNTER_EFFECTS = "bench_effects"
"""Where `bench._counter_handler.count` counts: `bench_effects/{event_id}`."""

_FIXTURE = (
    Path(__file__).resolve().parent.parent
    / "tests/fixtures/stripe-events/stripe-ruby-mock/payment_intent.succeeded.json"
)
_ALPHABET = string.ascii_letters + string.digits


def stripe_id(prefix: str) -> str:
    """A random ID shaped like Stripe's (`evt_1` and 23 letters or digits)."""
    return f"{prefix}_1" + "".join(secrets.choice(_ALPHABET) for _ in range(23))


@cache
def _payment_template() -> dict[str, Any]:
    event: dict[str, Any] = json.loads(_FIXTURE.read_text())
    return event


def payment_event(age_seconds: int = 0) -> dict[str, Any]:
    """A real `payment_intent.succeeded` (6 kB) with fresh event and payment intent IDs.

    Its built-in handler projects it into one document, `payments/{payment_intent.id}`.
    """
    event = copy.deepcopy(_payment_template())
    event["id"] = stripe_id("evt")
    event["created"] = int(time.time()) - age_seconds
    event["data"]["object"]["id"] = stripe_id("pi")
    return event


def counter_event(age_seconds: int = 0) -> dict[str, Any]:
    """A `bench.counter` event: its handler counts how often it was applied."""
    return {
        "id": stripe_id("evt"),
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()) - age_seconds,
        "data": {"object": {"id": stripe_id("obj"), "object": "bench"}},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": COUNTER_TYPE,
    }


def signed(event: dict[str, Any] | bytes) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one delivery of `event`, signed now (as each Stripe retry is)."""
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), SECRET)
    return body, {"Content-Type": "application/json", "Stripe-Signature": str(header)}
