"""`stripe-ledger backfill` fills the access documents, and `stripe-ledger access show`
prints them, against the emulator and a local server speaking Stripe's list API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from google.cloud import firestore

from tests.cli_support import run_cli
from tests.fake_stripe import FakeStripe

pytestmark = pytest.mark.emulator

T0 = int(time.time()) - 86_400


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe() as server:
        server.serve_lists().serve_objects()
        yield server


def subscription(sub: str, customer: str, status: str, product: str, n: int) -> dict[str, Any]:
    item = {"id": f"si_{sub}", "price": {"id": f"price_{product}", "product": f"prod_{product}"}}
    return {
        "id": f"sub_{sub}",
        "object": "subscription",
        "customer": customer,
        "status": status,
        "created": T0 - n,
        "cancel_at_period_end": False,
        "items": {"object": "list", "data": [item | {"current_period_end": T0 + 86_400 * 30}]},
        "livemode": False,
    }


def seed_account(fake: FakeStripe) -> None:
    """Two customers of user u_1 (one by metadata, one by Checkout), one unlinked customer;
    subscriptions active, canceled and past due; products listing their features."""
    for product, features in (("pro", "export,seats"), ("basic", "export")):
        fake.put_object(
            {
                "id": f"prod_{product}",
                "object": "product",
                "created": T0 - 1000,
                "metadata": {"features": features},
                "active": True,
                "livemode": False,
            }
        )
    for n, (customer, metadata) in enumerate(
        (("cus_a", {"app_user_id": "u_1"}), ("cus_b", {}), ("cus_c", {}))
    ):
        fake.put_object(
            {
                "id": customer,
                "object": "customer",
                "created": T0 - 900 - n,
                "metadata": metadata,
                "livemode": False,
            }
        )
    for n, (sub, customer, status, product) in enumerate(
        (
            ("a1", "cus_a", "canceled", "pro"),
            ("a2", "cus_a", "active", "basic"),
            ("b1", "cus_b", "past_due", "pro"),
            ("c1", "cus_c", "active", "pro"),
        )
    ):
        fake.put_object(subscription(sub, customer, status, product, n))
    fake.put_object(
        {
            "id": "cs_b",
            "object": "checkout.session",
            "created": T0 - 800,
            "status": "complete",
            "payment_status": "paid",
            "mode": "subscription",
            "customer": "cus_b",
            "client_reference_id": "u_1",
            "livemode": False,
        }
    )


def cli(fake: FakeStripe, project: str, *args: str) -> Any:
    env = {"STRIPE_API_KEY": fake.api_key, "STRIPE_API_BASE": fake.url}
    return run_cli(*args, project=project, env=env, timeout=300)


class TestBackfillFillsAccess:
    def test_a_backfill_fills_every_users_access(
        self, project: str, db: firestore.Client, fake: FakeStripe
    ) -> None:
        """After a backfill (two subscriptions of one customer in one page, links by metadata
        and by Checkout), the access documents are what the account says."""
        seed_account(fake)
        run = cli(fake, project, "backfill", "--json")
        assert run.returncode == 0, run
        user = db.collection("user_access").document("u_1").get().to_dict()
        assert user is not None
        assert user["customers"] == ["cus_a", "cus_b"]
        assert user["active"] is True
        assert {k: v["status"] for k, v in user["subscriptions"].items()} == {
            "sub_a1": "canceled",
            "sub_a2": "active",
            "sub_b1": "past_due",
        }
        assert user["active_product_ids"] == ["prod_basic"]
        assert user["features"] == ["export"]
        unlinked = db.collection("customer_access").document("cus_c").get().to_dict()
        assert unlinked is not None
        assert unlinked["app_user_id"] is None
        assert unlinked["active"] is True
        assert unlinked["features"] == ["export", "seats"]

    def test_access_show(self, project: str, db: firestore.Client, fake: FakeStripe) -> None:
        seed_account(fake)
        assert cli(fake, project, "backfill").returncode == 0
        shown = cli(fake, project, "access", "show", "u_1", "--json")
        assert shown.returncode == 0, shown
        stored = db.collection("user_access").document("u_1").get().to_dict()
        assert stored is not None
        assert shown.json()["subscriptions"] == stored["subscriptions"]
        assert shown.json()["features"] == ["export"]
        table = cli(fake, project, "access", "show", "u_1")
        assert table.returncode == 0, table
        assert "user u_1: active" in table.stdout
        assert "sub_a2" in table.stdout
        assert "cus_b" in table.stdout
        by_customer = cli(fake, project, "access", "show", "--customer", "cus_c", "--json")
        assert by_customer.returncode == 0, by_customer
        assert by_customer.json()["customers"] == ["cus_c"]
        missing = cli(fake, project, "access", "show", "u_nobody")
        assert missing.returncode == 1
        assert "no access is recorded for user u_nobody" in missing.stderr
        both = cli(fake, project, "access", "show", "u_1", "--customer", "cus_a")
        assert both.returncode == 2
