"""The ledger's exactly-once claims, proven on the emulator.

The concurrency tests use `test_utils.orchestrate`: two deliveries run in threads that take
turns at the `# pragma: SYNCPOINT ledger` comments in `stripe_ledger/ledger.py` and
`stripe_ledger/processing.py`, over every interleaving of those turns. Each interleaving
works on its own event, so the assertions are made per interleaving.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.cloud import firestore
from test_utils.orchestrate import orchestrate
from test_utils.system import EmulatorCreds

from stripe_ledger.config import Settings
from stripe_ledger.context import HandlerContext
from stripe_ledger.errors import LedgerUnavailable
from stripe_ledger.ledger import Claim, EventLedger, Settled, Status
from stripe_ledger.outcomes import Delivery, Outcome
from stripe_ledger.pipeline import process_event
from stripe_ledger.processing import process_claimed
from stripe_ledger.registry import HandlerRegistry
from stripe_ledger.verify import VerifiedEvent, parse_event
from tests.support import SECRET, Clock, LostAnswers, count_rpcs, make_event

pytestmark = pytest.mark.emulator

EFFECTS = "test_effects"


def settings(**overrides: Any) -> Settings:
    return Settings(webhook_secrets=(SECRET,), **overrides)


def counting_registry(
    fail: Callable[[HandlerContext], bool] = lambda ctx: False, *, claim_first: bool = False
) -> HandlerRegistry:
    """A handler that adds 1 to `test_effects/{event_id}`, with a server-side increment
    (it reads nothing, so it holds no lock), or raises when `fail(ctx)`. With `claim_first`
    it declares (empty) reads through the transaction, so its events are claimed first."""
    registry = HandlerRegistry()

    @registry.on("test.counted", reads=(lambda ctx: []) if claim_first else None)
    def count(ctx: HandlerContext) -> None:
        ctx.tx.set(
            ctx.db.collection(EFFECTS).document(ctx.event_id),
            {"count": firestore.Increment(1)},
            merge=True,
        )
        if fail(ctx):
            raise RuntimeError("handler fault")

    return registry


def effects(db: firestore.Client, event_id: str) -> int:
    snapshot = db.collection(EFFECTS).document(event_id).get()
    return int(snapshot.get("count")) if snapshot.exists else 0


def event(event_type: str = "test.counted", **extra: Any) -> VerifiedEvent:
    return parse_event(json.dumps(make_event(event_type, **extra)))


def deliver(
    db: firestore.Client, ledger: EventLedger, registry: HandlerRegistry, received: VerifiedEvent
) -> Delivery:
    return process_event(received, db=db, ledger=ledger, registry=registry)


class TestFirstDelivery:
    def test_record_fields(self, db: firestore.Client) -> None:
        """A completed event's record holds the contract's fields, and its payload as received."""
        clock = Clock()
        ledger = EventLedger(db, settings(), clock)
        received = event(account="acct_123", data={"object": {"id": "obj_1", "object": "test"}})
        delivery = deliver(db, ledger, counting_registry(), received)
        assert delivery.outcome is Outcome.COMPLETED
        record = ledger.ref(received.id).get().to_dict()
        assert record is not None
        assert record["status"] == "completed"
        assert record["attempts"] == 1
        assert record["type"] == "test.counted"
        assert record["payload"] == received.payload
        assert record["object_id"] == "obj_1"
        assert record["account"] == "acct_123"
        assert record["livemode"] is False
        assert record["api_version"] == "2024-06-20"
        assert record["last_error"] is None
        assert record["created"] == datetime.fromtimestamp(received.created, UTC)
        assert record["received_at"] == clock.now
        assert record["completed_at"] == clock.now
        assert record["expire_at"] == clock.now + timedelta(days=35)
        assert effects(db, received.id) == 1

    def test_event_without_handlers_is_recorded_ignored(self, db: firestore.Client) -> None:
        ledger = EventLedger(db, settings())
        received = event("nobody.listens")
        assert deliver(db, ledger, counting_registry(), received).outcome is Outcome.IGNORED
        record = ledger.ref(received.id).get().to_dict()
        assert record is not None
        assert (record["status"], record["attempts"]) == ("ignored", 0)

    def test_a_large_payload_is_kept_compressed(self, db: firestore.Client) -> None:
        """A body too big to sit next to the record's fields in one document is compressed."""
        from stripe_ledger.ledger import stored_payload

        ledger = EventLedger(db, settings())
        received = event(data={"object": {"id": "obj_big", "blob": "x" * 1_000_000}})
        assert deliver(db, ledger, counting_registry(), received).outcome is Outcome.COMPLETED
        record = ledger.ref(received.id).get().to_dict()
        assert record is not None
        assert record["payload"] is None
        assert stored_payload(record) == received.payload


