"""Every event of the current API version (`2026-10-28.endive`, tests/fixtures/stripe-openapi,
built from Stripe's OpenAPI fixtures and SDK declarations: see its README) is answered 2xx and
projected as README.md's table says, snapshot and thin events alike, against the emulator and
a local fake of Stripe's API answering what `fake_api.json` holds."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore

import handlers
from stripe_ledger.config import Settings
from stripe_ledger.outcomes import Outcome
from stripe_ledger.registry import import_handler_modules
from stripe_ledger.service import WebhookService
from tests.fake_stripe import FakeStripe
from tests.support import ROOT, SECRET, ledger_record, sign

pytestmark = pytest.mark.emulator

FOLDER = ROOT / "tests" / "fixtures" / "stripe-openapi"
ANSWERED = (Outcome.COMPLETED, Outcome.IGNORED, Outcome.DUPLICATE)

# README.md's table, written out independently of the handlers: the collection of each
# projected object type, and the types of that family that are not projected.
COLLECTION_OF = {
    "customer": "customers",
    "subscription": "subscriptions",
    "invoice": "invoices",
    "invoice_payment": "invoice_payments",
    "payment_intent": "payments",
    "charge": "charges",
    "refund": "refunds",
    "dispute": "disputes",
    "checkout.session": "checkout_sessions",
    "product": "products",
    "price": "prices",
}
NOT_PROJECTED = {"invoice.sent", "invoice.overdue", "invoice.will_be_due"}
ENTITLEMENTS = "entitlements.active_entitlement_summary.updated"
"""Not a projection: its list of features is kept in the customer's access."""


def ref(value: Any) -> Any:
    return value.get("id") if isinstance(value, Mapping) else value


