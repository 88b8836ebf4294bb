"""`stripe-ledger backfill` against the emulator and a local server speaking Stripe's list API
(tests/fake_stripe.py): every projection ends at the API's objects, webhooks delivered during
the run end at the newest state, a killed run resumes without reading finished pages, and
dry runs, Connect accounts, rate limits and refused keys behave as documented."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google.cloud import firestore

from tests.cli_support import CLI, run_cli
from tests.fake_stripe import FakeStripe, Request
from tests.support import ROOT, SECRET, FunctionServer, make_event

pytestmark = pytest.mark.emulator

NOW = int(time.time())
"""When the module was imported: objects are created a day before it."""

# How many objects of each family the big test lists: 10,000 in all.
FAMILY_SIZES = {
    "product": 300,
    "price": 400,
    "customer": 2000,
    "subscription": 1500,
    "invoice": 1000,
    "invoice_payment": 500,
    "payment_intent": 1500,
    "charge": 1500,
    "refund": 500,
    "dispute": 300,
    "checkout.session": 500,
}
COLLECTIONS = {
    "product": "products",
    "price": "prices",
    "customer": "customers",
    "subscription": "subscriptions",
    "invoice": "invoices",
    "invoice_payment": "invoice_payments",
    "payment_intent": "payments",
    "charge": "charges",
    "refund": "refunds",
    "dispute": "disputes",
    "checkout.session": "checkout_sessions",
}
PREFIXES = {
    "product": "prod",
    "price": "price",
    "customer": "cus",
    "subscription": "sub",
    "invoice": "in",
    "invoice_payment": "inpay",
    "payment_intent": "pi",
    "charge": "ch",
    "refund": "re",
    "dispute": "dp",
    "checkout.session": "cs",
}
STATUSES = {
    "subscription": ("active", "canceled", "past_due", "trialing"),
    "invoice": ("paid", "open", "void"),
    "invoice_payment": ("paid", "open"),
    "payment_intent": ("succeeded", "requires_payment_method"),
    "charge": ("succeeded", "failed"),
    "refund": ("succeeded",),
    "dispute": ("needs_response", "won"),
    "checkout.session": ("complete", "expired"),
}


def an_object(kind: str, n: int, **fields: Any) -> dict[str, Any]:
    """A Stripe-shaped object of `kind`, the n-th of its family, created n seconds ago."""
    obj: dict[str, Any] = {
        "id": f"{PREFIXES[kind]}_{n:06d}{uuid.uuid4().hex[:6]}",
        "object": kind,
        "created": NOW - 86_400 - n,
        "livemode": False,
    }
    if kind in STATUSES:
        obj["status"] = STATUSES[kind][n % len(STATUSES[kind])]
    if kind == "customer":
        obj["email"] = f"c{n}@example.com"
    if kind == "subscription":
        obj["items"] = {"object": "list", "data": [{"price": {"id": f"price_{n % 7}"}}]}
    obj.update(fields)
    return obj


def seed(fake: FakeStripe, sizes: dict[str, int]) -> list[dict[str, Any]]:
    objects = [an_object(kind, n) for kind, count in sizes.items() for n in range(count)]
    for obj in objects:
        fake.put_object(obj)
    return objects


def backfill(fake: FakeStripe, project: str, *args: str, key: str | None = None) -> Any:
    env = {"STRIPE_API_KEY": key or fake.api_key, "STRIPE_API_BASE": fake.url}
    return run_cli("backfill", *args, project=project, env=env, timeout=600)


def list_requests(fake: FakeStripe) -> list[Request]:
    return [r for r in fake.requests if r.path.count("/") == 2 or r.path.endswith("/sessions")]


def projected(db: firestore.Client, collection: str) -> dict[str, dict[str, Any]]:
    return {s.id: s.to_dict() or {} for s in db.collection(collection).stream()}


def slowed(fake: FakeStripe) -> list[Request]:
    """Make every answer of `fake` take 0.3 s; the requests seen so far."""
    seen: list[Request] = []

    def slow_down(request: Request) -> None:
        seen.append(request)
        time.sleep(0.3)

    fake.on_request = slow_down
    return seen


def start_backfill(
    fake: FakeStripe, project: str, *args: str, stdout: int = subprocess.DEVNULL
) -> subprocess.Popen[str]:
    """`stripe-ledger backfill ARGS` started in the background, as an operator would."""
    env = {
        **os.environ,
        "GOOGLE_CLOUD_PROJECT": project,
        "STRIPE_API_KEY": fake.api_key,
        "STRIPE_API_BASE": fake.url,
    }
    return subprocess.Popen(
        [str(CLI), "backfill", *args],
        cwd=ROOT,
        env=env,
        stdout=stdout,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def wait_for(condition: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe() as server:
        server.serve_lists().serve_objects()
        yield server


class TestAWholeAccount:
    def test_ten_thousand_objects_end_as_the_api_has_them(
        self, project: str, db: firestore.Client, fake: FakeStripe
    ) -> None:
        """10,000 objects across every family: each projection document holds the API's
        object and its fields; every page is read once; nothing goes to the event ledger."""
        objects = seed(fake, FAMILY_SIZES)
        run = backfill(fake, project, "--json")
        assert run.returncode == 0, run
        report = run.json()
        assert {c["collection"]: c["outcome"] for c in report["collections"]} == {
            COLLECTIONS[kind]: "done" for kind in FAMILY_SIZES
        }
        for kind in FAMILY_SIZES:
            documents = projected(db, COLLECTIONS[kind])
            expected = {obj["id"]: obj for obj in objects if obj["object"] == kind}
            assert set(documents) == set(expected), kind
            for object_id, document in documents.items():
                assert document["object"] == expected[object_id], object_id
                assert document["last_event_id"] == "backfill"
        customer = next(obj for obj in objects if obj["object"] == "customer")
        assert projected(db, "customers")[customer["id"]]["email"] == customer["email"]
        pages = Counter(r.path for r in list_requests(fake))
        for kind, count in FAMILY_SIZES.items():
            path = "/v1/" + str(kind).replace(".", "/") + "s"
            assert pages[path] == -(-count // 100), (path, pages[path])  # each page once
        cursors = [(r.path, r.query.get("starting_after")) for r in list_requests(fake)]
        assert len(cursors) == len(set(cursors))
        assert all(r.query.get("status") == "all" for r in fake.requests_to("/v1/subscriptions"))
        assert not list(db.collection("stripe_events").limit(1).stream())


class TestWebhooksDuringTheBackfill:
    def test_the_newest_state_wins_whichever_arrives_first(
        self, project: str, db: firestore.Client, fake: FakeStripe
    ) -> None:
        """While the backfill pages customers, the function receives webhooks for some of
        them: events newer than the page read end in the projection, events older than it
        lose to the API's state, whether they arrive before or after the page is written."""
        customers = [an_object("customer", n) for n in range(450)]
        for obj in customers:
            fake.put_object(obj)
        newer = customers[::40]  # an update Stripe sends after the backfill read the page
        older = customers[5::40]  # a late delivery of an event from before the read
        server = FunctionServer(
            {"GOOGLE_CLOUD_PROJECT": project, "STRIPE_WEBHOOK_SECRET": SECRET}
        ).start()
        delivered: list[int] = []

        def deliver_mid_run(request: Request) -> None:
            if request.query.get("starting_after") and not delivered:
                delivered.append(1)
                for obj in newer:
                    event = make_event(
                        "customer.updated",
                        {**obj, "email": "new@example.com"},
                        created=int(time.time()) + 60,
                    )
                    assert server.post(event).status_code == 200
                for obj in older:
                    event = make_event(
                        "customer.updated",
                        {**obj, "email": "old@example.com"},
                        created=int(time.time()) - 3600,
                    )
                    assert server.post(event).status_code == 200

        fake.on_request = deliver_mid_run
        try:
            run = backfill(fake, project, "customers", "--workers", "1")
        finally:
            server.stop()
        assert run.returncode == 0, run
        assert delivered
        documents = projected(db, "customers")
        for obj in newer:
            assert documents[obj["id"]]["email"] == "new@example.com", obj["id"]
        for obj in older:
            assert documents[obj["id"]]["email"] == obj["email"], obj["id"]


