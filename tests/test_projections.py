"""The billing projections on the emulator, delivered in-process with `process_event`:
ordering rules, API shapes, ignored events, documents read without a lock and written with a
precondition, concurrency and the cost of a delivery on the wire."""

from __future__ import annotations

import copy
import itertools
import json
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from google.cloud import firestore

import handlers
from handlers.customers import CUSTOMERS
from stripe_ledger.config import Settings
from stripe_ledger.context import HandlerContext
from stripe_ledger.errors import LedgerUnavailable
from stripe_ledger.ledger import EventLedger
from stripe_ledger.outcomes import Delivery, Outcome
from stripe_ledger.pipeline import process_event
from stripe_ledger.registry import HandlerRegistry, Registration, import_handler_modules
from stripe_ledger.verify import parse_event
from tests.support import (
    SECRET,
    count_rpcs,
    ledger_record,
    make_event,
    record_decoding,
    record_rpcs,
)

pytestmark = pytest.mark.emulator

SETTINGS = Settings(webhook_secrets=(SECRET,))
T = int(time.time())  # `created` of the events whose exact times matter


@pytest.fixture(scope="module")
def registry() -> HandlerRegistry:
    """The function's own registry with the built-in projections loaded."""
    import_handler_modules(handlers.BUILTIN_MODULES)
    return handlers.registry


def fresh(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:14]}"


def deliver(db: firestore.Client, registry: HandlerRegistry, event: dict[str, Any]) -> Delivery:
    received = parse_event(json.dumps(event))
    return process_event(received, db=db, ledger=EventLedger(db, SETTINGS), registry=registry)


def deliver_until_settled(
    db: firestore.Client, registry: HandlerRegistry, event: dict[str, Any]
) -> Delivery:
    """Redeliver like Stripe while the answer is retryable (503 or 409)."""
    for _ in range(40):
        try:
            delivery = deliver(db, registry, event)
        except LedgerUnavailable:
            time.sleep(0.1)
            continue
        if delivery.outcome is not Outcome.IN_FLIGHT:
            return delivery
        time.sleep(0.1)
    raise AssertionError(f"{event['id']} not settled")


def stored(db: firestore.Client, collection: str, object_id: str) -> dict[str, Any] | None:
    return db.collection(collection).document(object_id).get().to_dict()


def subscription(sub_id: str, status: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": sub_id,
        "object": "subscription",
        "status": status,
        "customer": "cus_1",
        "cancel_at_period_end": False,
        "current_period_start": T,
        "current_period_end": T + 2_592_000,
        "items": {"object": "list", "data": [{"id": "si_1", "price": {"id": "price_1"}}]},
        **fields,
    }


def invoice(invoice_id: str, status: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": invoice_id,
        "object": "invoice",
        "status": status,
        "customer": "cus_1",
        "amount_due": 1000,
        "amount_paid": 1000 if status == "paid" else 0,
        "currency": "usd",
        **fields,
    }


def all_orders(
    db: firestore.Client,
    registry: HandlerRegistry,
    build: Callable[[str], list[dict[str, Any]]],
    collection: str,
) -> list[dict[str, Any]]:
    """Deliver the events `build(object_id)` gives in every order, each order on its own
    object; return each order's final document with the object ID taken out."""
    count = len(build("x"))
    finals = []
    for order in itertools.permutations(range(count)):
        object_id = fresh("obj")
        events = build(object_id)
        for position in order:
            assert deliver(db, registry, events[position]).outcome is Outcome.COMPLETED
        document = stored(db, collection, object_id)
        assert document is not None
        finals.append(json.loads(json.dumps(document).replace(object_id, "OBJECT")))
    return finals


