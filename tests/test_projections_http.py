"""The billing projections end to end: real HTTP to the function served by
functions-framework, against the emulator."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from google.cloud import firestore

import handlers
from stripe_ledger.config import Settings
from stripe_ledger.ledger import EventLedger
from stripe_ledger.pipeline import process_event
from stripe_ledger.registry import import_handler_modules
from stripe_ledger.verify import parse_event
from tests.support import (
    SECRET,
    FunctionServer,
    fixture_files,
    ledger_record,
    load_fixture,
    make_event,
)
from tests.test_projections_sequences import finals, life

pytestmark = [pytest.mark.emulator, pytest.mark.e2e]

# The table, written out independently of the handlers: event type, or family
# prefix ending in ".", to collection.
COLLECTION_OF = {
    "customer.created": "customers",
    "customer.updated": "customers",
    "customer.deleted": "customers",
    **{
        f"customer.subscription.{kind}": "subscriptions"
        for kind in (
            "created",
            "updated",
            "deleted",
            "paused",
            "resumed",
            "pending_update_applied",
            "pending_update_expired",
            "trial_will_end",
        )
    },
    **{
        f"invoice.{kind}": "invoices"
        for kind in (
            "created",
            "updated",
            "finalized",
            "paid",
            "payment_succeeded",
            "payment_failed",
            "payment_action_required",
            "marked_uncollectible",
            "voided",
            "deleted",
            "overpaid",
            "finalization_failed",
            "payment_attempt_required",
        )
    },
    "payment_intent.": "payments",
    "invoice_payment.": "invoice_payments",
    **{
        f"charge.{kind}": "charges"
        for kind in ("succeeded", "failed", "pending", "captured", "refunded", "updated", "expired")
    },
    "refund.created": "refunds",
    "refund.updated": "refunds",
    "refund.failed": "refunds",
    "charge.refund.updated": "refunds",
    "charge.dispute.": "disputes",
    **{
        f"checkout.session.{kind}": "checkout_sessions"
        for kind in ("completed", "async_payment_succeeded", "async_payment_failed", "expired")
    },
    "product.": "products",
    "price.": "prices",
}

FIELDS = {
    "customers": ("email", "name", "phone", "metadata", "deleted"),
    "subscriptions": (
        "status",
        "customer",
        "customer_account",
        "price_ids",
        "quantity",
        "current_period_start",
        "current_period_end",
        "cancel_at_period_end",
        "cancel_at",
        "canceled_at",
        "trial_end",
        "deleted",
    ),
    "invoices": (
        "status",
        "customer",
        "customer_account",
        "subscription",
        "amount_due",
        "amount_paid",
        "currency",
        "hosted_invoice_url",
        "deleted",
    ),
    "invoice_payments": (
        "invoice",
        "payment_intent",
        "charge",
        "amount_paid",
        "amount_requested",
        "currency",
        "status",
        "is_default",
    ),
    "payments": ("status", "amount", "amount_received", "currency", "customer", "customer_account"),
    "charges": ("status", "amount", "amount_refunded", "refunded", "payment_intent", "customer"),
    "refunds": ("status", "amount", "charge", "payment_intent", "customer_account"),
    "disputes": ("status", "amount", "charge", "reason"),
    "checkout_sessions": (
        "status",
        "payment_status",
        "mode",
        "customer",
        "customer_account",
        "subscription",
        "payment_intent",
    ),
    "products": ("name", "active", "deleted"),
    "prices": (
        "product",
        "unit_amount",
        "currency",
        "active",
        "type",
        "recurring_interval",
        "deleted",
    ),
}
COMMON = ("livemode", "account", "last_event_id", "last_event_created", "object")


def collection_of(event_type: str) -> str | None:
    for key, collection in COLLECTION_OF.items():
        if event_type == key or (key.endswith(".") and event_type.startswith(key)):
            return collection
    return None


def expected(field: str, event: Mapping[str, Any]) -> Any:
    """What the issue says `field` holds, computed straight from the event."""
    obj = event["data"]["object"]
    items = [item for item in (obj.get("items") or {}).get("data", [])]
    if field == "deleted":
        return event["type"].endswith(".deleted") or obj.get("deleted") is True
    if field == "price_ids":
        return [(item.get("price") or item.get("plan"))["id"] for item in items]
    if field == "quantity" and obj.get("quantity") is None:
        return items[0].get("quantity") if len(items) == 1 else None
    if obj.get("object") == "invoice_payment" and field in ("payment_intent", "charge"):
        return (obj.get("payment") or {}).get(field)
    if field == "recurring_interval":
        return (obj.get("recurring") or {}).get("interval")
    return obj.get(field)


@pytest.fixture
def server(project: str) -> Iterator[FunctionServer]:
    function = FunctionServer(
        {"GOOGLE_CLOUD_PROJECT": project, "STRIPE_WEBHOOK_SECRET": SECRET}
    ).start()
    yield function
    function.stop()


class TestFixtures:
    def test_every_captured_event_is_projected_or_ignored(
        self, server: FunctionServer, db: firestore.Client
    ) -> None:
        """Every real payload (fresh event and object IDs, so each writes its own document):
        a type of the table with an object ID lands in its collection with the table's
        fields and the common ones; anything else is recorded `ignored` and writes nothing."""
        counts: Counter[str] = Counter()
        for path in fixture_files():
            event = load_fixture(path)
            obj = event["data"]["object"]
            if isinstance(obj.get("id"), str):
                obj["id"] = f"{obj['id']}_{uuid.uuid4().hex[:8]}"
            response = server.post(event)
            assert response.ok, (path.name, response.text)
            record = ledger_record(db, event["id"])
            assert record is not None
            collection = collection_of(event["type"])
            if collection is None or not isinstance(obj.get("id"), str):
                assert record["status"] == "ignored", path.name
                continue
            assert record["status"] == "completed", path.name
            counts[collection] += 1
            document = db.collection(collection).document(obj["id"]).get().to_dict()
            assert document is not None, path.name
            assert set(document) == set(FIELDS[collection]) | set(COMMON), path.name
            for field in FIELDS[collection]:
                assert document[field] == expected(field, event), (path.name, field)
            assert document["object"] == obj, path.name
            assert document["last_event_id"] == event["id"]
            assert document["last_event_created"] == event["created"]
            assert document["livemode"] == event["livemode"]
            assert document["account"] == event.get("account")

        # Besides the ledger, the access documents are no projection (tests/test_access.py).
        collections = {c.id for c in db.collections()} - {
            "stripe_events",
            "customer_access",
            "user_access",
        }
        assert collections == set(FIELDS)  # the fixtures cover every collection
        for collection, count in counts.items():
            assert len(list(db.collection(collection).stream())) == count


class TestSequenceOverHttp:
    def test_shuffled_concurrent_deliveries_end_like_in_process_ones(
        self, server: FunctionServer, db: firestore.Client
    ) -> None:
        """The subscription's life sent over HTTP in reverse, every event twice, from four
        threads at once (409s and 503s retried like Stripe): the same final documents as
        the life delivered in order in-process."""
        import_handler_modules(handlers.BUILTIN_MODULES)
        start = int(time.time())
        reference, token = uuid.uuid4().hex[:16], uuid.uuid4().hex[:16]
        ledger = EventLedger(db, Settings(webhook_secrets=(SECRET,)))
        for event in life(reference, start):
            received = parse_event(json.dumps(event))
            process_event(received, db=db, ledger=ledger, registry=handlers.registry)

        events = life(token, start)[::-1] * 2
        with ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(server.deliver_until_settled, events))
        assert all(response.ok for response in responses)
        assert finals(db, token) == finals(db, reference)
        assert finals(db, token)["subscription"]["status"] == "canceled"


def renewal(invoice_id: str, at: int) -> list[dict[str, Any]]:
    """Eight distinct events of one invoice's renewal, the last (newest) one last."""

    def invoice(status: str, **extra: Any) -> dict[str, Any]:
        return {"id": invoice_id, "object": "invoice", "status": status, "number": "A-1", **extra}

    return [
        make_event("invoice.created", invoice("draft", number=None), created=at),
        make_event("invoice.updated", invoice("draft"), created=at + 1),
        make_event("invoice.finalized", invoice("open"), created=at + 2),
        make_event("invoice.updated", invoice("open"), created=at + 2),
        make_event("invoice.paid", invoice("paid"), created=at + 3),
        make_event("invoice.payment_succeeded", invoice("paid"), created=at + 3),
        make_event("invoice.updated", invoice("paid"), created=at + 3),
        make_event("invoice.updated", invoice("paid", metadata={"n": "newest"}), created=at + 4),
    ]


class TestHotObject:
    def test_an_invoices_renewal_events_arriving_together_all_settle_at_once(
        self, server: FunctionServer, db: firestore.Client
    ) -> None:
        """Eight distinct events about one invoice posted at the same instant, three times
        over: every one is answered 200 `completed` at its first delivery (none 409 or 503,
        none left for a redelivery), and the invoice holds the newest state."""
        for _ in range(3):
            invoice_id = f"in_{uuid.uuid4().hex[:14]}"
            events = renewal(invoice_id, int(time.time()))
            together = threading.Barrier(len(events))

            def post(event: dict[str, Any], together: threading.Barrier = together) -> Any:
                together.wait()
                response = server.post(event)
                return response.status_code, response.json().get("status")

            with ThreadPoolExecutor(len(events)) as pool:
                answers = list(pool.map(post, events))
            assert answers == [(200, "completed")] * len(events)
            document = db.collection("invoices").document(invoice_id).get().to_dict()
            assert document is not None
            assert document["last_event_id"] == events[-1]["id"]
            assert document["object"]["metadata"] == {"n": "newest"}
