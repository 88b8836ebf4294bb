"""`stripe-ledger reconcile` against a local fake of Stripe's Events API (tests/fake_stripe.py,
reached by the real `stripe` client through STRIPE_API_BASE), end to end through the console
script and the emulator.

The fake caps its pages at two events, so every run follows `has_more`/`starting_after`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from google.cloud import firestore

from tests.cli_support import CliRun, effects, project_state, record, run_cli, seed
from tests.fake_stripe import FakeStripe
from tests.support import make_event

pytestmark = pytest.mark.emulator

EVENTS = "/v1/events"


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe(page_size_cap=2) as server:
        yield server


def reconcile(fake: FakeStripe, project: str, *args: str, key: str | None = None) -> CliRun:
    env = {"STRIPE_API_KEY": key or fake.api_key, "STRIPE_API_BASE": fake.url}
    return run_cli("reconcile", *args, project=project, env=env)


def by_id(run: CliRun) -> dict[str, dict[str, Any]]:
    return {event["event_id"]: event for event in run.json()["events"]}


class TestReconcile:
    def test_missing_events_are_processed_and_present_ones_left_alone(
        self, project: str, db: firestore.Client, fake: FakeStripe
    ) -> None:
        """Of the events whose delivery did not succeed: those the ledger lacks or has not
        finished are processed once, completed ones are not touched, dead ones are only
        reported; every page is followed, and a 429 and a 500 are retried with backoff and
        reported."""
        now = int(time.time())
        missing = [make_event("test.counter", created=now - 300 + n) for n in range(3)]
        unhandled = make_event("test.unhandled", created=now - 250)
        completed = make_event("test.counter", created=now - 200)
        failed = make_event("test.counter", created=now - 150)
        dead = make_event("test.counter", created=now - 100)
        delivered = make_event("test.counter", created=now - 50)  # Stripe's delivery succeeded
        too_old = make_event("test.counter", created=now - 4 * 86400)  # before the window
        seed(db, [completed])
        seed(db, [failed], fail=True)
        seed(db, [dead], fail=True, max_attempts=1)
        for event in [*missing, unhandled, completed, failed, dead, delivered, too_old]:
            fake.add_event(event, delivered=event is delivered)
        untouched = db.collection("stripe_events").document(completed["id"]).get()
        fake.fail(429, path=EVENTS)
        fake.fail(500, path=EVENTS)

        run = reconcile(fake, project, "--json")
        assert run.returncode == 0, run
        summary = run.json()
        assert (summary["listed"], summary["pages"], summary["api_retries"]) == (7, 4, 2)
        assert summary["counts"] == {
            "ledger_status": {"missing": 4, "completed": 1, "failed": 1, "dead": 1},
            "outcomes": {"completed": 4, "ignored": 1},
        }
        results = by_id(run)
        for event in [*missing, failed]:
            assert results[event["id"]]["outcome"] == "completed"
            assert record(db, event["id"])["status"] == "completed"
            assert effects(db, event["id"]) == 1
        assert record(db, missing[0]["id"])["last_note"].startswith(
            "processed by stripe-ledger reconcile at "
        )
        assert record(db, unhandled["id"])["status"] == "ignored"
        assert results[completed["id"]]["outcome"] is None
        now_completed = db.collection("stripe_events").document(completed["id"]).get()
        assert now_completed.update_time == untouched.update_time
        assert effects(db, completed["id"]) == 1
        assert (results[dead["id"]]["outcome"], record(db, dead["id"])["status"]) == (None, "dead")
        assert delivered["id"] not in results
        assert too_old["id"] not in results
        # Oldest first, as the events happened.
        assert [e["event_id"] for e in run.json()["events"]][:3] == [e["id"] for e in missing]

        requests = fake.requests_to(EVENTS)
        assert len(requests) == 6  # 2 refused, then 4 pages
        for request in requests:
            assert request.query["delivery_success"] == "false"
            assert abs(int(request.query["created[gte]"]) - (now - 3 * 86400)) < 60
        cursors = [request.query.get("starting_after") for request in requests]
        assert cursors[:3] == [None, None, None]
        assert len(set(cursors[3:])) == 3  # each later page starts after the one before

        lines = run.log_lines()  # every stderr line is one JSON object
        retries = [line for line in lines if line["severity"] == "WARNING" and "retry" in line]
        assert [(r["http_status"], r["retry"]) for r in retries] == [(429, 1), (500, 2)]
        delays = [r["delay_s"] for r in retries]
        assert delays[1] >= delays[0] > 0  # exponential backoff
        for gap, delay in zip(
            (requests[1].at - requests[0].at, requests[2].at - requests[1].at), delays, strict=True
        ):
            assert gap >= delay * 0.95  # the tool really waited before retrying
        processed = [line for line in lines if line.get("event_id") == failed["id"]]
        assert processed[0]["status"] == "completed"
        assert processed[0]["status_before"] == "failed"
        assert {"severity", "message", "event_type", "attempt", "duration_ms"} <= set(processed[0])
        assert "2 API retries" in lines[-1]["message"]

    def test_dry_run_writes_nothing_and_all_widens_the_listing(
        self, project: str, db: firestore.Client, fake: FakeStripe
    ) -> None:
        """`--dry-run` lists and looks up, and leaves the project as it was; `--all` lists
        events whose delivery succeeded too, and processes those the ledger lacks."""
        now = int(time.time())
        missing = make_event("test.counter", created=now - 30)
        failed = make_event("test.counter", created=now - 20)
        delivered = make_event("test.counter", created=now - 10)
        seed(db, [failed], fail=True)
        for event in (missing, failed, delivered):
            fake.add_event(event, delivered=event is delivered)
        before = project_state(db)

        dry = reconcile(fake, project, "--dry-run", "--json")
        assert dry.returncode == 0, dry
        assert dry.json()["counts"]["outcomes"] == {"would_process": 2}
        assert project_state(db) == before

        everything = reconcile(fake, project, "--all", "--since", "1h", "--json")
        assert everything.returncode == 0, everything
        assert everything.json()["counts"]["outcomes"] == {"completed": 3}
        assert "delivery_success" not in fake.requests_to(EVENTS)[-1].query
        for event in (missing, failed, delivered):
            assert effects(db, event["id"]) == 1

    def test_api_failures_end_with_one_clear_line(
        self, project: str, db: firestore.Client, fake: FakeStripe
    ) -> None:
        """Retries spent: exit 1 and the last error; a refused key: exit 2. Nothing is
        written either way."""
        fake.add_event(make_event("test.counter"))
        fake.fail(503, times=10, path=EVENTS)
        spent = reconcile(fake, project, "--max-retries", "1")
        assert spent.returncode == 1, spent
        assert "list events failed after 1 retries: HTTP 503" in spent.log_lines()[-1]["message"]

        refused = reconcile(fake, project, key="sk_test_wrong")
        assert refused.returncode == 2, refused
        [line] = refused.log_lines()
        assert line["severity"] == "CRITICAL"
        assert line["message"].startswith("Stripe refused STRIPE_API_KEY: HTTP 401")
        assert project_state(db) == {}