class TestSameSecond:
    def test_subscription_prefers_the_state_furthest_along(
        self, db: firestore.Client, registry: HandlerRegistry
    ) -> None:
        """created (incomplete), updated (active) and updated (past_due) in one second: every
        one of the 6 orders ends at past_due, with identical documents."""

        def build(sub_id: str) -> list[dict[str, Any]]:
            return [
                make_event(
                    f"customer.subscription.{kind}",
                    subscription(sub_id, status),
                    created=T,
                    id=f"evt_{sub_id}_{name}",
                )
                for kind, status, name in (
                    ("created", "incomplete", "c"),  # event IDs in the opposite order
                    ("updated", "active", "b"),
                    ("updated", "past_due", "a"),
                )
            ]

        finals = all_orders(db, registry, build, "subscriptions")
        assert all(final == finals[0] for final in finals)
        assert finals[0]["status"] == "past_due"
        assert finals[0]["last_event_id"] == "evt_OBJECT_a"

    def test_invoice_paid_over_open_over_draft(
        self, db: firestore.Client, registry: HandlerRegistry
    ) -> None:
        """invoice.created (draft), finalized (open), paid and payment_succeeded (two events
        for one change) in one second: paid, and the same document for all 24 orders."""

        def build(invoice_id: str) -> list[dict[str, Any]]:
            return [
                make_event(
                    event_type,
                    invoice(invoice_id, status),
                    created=T,
                    id=f"evt_{invoice_id}_{name}",  # IDs not in lifecycle order
                )
                for event_type, status, name in (
                    ("invoice.created", "draft", "y"),
                    ("invoice.finalized", "open", "z"),
                    ("invoice.paid", "paid", "b"),
                    ("invoice.payment_succeeded", "paid", "c"),
                )
            ]

        finals = all_orders(db, registry, build, "invoices")
        assert all(final == finals[0] for final in finals)
        assert (finals[0]["status"], finals[0]["amount_paid"]) == ("paid", 1000)
        # The two `paid` events carry the same invoice: the larger event ID holds it.
        assert finals[0]["last_event_id"] == "evt_OBJECT_c"

    def test_same_stage_goes_to_the_larger_event_id(
        self, db: firestore.Client, registry: HandlerRegistry
    ) -> None:
        """Two customer updates in one second: the larger event ID wins in both orders."""

        def build(customer_id: str) -> list[dict[str, Any]]:
            return [
                make_event(
                    "customer.updated",
                    {"id": customer_id, "object": "customer", "name": name},
                    created=T,
                    id=f"evt_{customer_id}_{name}",
                )
                for name in ("b", "a")
            ]

        finals = all_orders(db, registry, build, "customers")
        assert [final["name"] for final in finals] == ["b", "b"]
        assert finals[0] == finals[1]


class TestDeletion:
    def test_deleted_then_late_update_stays_deleted(
        self, db: firestore.Client, registry: HandlerRegistry
    ) -> None:
        """A deletion is final: a later-arriving update, even one with a newer `created`,
        neither resurrects the object nor rewrites the document."""
        sub_id = fresh("sub")
        deleted = make_event(
            "customer.subscription.deleted", subscription(sub_id, "canceled"), created=T
        )
        late = make_event(
            "customer.subscription.updated", subscription(sub_id, "active"), created=T - 10
        )
        newer = make_event(
            "customer.subscription.updated", subscription(sub_id, "active"), created=T + 10
        )
        deliver(db, registry, deleted)
        ref = db.collection("subscriptions").document(sub_id)
        written = ref.get().update_time
        for event in (late, newer):
            assert deliver(db, registry, event).outcome is Outcome.COMPLETED
        snapshot = ref.get()
        assert snapshot.update_time == written
        assert snapshot.get("deleted") is True
        assert (snapshot.get("status"), snapshot.get("last_event_id")) == (
            "canceled",
            deleted["id"],
        )

    def test_sparse_deleted_customer(self, db: firestore.Client, registry: HandlerRegistry) -> None:
        """customer.deleted carrying only `{id, deleted: true}` after an update: deleted, with
        Stripe's (absent, so null) fields."""
        customer_id = fresh("cus")
        updated = make_event(
            "customer.updated",
            {"id": customer_id, "object": "customer", "email": "a@example.com"},
            created=T,
        )
        deleted = make_event(
            "customer.deleted",
            {"id": customer_id, "object": "customer", "deleted": True},
            created=T,
        )
        for event in (updated, deleted, updated | {"id": f"{updated['id']}x"}):
            deliver(db, registry, event)
        document = stored(db, "customers", customer_id)
        assert document is not None
        assert (document["deleted"], document["email"]) == (True, None)


