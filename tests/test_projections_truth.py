"""Projections end at Stripe's real state (issue 15), end to end against the emulator and a
local fake of Stripe's API: a 404 is not a deletion, objects Firestore cannot hold as they are
are adapted by Firestore's own size rules, and same-second conflicts are settled by the API."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google.cloud import firestore

import handlers
from stripe_ledger.config import Settings
from stripe_ledger.outcomes import Delivery, Outcome
from stripe_ledger.registry import import_handler_modules
from stripe_ledger.service import WebhookService
from tests.fake_stripe import FakeStripe, Request, Response
from tests.support import SECRET, logged, make_event, sign
from tests.test_thin_events import publish, thin_notification

pytestmark = pytest.mark.emulator


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe() as server:
        yield server.serve_objects()


def service_for(
    db: firestore.Client, fake: FakeStripe | None = None, **overrides: Any
) -> WebhookService:
    import_handler_modules(handlers.BUILTIN_MODULES)
    api: dict[str, Any] = (
        {"stripe_api_key": fake.api_key, "stripe_api_base": fake.url} if fake else {}
    )
    settings = Settings(webhook_secrets=(SECRET,), **api, **overrides)
    return WebhookService(settings, db, handlers.registry)


def deliver(service: WebhookService, event: dict[str, Any]) -> Delivery:
    body = json.dumps(event)
    return service.deliver(body.encode(), sign(body))


def stored(db: firestore.Client, collection: str, object_id: str) -> dict[str, Any]:
    return db.collection(collection).document(object_id).get().to_dict() or {}


def token() -> str:
    return uuid.uuid4().hex[:16]


class TestNotFoundIsNotDeletion:
    def test_a_refetch_answering_404_keeps_the_snapshot(
        self, db: firestore.Client, fake: FakeStripe
    ) -> None:
        """Refetch mode, the key cannot see the product (404): the projection holds the
        event's snapshot, not a final deletion, and a WARNING names the object."""
        service = service_for(db, fake, refetch=True)
        product: dict[str, Any] = {
            "id": f"prod_{token()}",
            "object": "product",
            "name": "Pro",
            "active": True,
        }
        with logged() as records:
            assert deliver(service, make_event("product.updated", product)).outcome is (
                Outcome.COMPLETED
            )
        document = stored(db, "products", product["id"])
        assert (document["deleted"], document["name"]) == (False, "Pro")
        warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
        assert any(product["id"] in message and "404" in message for message in warnings)
        # The API can see it again later: the next event projects its state.
        fake.put_object({**product, "name": "Pro 2"})
        assert deliver(service, make_event("product.updated", product)).outcome is (
            Outcome.COMPLETED
        )
        assert stored(db, "products", product["id"])["name"] == "Pro 2"

    def test_a_deleting_event_answering_404_deletes(
        self, db: firestore.Client, fake: FakeStripe
    ) -> None:
        """The event type itself says the object is deleted: a 404 then changes nothing."""
        service = service_for(db, fake, refetch=True)
        product: dict[str, Any] = {
            "id": f"prod_{token()}",
            "object": "product",
            "name": "Old",
            "active": False,
        }
        assert deliver(service, make_event("product.deleted", product)).outcome is (
            Outcome.COMPLETED
        )
        assert stored(db, "products", product["id"])["deleted"] is True

    def test_an_event_of_the_other_mode_is_not_fetched(self, db: firestore.Client) -> None:
        """A test-mode event reaching a live endpoint (Stripe sends connected accounts' test
        events there): the live key is never used for it; its snapshot is projected."""
        with FakeStripe(api_key="sk_live_fake_0123456789") as live:
            live.serve_objects()
            service = service_for(db, live, refetch=True)
            customer: dict[str, Any] = {
                "id": f"cus_{token()}",
                "object": "customer",
                "email": "t@example.com",
            }
            event = {**make_event("customer.updated", customer), "account": "acct_test1"}
            with logged() as records:
                assert deliver(service, event).outcome is Outcome.COMPLETED
            assert live.requests == []
        document = stored(db, "customers", customer["id"])
        assert (document["deleted"], document["email"]) == (False, "t@example.com")
        assert any(customer["id"] in r.getMessage() for r in records)

    def test_a_connected_accounts_object_is_read_in_its_context(
        self, db: firestore.Client, fake: FakeStripe
    ) -> None:
        """Refetch reads the object as the event's connected account."""
        service = service_for(db, fake, refetch=True)
        customer: dict[str, Any] = {
            "id": f"cus_{token()}",
            "object": "customer",
            "email": "now@example.com",
        }
        fake.put_object(customer)
        event = {**make_event("customer.updated", customer), "account": "acct_123"}
        assert deliver(service, event).outcome is Outcome.COMPLETED
        assert [r.headers.get("stripe-context") for r in fake.requests] == ["acct_123"]

    def test_a_thin_event_answering_404_applies_nothing(
        self, db: firestore.Client, fake: FakeStripe
    ) -> None:
        """A thin `v1.product.updated` whose product answers 404: nothing is applied (there is
        no snapshot to keep), the record says why, and the projection is not deleted."""
        service = service_for(db, fake)
        product: dict[str, Any] = {
            "id": f"prod_{token()}",
            "object": "product",
            "name": "Pro",
            "active": True,
        }
        assert deliver(service, make_event("product.created", product)).outcome is (
            Outcome.COMPLETED
        )
        notification = thin_notification("v1.product.updated", product)
        publish(fake, notification)
        with logged() as records:
            assert deliver(service, notification).outcome is Outcome.COMPLETED
        record = db.collection("stripe_events").document(notification["id"]).get().to_dict()
        assert record is not None
        assert "404" in record["last_note"]
        assert stored(db, "products", product["id"])["deleted"] is False
        assert any(product["id"] in r.getMessage() for r in records)