class TestResume:
    def test_a_killed_run_resumes_without_reading_finished_pages(
        self, project: str, db: firestore.Client, fake: FakeStripe
    ) -> None:
        """The tool is SIGKILLed after a few pages; `--resume` goes on after the last page
        it wrote, reads no written page again, and ends with every object projected."""
        customers = [an_object("customer", n) for n in range(1200)]
        for obj in customers:
            fake.put_object(obj)
        slow = slowed(fake)
        process = start_backfill(fake, project, "customers", "--workers", "1")
        wait_for(lambda: len(slow) >= 5)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        fake.on_request = None
        progress = db.collection("stripe_backfill").document("platform:customers").get()
        assert progress.exists
        assert not progress.get("done")
        written_pages = int(progress.get("pages"))
        assert 1 <= written_pages < 12
        first_run = len(fake.requests_to("/v1/customers"))

        run = backfill(fake, project, "customers", "--resume", "--json")
        assert run.returncode == 0, run
        assert set(projected(db, "customers")) == {obj["id"] for obj in customers}
        second_run = fake.requests_to("/v1/customers")[first_run:]
        assert len(second_run) == 12 - written_pages  # finished pages are not read again
        again = backfill(fake, project, "customers", "--resume", "--json")
        assert again.json()["collections"][0]["outcome"] == "skipped"

    def test_ctrl_c_stops_after_the_current_page(
        self, project: str, db: firestore.Client, fake: FakeStripe
    ) -> None:
        """SIGINT ends the run after the page in hand is written: exit 1, `interrupted`, and
        the progress saved; `--resume` completes it."""
        for n in range(600):
            fake.put_object(an_object("customer", n))
        pages = slowed(fake)
        process = start_backfill(fake, project, "customers", "--json", stdout=subprocess.PIPE)
        wait_for(lambda: len(pages) >= 2)
        process.send_signal(signal.SIGINT)
        stdout, _ = process.communicate(timeout=60)
        fake.on_request = None
        assert process.returncode == 1
        [result] = json.loads(stdout)["collections"]
        assert result["outcome"] == "interrupted"
        assert 1 <= result["pages"] < 6
        run = backfill(fake, project, "customers", "--resume")
        assert run.returncode == 0, run
        assert len(projected(db, "customers")) == 600