class TestStorage:
    def test_a_metadata_key_firestore_reserves_does_not_fail_the_event(
        self, db: firestore.Client, registry: HandlerRegistry
    ) -> None:
        """Stripe allows a metadata key like `__internal__`, Firestore does not: the event
        completes and the key is stored with a `~` appended."""
        customer_id = fresh("cus")
        event = make_event(
            "customer.created",
            {"id": customer_id, "object": "customer", "metadata": {"__internal__": "1"}},
        )
        assert deliver(db, registry, event).outcome is Outcome.COMPLETED
        document = stored(db, "customers", customer_id)
        assert document is not None
        assert document["metadata"] == {"__internal__~": "1"}
        assert document["object"]["metadata"] == {"__internal__~": "1"}

    def test_objects_beyond_firestore_limits_are_adapted_not_failed(
        self, db: firestore.Client, registry: HandlerRegistry
    ) -> None:
        """A 200-level-deep object and one larger than a Firestore document still complete:
        the deep part is stored as JSON text, the oversized field is left out and named."""
        deep: dict[str, Any] = {"leaf": True}
        for _ in range(200):
            deep = {"n": deep}
        deep_id, huge_id = fresh("pi"), fresh("pi")
        for obj in (
            {"id": deep_id, "object": "payment_intent", "status": "succeeded", "nested": deep},
            {"id": huge_id, "object": "payment_intent", "status": "succeeded", "blob": "x" * 2**20},
        ):
            event = make_event("payment_intent.succeeded", obj)
            assert deliver(db, registry, event).outcome is Outcome.COMPLETED
            # A later event reads the stored document back.
            later = make_event("payment_intent.succeeded", obj, created=event["created"] + 1)
            assert deliver(db, registry, later).outcome is Outcome.COMPLETED
        deep_document, huge_document = (
            stored(db, "payments", deep_id),
            stored(db, "payments", huge_id),
        )
        assert deep_document is not None
        assert huge_document is not None
        assert deep_document["status"] == huge_document["status"] == "succeeded"
        assert "blob" not in huge_document["object"]
        assert huge_document["object_omitted"] == ["blob"]


class TestUpdateBeforeCreate:
    def test_update_creates_the_document_and_the_late_create_is_ignored(
        self, db: firestore.Client, registry: HandlerRegistry
    ) -> None:
        customer_id = fresh("cus")
        created = make_event(
            "customer.created",
            {"id": customer_id, "object": "customer", "email": "old@example.com"},
            created=T,
        )
        updated = make_event(
            "customer.updated",
            {"id": customer_id, "object": "customer", "email": "new@example.com"},
            created=T + 1,
        )
        deliver(db, registry, updated)
        document = stored(db, "customers", customer_id)
        assert document is not None
        assert document["email"] == "new@example.com"
        assert document["deleted"] is False
        assert deliver(db, registry, created).outcome is Outcome.COMPLETED
        assert stored(db, "customers", customer_id) == document


class TestApiShapes:
    def test_old_and_new_subscription_shapes(
        self, db: firestore.Client, registry: HandlerRegistry
    ) -> None:
        """2020-08-27 (periods on the subscription, `plan` items) and 2025-03-31.basil
        (periods on the items) project the same fields."""
        old_id, new_id = fresh("sub"), fresh("sub")
        old = subscription(
            old_id,
            "active",
            quantity=2,
            items={"object": "list", "data": [{"id": "si", "plan": {"id": "plan_gold"}}]},
        )
        new = subscription(new_id, "active")
        del new["current_period_start"], new["current_period_end"]
        new["items"]["data"][0].update(
            current_period_start=T, current_period_end=T + 86_400, quantity=4
        )
        deliver(db, registry, make_event("customer.subscription.created", old))
        deliver(
            db,
            registry,
            make_event("customer.subscription.created", new, api_version="2025-03-31.basil"),
        )
        old_document, new_document = (
            stored(db, "subscriptions", old_id),
            stored(db, "subscriptions", new_id),
        )
        assert old_document is not None
        assert new_document is not None
        assert (old_document["price_ids"], old_document["quantity"]) == (["plan_gold"], 2)
        assert old_document["current_period_end"] == T + 2_592_000
        assert (new_document["price_ids"], new_document["quantity"]) == (["price_1"], 4)
        assert (new_document["current_period_start"], new_document["current_period_end"]) == (
            T,
            T + 86_400,
        )

    def test_old_and_new_invoice_shapes(
        self, db: firestore.Client, registry: HandlerRegistry
    ) -> None:
        old_id, new_id = fresh("in"), fresh("in")
        old = invoice(old_id, "paid", subscription="sub_old")
        new = invoice(
            new_id,
            "paid",
            parent={
                "type": "subscription_details",
                "quote_details": None,
                "subscription_details": {"subscription": "sub_new", "metadata": {}},
            },
        )
        deliver(db, registry, make_event("invoice.paid", old))
        deliver(db, registry, make_event("invoice.paid", new, api_version="2025-03-31.basil"))
        old_document, new_document = stored(db, "invoices", old_id), stored(db, "invoices", new_id)
        assert old_document is not None
        assert new_document is not None
        assert old_document["subscription"] == "sub_old"
        assert new_document["subscription"] == "sub_new"