class TestFirestoreSizeRules:
    """Objects Firestore cannot hold as they are: adapted (and said so), never dead-lettered."""

    def deliver_payment(
        self, db: firestore.Client, extra: dict[str, Any]
    ) -> tuple[Delivery, dict[str, Any]]:
        service = service_for(db, max_attempts=1)
        obj = {"id": f"pi_{token()}", "object": "payment_intent", "status": "succeeded", **extra}
        delivery = deliver(service, make_event("payment_intent.succeeded", obj))
        return delivery, stored(db, "payments", obj["id"])

    def test_an_empty_map_key_is_renamed(self, db: firestore.Client) -> None:
        delivery, document = self.deliver_payment(db, {"metadata": {"": "x", "plan": "pro"}})
        assert delivery.outcome is Outcome.COMPLETED
        assert document["object"]["metadata"] == {"~": "x", "plan": "pro"}
        assert document["object_adapted"] == ["object.metadata."]

    def test_an_integer_beyond_64_bits_is_kept_as_text(self, db: firestore.Client) -> None:
        delivery, document = self.deliver_payment(db, {"amount": 2**63, "amount_received": 5})
        assert delivery.outcome is Outcome.COMPLETED
        assert document["amount"] == document["object"]["amount"] == str(2**63)
        assert document["amount_received"] == 5
        assert document["object_adapted"] == ["amount", "object.amount"]

    def test_a_large_array_of_numbers_is_left_out_by_its_firestore_size(
        self, db: firestore.Client
    ) -> None:
        """300,000 small numbers are 600 kB of JSON but 2.4 MB in Firestore (8 bytes each):
        the field is left out and named, and the event completes on its first attempt."""
        numbers = [0] * 300_000
        delivery, document = self.deliver_payment(db, {"amount_details": {"tips": numbers}})
        assert delivery.outcome is Outcome.COMPLETED
        assert document["status"] == "succeeded"
        assert document["object_omitted"] == ["amount_details"]
        assert "amount_details" not in document["object"]


def subscription_state(sub_id: str, status: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": sub_id,
        "object": "subscription",
        "status": status,
        "customer": "cus_truth",
        "items": {"object": "list", "data": [{"id": "si_1", "price": {"id": "price_1"}}]},
        **fields,
    }


class TestTwoClocks:
    def test_a_snapshot_of_the_second_of_a_read_is_not_skipped(
        self, db: firestore.Client, fake: FakeStripe
    ) -> None:
        """Snapshot and thin destinations both deliver. Change 1 (`incomplete`) is read by its
        thin event at X.884; change 2 (`active`) happens later in second X, and its snapshot
        (`created` = X) arrives after the read. The events cannot order the two, so the API
        is read: the projection ends `active`, and all four deliveries answer 2xx."""
        service = service_for(db, fake)
        second = int(time.time())
        assert service.fetcher is not None
        service.fetcher.clock = lambda: second + 0.884
        sub_id = f"sub_{token()}"
        incomplete = subscription_state(sub_id, "incomplete")
        active = subscription_state(sub_id, "active")
        s1 = make_event("customer.subscription.created", incomplete, created=second)
        s2 = make_event("customer.subscription.updated", active, created=second)
        t1 = thin_notification("v1.customer.subscription.created", incomplete)
        t2 = thin_notification("v1.customer.subscription.updated", active)
        publish(fake, t1, snapshot=s1["id"])
        publish(fake, t2, snapshot=s2["id"])

        fake.put_object(incomplete)
        assert deliver(service, t1).outcome is Outcome.COMPLETED
        fake.put_object(active)  # change 2, later in the same second
        for event in (s2, s1, t2):
            assert deliver(service, event).outcome in (Outcome.COMPLETED, Outcome.DUPLICATE)
        document = stored(db, "subscriptions", sub_id)
        assert document["status"] == "active"
        assert document["object"] == active


CONFLICTS: dict[
    str, tuple[str, str, Callable[[str], dict[str, Any]], Callable[[str], dict[str, Any]]]
] = {
    "subscription_retry_succeeds": (
        "customer.subscription.updated",
        "subscriptions",
        lambda object_id: subscription_state(object_id, "past_due"),
        lambda object_id: subscription_state(object_id, "active"),
    ),
    "payment_intent_card_declined": (
        "payment_intent.requires_action",
        "payments",
        lambda object_id: {
            "id": object_id,
            "object": "payment_intent",
            "status": "requires_action",
            "amount": 500,
        },
        lambda object_id: {
            "id": object_id,
            "object": "payment_intent",
            "status": "requires_payment_method",
            "amount": 500,
        },
    ),
}