class TestDuplicates:
    def test_a_duplicate_runs_no_handler_and_leaves_the_record(self, db: firestore.Client) -> None:
        ledger = EventLedger(db, settings())
        registry = counting_registry()
        received = event()
        deliver(db, ledger, registry, received)
        before = ledger.ref(received.id).get()
        delivery = deliver(db, ledger, registry, received)
        assert delivery.outcome is Outcome.DUPLICATE
        assert effects(db, received.id) == 1
        assert ledger.ref(received.id).get().update_time == before.update_time

    def test_a_late_duplicate_is_answered_from_one_read(self, db: firestore.Client) -> None:
        """An event older than the redelivery age is read first: a duplicate costs one RPC,
        a GetDocument (unary, cheaper for gRPC's Python than a BatchGetDocuments stream)."""
        from tests.support import count_rpcs

        ledger = EventLedger(db, settings())
        received = event(created=int(datetime.now(UTC).timestamp()) - 3600)
        deliver(db, ledger, counting_registry(), received)
        counter = count_rpcs(db)
        assert deliver(db, ledger, counting_registry(), received).outcome is Outcome.DUPLICATE
        assert dict(counter.calls) == {"GetDocument": 1}

    @pytest.mark.parametrize("status", ["completed", "ignored", "dead"])
    def test_settled_statuses_are_never_reprocessed(
        self, db: firestore.Client, status: str
    ) -> None:
        ledger = EventLedger(db, settings())
        received = event()
        ledger.ref(received.id).set({"status": status, "attempts": 1})
        assert deliver(db, ledger, counting_registry(), received).outcome is Outcome.DUPLICATE
        assert effects(db, received.id) == 0


class TestFailures:
    def test_a_failing_handler_applies_nothing_and_is_retried(self, db: firestore.Client) -> None:
        """A handler that raises: `failed` with the error, none of its writes; once the fault
        is gone, the redelivery completes with the effect once."""
        faulty = {"on": True}
        registry = counting_registry(fail=lambda ctx: faulty["on"])
        ledger = EventLedger(db, settings())
        received = event()
        first = deliver(db, ledger, registry, received)
        assert first.outcome is Outcome.FAILED
        record = ledger.ref(received.id).get().to_dict()
        assert record is not None
        assert record["status"] == "failed"
        assert record["attempts"] == 1
        assert record["last_error"].startswith("RuntimeError: handler fault (in ")
        assert effects(db, received.id) == 0

        faulty["on"] = False
        assert deliver(db, ledger, registry, received).outcome is Outcome.COMPLETED
        record = ledger.ref(received.id).get().to_dict()
        assert record is not None
        assert (record["status"], record["attempts"]) == ("completed", 2)
        assert effects(db, received.id) == 1

    def test_dead_lettered_after_max_attempts(self, db: firestore.Client) -> None:
        """The failure on attempt STRIPE_MAX_ATTEMPTS is `dead`; later deliveries run nothing."""
        registry = counting_registry(fail=lambda ctx: True)
        ledger = EventLedger(db, settings(max_attempts=3))
        received = event()
        outcomes = [deliver(db, ledger, registry, received).outcome for _ in range(4)]
        assert outcomes == [Outcome.FAILED, Outcome.FAILED, Outcome.DEAD, Outcome.DUPLICATE]
        record = ledger.ref(received.id).get().to_dict()
        assert record is not None
        assert (record["status"], record["attempts"]) == ("dead", 3)
        assert effects(db, received.id) == 0

    def test_an_outage_never_brings_an_event_closer_to_the_dead_letter(
        self, db: firestore.Client
    ) -> None:
        """Failures that say Firestore is unavailable answer 503, leave the event `failed`
        and give the attempt back: with STRIPE_MAX_ATTEMPTS=2, three outages in a row and
        then a real failure leave the event `failed` on attempt 1, not dead."""
        from google.api_core.exceptions import ServiceUnavailable

        outage = {"on": True}

        def fail(ctx: HandlerContext) -> bool:
            if outage["on"]:
                raise ServiceUnavailable("firestore is down")
            return True

        registry = counting_registry(fail=fail)
        ledger = EventLedger(db, settings(max_attempts=2))
        received = event()
        for _ in range(3):
            with pytest.raises(LedgerUnavailable):
                deliver(db, ledger, registry, received)
            record = ledger.ref(received.id).get().to_dict() or {}
            assert (record["status"], record["attempts"]) == ("failed", 0)
        outage["on"] = False
        assert deliver(db, ledger, registry, received).outcome is Outcome.FAILED
        assert ledger.ref(received.id).get().get("attempts") == 1