class TestIgnored:
    @pytest.mark.parametrize(
        ("event_type", "obj"),
        [
            ("invoice.upcoming", {"object": "invoice", "amount_due": 100}),
            ("charge.dispute.closed", {"object": "dispute", "status": "won"}),
            ("customer.discount.created", {"object": "discount", "coupon": {"id": "c"}}),
            ("invoice.sent", {"id": "in_sent", "object": "invoice"}),
        ],
    )
    def test_recorded_ignored_with_no_document(
        self, db: firestore.Client, registry: HandlerRegistry, event_type: str, obj: dict[str, Any]
    ) -> None:
        """Objects without an ID and types outside the table: `ignored`, nothing projected."""
        event = make_event(event_type, obj)
        assert deliver(db, registry, event).outcome is Outcome.IGNORED
        record = ledger_record(db, event["id"])
        assert record is not None
        assert record["status"] == "ignored"
        assert [c.id for c in db.collections()] == ["stripe_events"]


class TestEfficiency:
    def test_first_delivery_costs_two_calls(
        self, db: firestore.Client, registry: HandlerRegistry
    ) -> None:
        """A projected event's first delivery: one BatchGetDocuments (the projection
        document, without a lock), and the Commit of projection and ledger record together,
        which is also the claim (nothing was read through a transaction, so none was begun
        and the claim is deferred to the commit)."""
        counter = count_rpcs(db)
        intent = {"id": fresh("pi"), "object": "payment_intent", "status": "succeeded"}
        event = make_event("payment_intent.succeeded", intent)
        assert deliver(db, registry, event).outcome is Outcome.COMPLETED
        assert dict(counter.calls) == {"Commit": 1, "BatchGetDocuments": 1}

    def test_a_fresh_duplicate_costs_one_read(
        self, db: firestore.Client, registry: HandlerRegistry
    ) -> None:
        """A duplicate of a settled event younger than the redelivery age: its record is read
        with the documents it would edit, and it stops there, before any handler runs: one
        call, nothing written."""
        intent = {"id": fresh("pi"), "object": "payment_intent", "status": "succeeded"}
        event = make_event("payment_intent.succeeded", intent)
        assert deliver(db, registry, event).outcome is Outcome.COMPLETED
        counter = count_rpcs(db)
        assert deliver(db, registry, event).outcome is Outcome.DUPLICATE
        assert dict(counter.calls) == {"BatchGetDocuments": 1}

    @pytest.mark.parametrize("age", [0, 3600], ids=["fresh", "an-hour-old"])
    def test_a_duplicate_copies_nothing_it_read(
        self,
        db: firestore.Client,
        registry: HandlerRegistry,
        monkeypatch: pytest.MonkeyPatch,
        age: int,
    ) -> None:
        """What a duplicate reads (its record with its payload; for a fresh one also the
        projection with Stripe's object, hundreds of values each) is decoded once and judged
        where it is: the client library's deep copies (`DocumentSnapshot(...)`, `to_dict()`)
        are never made."""
        metadata = {f"key{n}": {"nested": [n, str(n)]} for n in range(50)}
        intent = {"id": fresh("pi"), "object": "payment_intent", "metadata": metadata}
        created = int(time.time()) - age
        event = make_event("payment_intent.succeeded", intent, created=created)
        assert deliver(db, registry, event).outcome is Outcome.COMPLETED
        copies: list[str] = []
        real = copy.deepcopy

        def counted(value: Any, memo: Any = None) -> Any:
            if value is not None:  # the library's constructor copies None: nothing
                copies.append("".join(traceback.format_stack(limit=4)))
            return real(value, memo)

        monkeypatch.setattr(copy, "deepcopy", counted)
        assert deliver(db, registry, event).outcome is Outcome.DUPLICATE
        assert copies == []

    def test_a_fresh_duplicate_never_decodes_the_projection_it_read(
        self, db: firestore.Client, registry: HandlerRegistry, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A fresh duplicate reads the projection along with its record, in its one call, and
        is judged from the record alone: Stripe's object in the projection, hundreds of values,
        is never decoded."""
        metadata = {f"key{n}": {"nested": [n, str(n)]} for n in range(50)}
        intent = {"id": fresh("pi"), "object": "payment_intent", "metadata": metadata}
        event = make_event("payment_intent.succeeded", intent)
        assert deliver(db, registry, event).outcome is Outcome.COMPLETED
        decoded = record_decoding(monkeypatch)
        assert deliver(db, registry, event).outcome is Outcome.DUPLICATE
        assert any("status" in fields for fields in decoded)  # the record
        assert not any("key0" in fields or "object" in fields for fields in decoded)

    def test_an_event_that_changes_access_costs_no_call_more(
        self, db: firestore.Client, registry: HandlerRegistry
    ) -> None:
        """A customer's event also reads the customer's access, in the same batch as the
        projection document, and writes it in the same commit: two calls."""
        counter = count_rpcs(db)
        event = make_event("customer.created", {"id": fresh("cus"), "email": "a@example.com"})
        assert deliver(db, registry, event).outcome is Outcome.COMPLETED
        assert dict(counter.calls) == {"Commit": 1, "BatchGetDocuments": 1}

    def test_an_event_that_changes_nothing_writes_no_projection(
        self, db: firestore.Client, registry: HandlerRegistry
    ) -> None:
        """An older event after a newer one still costs its two calls, but its commit
        holds the ledger record alone: neither the projection document nor the access is
        rewritten."""
        customer_id, now = fresh("cus"), int(time.time())  # recent: claimed without a read
        newer = make_event("customer.updated", {"id": customer_id, "name": "new"}, created=now)
        older = make_event("customer.updated", {"id": customer_id, "name": "old"}, created=now - 1)
        recorder = record_rpcs(db)
        deliver(db, registry, newer)
        assert f"customers/{customer_id}" in recorder.written()
        before = db.collection("customers").document(customer_id).get().update_time
        recorder.requests.clear()
        recorder.reset()
        assert deliver(db, registry, older).outcome is Outcome.COMPLETED
        assert recorder.total() == 2
        assert recorder.written() == [f"stripe_events/{older['id']}"]  # claimed and completed
        assert db.collection("customers").document(customer_id).get().update_time == before


class TestEditsOnTheWire:
    def test_documents_are_read_without_a_lock_and_written_with_a_precondition(
        self, db: firestore.Client, registry: HandlerRegistry
    ) -> None:
        """On the wire: the projection and the access of the subscription's customer (and the
        event's record) are read by one BatchGetDocuments outside any transaction (no lock
        for a concurrent event to wait on), and one atomic Commit writes each with a
        precondition, with the ledger record: the projection must still not exist, the
        access too (the customer has no user, so no second read follows). Nothing was read
        through a transaction, so none was begun."""
        recorder = record_rpcs(db)
        sub_id = fresh("sub")
        created = make_event("customer.subscription.created", subscription(sub_id, "active"))
        deliver(db, registry, created)
        methods = [method for method, _ in recorder.requests]
        assert methods == ["BatchGetDocuments", "Commit"]
        read, commit = recorder.requests[0][1], recorder.requests[1][1]
        assert not read.transaction
        assert not read.HasField("new_transaction")
        assert [name.rsplit("/", 2)[-2:] for name in read.documents] == [
            ["subscriptions", sub_id],
            ["customer_access", "cus_1"],
            ["stripe_events", created["id"]],  # the record, read along: a duplicate stops here
        ]
        assert not commit.transaction
        preconditions = {
            write.update.name.split("/documents/", 1)[-1]: write.current_document
            for write in commit.writes
            if write.update.name
        }
        assert f"stripe_events/{created['id']}" in preconditions  # the record, in one commit
        for path in (f"subscriptions/{sub_id}", "customer_access/cus_1"):
            assert "exists" in preconditions[path], path
            assert preconditions[path].exists is False, path

        recorder.requests.clear()
        later = subscription(sub_id, "past_due")
        deliver(
            db,
            registry,
            make_event("customer.subscription.updated", later, created=int(time.time()) + 5),
        )
        commit = recorder.requests[-1][1]
        stored_doc = db.collection("subscriptions").document(sub_id).get()
        (projection_write,) = [w for w in commit.writes if w.update.name.endswith(sub_id)]
        assert projection_write.current_document.update_time  # must not have changed since
        assert stored_doc.get("status") == "past_due"


class TestConcurrentEvents:
    """Two events for one object, in two threads, with the older one's transaction held open
    between its read and its commit while the newer one commits."""

    def _race(
        self, db: firestore.Client, project: Registration
    ) -> tuple[dict[str, Any], list[Delivery]]:
        holding, released = threading.Event(), threading.Event()
        first_attempts: set[str] = set()
        registry = HandlerRegistry()
        registry.on(
            "customer.updated", reads=project.reads, when=project.when, edits=project.edits
        )(project.handler)

        # Declaring the same edits, it runs after the projection read its document and
        # changed its working copy, before the commit; only once.
        @registry.on("customer.updated", edits=project.edits)
        def hold_the_older_open(ctx: HandlerContext) -> None:
            if ctx.object.get("name") == "older" and ctx.event_id not in first_attempts:
                first_attempts.add(ctx.event_id)
                holding.set()
                released.wait(timeout=1.0)

        customer_id = fresh("cus")
        older = make_event("customer.updated", {"id": customer_id, "name": "older"}, created=T)
        newer = make_event("customer.updated", {"id": customer_id, "name": "newer"}, created=T + 1)

        def deliver_newer() -> Delivery:
            holding.wait(timeout=10)
            try:
                return deliver_until_settled(db, registry, newer)
            finally:
                released.set()

        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(deliver_until_settled, db, registry, older)
            second = pool.submit(deliver_newer)
            deliveries = [first.result(), second.result()]
        document = stored(db, "customers", customer_id)
        assert document is not None
        return document, deliveries

    def test_the_newer_event_wins_whatever_the_interleaving(
        self, db: firestore.Client, registry: HandlerRegistry
    ) -> None:
        """The older event read the (empty) document first and wants to write after the
        newer one: its commit's precondition fails, it runs again, reads the newer state and
        writes nothing. Both events complete."""
        (project,) = registry.handlers_for("customer.updated")
        document, deliveries = self._race(db, project)
        assert [d.outcome for d in deliveries] == [Outcome.COMPLETED, Outcome.COMPLETED]
        assert document["name"] == "newer"
        assert document["last_event_created"] == T + 1

    def test_a_handler_reading_outside_the_transaction_would_lose_the_update(
        self, db: firestore.Client
    ) -> None:
        """The control for the test above: the same ordering rule, reading with a plain
        `get()` and writing without a precondition, lets the older event overwrite the newer
        one, so the race above really exercises a blind overwrite."""

        def blind(ctx: HandlerContext) -> None:
            ref = CUSTOMERS.ref(ctx)
            # Not declared with `edits=` (written with a precondition) nor `reads=` (read
            # through the transaction): no lock, no conflict.
            current = ref.get().to_dict()
            document = CUSTOMERS.document(ctx.received)
            if current is None or CUSTOMERS.order(document) > CUSTOMERS.order(current):
                ctx.tx.set(ref, document)

        document, _ = self._race(db, Registration("customer.updated", "blind", blind))
        assert document["name"] == "older"

    def test_many_events_for_one_object_at_once(
        self, db: firestore.Client, registry: HandlerRegistry
    ) -> None:
        """Six events for one subscription, delivered at the same moment from six threads
        (retrying 503s like Stripe): all complete, and the document is the greatest one's."""
        sub_id = fresh("sub")
        events = [
            make_event("customer.subscription.updated", subscription(sub_id, status), created=at)
            for status, at in (
                ("incomplete", T),
                ("active", T + 1),
                ("active", T + 1),
                ("past_due", T + 1),
                ("active", T + 2),
                ("incomplete", T - 5),
            )
        ]
        start = threading.Barrier(len(events))

        def run(event: dict[str, Any]) -> Delivery:
            start.wait()
            return deliver_until_settled(db, registry, event)

        with ThreadPoolExecutor(len(events)) as pool:
            outcomes = [d.outcome for d in pool.map(run, events)]
        assert outcomes == [Outcome.COMPLETED] * len(events)
        document = stored(db, "subscriptions", sub_id)
        assert document is not None
        assert (document["status"], document["last_event_id"]) == ("active", events[4]["id"])
        for event in events:
            record = ledger_record(db, event["id"])
            assert record is not None
            assert record["status"] == "completed"
