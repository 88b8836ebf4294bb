"""Who may use what, right now: `user_access/{uid}` and `customer_access/{cus}` end to end.

Real HTTP to the function served by functions-framework (gunicorn), against the emulator.
Each test's objects carry a tag of their own, so tests share one served function (one per
configuration) and never see each other's documents.
"""

from __future__ import annotations

import random
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from google.cloud import firestore
from test_utils.prefixer import Prefixer
from test_utils.system import EmulatorCreds

from tests.support import ROOT, SECRET, FunctionServer, make_event

pytestmark = [pytest.mark.emulator, pytest.mark.e2e]

T0 = int(time.time()) - 86_400
MONTH = 2_592_000
_prefixer = Prefixer("stripe-ledger", "access", separator="-")


class Life:
    """One app user's Stripe objects and the events of their life; IDs end with a tag."""

    def __init__(self, tag: str | None = None) -> None:
        self.tag = tag or uuid.uuid4().hex[:10]
        self.user = self.id("user", "alice")
        self.other_user = self.id("user", "bob")
        self.customer = self.id("cus", "a")

    def id(self, prefix: str, name: str) -> str:
        return f"{prefix}_{name}_{self.tag}"

    def event(self, event_type: str, obj: Mapping[str, Any], at: int) -> dict[str, Any]:
        """An event whose ID is made of its object, type and time: the same life built
        twice has the same IDs but for the tag."""
        about = str(obj.get("id") or obj.get("customer")).removesuffix(f"_{self.tag}")
        name = f"{about}_{event_type}_{at}".replace(".", "_")
        return make_event(event_type, obj, created=at, event_id=self.id("evt", name))

    def customer_event(
        self, kind: str, at: int, user: str | None = None, customer: str | None = None
    ) -> dict[str, Any]:
        metadata = {"app_user_id": user} if user else {}
        obj: dict[str, Any] = {"id": customer or self.customer, "object": "customer"}
        obj["metadata"] = metadata
        obj |= {"email": "alice@example.com", "created": T0}
        return self.event(f"customer.{kind}", obj, at)

    def subscription_event(
        self,
        kind: str,
        name: str,
        status: str,
        at: int,
        *,
        price: str = "pro",
        customer: str | None = None,
        cancel_at_period_end: bool = False,
    ) -> dict[str, Any]:
        item = {
            "id": self.id("si", name),
            "object": "subscription_item",
            "current_period_start": T0,
            "current_period_end": T0 + MONTH,
            "price": {"id": self.id("price", price), "product": self.id("prod", price)},
            "quantity": 1,
        }
        obj = {
            "id": self.id("sub", name),
            "object": "subscription",
            "status": status,
            "customer": customer or self.customer,
            "cancel_at_period_end": cancel_at_period_end,
            "items": {"object": "list", "data": [item]},
            "created": T0,
        }
        return self.event(f"customer.subscription.{kind}", obj, at)

    def invoice_event(self, kind: str, status: str, at: int) -> dict[str, Any]:
        obj = {
            "id": self.id("in", "renewal"),
            "object": "invoice",
            "status": status,
            "customer": self.customer,
            "subscription": self.id("sub", "one"),
            "amount_due": 1000,
            "amount_paid": 1000 if status == "paid" else 0,
        }
        return self.event(f"invoice.{kind}", obj, at)

    def entitlements_event(self, at: int, *keys: str) -> dict[str, Any]:
        listed = [
            {
                "id": self.id("ent", key),
                "object": "entitlements.active_entitlement",
                "lookup_key": key,
            }
            for key in keys
        ]
        obj = {
            "object": "entitlements.active_entitlement_summary",
            "customer": self.customer,
            "entitlements": {"object": "list", "data": listed, "has_more": False},
            "livemode": False,
        }
        return self.event("entitlements.active_entitlement_summary.updated", obj, at)

    def checkout_event(self, at: int, user: str, customer: str | None = None) -> dict[str, Any]:
        obj = {
            "id": self.id("cs", "checkout"),
            "object": "checkout.session",
            "status": "complete",
            "payment_status": "paid",
            "mode": "subscription",
            "customer": customer or self.customer,
            "client_reference_id": user,
            "subscription": self.id("sub", "one"),
            "created": at,
        }
        return self.event("checkout.session.completed", obj, at)

    def product_event(self, price: str, features: str, at: int) -> dict[str, Any]:
        obj = {"id": self.id("prod", price), "object": "product", "name": price, "active": True}
        obj["metadata"] = {"features": features}
        return self.event("product.created", obj, at)


