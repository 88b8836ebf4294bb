"""A property of projections (issue 15): over generated lifecycles of one subscription, with
changes in one second going back and forth, delivered as snapshot and thin events with
duplicates, in any order, against the emulator and a local Stripe API holding the true
current state, the projection ends at the API's state with a key, and at the documented
rule (latest second, then lifecycle rank, then event ID) without one."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from google.cloud import firestore
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import handlers
from handlers.subscriptions import SUBSCRIPTIONS
from stripe_ledger.config import Settings
from stripe_ledger.outcomes import Outcome
from stripe_ledger.registry import import_handler_modules
from stripe_ledger.service import WebhookService
from tests.fake_stripe import FakeStripe
from tests.support import SECRET, make_event, sign
from tests.test_thin_events import publish, thin_notification

pytestmark = pytest.mark.emulator

STATUSES = ("incomplete", "trialing", "active", "past_due", "unpaid", "paused", "canceled")
ANSWERED = (Outcome.COMPLETED, Outcome.DUPLICATE)
EXAMPLES = 40


@dataclass(frozen=True)
class Change:
    status: str
    second_later: bool
    """Whether the change happened a second after the previous one (else in its second)."""
    door: str
    """How Stripe delivers it: "snapshot", "thin" or "both" (twins)."""


@dataclass(frozen=True)
class Life:
    changes: list[Change]
    order_seed: int
    duplicates: list[int]


def lives(*, thin: bool) -> st.SearchStrategy[Life]:
    doors = st.sampled_from(("snapshot", "thin", "both")) if thin else st.just("snapshot")
    change = st.builds(Change, st.sampled_from(STATUSES), st.booleans(), doors)
    return st.builds(
        Life,
        st.lists(change, min_size=2, max_size=5),
        st.integers(0, 2**32),
        st.lists(st.integers(0, 20), max_size=3),
    )


def state(sub_id: str, index: int, status: str) -> dict[str, Any]:
    return {
        "id": sub_id,
        "object": "subscription",
        "status": status,
        "customer": "cus_property",
        "metadata": {"change": str(index)},  # every change a different state
        "items": {"object": "list", "data": [{"id": "si_1", "price": {"id": "price_1"}}]},
    }


def deliveries(
    life: Life, sub_id: str, fake: FakeStripe | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """The payloads of `life` in a shuffled order with duplicates; the snapshot events; and
    the second of the last change."""
    second = int(time.time()) - 60
    payloads, snapshots = [], []
    for index, change in enumerate(life.changes):
        second += change.second_later
        obj = state(sub_id, index, change.status)
        event = make_event("customer.subscription.updated", obj, created=second)
        if change.door in ("snapshot", "both"):
            payloads.append(event)
            snapshots.append(event)
        if change.door in ("thin", "both"):
            assert fake is not None
            notification = thin_notification("v1.customer.subscription.updated", obj)
            twin = event["id"] if change.door == "both" else None
            publish(fake, notification, snapshot=twin)
            payloads.append(notification)
    payloads += [payloads[index % len(payloads)] for index in life.duplicates]
    shuffled = list(payloads)
    random.Random(life.order_seed).shuffle(shuffled)
    return shuffled, snapshots, second


def deliver(service: WebhookService, payload: dict[str, Any]) -> Outcome:
    body = json.dumps(payload)
    return service.deliver(body.encode(), sign(body)).outcome


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe() as server:
        yield server.serve_objects()


def service_for(db: firestore.Client, fake: FakeStripe | None) -> WebhookService:
    import_handler_modules(handlers.BUILTIN_MODULES)
    api: dict[str, Any] = (
        {"stripe_api_key": fake.api_key, "stripe_api_base": fake.url} if fake else {}
    )
    return WebhookService(Settings(webhook_secrets=(SECRET,), **api), db, handlers.registry)


HYPOTHESIS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class TestEveryOrderEndsRight:
    @HYPOTHESIS
    @given(life=lives(thin=True))
    def test_with_a_key_the_projection_ends_at_the_apis_state(
        self, db: firestore.Client, fake: FakeStripe, life: Life
    ) -> None:
        """The API holds the last change's state; reads happen late in the last change's
        second (so they overlap its snapshots, as in Stripe's migration setup)."""
        service = service_for(db, fake)
        sub_id = f"sub_{uuid.uuid4().hex[:16]}"
        payloads, _, last_second = deliveries(life, sub_id, fake)
        truth = state(sub_id, len(life.changes) - 1, life.changes[-1].status)
        fake.put_object(truth)
        assert service.fetcher is not None
        service.fetcher.clock = lambda: last_second + 0.884
        for payload in payloads:
            assert deliver(service, payload) in ANSWERED
        document = db.collection("subscriptions").document(sub_id).get().to_dict() or {}
        assert document.get("object") == truth

    @HYPOTHESIS
    @given(life=lives(thin=False))
    def test_without_a_key_the_projection_ends_at_the_documented_rule(
        self, db: firestore.Client, life: Life
    ) -> None:
        """Snapshots only: the latest second wins, then the lifecycle rank, then the larger
        event ID, whatever the order of delivery."""
        service = service_for(db, None)
        sub_id = f"sub_{uuid.uuid4().hex[:16]}"
        payloads, snapshots, _ = deliveries(life, sub_id, None)
        for payload in payloads:
            assert deliver(service, payload) in ANSWERED
        expected = max(
            snapshots,
            key=lambda event: (
                event["created"],
                SUBSCRIPTIONS.rank(event["data"]["object"]),
                event["id"],
            ),
        )
        document = db.collection("subscriptions").document(sub_id).get().to_dict() or {}
        assert document.get("object") == expected["data"]["object"]
