"""A subscription's whole life, delivered in hundreds of orders: the projections end the same.

The life: the subscription is created `incomplete`; a second later its first invoice is
finalized and paid (`invoice.paid` and `invoice.payment_succeeded`, two events for one change)
and the subscription becomes `active`; it goes `past_due`; it is deleted.
Each ordering runs on its own object and event IDs (made from a run token), so orderings
never see each other and their final documents compare once the token is taken out.
Deliveries are in-process (`process_event`); `tests/test_projections_http.py` sends one
ordering over real HTTP.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from google.cloud import firestore

import handlers
from stripe_ledger.config import Settings
from stripe_ledger.ledger import EventLedger
from stripe_ledger.outcomes import Outcome
from stripe_ledger.pipeline import process_event
from stripe_ledger.registry import HandlerRegistry, import_handler_modules
from stripe_ledger.verify import parse_event
from tests.support import SECRET, make_event

pytestmark = pytest.mark.emulator

ORDERINGS = 200
SETTINGS = Settings(webhook_secrets=(SECRET,))


def life(token: str, start: int) -> list[dict[str, Any]]:
    """The subscription's life as Stripe would send it, in the order it happened (7 events)."""
    sub_id, invoice_id = f"sub_{token}", f"in_{token}"

    def sub(status: str, **fields: Any) -> dict[str, Any]:
        return {
            "id": sub_id,
            "object": "subscription",
            "status": status,
            "customer": f"cus_{token}",
            "cancel_at_period_end": False,
            "cancel_at": None,
            "canceled_at": None,
            "trial_end": None,
            "items": {
                "object": "list",
                "data": [
                    {
                        "id": f"si_{token}",
                        "object": "subscription_item",
                        "price": {"id": "price_monthly", "object": "price"},
                        "quantity": 1,
                        "current_period_start": start,
                        "current_period_end": start + 2_592_000,
                    }
                ],
            },
            **fields,
        }

    def bill(status: str) -> dict[str, Any]:
        return {
            "id": invoice_id,
            "object": "invoice",
            "status": status,
            "customer": f"cus_{token}",
            "parent": {
                "type": "subscription_details",
                "subscription_details": {"subscription": sub_id, "metadata": {}},
            },
            "amount_due": 1500,
            "amount_paid": 1500 if status == "paid" else 0,
            "currency": "eur",
            "hosted_invoice_url": f"https://invoice.stripe.com/i/{token}",
        }

    # (event ID suffix, type, object, seconds after start). The suffixes do not sort in
    # lifecycle order, as Stripe's IDs do not: within one second only the rank can tell the
    # `open` invoice from the `paid` one.
    steps = [
        ("e", "customer.subscription.created", sub("incomplete"), 0),
        ("z", "invoice.finalized", bill("open"), 1),
        ("b", "invoice.paid", bill("paid"), 1),
        ("c", "invoice.payment_succeeded", bill("paid"), 1),
        ("y", "customer.subscription.updated", sub("active"), 1),
        ("a", "customer.subscription.updated", sub("past_due"), 2),
        ("d", "customer.subscription.deleted", sub("canceled", canceled_at=start + 3), 3),
    ]
    return [
        make_event(
            event_type,
            obj,
            id=f"evt_{token}_{suffix}",
            created=start + offset,
            api_version="2025-03-31.basil",
        )
        for suffix, event_type, obj, offset in steps
    ]


def finals(db: firestore.Client, token: str) -> dict[str, Any]:
    """The run's subscription and invoice documents, with its token taken out."""
    documents = {
        "subscription": db.collection("subscriptions").document(f"sub_{token}").get().to_dict(),
        "invoice": db.collection("invoices").document(f"in_{token}").get().to_dict(),
    }
    result: dict[str, Any] = json.loads(json.dumps(documents).replace(token, "TOKEN"))
    return result


def orderings(seed: int, count: int) -> list[list[int]]:
    """In order, reversed, everything twice, then seeded shuffles with random duplicates."""
    steps = list(range(7))
    chosen = [steps, steps[::-1], steps + steps, steps[::-1] + steps]
    rng = random.Random(seed)
    while len(chosen) < count:
        order = steps + rng.sample(steps, rng.randint(0, 3))
        rng.shuffle(order)
        chosen.append(order)
    return chosen


@pytest.fixture(scope="module")
def registry() -> HandlerRegistry:
    import_handler_modules(handlers.BUILTIN_MODULES)
    return handlers.registry


class TestSubscriptionLife:
    def test_every_ordering_ends_in_the_same_documents(
        self, db: firestore.Client, registry: HandlerRegistry
    ) -> None:
        """200 orderings (in order, reversed, with duplicates, seeded shuffles): the final
        subscription and invoice documents are identical every time, deleted and paid."""
        start = int(time.time())
        ledger = EventLedger(db, SETTINGS)

        def run(order: list[int]) -> dict[str, Any]:
            token = uuid.uuid4().hex[:16]
            events = life(token, start)
            for step in order:
                received = parse_event(json.dumps(events[step]))
                delivery = process_event(received, db=db, ledger=ledger, registry=registry)
                assert delivery.outcome in (Outcome.COMPLETED, Outcome.DUPLICATE)
            return finals(db, token)

        with ThreadPoolExecutor(4) as pool:  # orderings touch disjoint documents
            results = list(pool.map(run, orderings(seed=20240601, count=ORDERINGS)))

        assert len(results) == ORDERINGS
        first = results[0]
        assert all(result == first for result in results)
        subscription, invoice = first["subscription"], first["invoice"]
        assert subscription["status"] == "canceled"
        assert subscription["deleted"] is True
        assert subscription["last_event_id"] == "evt_TOKEN_d"
        assert subscription["price_ids"] == ["price_monthly"]
        assert subscription["current_period_end"] == start + 2_592_000
        assert invoice["status"] == "paid"
        assert invoice["subscription"] == "sub_TOKEN"
        assert invoice["last_event_created"] == start + 1
        # finalized (open), paid and payment_succeeded in one second: `paid` ranks over
        # `open`; of the two `paid` events, the larger ID.
        assert invoice["last_event_id"] == "evt_TOKEN_c"