class Function:
    """A served function and a client of its Firestore project."""

    def __init__(self, server: FunctionServer, db: firestore.Client) -> None:
        self.server = server
        self.db = db

    def deliver(self, *events: Mapping[str, Any]) -> None:
        for event in events:
            response = self.server.deliver_until_settled(event)
            assert response.json()["status"] in ("completed", "duplicate"), response.text

    def user(self, user: str) -> dict[str, Any]:
        document = self.db.collection("user_access").document(user).get().to_dict()
        assert document is not None, f"user_access/{user} missing"
        return document

    def customer(self, customer: str) -> dict[str, Any]:
        document = self.db.collection("customer_access").document(customer).get().to_dict()
        assert document is not None, f"customer_access/{customer} missing"
        return document


def _serve(env: Mapping[str, str]) -> Iterator[Function]:
    project = _prefixer.create_prefix()
    server = FunctionServer(
        {"GOOGLE_CLOUD_PROJECT": project, "STRIPE_WEBHOOK_SECRET": SECRET, **env}
    ).start()
    try:
        yield Function(server, firestore.Client(project=project, credentials=EmulatorCreds()))
    finally:
        server.stop()


@pytest.fixture(scope="module")
def function(emulator_host: str) -> Iterator[Function]:
    yield from _serve({})


@pytest.fixture(scope="module")
def grace(emulator_host: str) -> Iterator[Function]:
    """The function with `past_due` as a grace period."""
    yield from _serve({"STRIPE_ACCESS_STATUSES": "active,trialing,past_due"})


def subscription_ids(document: Mapping[str, Any]) -> dict[str, str]:
    return {key: entry["status"] for key, entry in document["subscriptions"].items()}


class TestSeveralSubscriptions:
    def test_a_late_cancellation_of_an_old_subscription_keeps_access(
        self, function: Function
    ) -> None:
        """The user has an old subscription and a new one; the old one's cancellation
        arrives late, after the new one is active: access stays, from the new one."""
        life = Life()
        function.deliver(
            life.customer_event("created", T0, life.user),
            life.subscription_event("created", "old", "active", T0 + 10, price="basic"),
            life.subscription_event("created", "new", "active", T0 + 200, price="pro"),
        )
        function.deliver(
            life.subscription_event("deleted", "old", "canceled", T0 + 100, price="basic")
        )
        access = function.user(life.user)
        assert access["active"] is True
        assert subscription_ids(access) == {
            life.id("sub", "old"): "canceled",
            life.id("sub", "new"): "active",
        }
        assert access["active_price_ids"] == [life.id("price", "pro")]
        assert access["active_product_ids"] == [life.id("prod", "pro")]
        assert access["customers"] == [life.customer]
        entry = access["subscriptions"][life.id("sub", "new")]
        assert entry["customer"] == life.customer
        assert entry["current_period_end"] == T0 + MONTH
        assert entry["cancel_at_period_end"] is False
        assert entry["price_ids"] == [life.id("price", "pro")]
        assert entry["product_ids"] == [life.id("prod", "pro")]

    def test_a_late_update_of_the_canceled_one_does_not_bring_it_back(
        self, function: Function
    ) -> None:
        life = Life()
        function.deliver(
            life.customer_event("created", T0, life.user),
            life.subscription_event("deleted", "one", "canceled", T0 + 100),
            life.subscription_event("updated", "one", "active", T0 + 50),
        )
        access = function.user(life.user)
        assert access["active"] is False
        assert subscription_ids(access) == {life.id("sub", "one"): "canceled"}


class TestPayments:
    def test_a_failed_then_successful_payment_grants_access(self, function: Function) -> None:
        """incomplete with a failed first payment, then paid: active, whatever order the
        invoice's events come in around the subscription's."""
        life = Life()
        function.deliver(
            life.customer_event("created", T0, life.user),
            life.subscription_event("created", "one", "incomplete", T0 + 10),
            life.invoice_event("paid", "paid", T0 + 30),
            life.subscription_event("updated", "one", "active", T0 + 30),
            life.invoice_event("payment_failed", "open", T0 + 20),  # late
        )
        assert function.user(life.user)["active"] is True
        assert function.customer(life.customer)["active"] is True


class TestStatuses:
    def _life(self, function: Function) -> tuple[Life, list[bool]]:
        life = Life()
        function.deliver(life.customer_event("created", T0, life.user))
        seen = []
        for at, kind, status in (
            (T0 + 10, "created", "trialing"),
            (T0 + 20, "updated", "active"),
            (T0 + 30, "updated", "past_due"),
            (T0 + 40, "deleted", "canceled"),
        ):
            function.deliver(life.subscription_event(kind, "one", status, at))
            seen.append(function.user(life.user)["active"])
        return life, seen

    def test_trial_active_past_due_canceled(self, function: Function) -> None:
        """By default past_due grants nothing."""
        _, seen = self._life(function)
        assert seen == [True, True, False, False]

    def test_past_due_as_a_grace_period(self, grace: Function) -> None:
        """With STRIPE_ACCESS_STATUSES=active,trialing,past_due, past_due keeps access."""
        _, seen = self._life(grace)
        assert seen == [True, True, True, False]