class TestLease:
    def test_a_live_lease_answers_in_flight(self, db: firestore.Client) -> None:
        clock = Clock()
        ledger = EventLedger(db, settings(lease_seconds=60), clock)
        received = event()
        claim = ledger.claim(received, handled=True)
        clock.advance(20)
        settled = ledger.claim(received, handled=True)
        assert isinstance(claim, Claim)
        assert claim.attempt == 1
        assert isinstance(settled, Settled)
        assert (settled.outcome, settled.retry_after) == (Outcome.IN_FLIGHT, 40)

    def test_an_expired_lease_is_taken_over(self, db: firestore.Client) -> None:
        """A claim left by a crashed delivery is taken over once its lease expires."""
        clock = Clock()
        ledger = EventLedger(db, settings(lease_seconds=60), clock)
        received = event()
        ledger.claim(received, handled=True)  # ... and the delivery crashes
        clock.advance(61)
        assert deliver(db, ledger, counting_registry(), received).outcome is Outcome.COMPLETED
        record = ledger.ref(received.id).get().to_dict()
        assert record is not None
        assert (record["status"], record["attempts"]) == ("completed", 2)
        assert "attempt 1 did not finish within its lease" in record["last_error"]
        assert effects(db, received.id) == 1

    def test_a_crash_loop_is_dead_lettered(self, db: firestore.Client) -> None:
        """An event whose every attempt crashes the process is dead-lettered, not retried
        forever."""
        clock = Clock()
        ledger = EventLedger(db, settings(lease_seconds=60, max_attempts=2), clock)
        received = event()
        for _ in range(2):
            ledger.claim(received, handled=True)
            clock.advance(61)
        settled = ledger.claim(received, handled=True)
        assert isinstance(settled, Settled)
        assert settled.outcome is Outcome.DEAD
        assert ledger.ref(received.id).get().get("status") == Status.DEAD


# Whether the handler declares reads through the transaction (none, here), so that its event
# is claimed first, or not, so that its first delivery's claim is its commit's (deferred).
CLAIMS = pytest.mark.parametrize("claim_first", [False, True], ids=["deferred", "claimed-first"])


