"""Thin events (event notifications): verified by stripe's parser, recorded in the ledger,
fetched from Stripe's API (a local fake the real `stripe` client talks to), and applied like
their snapshot events, once, even alongside their snapshot twin."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from google.cloud import firestore

from stripe_ledger.config import Settings
from stripe_ledger.context import HandlerContext
from stripe_ledger.errors import ConfigurationError, StripeUnavailable
from stripe_ledger.outcomes import Delivery, Outcome
from stripe_ledger.registry import HandlerRegistry
from stripe_ledger.service import WebhookService
from tests.fake_stripe import FakeStripe
from tests.support import SECRET, FunctionServer, make_event, sign

pytestmark = pytest.mark.emulator

EFFECTS = "thin_effects"


def thin_notification(
    event_type: str,
    related: dict[str, Any] | None,
    *,
    event_id: str | None = None,
    context: str | None = None,
) -> dict[str, Any]:
    """A thin event notification as Stripe sends it to an event destination."""
    notification: dict[str, Any] = {
        "id": event_id or f"evt_test_{uuid.uuid4().hex}",
        "object": "v2.core.event",
        "type": event_type,
        "livemode": False,
        "created": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "context": context,
        "reason": {"type": "request", "request": {"id": "req_1", "idempotency_key": "ik_1"}},
    }
    if related is not None:
        kind = str(related["object"])
        notification["related_object"] = {
            "id": related["id"],
            "type": kind,
            "url": related.get("url") or f"/v1/{kind.replace('.', '/')}s/{related['id']}",
        }
    return notification


def publish(fake: FakeStripe, notification: dict[str, Any], snapshot: str | None = None) -> None:
    """Make the fake know the full event (`GET /v2/core/events/{id}`)."""
    fake.v2_events[notification["id"]] = {
        **notification,
        "snapshot_event": snapshot,
        "changes": None,
    }


def counting_registry() -> HandlerRegistry:
    """customer.updated adds one to `thin_effects/{customer}` and keeps the email it saw."""
    registry = HandlerRegistry()

    @registry.on("customer.updated")
    def count(ctx: HandlerContext) -> None:
        ref = ctx.db.collection(EFFECTS).document(str(ctx.object["id"]))
        ctx.tx.set(
            ref,
            {"count": firestore.Increment(1), "email": ctx.object.get("email")},
            merge=True,
        )

    return registry


def effects(db: firestore.Client, object_id: str) -> dict[str, Any]:
    return db.collection(EFFECTS).document(object_id).get().to_dict() or {"count": 0}


def record(db: firestore.Client, event_id: str) -> dict[str, Any]:
    return db.collection("stripe_events").document(event_id).get().to_dict() or {}


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe() as server:
        yield server.serve_objects()


@pytest.fixture
def service(db: firestore.Client, fake: FakeStripe) -> WebhookService:
    settings = Settings(
        webhook_secrets=(SECRET,), stripe_api_key=fake.api_key, stripe_api_base=fake.url
    )
    return WebhookService(settings, db, counting_registry())


def deliver(service: WebhookService, payload: dict[str, Any]) -> Delivery:
    body = json.dumps(payload)
    return service.deliver(body.encode(), sign(body))


class TestThinEvent:
    def test_fetched_and_applied_like_its_snapshot(
        self, service: WebhookService, fake: FakeStripe, db: firestore.Client
    ) -> None:
        """A signed v1.customer.updated notification: the full event and the customer are
        fetched, customer.updated's handler runs on the fetched customer, the thin event is
        recorded completed under its own ID with its body as received."""
        customer = {"id": "cus_thin1", "object": "customer", "email": "new@example.com"}
        fake.put_object(customer)
        notification = thin_notification("v1.customer.updated", customer)
        publish(fake, notification)
        delivery = deliver(service, notification)
        assert delivery.outcome is Outcome.COMPLETED
        assert effects(db, "cus_thin1") == {"count": 1, "email": "new@example.com"}
        stored = record(db, notification["id"])
        assert (stored["status"], stored["type"]) == ("completed", "v1.customer.updated")
        assert stored["object_id"] == "cus_thin1"
        assert json.loads(stored["payload"]) == notification
        paths = [r.path for r in fake.requests]
        assert paths == [f"/v2/core/events/{notification['id']}", "/v1/customers/cus_thin1"]

    def test_a_duplicate_fetches_and_runs_nothing(
        self, service: WebhookService, fake: FakeStripe, db: firestore.Client
    ) -> None:
        customer = {"id": "cus_thin2", "object": "customer", "email": "a@example.com"}
        fake.put_object(customer)
        notification = thin_notification("v1.customer.updated", customer)
        publish(fake, notification)
        deliver(service, notification)
        requests_before = len(fake.requests)
        assert deliver(service, notification).outcome is Outcome.DUPLICATE
        assert len(fake.requests) == requests_before
        assert effects(db, "cus_thin2")["count"] == 1

    def test_fetch_failure_is_recorded_then_retried(
        self, service: WebhookService, fake: FakeStripe, db: firestore.Client
    ) -> None:
        """Stripe's API failing (500s past the retries): 503 for Stripe to retry, the record
        `failed` with why, the attempt given back; the next delivery completes it."""
        customer = {"id": "cus_thin3", "object": "customer", "email": "b@example.com"}
        fake.put_object(customer)
        notification = thin_notification("v1.customer.updated", customer)
        publish(fake, notification)
        fake.fail(500, times=10)
        with pytest.raises(StripeUnavailable, match="HTTP 500"):
            deliver(service, notification)
        stored = record(db, notification["id"])
        assert (stored["status"], stored["attempts"]) == ("failed", 0)
        assert "StripeUnavailable" in stored["last_error"]
        assert effects(db, "cus_thin3")["count"] == 0

        fake._failures.clear()
        assert deliver(service, notification).outcome is Outcome.COMPLETED
        assert effects(db, "cus_thin3") == {"count": 1, "email": "b@example.com"}

    def test_transient_errors_are_retried_within_the_delivery(
        self, service: WebhookService, fake: FakeStripe, db: firestore.Client
    ) -> None:
        """One 429 then success: retried inside the delivery, which completes."""
        customer = {"id": "cus_thin4", "object": "customer", "email": "c@example.com"}
        fake.put_object(customer)
        notification = thin_notification("v1.customer.updated", customer)
        publish(fake, notification)
        fake.fail(429, times=1)
        assert deliver(service, notification).outcome is Outcome.COMPLETED

    def test_a_deleted_object_is_applied_as_deleted(
        self, service: WebhookService, fake: FakeStripe, db: firestore.Client
    ) -> None:
        """The related object answers 404: the handlers see it marked deleted."""
        seen: list[dict[str, Any]] = []

        @service.registry.on("customer.deleted")
        def remember(ctx: HandlerContext) -> None:
            seen.append(ctx.object)

        notification = thin_notification(
            "v1.customer.deleted", {"id": "cus_gone", "object": "customer"}
        )
        publish(fake, notification)
        assert deliver(service, notification).outcome is Outcome.COMPLETED
        assert seen == [{"id": "cus_gone", "object": "customer", "deleted": True}]

    def test_connect_context_reaches_the_api(
        self, service: WebhookService, fake: FakeStripe
    ) -> None:
        """A connected account's thin event is fetched in that account's context."""
        customer = {"id": "cus_thin5", "object": "customer", "email": "d@example.com"}
        fake.put_object(customer)
        notification = thin_notification("v1.customer.updated", customer, context="acct_123")
        publish(fake, notification)
        assert deliver(service, notification).outcome is Outcome.COMPLETED
        assert {r.headers.get("stripe-context") for r in fake.requests} == {"acct_123"}

    def test_a_type_nobody_handles_is_ignored_without_fetching(
        self, service: WebhookService, fake: FakeStripe
    ) -> None:
        destination = {
            "id": "ed_test_1",
            "object": "v2.core.event_destination",
            "url": "/v2/core/event_destinations/ed_test_1",
        }
        notification = thin_notification("v2.core.event_destination.ping", destination)
        assert deliver(service, notification).outcome is Outcome.IGNORED
        assert fake.requests == []

    def test_without_an_api_key_the_failure_is_recorded(
        self, db: firestore.Client, fake: FakeStripe
    ) -> None:
        """No STRIPE_API_KEY: nothing can be fetched; the delivery fails as misconfigured
        (500, Stripe retries) and the record says why."""
        keyless = WebhookService(Settings(webhook_secrets=(SECRET,)), db, counting_registry())
        notification = thin_notification(
            "v1.customer.updated", {"id": "cus_nokey", "object": "customer"}
        )
        with pytest.raises(ConfigurationError, match="STRIPE_API_KEY"):
            deliver(keyless, notification)
        assert "STRIPE_API_KEY" in record(db, notification["id"])["last_error"]


class TestSnapshotTwin:
    def twins(self, fake: FakeStripe, customer_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """One change, sent both as a snapshot event and as a thin event naming it."""
        customer = {"id": customer_id, "object": "customer", "email": "twin@example.com"}
        fake.put_object(customer)
        snapshot = make_event("customer.updated", customer)
        notification = thin_notification("v1.customer.updated", customer)
        publish(fake, notification, snapshot=snapshot["id"])
        return snapshot, notification

    def test_snapshot_first_then_thin(
        self, service: WebhookService, fake: FakeStripe, db: firestore.Client
    ) -> None:
        snapshot, notification = self.twins(fake, "cus_twin1")
        assert deliver(service, snapshot).outcome is Outcome.COMPLETED
        assert deliver(service, notification).outcome is Outcome.DUPLICATE
        assert effects(db, "cus_twin1")["count"] == 1
        thin_record = record(db, notification["id"])
        assert thin_record["status"] == "completed"
        assert snapshot["id"] in thin_record["last_note"]
        assert thin_record["lease_expires_at"] is None

    def test_thin_first_then_snapshot(
        self, service: WebhookService, fake: FakeStripe, db: firestore.Client
    ) -> None:
        """The thin event applies the change under its twin's record, completing both; the
        snapshot, arriving later, is a duplicate."""
        snapshot, notification = self.twins(fake, "cus_twin2")
        assert deliver(service, notification).outcome is Outcome.COMPLETED
        assert record(db, snapshot["id"])["status"] == "completed"
        assert deliver(service, snapshot).outcome is Outcome.DUPLICATE
        assert effects(db, "cus_twin2")["count"] == 1
        # The twin's transaction completed the thin event's own record too: no claim is
        # left behind for its redeliveries to wait on.
        thin_record = record(db, notification["id"])
        assert (thin_record["status"], thin_record["lease_expires_at"]) == ("completed", None)

    def test_twins_delivered_at_once_apply_once(
        self, service: WebhookService, fake: FakeStripe, db: firestore.Client
    ) -> None:
        """Both twins, three copies each, from six threads; retried like Stripe until each
        is answered 2xx: the change is applied exactly once."""
        snapshot, notification = self.twins(fake, "cus_twin3")
        barrier = threading.Barrier(6)

        def send(payload: dict[str, Any]) -> None:
            barrier.wait()
            for _ in range(50):
                try:
                    if deliver(service, payload).outcome is not Outcome.IN_FLIGHT:
                        return
                except StripeUnavailable:
                    pass
                time.sleep(0.2)
            raise AssertionError(f"{payload['id']} never settled")

        failures: list[BaseException] = []

        def send_reporting(payload: dict[str, Any]) -> None:
            # pytest only warns about an exception in a thread: keep it for the main thread.
            try:
                send(payload)
            except BaseException as error:  # noqa: BLE001 - reported by the assert below
                failures.append(error)

        threads = [
            threading.Thread(target=send_reporting, args=(payload,))
            for payload in (snapshot, notification) * 3
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        assert effects(db, "cus_twin3")["count"] == 1
        assert record(db, snapshot["id"])["status"] == "completed"
        assert record(db, notification["id"])["status"] == "completed"
        assert record(db, notification["id"])["lease_expires_at"] is None


def test_thin_event_over_http_updates_the_projection(
    project: str, db: firestore.Client, fake: FakeStripe
) -> None:
    """End to end: a thin event through the function served by functions-framework, the
    real `stripe` client fetching from the fake, the built-in customers projection updated
    with the fetched state, ordered at the moment it was read."""
    customer = {"id": "cus_http", "object": "customer", "email": "http@example.com", "name": "N"}
    fake.put_object(customer)
    notification = thin_notification("v1.customer.updated", customer)
    publish(fake, notification)
    function = FunctionServer(
        {
            "GOOGLE_CLOUD_PROJECT": project,
            "STRIPE_WEBHOOK_SECRET": SECRET,
            "STRIPE_API_KEY": fake.api_key,
            "STRIPE_API_BASE": fake.url,
        }
    ).start()
    before = time.time()
    try:
        response = function.post(notification)
    finally:
        function.stop()
    assert response.status_code == 200, response.text
    document = db.collection("customers").document("cus_http").get().to_dict() or {}
    assert (document["email"], document["name"]) == ("http@example.com", "N")
    assert document["last_event_id"] == notification["id"]
    assert before - 1 <= document["last_event_created"] <= time.time()