class TestFeatures:
    def test_an_entitlement_summary_replaces_the_features(self, function: Function) -> None:
        """Each summary carries the full list: the newest replaces, a late older one is
        ignored."""
        life = Life()
        function.deliver(
            life.customer_event("created", T0, life.user),
            life.subscription_event("created", "one", "active", T0 + 10),
            life.entitlements_event(T0 + 20, "seats", "export"),
        )
        assert function.user(life.user)["features"] == ["export", "seats"]
        function.deliver(life.entitlements_event(T0 + 40, "seats"))
        function.deliver(life.entitlements_event(T0 + 30, "seats", "export", "api"))  # late
        assert function.user(life.user)["features"] == ["seats"]
        assert function.customer(life.customer)["features"] == ["seats"]

    def test_product_metadata_lists_the_features_without_entitlements(
        self, function: Function
    ) -> None:
        life = Life()
        function.deliver(
            life.product_event("pro", "export, seats", T0),
            life.customer_event("created", T0, life.user),
            life.subscription_event("created", "one", "active", T0 + 10),
        )
        assert function.user(life.user)["features"] == ["export", "seats"]
        function.deliver(life.subscription_event("deleted", "one", "canceled", T0 + 20))
        assert function.user(life.user)["features"] == []


class TestLinks:
    def test_a_customer_linked_after_its_subscription_started(self, function: Function) -> None:
        """The subscription's events come before the customer names its user: kept by
        customer, then the user's access appears with the link."""
        life = Life()
        function.deliver(
            life.customer_event("created", T0),
            life.subscription_event("created", "one", "active", T0 + 10),
        )
        unlinked = function.customer(life.customer)
        assert unlinked["active"] is True
        assert unlinked["app_user_id"] is None
        assert function.db.collection("user_access").document(life.user).get().exists is False
        function.deliver(life.customer_event("updated", T0 + 20, life.user))
        access = function.user(life.user)
        assert access["active"] is True
        assert access["customers"] == [life.customer]
        assert function.customer(life.customer)["app_user_id"] == life.user

    def test_a_checkout_session_links_its_customer(self, function: Function) -> None:
        """A customer created by Checkout, without metadata: the session's
        client_reference_id names the user."""
        life = Life()
        function.deliver(
            life.customer_event("created", T0),
            life.subscription_event("created", "one", "active", T0 + 10),
            life.checkout_event(T0 + 11, life.user),
        )
        assert function.user(life.user)["active"] is True
        assert function.customer(life.customer)["app_user_id"] == life.user

    def test_a_customer_relinked_to_another_user(self, function: Function) -> None:
        """Changing the metadata moves the access: the old user keeps nothing of it."""
        life = Life()
        function.deliver(
            life.customer_event("created", T0, life.user),
            life.subscription_event("created", "one", "active", T0 + 10),
            life.customer_event("updated", T0 + 20, life.other_user),
        )
        old, new = function.user(life.user), function.user(life.other_user)
        assert old["active"] is False
        assert old["subscriptions"] == {}
        assert old["customers"] == []
        assert new["active"] is True
        assert new["customers"] == [life.customer]
        function.deliver(life.customer_event("updated", T0 + 30))  # metadata removed
        assert function.user(life.other_user)["active"] is False
        assert function.customer(life.customer)["app_user_id"] is None
        assert function.customer(life.customer)["active"] is True

    def test_two_customers_of_one_user(self, function: Function) -> None:
        """One user, two customers (two Stripe accounts' worth of history): the access is
        across both; canceling one customer's subscription keeps the other's."""
        life = Life()
        second = life.id("cus", "b")
        function.deliver(
            life.customer_event("created", T0, life.user),
            life.customer_event("created", T0, life.user, customer=second),
            life.subscription_event("created", "one", "active", T0 + 10),
            life.subscription_event("created", "two", "active", T0 + 10, customer=second),
            life.subscription_event("deleted", "one", "canceled", T0 + 20),
        )
        access = function.user(life.user)
        assert access["customers"] == sorted([life.customer, second])
        assert access["active"] is True
        assert access["subscriptions"][life.id("sub", "two")]["customer"] == second

    def test_a_deleted_customer_grants_nothing(self, function: Function) -> None:
        life = Life()
        function.deliver(
            life.customer_event("created", T0, life.user),
            life.subscription_event("created", "one", "active", T0 + 10),
            life.customer_event("deleted", T0 + 20, life.user),
        )
        assert function.user(life.user)["active"] is False