def items(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list((obj.get("items") or {}).get("data") or [])


def deleted(obj: Mapping[str, Any], event_type: str) -> bool:
    return event_type.endswith(".deleted") or obj.get("deleted") is True


def subscription(obj: Mapping[str, Any], event_type: str) -> dict[str, Any]:
    starts = [item["current_period_start"] for item in items(obj)]
    ends = [item["current_period_end"] for item in items(obj)]
    quantity = items(obj)[0].get("quantity") if len(items(obj)) == 1 else None
    return {
        "status": obj.get("status"),
        "customer": ref(obj.get("customer")),
        "customer_account": obj.get("customer_account"),
        "price_ids": [item["price"]["id"] for item in items(obj)],
        "quantity": obj.get("quantity", quantity),
        # Stripe's own period of a subscription: latest item start, earliest item end.
        "current_period_start": max(starts) if starts else None,
        "current_period_end": min(ends) if ends else None,
        "cancel_at_period_end": obj.get("cancel_at_period_end"),
        "cancel_at": obj.get("cancel_at"),
        "canceled_at": obj.get("canceled_at"),
        "trial_end": obj.get("trial_end"),
        "deleted": deleted(obj, event_type),
    }


def invoice(obj: Mapping[str, Any], event_type: str) -> dict[str, Any]:
    details = (obj.get("parent") or {}).get("subscription_details") or {}
    return {
        "status": obj.get("status"),
        "customer": ref(obj.get("customer")),
        "customer_account": obj.get("customer_account"),
        "subscription": ref(details.get("subscription")),
        "amount_due": obj.get("amount_due"),
        "amount_paid": obj.get("amount_paid"),
        "currency": obj.get("currency"),
        "hosted_invoice_url": obj.get("hosted_invoice_url"),
        "deleted": deleted(obj, event_type),
    }


def invoice_payment(obj: Mapping[str, Any], event_type: str) -> dict[str, Any]:
    payment = obj.get("payment") or {}
    return {
        "invoice": obj.get("invoice"),
        "payment_intent": payment.get("payment_intent"),
        "charge": payment.get("charge"),
        **{
            key: obj.get(key)
            for key in ("amount_paid", "amount_requested", "currency", "status", "is_default")
        },
    }


def plain(*keys: str, refs: tuple[str, ...] = (), deletes: bool = False) -> Expected:
    def fields(obj: Mapping[str, Any], event_type: str) -> dict[str, Any]:
        found = {key: obj.get(key) for key in keys}
        found.update({key: ref(obj.get(key)) for key in refs})
        if deletes:
            found["deleted"] = deleted(obj, event_type)
        return found

    return fields


Expected = Callable[[Mapping[str, Any], str], dict[str, Any]]
EXPECTED: dict[str, Expected] = {
    "customers": plain("email", "name", "phone", "metadata", deletes=True),
    "subscriptions": subscription,
    "invoices": invoice,
    "invoice_payments": invoice_payment,
    "payments": plain(
        "status",
        "amount",
        "amount_received",
        "currency",
        "customer_account",
        refs=("customer",),
    ),
    "charges": plain(
        "status",
        "amount",
        "amount_refunded",
        "refunded",
        refs=("payment_intent", "customer"),
    ),
    "refunds": plain("status", "amount", "customer_account", refs=("charge", "payment_intent")),
    "disputes": plain("status", "amount", "reason", refs=("charge",)),
    "checkout_sessions": plain(
        "status",
        "payment_status",
        "mode",
        "customer_account",
        refs=("customer", "subscription", "payment_intent"),
    ),
    "products": plain("name", "active", deletes=True),
    "prices": lambda obj, event_type: {
        "product": ref(obj.get("product")),
        "unit_amount": obj.get("unit_amount"),
        "currency": obj.get("currency"),
        "active": obj.get("active"),
        "type": obj.get("type"),
        "recurring_interval": (obj.get("recurring") or {}).get("interval"),
        "deleted": deleted(obj, event_type),
    },
}


def snapshot_files() -> list[Path]:
    return sorted(FOLDER.glob("[0-9][0-9][0-9]_*.json"))


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    api = load(FOLDER / "fake_api.json")
    with FakeStripe() as server:
        server.serve_objects()
        for obj in api["objects"].values():
            server.put_object(obj)
        server.v2_events.update(api["events"])
        yield server


@pytest.fixture
def service(db: firestore.Client, fake: FakeStripe) -> WebhookService:
    import_handler_modules(handlers.BUILTIN_MODULES)
    settings = Settings(
        webhook_secrets=(SECRET,), stripe_api_key=fake.api_key, stripe_api_base=fake.url
    )
    return WebhookService(settings, db, handlers.registry)


def deliver(service: WebhookService, event: Mapping[str, Any]) -> Outcome:
    body = json.dumps(event)
    return service.deliver(body.encode(), sign(body)).outcome


def check_document(
    db: firestore.Client, obj: Mapping[str, Any], event_type: str, event_id: str, name: str
) -> None:
    collection = COLLECTION_OF[str(obj["object"])]
    document = db.collection(collection).document(str(obj["id"])).get().to_dict()
    assert document is not None, name
    assert document["last_event_id"] == event_id, name
    for field, value in EXPECTED[collection](obj, event_type).items():
        assert document[field] == value, (name, field)
    assert document["object"] == obj, name


class TestCurrentApiVersion:
    def test_every_snapshot_event_is_answered_and_projected(
        self, db: firestore.Client, service: WebhookService
    ) -> None:
        """All 115 snapshot events, in the folder's order (its lifecycles in order): each is
        answered 2xx; a projected one (its object of a projected family, its type not one
        left out on purpose, with an ID) writes the table's fields, read from this version's
        shapes; the entitlement summary sets its customer's features; every other is recorded
        `ignored`."""
        projected = set()
        files = snapshot_files()
        assert len(files) == 115
        for path in files:
            event = load(path)
            obj = event["data"]["object"]
            outcome = deliver(service, event)
            assert outcome in ANSWERED, path.name
            record = ledger_record(db, event["id"])
            assert record is not None, path.name
            if (
                obj.get("object") in COLLECTION_OF
                and event["type"] not in NOT_PROJECTED
                and isinstance(obj.get("id"), str)
            ):
                assert record["status"] == "completed", path.name
                check_document(db, obj, event["type"], event["id"], path.name)
                projected.add(COLLECTION_OF[obj["object"]])
            elif event["type"] == ENTITLEMENTS:  # kept in the customer's access instead
                assert record["status"] == "completed", path.name
                access = db.collection("customer_access").document(obj["customer"]).get()
                keys = [e["lookup_key"] for e in obj["entitlements"]["data"]]
                assert (access.to_dict() or {}).get("features") == sorted(keys), path.name
            else:
                assert record["status"] == "ignored", path.name
        assert projected == set(COLLECTION_OF.values())

    def test_the_variants_project_this_versions_links(
        self, db: firestore.Client, service: WebhookService
    ) -> None:
        """The link fields this version moved: an Accounts v2 customer named only through
        `customer_account`, an invoice payment linking invoice and payment intent, two items
        with different periods (Stripe's period: latest start, earliest end)."""
        for name in (
            "055_invoice_payment.paid.json",
            "073_customer.subscription.updated_two_items_different_periods.json",
            "077_invoice.paid_customer_account_only.json",
            "078_payment_intent.succeeded_customer_account_only.json",
            "044_invoice.overpaid.json",
        ):
            assert deliver(service, load(FOLDER / name)) is Outcome.COMPLETED, name
        payment = db.collection("invoice_payments").document("inpay_1a3m0JgrJiH6Hit1ouhVerp6")
        assert payment.get().to_dict() is not None
        assert (payment.get().get("invoice"), payment.get().get("payment_intent")) == (
            "in_1N3EbU6vgkyQbCxz2qd9ne5J",
            "pi_1xqdowAon2NXn0ilnQ37ZFCJ",
        )
        account_only = load(FOLDER / "077_invoice.paid_customer_account_only.json")
        obj = account_only["data"]["object"]
        document = db.collection("invoices").document(obj["id"]).get()
        assert document.get("customer") is None
        assert document.get("customer_account") == obj["customer_account"]
        assert document.get("customer_account") is not None
        two = load(FOLDER / "073_customer.subscription.updated_two_items_different_periods.json")
        sub = two["data"]["object"]
        period = db.collection("subscriptions").document(sub["id"]).get()
        assert (period.get("current_period_start"), period.get("current_period_end")) == (
            max(item["current_period_start"] for item in sub["items"]["data"]),
            min(item["current_period_end"] for item in sub["items"]["data"]),
        )

    def test_every_thin_event_fetches_and_projects_its_object(
        self, db: firestore.Client, service: WebhookService, fake: FakeStripe
    ) -> None:
        """The six thin notifications, thin-only types included (`past_due`,
        `line_item_added`: no snapshot type, projected by their related object's family),
        then the snapshot twin of one of them: each answered 2xx, each related object
        projected as the API holds it, and the twin applied once."""
        api = load(FOLDER / "fake_api.json")
        manifest = load(FOLDER / "manifest.json")
        for entry in manifest["thin"]:
            notification = load(FOLDER / entry["file"])
            assert deliver(service, notification) is Outcome.COMPLETED, entry["file"]
            obj = api["objects"][entry["path"]]
            applied_id = entry["snapshot_event"] or notification["id"]
            kind = notification["type"].removeprefix("v1.")
            check_document(db, obj, kind, applied_id, entry["file"])
        for twin in manifest["twin"]:
            assert deliver(service, load(FOLDER / twin["file"])) is Outcome.DUPLICATE
        assert len(fake.requests) == 2 * len(manifest["thin"])