class TestOptions:
    def test_a_dry_run_reads_and_counts_and_writes_nothing(
        self, project: str, db: firestore.Client, fake: FakeStripe
    ) -> None:
        """`--dry-run` pages every list and counts the objects; no document is written,
        not even the progress."""
        seed(fake, {"customer": 250, "price": 30})
        run = backfill(fake, project, "--dry-run", "--json")
        assert run.returncode == 0, run
        counted = {c["collection"]: c for c in run.json()["collections"]}
        assert counted["customers"]["objects"] == 250
        assert counted["customers"]["outcome"] == "counted"
        assert counted["prices"]["objects"] == 30
        for collection in ("customers", "prices", "stripe_backfill"):
            assert not list(db.collection(collection).limit(1).stream()), collection

    def test_a_connected_account_is_read_with_its_header(
        self, project: str, db: firestore.Client, fake: FakeStripe
    ) -> None:
        """`--account` sends `Stripe-Account` on every list request and records the account
        on the documents, with its own progress."""
        seed(fake, {"customer": 120})
        run = backfill(fake, project, "customers", "--account", "acct_1Connected")
        assert run.returncode == 0, run
        listed = fake.requests_to("/v1/customers")
        assert listed
        assert all(r.headers.get("stripe-account") == "acct_1Connected" for r in listed)
        documents = projected(db, "customers")
        assert len(documents) == 120
        assert {d["account"] for d in documents.values()} == {"acct_1Connected"}
        progress = db.collection("stripe_backfill").document("acct_1Connected:customers").get()
        assert progress.get("done") is True

    def test_rate_limits_and_server_errors_are_retried(
        self, project: str, db: firestore.Client, fake: FakeStripe
    ) -> None:
        """A burst of 429s and a 500 in the middle of the pages are retried with backoff; the
        run completes, and each retry is logged."""
        seed(fake, {"customer": 250})
        fake.fail(429, times=3, path="/v1/customers", headers={"Retry-After": "0"})
        fake.fail(500, times=1, path="/v1/customers")
        run = backfill(fake, project, "customers")
        assert run.returncode == 0, run
        assert len(projected(db, "customers")) == 250
        retries = [line for line in run.log_lines() if "retry" in line["message"]]
        assert len(retries) >= 4

    def test_a_refused_key_stops_with_exit_2_and_one_line(
        self, project: str, db: firestore.Client, fake: FakeStripe
    ) -> None:
        """401 from Stripe: exit 2, one CRITICAL line naming the key, nothing written."""
        seed(fake, {"customer": 10})
        run = backfill(fake, project, "customers", key="sk_test_wrong")
        assert run.returncode == 2, run
        critical = [line for line in run.log_lines() if line["severity"] == "CRITICAL"]
        assert len(critical) == 1
        assert "STRIPE_API_KEY" in critical[0]["message"]
        assert not list(db.collection("customers").limit(1).stream())

    def test_an_unknown_collection_is_a_usage_error(self, project: str, fake: FakeStripe) -> None:
        """A collection no projection holds: exit 2, naming the ones there are."""
        run = backfill(fake, project, "widgets")
        assert run.returncode == 2, run
        assert "widgets" in run.stderr
        assert "customers" in run.stderr