class TestAHotCustomer:
    def test_many_subscriptions_of_one_customer_at_once(self, function: Function) -> None:
        """24 subscriptions of one linked customer change at the same moment, 16 at a time:
        the access is read without a lock and written with a precondition, so every
        delivery settles and no entry is lost."""
        life = Life()
        function.deliver(life.customer_event("created", T0, life.user))
        events = [
            life.subscription_event("created", f"s{n}", "active", T0 + 10, price=f"p{n}")
            for n in range(24)
        ]
        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(function.server.deliver_until_settled, events))
        elapsed = time.monotonic() - started
        print(f"\n[access] 24 subscriptions of one customer at once: settled in {elapsed:.2f} s")
        assert all(answer.json()["status"] == "completed" for answer in answers)
        access = function.user(life.user)
        assert len(access["subscriptions"]) == 24
        assert len(function.customer(life.customer)["subscriptions"]) == 24
        assert access["active_price_ids"] == sorted(life.id("price", f"p{n}") for n in range(24))


def _normalised(document: Mapping[str, Any], tag: str) -> Any:
    """`document` without `updated_at`, with `tag` taken out of every ID."""

    def strip(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(tag, "TAG")
        if isinstance(value, Mapping):
            return {strip(k): strip(v) for k, v in value.items() if k != "updated_at"}
        if isinstance(value, list):
            return [strip(item) for item in value]
        return value

    return strip(document)


class TestAnyOrder:
    ORDERS = 6

    def _events(self, life: Life) -> list[dict[str, Any]]:
        return [
            life.customer_event("created", T0),
            life.customer_event("updated", T0 + 5, life.user),
            life.checkout_event(T0 + 6, life.user),
            life.subscription_event("created", "one", "trialing", T0 + 10, price="basic"),
            life.subscription_event("updated", "one", "active", T0 + 20, price="basic"),
            life.subscription_event("created", "two", "active", T0 + 30, price="pro"),
            life.subscription_event(
                "updated", "two", "active", T0 + 35, price="pro", cancel_at_period_end=True
            ),
            life.subscription_event("deleted", "one", "canceled", T0 + 40, price="basic"),
            life.invoice_event("payment_failed", "open", T0 + 25),
            life.invoice_event("paid", "paid", T0 + 26),
            life.entitlements_event(T0 + 31, "export", "seats"),
            life.entitlements_event(T0 + 41, "seats"),
        ]

    def test_duplicate_and_shuffled_deliveries_end_at_one_document(
        self, function: Function
    ) -> None:
        """The same life delivered in shuffled orders, each event twice: the user's and
        the customer's documents are the same in every order (and what the life says)."""
        randomness = random.Random(12)
        finals = []
        for _ in range(self.ORDERS):
            life = Life()
            events = self._events(life)
            deliveries = events + randomness.sample(events, len(events))
            randomness.shuffle(deliveries)
            function.deliver(*deliveries)
            finals.append(
                (
                    _normalised(function.user(life.user), life.tag),
                    _normalised(function.customer(life.customer), life.tag),
                )
            )
        assert all(final == finals[0] for final in finals)
        user, customer = finals[0]
        assert user["active"] is True
        assert user["features"] == ["seats"]
        assert user["active_price_ids"] == ["price_pro_TAG"]
        assert user["subscriptions"]["sub_two_TAG"]["cancel_at_period_end"] is True
        assert user["subscriptions"]["sub_one_TAG"]["status"] == "canceled"
        assert customer["app_user_id"] == "user_alice_TAG"


class TestTheReadmesServerSnippet:
    def test_may_use_answers_from_the_document(self, function: Function) -> None:
        """The README's Python `may_use`, run as written against the function's documents."""
        readme = (ROOT / "README.md").read_text()
        (block,) = [
            b for b in re.findall(r"```python\n(.*?)```", readme, re.DOTALL) if "may_use" in b
        ]
        namespace: dict[str, Any] = {}
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
        may_use = namespace["may_use"]
        life = Life()
        function.deliver(
            life.customer_event("created", T0, life.user),
            life.subscription_event("created", "one", "active", T0 + 10),
            life.entitlements_event(T0 + 20, "export"),
        )
        assert may_use(function.db, life.user, "export") is True
        assert may_use(function.db, life.user, "api") is False
        assert may_use(function.db, life.other_user, "export") is False
        function.deliver(life.subscription_event("deleted", "one", "canceled", T0 + 30))
        assert may_use(function.db, life.user, "export") is False