class TestSameSecondConflicts:
    def events(self, case: str, object_id: str) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
        event_type, collection, before, after = CONFLICTS[case]
        second = int(time.time())
        earlier = make_event(event_type, before(object_id), created=second)
        later = make_event(event_type, after(object_id), created=second)
        return collection, [earlier, later], after(object_id)

    @pytest.mark.parametrize("case", sorted(CONFLICTS))
    @pytest.mark.parametrize("reverse", [False, True], ids=["in_order", "reversed"])
    def test_with_a_key_the_api_settles_it(
        self, db: firestore.Client, fake: FakeStripe, case: str, reverse: bool
    ) -> None:
        """Two changes in one second going back along the lifecycle (a retry succeeds, a card
        is declined): in either delivery order the projection ends at the API's state, for
        one API read on the tie."""
        service = service_for(db, fake)
        prefix = "sub" if case.startswith("sub") else "pi"
        collection, events, truth = self.events(case, f"{prefix}_{token()}")
        fake.put_object(truth)
        for event in reversed(events) if reverse else events:
            assert deliver(service, event).outcome is Outcome.COMPLETED
        document = stored(db, collection, truth["id"])
        assert (document["status"], document["object"]) == (truth["status"], truth)
        assert len(fake.requests) == 1

    @pytest.mark.parametrize("reverse", [False, True], ids=["in_order", "reversed"])
    def test_without_a_key_the_rule_decides_and_warns(
        self, db: firestore.Client, reverse: bool
    ) -> None:
        """No key: the documented rule (further along the lifecycle) keeps `past_due`, in
        either order, and a WARNING names the object and how to settle it."""
        service = service_for(db)
        collection, events, _ = self.events("subscription_retry_succeeds", f"sub_{token()}")
        with logged() as records:
            for event in reversed(events) if reverse else events:
                assert deliver(service, event).outcome is Outcome.COMPLETED
        sub_id = events[0]["data"]["object"]["id"]
        assert stored(db, collection, sub_id)["status"] == "past_due"
        messages = [r.getMessage() for r in records if r.levelno == logging.WARNING]
        assert any(sub_id in message and "STRIPE_API_KEY" in message for message in messages)

    def test_the_same_state_twice_costs_no_read(
        self, db: firestore.Client, fake: FakeStripe
    ) -> None:
        """`invoice.paid` and `invoice.payment_succeeded` carry one state: no conflict."""
        service = service_for(db, fake)
        invoice: dict[str, Any] = {
            "id": f"in_{token()}",
            "object": "invoice",
            "status": "paid",
            "amount_paid": 9,
        }
        second = int(time.time())
        for event_type in ("invoice.paid", "invoice.payment_succeeded"):
            event = make_event(event_type, invoice, created=second)
            assert deliver(service, event).outcome is Outcome.COMPLETED
        assert fake.requests == []
        assert stored(db, "invoices", invoice["id"])["status"] == "paid"

    def test_a_conflict_the_api_cannot_read_falls_back_to_the_rule(
        self, db: firestore.Client, fake: FakeStripe
    ) -> None:
        """The key cannot see the object (404): the rule decides, never a deletion, and the
        event completes after one read."""
        service = service_for(db, fake)
        collection, events, _ = self.events("subscription_retry_succeeds", f"sub_{token()}")
        with logged() as records:
            for event in events:
                assert deliver(service, event).outcome is Outcome.COMPLETED
        sub_id = events[0]["data"]["object"]["id"]
        document = stored(db, collection, sub_id)
        assert (document["status"], document["deleted"]) == ("past_due", False)
        assert len(fake.requests) == 1
        assert any(sub_id in r.getMessage() for r in records)

    def test_a_state_that_keeps_changing_is_read_at_most_three_times(
        self, db: firestore.Client, fake: FakeStripe
    ) -> None:
        """Each read answers a new state of the same second while another delivery keeps
        rewriting the document: the delivery stops reading after three and applies the rule."""
        service = service_for(db, fake)
        collection, events, truth = self.events("subscription_retry_succeeds", f"sub_{token()}")
        ref = db.collection(collection).document(truth["id"])
        assert service.fetcher is not None
        second = events[0]["created"]
        service.fetcher.clock = lambda: second + 0.5  # every read within the events' second
        assert deliver(service, events[0]).outcome is Outcome.COMPLETED
        first = ref.get().to_dict() or {}

        @fake.route("GET", rf"/v1/subscriptions/{truth['id']}")
        def moving(request: Request, match: re.Match[str]) -> Response:
            # Another delivery's state lands after every read: the read no longer settles.
            ref.set({**first, "last_event_id": f"evt_other{len(fake.requests)}"})
            return Response(200, truth)

        fake._routes.insert(0, fake._routes.pop())
        with logged() as records:
            assert deliver(service, events[1]).outcome is Outcome.COMPLETED
        assert len(fake.requests) == 3
        assert any(truth["id"] in r.getMessage() for r in records)