class TestInterleavings:
    """Two deliveries of one event, over every interleaving of their syncpoints."""

    def _run(
        self,
        db: firestore.Client,
        clocks: tuple[Clock, Clock],
        redelivery_ages: tuple[int, int],
        fail: Callable[[HandlerContext], bool] = lambda ctx: False,
        clients: tuple[firestore.Client, firestore.Client] | None = None,
        claim_first: bool = False,
        **overrides: Any,
    ) -> list[tuple[str, list[Outcome | str]]]:
        registry = counting_registry(fail, claim_first=claim_first)
        base = event().data
        results: dict[int, list[Outcome | str]] = {}
        ids: dict[int, str] = {}

        def delivery(position: int) -> Callable[[], None]:
            scenarios = itertools.count()
            client = db if clients is None else clients[position]
            ledger = EventLedger(
                client,
                settings(redelivery_age_seconds=redelivery_ages[position], **overrides),
                clocks[position],
            )

            def run() -> None:
                scenario = next(scenarios)  # each delivery runs once per interleaving
                ids[scenario] = f"{base['id']}x{scenario}"
                received = parse_event(json.dumps(base | {"id": ids[scenario]}))
                try:
                    outcome: Outcome | str = deliver(client, ledger, registry, received).outcome
                except LedgerUnavailable:
                    outcome = "unavailable"
                results.setdefault(scenario, []).append(outcome)

            return run

        counts = orchestrate(delivery(0), delivery(1), name="ledger")
        assert min(counts) >= 2, counts  # both deliveries really stopped at syncpoints
        return [(ids[n], results[n]) for n in sorted(results)]

    @CLAIMS
    def test_concurrent_duplicates_apply_the_event_once(
        self, db: firestore.Client, claim_first: bool
    ) -> None:
        """Whatever the interleaving: one delivery completes, the other sees it in flight or
        done, and the effect is applied exactly once."""
        scenarios = self._run(
            db, (Clock(), Clock()), redelivery_ages=(10**6, 10**6), claim_first=claim_first
        )
        assert len(scenarios) > 10
        for event_id, outcomes in scenarios:
            assert sorted(str(o) for o in outcomes) in (
                ["Outcome.COMPLETED", "Outcome.DUPLICATE"],
                ["Outcome.COMPLETED", "Outcome.IN_FLIGHT"],
            ), (event_id, outcomes)
            assert effects(db, event_id) == 1, event_id
            assert EventLedger(db, settings()).ref(event_id).get().get("status") == "completed"

    def test_a_failure_record_never_overwrites_a_takeovers_success(
        self, db: firestore.Client
    ) -> None:
        """The first delivery's handler fails while the second one (its clock two minutes
        ahead, so it sees the first lease as expired) takes the event over and succeeds.
        The failure is recorded by a write outside the transaction, conditional on the
        claim: in no interleaving does it overwrite the takeover's `completed`, and the
        effect is applied once whenever the event completed."""
        now = datetime.now(UTC)
        scenarios = self._run(
            db,
            (Clock(now), Clock(now + timedelta(minutes=2))),
            redelivery_ages=(10**6, 0),
            fail=lambda ctx: ctx.attempt == 1,
        )
        assert len(scenarios) > 10
        for event_id, outcomes in scenarios:
            status = EventLedger(db, settings()).ref(event_id).get().get("status")
            if Outcome.COMPLETED in outcomes:
                assert status == "completed", (event_id, outcomes)
                assert effects(db, event_id) == 1
            else:
                assert status == "failed", (event_id, outcomes)
                assert effects(db, event_id) == 0


def test_a_slow_holder_cannot_commit_after_a_takeover(db: firestore.Client) -> None:
    """A delivery whose lease expired while it worked finds, at commit, that another delivery
    took the event over and completed it: its transaction fails as a whole, it answers
    in-flight, and the event's effect stays applied once."""
    now = datetime.now(UTC)
    registry = counting_registry()
    slow = EventLedger(db, settings(), Clock(now))
    late = EventLedger(db, settings(), Clock(now + timedelta(minutes=2)))
    received = event()
    claim = slow.claim(received, handled=True)
    assert isinstance(claim, Claim)
    assert deliver(db, late, registry, received).outcome is Outcome.COMPLETED
    delivery = process_claimed(received, [claim], db=db, ledger=slow, registry=registry)
    assert delivery.outcome is Outcome.IN_FLIGHT
    assert effects(db, received.id) == 1
    record = slow.ref(received.id).get().to_dict()
    assert record is not None
    assert (record["status"], record["attempts"]) == ("completed", 2)


