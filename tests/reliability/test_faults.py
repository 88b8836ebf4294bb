"""Faults under load: Firestore cut off, the process killed, a crash between commit and answer,
handlers failing at random. After Stripe-style redelivery nothing is lost and nothing doubled."""

from __future__ import annotations

import random
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore

from tests.reliability.proxy import TcpProxy
from tests.reliability.stripe_like import (
    Deliveries,
    deliver_all,
    percentile,
    post,
)
from tests.support import ROOT, SECRET, FunctionServer, make_event

pytestmark = [pytest.mark.emulator, pytest.mark.e2e, pytest.mark.reliability]

FIRESTORE_TIMEOUT = 2
UNREACHABLE_BOUND = 4 * FIRESTORE_TIMEOUT + 2  # documented in docs/reliability.md
EFFECTS = "reliability_effects"


def env(project: str, **overrides: str) -> dict[str, str]:
    return {
        "GOOGLE_CLOUD_PROJECT": project,
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "STRIPE_HANDLER_MODULES": "tests.reliability.handlers",
        "STRIPE_LEASE_SECONDS": str(12 * FIRESTORE_TIMEOUT),
        "STRIPE_FIRESTORE_TIMEOUT_SECONDS": str(FIRESTORE_TIMEOUT),
        **overrides,
    }


_KINDS = ["payment_intent.succeeded", "customer.updated", "invoice.paid", "x.unhandled"]


def mixed_event(n: int) -> dict[str, Any]:
    """The `n`th of a mix of projected and unprojected events, about an object of its own."""
    return make_event(
        _KINDS[n % len(_KINDS)], {"id": f"obj_{uuid.uuid4().hex[:16]}", "status": "open"}
    )


def mixed_events(count: int) -> list[dict[str, Any]]:
    """`count` events of the mix (`mixed_event`)."""
    return [mixed_event(n) for n in range(count)]


def assert_each_applied_once(db: firestore.Client, events: list[dict[str, Any]]) -> None:
    for event in events:
        record = db.collection("stripe_events").document(event["id"]).get()
        assert record.get("status") == "completed", (event["id"], record.to_dict())
        effect = db.collection(EFFECTS).document(event["id"]).get()
        assert effect.get("count") == 1, event["id"]


@pytest.fixture
def proxy(emulator_host: str) -> Iterator[TcpProxy]:
    tcp = TcpProxy(emulator_host)
    yield tcp
    tcp.stop()


def test_firestore_cut_mid_load(
    project: str, db: firestore.Client, proxy: TcpProxy, report: Callable[[str], None]
) -> None:
    """Firestore becomes unreachable in the middle of a load (a TCP proxy between the function
    and the emulator is cut): deliveries are answered 503 within the documented bound, never
    200 without a commit; once it is back, redelivery completes every event exactly once.
    The load (16 senders, at least 240 events) lasts until the cut is over, however fast the
    machine."""
    server = FunctionServer(env(project, FIRESTORE_EMULATOR_HOST=proxy.address), threads=16)
    server.start()
    events: list[dict[str, Any]] = []
    first_pass = Deliveries()
    cut_window: dict[str, float] = {}
    lock = threading.Lock()

    def send_until_the_cut_is_over() -> None:
        while True:
            with lock:
                if "end" in cut_window and len(events) >= 240:
                    return
                event = mixed_event(len(events))
                events.append(event)
            first_pass.add(post(server.url, event))

    def cut_after_a_while() -> None:
        time.sleep(1.0)
        cut_window["start"] = time.monotonic()
        proxy.cut()
        time.sleep(6)
        cut_window["end"] = time.monotonic()

    cutter = threading.Thread(target=cut_after_a_while)
    cutter.start()
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(lambda _: send_until_the_cut_is_over(), range(16)))
        cutter.join()
        # Before any redelivery: every event answered 200 is committed.
        accepted = {a.event_id for a in first_pass.answers if a.status == 200}
        for event_id in accepted:
            status = db.collection("stripe_events").document(event_id).get().get("status")
            assert status == "completed", event_id
        during = [
            a
            for a in first_pass.answers
            if cut_window["start"] + 0.5 <= a.started and a.started + a.latency <= cut_window["end"]
        ]
        assert during, "no delivery happened while Firestore was cut"
        assert {a.status for a in during} == {503}
        assert max(a.latency for a in during) <= UNREACHABLE_BOUND
        proxy.restore()
        retried = [e for e in events if e["id"] not in accepted]
        assert retried
        deliver_all(server.url, retried, deadline_seconds=150)
    finally:
        server.stop()
    assert_each_applied_once(db, events)
    report(
        f"cut: {len(during)} deliveries during the cut, all 503, max latency "
        f"{max(a.latency for a in during):.2f} s (bound {UNREACHABLE_BOUND} s); "
        f"{len(retried)} redelivered after restore"
    )


