"""Projections as pure logic, without Firestore: the fields read from each API version's
shape, the total order of states, and which events a projection applies to."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

import handlers
from handlers._projection import Projection, counters, has_projectable_id, lifecycle
from handlers._storable import (
    MAX_DOCUMENT_BYTES,
    MAX_INDEX_ENTRIES,
    _too_large,
    firestore_size,
    index_entries,
    storable_document,
)
from handlers.catalog import PRICES, price_fields
from handlers.customers import CUSTOMERS
from handlers.invoices import INVOICES, invoice_fields
from handlers.subscriptions import SUBSCRIPTIONS, subscription_fields
from stripe_ledger.context import HandlerContext
from stripe_ledger.registry import HandlerRegistry, import_handler_modules
from stripe_ledger.verify import VerifiedEvent, parse_event
from tests.support import ROOT, make_event

OLD_SUBSCRIPTION: dict[str, Any] = {
    # API 2020-08-27: billing period on the subscription, prices as `plan` on each item.
    "id": "sub_old",
    "object": "subscription",
    "status": "active",
    "customer": "cus_1",
    "quantity": 3,
    "current_period_start": 1_700_000_000,
    "current_period_end": 1_702_592_000,
    "items": {"object": "list", "data": [{"id": "si_1", "plan": {"id": "plan_1"}}]},
}

NEW_SUBSCRIPTION: dict[str, Any] = {
    # API 2025-03-31.basil: periods only on the items, which carry `price`.
    "id": "sub_new",
    "object": "subscription",
    "status": "active",
    "customer": {"id": "cus_2", "object": "customer"},  # expanded
    "items": {
        "object": "list",
        "data": [
            {
                "id": "si_a",
                "price": {"id": "price_a"},
                "quantity": 2,
                "current_period_start": 1_700_000_000,
                "current_period_end": 1_731_536_000,
            },
            {
                "id": "si_b",
                "price": {"id": "price_b"},
                "quantity": 1,
                "current_period_start": 1_700_100_000,
                "current_period_end": 1_702_692_000,
            },
        ],
    },
}


def received(event_type: str, obj: dict[str, Any], **extra: Any) -> VerifiedEvent:
    return parse_event(json.dumps(make_event(event_type, obj, **extra)))


class TestSubscriptionShapes:
    def test_old_shape(self) -> None:
        """Before basil: periods and quantity from the subscription, price IDs from `plan`."""
        fields = subscription_fields(OLD_SUBSCRIPTION)
        assert fields["price_ids"] == ["plan_1"]
        assert fields["quantity"] == 3
        assert (fields["current_period_start"], fields["current_period_end"]) == (
            1_700_000_000,
            1_702_592_000,
        )
        assert fields["cancel_at"] is None  # absent in the object: null

    def test_new_shape(self) -> None:
        """From basil: periods from the items (latest start, earliest end: Stripe's own
        definition of a subscription's period, which its list filters match), price IDs from
        `price`, no single quantity for two items, an expanded customer reduced to its ID."""
        fields = subscription_fields(NEW_SUBSCRIPTION)
        assert fields["price_ids"] == ["price_a", "price_b"]
        assert fields["quantity"] is None
        assert (fields["current_period_start"], fields["current_period_end"]) == (
            1_700_100_000,
            1_702_692_000,
        )
        assert fields["customer"] == "cus_2"

    def test_one_item_gives_its_quantity_and_a_top_level_plan_is_read(self) -> None:
        single = NEW_SUBSCRIPTION | {"items": {"data": NEW_SUBSCRIPTION["items"]["data"][:1]}}
        assert subscription_fields(single)["quantity"] == 2
        ancient = {"id": "sub_x", "plan": {"id": "gold"}, "quantity": 1}
        assert subscription_fields(ancient)["price_ids"] == ["gold"]


class TestInvoiceShapes:
    def test_subscription_from_either_shape(self) -> None:
        """`invoice.subscription` (old) and `parent.subscription_details.subscription` (basil)."""
        old = {"id": "in_1", "subscription": "sub_1", "customer": "cus_1"}
        new = {
            "id": "in_2",
            "parent": {
                "type": "subscription_details",
                "subscription_details": {"subscription": "sub_2", "metadata": {}},
            },
        }
        manual = {"id": "in_3", "parent": None}
        assert invoice_fields(old)["subscription"] == "sub_1"
        assert invoice_fields(new)["subscription"] == "sub_2"
        assert invoice_fields(manual)["subscription"] is None


class TestPriceShape:
    def test_recurring_interval(self) -> None:
        recurring = {"id": "price_1", "recurring": {"interval": "month"}, "type": "recurring"}
        one_time = {"id": "price_2", "recurring": None, "type": "one_time"}
        assert price_fields(recurring)["recurring_interval"] == "month"
        assert price_fields(one_time)["recurring_interval"] is None


class TestOrder:
    def test_lifecycle_and_counters(self) -> None:
        """Stages rank in order, a tuple is one stage, unknown values rank lowest."""
        rank = lifecycle("draft", "open", ("paid", "void"))
        assert rank({"status": "draft"}) < rank({"status": "open"}) < rank({"status": "paid"})
        assert rank({"status": "paid"}) == rank({"status": "void"})
        assert rank({"status": "brand_new"}) < rank({"status": "draft"})
        assert counters("amount_refunded", "captured")({"captured": True}) == (0, 1)

    @pytest.mark.parametrize(
        ("projection", "earlier", "later"),
        [
            (SUBSCRIPTIONS, "incomplete", "active"),
            (SUBSCRIPTIONS, "trialing", "active"),
            (SUBSCRIPTIONS, "active", "past_due"),
            (SUBSCRIPTIONS, "active", "unpaid"),
            (SUBSCRIPTIONS, "past_due", "canceled"),
            (INVOICES, "draft", "open"),
            (INVOICES, "open", "paid"),
            (INVOICES, "open", "void"),
            (INVOICES, "uncollectible", "paid"),
        ],
    )
    def test_same_second_prefers_the_later_stage(
        self, projection: Projection, earlier: str, later: str
    ) -> None:
        """Within one second the state further along wins, whatever the event IDs."""
        for ids in (("evt_a", "evt_b"), ("evt_b", "evt_a")):
            first = received("x.updated", {"id": "o", "status": earlier}, id=ids[0], created=5)
            second = received("x.updated", {"id": "o", "status": later}, id=ids[1], created=5)
            assert projection.order(projection.document(first)) < projection.order(
                projection.document(second)
            )

    def test_newer_second_beats_any_stage_and_deletion_beats_everything(self) -> None:
        canceled = received("x", {"id": "o", "status": "canceled"}, created=5)
        reactivated = received("x", {"id": "o", "status": "incomplete"}, created=6)
        deleted = received("customer.subscription.deleted", {"id": "o"}, created=1)
        order = [SUBSCRIPTIONS.order(SUBSCRIPTIONS.document(e)) for e in (canceled, reactivated)]
        assert order[0] < order[1]
        assert SUBSCRIPTIONS.order(SUBSCRIPTIONS.document(deleted)) > order[1]

    def test_the_order_is_total_over_distinct_events(self) -> None:
        """No two distinct events tie, so the stored state never depends on arrival order."""
        events = [
            received("customer.updated", {"id": "c", "name": name}, created=created)
            for name, created in itertools.product("ab", (1, 1, 2))
        ]
        orders = {CUSTOMERS.order(CUSTOMERS.document(e)) for e in events}
        assert len(orders) == len(events)

    def test_deleted_field_only_where_the_family_is_deleted(self) -> None:
        """`deleted` is projected for families with deletion events, from the event type or
        from `deleted: true` in the object."""
        from handlers.payment_intents import PAYMENTS

        assert "deleted" not in PAYMENTS.document(received("payment_intent.created", {"id": "p"}))
        assert CUSTOMERS.document(received("customer.deleted", {"id": "c"}))["deleted"] is True
        sparse = received("customer.updated", {"id": "c", "deleted": True})
        assert CUSTOMERS.document(sparse)["deleted"] is True
        assert PRICES.document(received("price.updated", {"id": "p"}))["deleted"] is False


class TestStorable:
    def test_a_real_object_is_stored_unchanged(self) -> None:
        document = {"status": "active", "object": NEW_SUBSCRIPTION}
        assert storable_document(document) == document

    def test_reserved_keys_are_renamed_at_any_depth(self) -> None:
        """Keys Firestore reserves (`__x__`) get a `~`, in maps at any depth and in lists."""
        obj = {"metadata": {"__internal__": "1", "_a_": "2"}, "lines": [{"__b__": 3}], "n": 1}
        assert storable_document({"object": obj})["object"] == {
            "metadata": {"__internal__~": "1", "_a_": "2"},
            "lines": [{"__b__~": 3}],
            "n": 1,
        }

    def test_each_adapted_path_names_the_keys_as_received(self) -> None:
        """`object_adapted` names a renamed key and the keys under it by their original
        names, an empty key at the top of the document included."""
        stored = storable_document({"": {"__x__": 1}, "object": {"": {"__y__": [{"__z__": 2}]}}})
        assert stored["object_adapted"] == [
            "",
            "__x__",
            "object.",
            "object..__y__",
            "object..__y__.__z__",
        ]
        assert stored["~"] == {"__x__~": 1}

    def test_too_deep_and_nested_arrays_become_json_text(self) -> None:
        """A map at depth 20 (its fields would be at 21) and an array in an array are kept
        as their JSON text; everything shallower stays a map."""
        deep: dict[str, Any] = {"leaf": True}
        for _ in range(25):
            deep = {"n": deep}
        stored = storable_document({"object": {"nested": deep, "grid": [[1, 2], 3]}})
        level, original = stored["object"]["nested"], deep  # depth 2
        for _ in range(18):
            level, original = level["n"], original["n"]
        assert isinstance(level, str)  # depth 20
        assert json.loads(level) == original
        assert stored["object"]["grid"] == ["[1, 2]", 3]

    def test_an_oversized_object_leaves_out_its_largest_fields(self) -> None:
        obj = {"id": "cus_1", "status": "x", "blob": "x" * MAX_DOCUMENT_BYTES, "small": "y"}
        stored = storable_document({"status": "x", "object": obj})
        assert stored["object"] == {"id": "cus_1", "status": "x", "small": "y"}
        assert stored["object_omitted"] == ["blob"]

    @pytest.mark.parametrize(
        "value",
        [
            [0] * 4_400,  # the JSON text's shortest per value: 3 index entries a character
            [0] * 13_400,  # past the entries' bound of the text: counted, and too many
            {str(n): 0 for n in range(9_000)},
            "é" * 60_000,  # 2 bytes a character
            [1.5] * 30_000,
            "x" * (MAX_DOCUMENT_BYTES // 8 - 20),
        ],
    )
    def test_the_quick_bound_never_says_a_document_fits_when_it_does_not(self, value: Any) -> None:
        """Whether a document is too large is first bounded from its JSON text; the answer
        is always the exact count's."""
        document = {"object": {"v": value}}
        exact = (
            firestore_size(document) > MAX_DOCUMENT_BYTES
            or index_entries(document) > MAX_INDEX_ENTRIES
        )
        assert _too_large(document) is exact


class TestApplicability:
    @pytest.mark.parametrize(
        ("obj", "applies"),
        [
            ({"id": "in_1"}, True),
            ({"object": "invoice"}, False),  # invoice.upcoming: no id
            ({"id": None}, False),
            ({"id": ""}, False),
            ({"id": "a/b"}, False),
            ({"id": "__x__"}, False),
        ],
    )
    def test_only_objects_with_a_usable_id(self, obj: dict[str, Any], applies: bool) -> None:
        assert has_projectable_id(received("invoice.updated", obj)) is applies

    def test_when_narrows_the_registrations_that_apply(self) -> None:
        """`applicable` keeps the type's registrations whose `when` accepts the event; an
        event none applies to has no handler, so the ledger records it `ignored`."""
        registry = HandlerRegistry()

        def noop(ctx: HandlerContext) -> None: ...

        def audit(ctx: HandlerContext) -> None: ...

        registry.on("invoice.*", when=has_projectable_id)(noop)
        registry.on("invoice.paid")(audit)
        with_id = received("invoice.paid", {"id": "in_1"})
        without_id = received("invoice.paid", {"object": "invoice"})
        assert [r.handler for r in registry.applicable(with_id)] == [noop, audit]
        assert [r.handler for r in registry.applicable(without_id)] == [audit]
        assert registry.applicable(received("invoice.upcoming", {"object": "invoice"})) == ()

    def test_builtin_types(self) -> None:
        """The built-in projections cover the issue's table and nothing around it."""
        import_handler_modules(handlers.BUILTIN_MODULES)
        collections = {
            "customer.created": "customers",
            "customer.subscription.trial_will_end": "subscriptions",
            "invoice.marked_uncollectible": "invoices",
            "payment_intent.partially_funded": "payments",
            "charge.expired": "charges",
            "charge.refund.updated": "refunds",
            "charge.dispute.funds_withdrawn": "disputes",
            "checkout.session.async_payment_failed": "checkout_sessions",
            "product.updated": "products",
            "price.deleted": "prices",
            "invoice_payment.paid": "invoice_payments",
            "invoice.overpaid": "invoices",
        }
        for event_type, collection in collections.items():
            names = [r.name for r in handlers.registry.handlers_for(event_type)]
            assert f"project_{collection}" in " ".join(names), event_type
        for event_type in (
            "customer.discount.created",
            "customer.source.updated",
            "customer.tax_id.created",
            "invoice.upcoming",  # registered nowhere; and its object has no id anyway
            "invoiceitem.created",
            "plan.updated",
            "charge.dispute_funds",
        ):
            names = [r.name for r in handlers.registry.handlers_for(event_type)]
            assert not any(".project_" in name for name in names), event_type


class TestDocumentation:
    def test_the_table_in_docs_lists_exactly_the_registered_types(self) -> None:
        """docs/projections.md's table of projected types matches the registry, both ways
        (`.kind` in a cell abbreviates the family of the cell's first type)."""
        import_handler_modules(handlers.BUILTIN_MODULES)
        text = (ROOT / "docs" / "projections.md").read_text()
        table = text.split("<!-- projected-types", 1)[1].split("\n\n", 1)[0]
        documented: dict[str, set[str]] = {}
        for row in table.splitlines()[3:]:
            collections, types = (cell.strip() for cell in row.split("|")[1:3])
            names = [name.strip(" `") for name in types.split(",")]
            family = names[0].rsplit(".", 1)[0]
            expanded = {family + name if name.startswith(".") else name for name in names}
            for collection in collections.replace("`", "").split(","):
                documented.setdefault(collection.strip(), set()).update(expanded)

        registered: dict[str, set[str]] = {}
        for pattern in handlers.registry.patterns():
            for registration in handlers.registry.handlers_for(pattern):
                if registration.pattern == pattern and ".project_" in registration.name:
                    collection = registration.name.rsplit(".project_", 1)[1]
                    registered.setdefault(collection, set()).add(pattern)
        assert documented == registered


class TestFirestoreSize:
    def test_sizes_follow_firestores_rules(self) -> None:
        """A string is its UTF-8 bytes + 1, a number 8, a boolean or null 1; maps add their
        keys as strings, arrays their elements."""
        assert firestore_size("é") == 3
        assert firestore_size(7) == firestore_size(7.5) == 8
        assert firestore_size(True) == firestore_size(None) == 1
        assert firestore_size({"ab": [1, 2, "x"]}) == 3 + 8 + 8 + 2

    def test_an_array_of_many_numbers_is_left_out(self) -> None:
        """Small as JSON, too large for Firestore."""
        obj = {"id": "pi_1", "numbers": [0] * 200_000, "small": "y"}
        assert len(json.dumps(obj)) < MAX_DOCUMENT_BYTES
        stored = storable_document({"status": "x", "object": obj})
        assert stored["object"] == {"id": "pi_1", "small": "y"}
        assert stored["object_omitted"] == ["numbers"]

    def test_too_many_index_entries_leave_the_field_out(self) -> None:
        obj = {"id": "pi_1", "flags": {f"k{n}": True for n in range(30_000)}}
        assert firestore_size(obj) < MAX_DOCUMENT_BYTES
        assert storable_document({"object": obj})["object_omitted"] == ["flags"]

    def test_a_projected_field_too_large_alone_is_stored_as_null(self) -> None:
        metadata = {"blob": "x" * MAX_DOCUMENT_BYTES}
        stored = storable_document({"metadata": metadata, "object": {"metadata": metadata}})
        assert stored["metadata"] is None
        assert stored["fields_omitted"] == ["metadata"]
        assert stored["object_omitted"] == ["metadata"]

    def test_what_is_adapted_is_named(self) -> None:
        obj = {"metadata": {"": "a", "__x__": "b"}, "n": 2**64, "grid": [[1]], "ok": 1}
        stored = storable_document({"object": obj})
        assert stored["object"] == {
            "metadata": {"~": "a", "__x__~": "b"},
            "n": str(2**64),
            "grid": ["[1]"],
            "ok": 1,
        }
        assert stored["object_adapted"] == [
            "object.grid",
            "object.metadata.",
            "object.metadata.__x__",
            "object.n",
        ]