def test_a_deferred_delivery_that_loses_the_race_reads_the_record_once(
    db: firestore.Client, project: str
) -> None:
    """A first delivery whose claim is deferred to its commit: while its handler runs, a
    duplicate completes the event. Its commit is refused (the record exists), it reads the
    record once and is judged from it, a duplicate, its handler's writes never applied."""
    received = event()
    winner = EventLedger(db, settings())
    registry = HandlerRegistry()

    @registry.on("test.counted")
    def count(ctx: HandlerContext) -> None:
        if ctx.attempt == 1 and not winner.ref(ctx.event_id).get().exists:
            assert deliver(db, winner, counting_registry(), received).outcome is Outcome.COMPLETED
        ctx.tx.set(
            ctx.db.collection(EFFECTS).document(ctx.event_id),
            {"count": firestore.Increment(1)},
            merge=True,
        )

    loser = firestore.Client(project=project, credentials=EmulatorCreds())
    counter = count_rpcs(loser)
    delivery = deliver(loser, EventLedger(loser, settings()), registry, received)
    assert delivery.outcome is Outcome.DUPLICATE
    assert dict(counter.calls) == {"Commit": 1, "GetDocument": 1}
    assert effects(db, received.id) == 1


class TestLostAnswers:
    """A claim whose write lands while its answer is lost (a timeout, a dropped connection)."""

    @CLAIMS
    def test_a_lost_create_answer_is_recognised_in_every_interleaving(
        self, db: firestore.Client, project: str, claim_first: bool
    ) -> None:
        """The first delivery's create of its record (its claim, or its deferred claim's
        commit) lands but answers DEADLINE_EXCEEDED; a duplicate arrives meanwhile. Reading
        its record back, the first delivery finds its own token and goes on holding the
        claim (or knows its commit landed): in every interleaving the effect is applied
        once, the record completes on attempt 1, and with STRIPE_MAX_ATTEMPTS=1 nothing is
        ever dead-lettered for an attempt that never ran."""
        lossy = firestore.Client(project=project, credentials=EmulatorCreds())
        lost = LostAnswers("stripe_events/")
        count_rpcs(lossy, lost)
        scenarios = TestInterleavings()._run(
            db,
            (Clock(), Clock()),
            redelivery_ages=(10**6, 10**6),
            clients=(lossy, db),
            claim_first=claim_first,
            max_attempts=1,
        )
        assert len(scenarios) > 10
        assert lost.fired, "no answer was lost: the test proves nothing"
        for event_id, outcomes in scenarios:
            assert sorted(str(o) for o in outcomes) in (
                ["Outcome.COMPLETED", "Outcome.DUPLICATE"],
                ["Outcome.COMPLETED", "Outcome.IN_FLIGHT"],
            ), (event_id, outcomes)
            assert effects(db, event_id) == 1, event_id
            record = EventLedger(db, settings()).ref(event_id).get().to_dict() or {}
            assert (record["status"], record["attempts"]) == ("completed", 1), event_id


class TestStaleHolder:
    def test_a_stale_holder_cannot_complete_a_thin_event_without_handlers(
        self, db: firestore.Client
    ) -> None:
        """`complete_without_handlers` is conditional on the claim, like `complete()`: a
        holder whose lease was taken over writes nothing, and is told the event is in
        flight."""
        now = datetime.now(UTC)
        slow = EventLedger(db, settings(), Clock(now))
        late = EventLedger(db, settings(), Clock(now + timedelta(minutes=2)))
        received = event()
        stale = slow.claim(received, handled=True)
        assert isinstance(stale, Claim)
        fresh = late.claim(received, handled=True)
        assert isinstance(fresh, Claim)
        assert slow.complete_without_handlers(stale, "stale") is Outcome.IN_FLIGHT
        record = slow.ref(received.id).get().to_dict() or {}
        assert (record["status"], record["attempts"]) == ("processing", 2)
        assert record.get("last_note") is None