def test_sigkill_five_times_under_load(
    project: str, db: firestore.Client, report: Callable[[str], None]
) -> None:
    """The serving process is SIGKILLed at random moments under load, five times, and
    restarted: after Stripe-style redelivery nothing is lost and nothing doubled."""
    server = FunctionServer(env(project), threads=16).start()
    events = mixed_events(400)
    kills: list[int] = []
    done = threading.Event()
    deliveries = Deliveries()
    # Kill when a random number of deliveries has been answered, so that every kill lands
    # mid-load however fast the machine is.
    moments = sorted(random.Random(11).sample(range(20, 350), 5))

    def killer() -> None:
        for moment in moments:
            while len(deliveries.answers) < moment:
                if done.wait(0.02):
                    return
            server.kill()
            kills.append(len(deliveries.answers))
            server.start()

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        deliver_all(
            server.url,
            events,
            copies=lambda e: 2 if zlib.crc32(e["id"].encode()) % 5 == 0 else 1,
            deadline_seconds=240,
            deliveries=deliveries,
        )
    finally:
        done.set()
        thread.join()
        server.stop()
    assert len(kills) == 5
    assert 0 in deliveries.statuses()  # some deliveries really were cut by a kill
    assert_each_applied_once(db, events)
    report(
        f"kill: 5 SIGKILLs after {kills} answers; {len(deliveries.answers)} attempts for "
        f"{len(events)} events, each applied once"
    )


def test_crash_after_commit_before_answer(
    project: str, db: firestore.Client, tmp_path: Path
) -> None:
    """The instance dies after the transaction committed and before Stripe got the answer:
    the redelivery is a duplicate, answered 200, and the effect stays applied once."""
    event = make_event("payment_intent.succeeded", {"id": "pi_crash", "status": "succeeded"})
    doomed = tmp_path / "doomed"
    doomed.write_text(event["id"])
    crashing = FunctionServer(
        env(project, CRASH_AFTER_COMMIT_FILE=str(doomed), PYTHONPATH=str(ROOT)),
        source=ROOT / "tests" / "reliability" / "crash_after_commit.py",
    ).start()
    try:
        answer = post(crashing.url, event)
    finally:
        crashing.stop()
    assert answer.status == 0  # Stripe saw no answer
    assert db.collection("stripe_events").document(event["id"]).get().get("status") == "completed"

    restarted = FunctionServer(env(project)).start()
    try:
        response = restarted.post(event)
    finally:
        restarted.stop()
    assert response.status_code == 200
    assert response.json()["status"] == "duplicate"
    assert_each_applied_once(db, [event])


def test_random_handler_failures_and_poison_events(
    project: str, db: firestore.Client, report: Callable[[str], None]
) -> None:
    """A handler failing on about 10% of attempts: failures are recorded, retried, and each
    event completes once. Poison events (always failing) are dead-lettered after exactly
    STRIPE_MAX_ATTEMPTS attempts, with none of their writes applied."""
    server = FunctionServer(env(project, STRIPE_MAX_ATTEMPTS="4"), threads=8).start()
    flaky = [make_event("test.flaky", {"id": f"obj_{n}"}) for n in range(150)]
    poison = [make_event("test.poison", {"id": f"obj_p{n}"}) for n in range(5)]
    try:
        deliveries = deliver_all(server.url, flaky + poison, deadline_seconds=120)
    finally:
        server.stop()
    assert_each_applied_once(db, flaky)
    retried = [
        db.collection("stripe_events").document(e["id"]).get().to_dict() or {} for e in flaky
    ]
    failed_once = [r for r in retried if r["attempts"] > 1]
    assert failed_once, "no flaky failure happened"
    assert all(r["last_error"].startswith("RuntimeError: injected fault") for r in failed_once)
    for event in poison:
        record = db.collection("stripe_events").document(event["id"]).get().to_dict() or {}
        assert (record["status"], record["attempts"]) == ("dead", 4)
        assert "poison event" in record["last_error"]
        assert not db.collection(EFFECTS).document(event["id"]).get().exists
    failed_attempts = sum(r["attempts"] - 1 for r in retried)
    assert deliveries.statuses().count(500) == failed_attempts + 3 * len(poison)
    latencies = [a.latency for a in deliveries.answers]
    report(
        f"flaky: {len(failed_once)} of {len(flaky)} events failed at least once; "
        f"{len(poison)} poison events dead after 4 attempts; "
        f"p99 {percentile(latencies, 0.99):.3f} s"
    )
