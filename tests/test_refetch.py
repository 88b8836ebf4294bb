"""Refetch mode (STRIPE_REFETCH): projections project the object's current state, read from
Stripe's API (a local fake the real `stripe` client talks to) after the claim and outside
the transaction, so they converge to Stripe's truth whatever the delivery order."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from google.cloud import firestore

import handlers
from stripe_ledger.config import Settings
from stripe_ledger.errors import StripeUnavailable
from stripe_ledger.outcomes import Outcome
from stripe_ledger.registry import import_handler_modules
from stripe_ledger.service import WebhookService
from tests.fake_stripe import FakeStripe
from tests.support import SECRET, make_event, sign
from tests.test_projections_sequences import life, orderings

pytestmark = pytest.mark.emulator

ORDERINGS = 200
PROJECTED = {
    "subscriptions": ["status", "customer", "price_ids", "current_period_end", "deleted"],
    "invoices": ["status", "amount_paid", "subscription"],
}


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe() as server:
        yield server.serve_objects()


def refetching(db: firestore.Client, fake: FakeStripe, **overrides: Any) -> WebhookService:
    import_handler_modules(handlers.BUILTIN_MODULES)
    settings = Settings(
        webhook_secrets=(SECRET,),
        stripe_api_key=fake.api_key,
        stripe_api_base=fake.url,
        refetch=True,
        **overrides,
    )
    return WebhookService(settings, db, handlers.registry)


def send(service: WebhookService, event: dict[str, Any]) -> Outcome:
    body = json.dumps(event)
    return service.deliver(body.encode(), sign(body)).outcome


class TestConvergence:
    def test_every_ordering_converges_to_the_api_state(
        self, db: firestore.Client, fake: FakeStripe
    ) -> None:
        """A subscription's life (7 events, two of them in the same second for one change)
        in 200 orderings, with duplicates: each time, the subscription and invoice
        documents hold exactly what the API holds now, whatever arrived last."""
        service = refetching(db, fake)
        start = int(time.time())

        def run(order: list[int]) -> dict[str, Any]:
            token = uuid.uuid4().hex[:16]
            events = life(token, start)
            # Stripe's truth now: the last state of each object in the life.
            fake.put_object(events[-1]["data"]["object"])
            fake.put_object(events[3]["data"]["object"])
            for step in order:
                assert send(service, events[step]) in (Outcome.COMPLETED, Outcome.DUPLICATE)
            documents = {
                "subscriptions": db.collection("subscriptions").document(f"sub_{token}").get(),
                "invoices": db.collection("invoices").document(f"in_{token}").get(),
            }
            truth = {
                "subscriptions": events[-1]["data"]["object"],
                "invoices": events[3]["data"]["object"],
            }
            for collection, snapshot in documents.items():
                document = snapshot.to_dict() or {}
                assert document["object"] == truth[collection], (order, collection)
            return {
                collection: {field: documents[collection].get(field) for field in fields}
                for collection, fields in PROJECTED.items()
            }

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(run, orderings(seed=7, count=ORDERINGS)))
        assert len(results) == ORDERINGS
        for result in results:
            assert result["subscriptions"]["status"] == "canceled"
            assert result["subscriptions"]["deleted"] is True
            assert result["invoices"]["status"] == "paid"
            assert result["invoices"]["amount_paid"] == 1500

    def test_a_stale_event_after_the_refetch_changes_nothing(
        self, db: firestore.Client, fake: FakeStripe
    ) -> None:
        """The fetched state is as of the moment it was read: an event created before that
        moment, delivered later without refetch, cannot overwrite it."""
        customer = {"id": "cus_rf1", "object": "customer", "email": "now@example.com"}
        fake.put_object(customer)
        old = int(time.time()) - 10
        fresh = make_event("customer.updated", {**customer, "email": "x@example.com"}, created=old)
        assert send(refetching(db, fake), fresh) is Outcome.COMPLETED
        stale = make_event("customer.updated", {**customer, "email": "stale@example.com"})
        stale["created"] = old + 5
        plain = WebhookService(Settings(webhook_secrets=(SECRET,)), db, handlers.registry)
        assert send(plain, stale) is Outcome.COMPLETED
        document = db.collection("customers").document("cus_rf1").get()
        assert document.get("email") == "now@example.com"


class TestDeletion:
    def test_the_api_saying_deleted_marks_the_object_deleted(
        self, db: firestore.Client, fake: FakeStripe
    ) -> None:
        """The API's own word (`deleted: true`) marks the projection deleted, for good."""
        service = refetching(db, fake)
        product = {"id": "prod_gone", "object": "product", "name": "Gone", "active": True}
        fake.put_object({"id": "prod_gone", "object": "product", "deleted": True})
        assert send(service, make_event("product.updated", product)) is Outcome.COMPLETED
        document = db.collection("products").document("prod_gone").get()
        assert document.get("deleted") is True
        fake.put_object(product)  # even if it came back, a deletion is final
        assert send(service, make_event("product.updated", product)) is Outcome.COMPLETED
        assert db.collection("products").document("prod_gone").get().get("deleted") is True


class TestOptOut:
    def test_excluded_types_project_the_event_as_sent(
        self, db: firestore.Client, fake: FakeStripe
    ) -> None:
        """STRIPE_REFETCH_EXCLUDE: those types cost no API call and project the event's
        object; the others are refetched."""
        service = refetching(db, fake, refetch_exclude=("invoice.*",))
        invoice = {"id": "in_rf", "object": "invoice", "status": "open", "amount_paid": 0}
        customer = {"id": "cus_rf2", "object": "customer", "email": "api@example.com"}
        fake.put_object(customer)
        assert send(service, make_event("invoice.finalized", invoice)) is Outcome.COMPLETED
        assert send(service, make_event("customer.updated", {**customer, "email": "event@x"}))
        assert [r.path for r in fake.requests] == ["/v1/customers/cus_rf2"]
        assert db.collection("invoices").document("in_rf").get().get("status") == "open"
        assert db.collection("customers").document("cus_rf2").get().get("email") == (
            "api@example.com"
        )


class TestFailures:
    def test_api_down_answers_503_and_releases_the_event(
        self, db: firestore.Client, fake: FakeStripe
    ) -> None:
        service = refetching(db, fake, stripe_api_timeout_seconds=2)
        customer = {"id": "cus_rf3", "object": "customer", "email": "a@example.com"}
        fake.put_object(customer)
        event = make_event("customer.updated", customer)
        fake.fail(503, times=20)
        with pytest.raises(StripeUnavailable):
            send(service, event)
        record = db.collection("stripe_events").document(event["id"]).get().to_dict() or {}
        assert (record["status"], record["attempts"]) == ("failed", 0)
        assert not db.collection("customers").document("cus_rf3").get().exists
        fake._failures.clear()
        assert send(service, event) is Outcome.COMPLETED
