"""The transactional outbox, in process against the emulator: enqueue in the event's
transaction, run after the commit, retries with backoff, dead letters, leases, concurrency.

Each test drives `processing.process_event` (the path of a live delivery) and
`Outbox.run_due` (the path of `stripe-ledger outbox run` and of the scheduled function) with a
clock it moves by hand, and counts executor runs in memory.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from google.cloud import firestore

from stripe_ledger.config import Settings
from stripe_ledger.context import HandlerContext
from stripe_ledger.errors import LedgerUnavailable
from stripe_ledger.ledger import EventLedger
from stripe_ledger.outbox import Outbox, TaskRun, task_id
from stripe_ledger.outcomes import Delivery, Outcome
from stripe_ledger.pipeline import process_event
from stripe_ledger.registry import HandlerRegistry
from stripe_ledger.replay import replay_event
from stripe_ledger.service import WebhookService
from stripe_ledger.verify import VerifiedEvent, parse_event
from tests.support import SECRET, Clock, count_rpcs, make_event

pytestmark = pytest.mark.emulator

EFFECTS = "test_effects"
TASKS = "stripe_tasks"


@dataclass
class Runs:
    """Every executor run the test's executors saw."""

    calls: list[TaskRun] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, run: TaskRun) -> None:
        with self.lock:
            self.calls.append(run)

    def attempts(self, key: str) -> list[int]:
        return [run.attempt for run in self.calls if run.key == key]


Executor = Callable[[TaskRun], None]


def outbox_registry(runs: Runs, executor: Executor | None = None) -> HandlerRegistry:
    """`test.outbox` writes `test_effects/{event_id}` (as a projection would, before it
    enqueues), then enqueues one `test.record` per entry of its object's `tasks` (`key`,
    `payload`), or one with the default key. `test.record` records its run, then raises on
    runs up to the payload's `fail_runs`, or runs `executor` instead when given."""
    registry = HandlerRegistry()

    @registry.on("test.outbox")
    def enqueue(ctx: HandlerContext) -> None:
        ctx.tx.set(
            ctx.db.collection(EFFECTS).document(ctx.event_id),
            {"count": firestore.Increment(1)},
            merge=True,
        )
        for spec in ctx.object.get("tasks", [{}]):
            ctx.enqueue("test.record", spec.get("payload"), key=spec.get("key"))

    @registry.task("test.record")
    def record(run: TaskRun) -> None:
        runs.record(run)
        if executor is not None:
            executor(run)
        elif run.attempt <= int(run.payload.get("fail_runs", 0)):
            raise RuntimeError(f"injected executor fault on run {run.attempt}")

    return registry


def event(*tasks: Mapping[str, Any], event_type: str = "test.outbox") -> VerifiedEvent:
    obj = {"id": "in_test", "object": "invoice", "tasks": list(tasks) or [{}]}
    return parse_event(json.dumps(make_event(event_type, obj)))


@dataclass
class World:
    """One test's Firestore, clock, settings, ledger, outbox and executor runs."""

    db: firestore.Client
    clock: Clock
    settings: Settings
    runs: Runs
    registry: HandlerRegistry

    @property
    def ledger(self) -> EventLedger:
        return EventLedger(self.db, self.settings, self.clock)

    @property
    def service(self) -> WebhookService:
        return WebhookService(self.settings, self.db, self.registry, self.clock)

    @property
    def outbox(self) -> Outbox:
        return Outbox(self.db, self.settings, self.registry, self.clock, rand=lambda: 0.0)

    def deliver(self, received: VerifiedEvent) -> Delivery:
        return process_event(received, db=self.db, ledger=self.ledger, registry=self.registry)

    def task(self, key: str) -> dict[str, Any]:
        found = self.db.collection(TASKS).document(task_id(key)).get().to_dict()
        assert found is not None, f"no task {key}"
        return found

    def tasks(self) -> list[dict[str, Any]]:
        return [s.to_dict() or {} for s in self.db.collection(TASKS).stream()]


def world(db: firestore.Client, executor: Executor | None = None, **settings: Any) -> World:
    runs = Runs()
    return World(
        db,
        Clock(),
        Settings(webhook_secrets=(SECRET,), **settings),
        runs,
        outbox_registry(runs, executor),
    )


@pytest.fixture
def w(db: firestore.Client) -> World:
    return world(db)


class TestEnqueue:
    def test_a_task_commits_with_the_event_and_runs_after_it(self, w: World) -> None:
        """The handler writes, then enqueues; the task is created with the event and its
        executor runs once in the delivery, with the default key, the payload, the event ID
        and attempt 1; the task ends `done`."""
        received = event({"payload": {"to": "a@example.com"}})
        assert w.deliver(received).outcome is Outcome.COMPLETED
        key = f"{received.id}:test.record:0"
        (run,) = w.runs.calls
        assert run == TaskRun("test.record", key, {"to": "a@example.com"}, received.id, 1)
        assert run.idempotency_key == key
        task = w.task(key)
        assert (task["status"], task["attempts"], task["task"]) == ("done", 1, "test.record")
        assert task["event_id"] == received.id
        assert task["completed_at"] == w.clock.now
        assert task["lease_expires_at"] is None
        assert task["next_attempt_at"] is None
        assert task["expire_at"] == w.clock.now + timedelta(days=w.settings.retention_days)

    def test_a_failing_event_creates_no_task(self, db: firestore.Client) -> None:
        """When a later handler raises, the transaction is rolled back with the task in it:
        nothing is created and nothing runs."""
        w = world(db)

        @w.registry.on("test.outbox")
        def fail(ctx: HandlerContext) -> None:
            raise RuntimeError("later handler fault")

        assert w.deliver(event()).outcome is Outcome.FAILED
        assert w.tasks() == []
        assert w.runs.calls == []

    def test_an_unknown_task_fails_the_event_loudly(self, w: World) -> None:
        """Enqueuing a task with no registered executor fails the handler, and the event's
        last_error says which task."""

        @w.registry.on("test.unknown")
        def enqueue_unknown(ctx: HandlerContext) -> None:
            ctx.enqueue("send_nothing")

        received = event(event_type="test.unknown")
        delivery = w.deliver(received)
        assert delivery.outcome is Outcome.FAILED
        assert delivery.error is not None
        assert delivery.error.startswith(
            "UnknownTask: no executor is registered for task 'send_nothing'"
        )
        assert w.tasks() == []

    @pytest.mark.parametrize("key", ["has space", "x" * 256, "naïve", ""])
    def test_a_key_that_cannot_be_an_idempotency_key_is_refused(self, w: World, key: str) -> None:
        """Keys are 1-255 visible ASCII characters (Stripe's Idempotency-Key): others fail
        the event."""
        assert w.deliver(event({"key": key})).outcome is Outcome.FAILED
        assert w.tasks() == []

    def test_default_keys_number_the_enqueues_of_a_task(self, w: World) -> None:
        """Two enqueues of one task with the default key are two tasks, `:0` and `:1`; the
        same explicit key twice in one event is one task."""
        received = event({}, {}, {"key": "k-1"}, {"key": "k-1"})
        assert w.deliver(received).outcome is Outcome.COMPLETED
        keys = sorted(task["key"] for task in w.tasks())
        assert keys == sorted(
            [f"{received.id}:test.record:0", f"{received.id}:test.record:1", "k-1"]
        )
        assert sorted(run.key for run in w.runs.calls) == keys

    def test_an_explicit_key_runs_once_across_events(self, w: World) -> None:
        """Stripe's two events for one change (invoice.paid and invoice.payment_succeeded)
        both enqueue `receipt:in_1`: the second finds the key done and runs nothing, while
        its own effects still apply."""
        first, second = event({"key": "receipt:in_1"}), event({"key": "receipt:in_1"})
        assert w.deliver(first).outcome is Outcome.COMPLETED
        assert w.deliver(second).outcome is Outcome.COMPLETED
        assert w.runs.attempts("receipt:in_1") == [1]
        assert w.task("receipt:in_1")["event_id"] == first.id
        for received in (first, second):
            effect = w.db.collection(EFFECTS).document(received.id).get()
            assert effect.get("count") == 1

    def test_a_key_still_pending_is_not_enqueued_again(self, w: World) -> None:
        """A key whose first run failed (pending, waiting for its retry) is left as it is by
        a second event: its attempts, error and schedule are unchanged."""
        first = event({"key": "k-pending", "payload": {"fail_runs": 5}})
        w.deliver(first)
        before = w.task("k-pending")
        w.deliver(event({"key": "k-pending"}))
        assert w.task("k-pending") == before
        assert w.runs.attempts("k-pending") == [1]

    def test_a_forced_replay_does_not_run_a_done_task_again(self, w: World) -> None:
        """`replay --force` runs the handlers again, which enqueue the same default key: it
        exists, so the executor does not run a second time."""
        received = event()
        w.deliver(received)
        replayed = replay_event(received.id, w.service, force=True)
        assert replayed.outcome == "completed"
        assert w.db.collection(EFFECTS).document(received.id).get().get("count") == 2
        assert len(w.runs.calls) == 1
        assert len(w.tasks()) == 1

    def test_the_delivery_completes_whatever_the_executor_does(self, w: World) -> None:
        """An executor that raises leaves the event completed (Stripe gets its 200) and the
        task pending, with the error, one attempt, and its next run 15-30 s away."""
        received = event({"payload": {"fail_runs": 1}})
        assert w.deliver(received).outcome is Outcome.COMPLETED
        task = w.task(f"{received.id}:test.record:0")
        assert (task["status"], task["attempts"]) == ("pending", 1)
        assert task["last_error"] == "RuntimeError: injected executor fault on run 1"
        wait = task["next_attempt_at"] - w.clock.now
        assert timedelta(seconds=15) <= wait <= timedelta(seconds=30)


class TestCost:
    def test_a_task_costs_three_calls_and_no_task_costs_none(self, w: World) -> None:
        """On the wire, an event whose handler enqueues one task makes three more Firestore
        calls than one that enqueues none: the task's read (a GetDocument without a
        lock: no transaction begins), the run's claim and its result (two Commits). Handlers
        that enqueue nothing pay nothing: their event's commit needs no transaction, and it
        is the claim too (one Commit in all)."""

        @w.registry.on("test.plain")
        def plain(ctx: HandlerContext) -> None:
            ctx.tx.set(ctx.db.collection(EFFECTS).document(ctx.event_id), {"count": 1})

        counter = count_rpcs(w.db)
        w.deliver(event(event_type="test.plain"))
        plain_calls = dict(counter.calls)
        counter.reset()
        w.deliver(event({"key": "cost"}))
        assert plain_calls == {"Commit": 1}
        assert dict(counter.calls) == {"Commit": 3, "GetDocument": 1}


class TestConcurrentDeliveries:
    def test_a_task_runs_once_when_its_event_is_delivered_five_times_at_once(
        self, w: World
    ) -> None:
        """Five deliveries of one event start together: one claims and completes it, the
        others see it in flight or done, and the executor runs exactly once."""
        received = event({"key": "once-per-key"})
        barrier = threading.Barrier(5)

        def deliver() -> Outcome:
            barrier.wait()
            return w.deliver(received).outcome

        with ThreadPoolExecutor(5) as pool:
            outcomes = list(pool.map(lambda _: deliver(), range(5)))
        assert outcomes.count(Outcome.COMPLETED) == 1, outcomes
        assert set(outcomes) <= {Outcome.COMPLETED, Outcome.IN_FLIGHT, Outcome.DUPLICATE}
        assert w.runs.attempts("once-per-key") == [1]
        assert w.task("once-per-key")["status"] == "done"

    def test_five_events_sharing_a_key_at_once_run_it_once(self, w: World) -> None:
        """Five different events enqueue one key at the same moment; their transactions
        contend on the task's document. Redelivered until settled, as Stripe would, every
        event completes and the executor runs once."""
        events = [event({"key": "receipt:shared"}) for _ in range(5)]
        barrier = threading.Barrier(5)

        def deliver(received: VerifiedEvent) -> Outcome:
            barrier.wait()
            for _ in range(20):
                try:
                    outcome = w.deliver(received).outcome
                except LedgerUnavailable:  # contention not resolved: answered 503
                    continue
                if outcome in (Outcome.COMPLETED, Outcome.DUPLICATE):
                    return outcome
            raise AssertionError(f"{received.id} never settled")

        with ThreadPoolExecutor(5) as pool:
            list(pool.map(deliver, events))
        assert w.runs.attempts("receipt:shared") == [1]
        assert len(w.tasks()) == 1
        for received in events:
            assert w.ledger.ref(received.id).get().get("status") == "completed"


class TestRetries:
    def test_an_executor_that_fails_twice_then_succeeds_runs_three_times_and_is_done(
        self, w: World
    ) -> None:
        """Run 1 (in the delivery) and run 2 fail, run 3 succeeds: three runs, each only once
        its backoff has passed (15-30 s, then 30-60 s: 30 s with this test's jitter), and the
        task ends done after 3 attempts."""
        received = event({"payload": {"fail_runs": 2}})
        key = f"{received.id}:test.record:0"
        w.deliver(received)
        assert w.outbox.run_due() == []  # not due yet
        w.clock.advance(30)
        (second,) = w.outbox.run_due()
        assert (second.outcome, second.attempt) == ("failed", 2)
        assert second.next_attempt_at == w.clock.now + timedelta(seconds=30)
        w.clock.advance(29)
        assert w.outbox.run_due() == []
        w.clock.advance(1)
        (third,) = w.outbox.run_due()
        assert (third.outcome, third.attempt) == ("done", 3)
        assert w.runs.attempts(key) == [1, 2, 3]
        task = w.task(key)
        assert (task["status"], task["attempts"]) == ("done", 3)
        assert task["last_error"] == "RuntimeError: injected executor fault on run 2"
        assert w.outbox.run_due() == []

    def test_dead_lettered_after_the_maximum_number_of_runs(self, db: firestore.Client) -> None:
        """With STRIPE_TASK_MAX_ATTEMPTS=2, an executor that always fails runs twice and the
        task is dead: no later run touches it."""
        w = world(db, task_max_attempts=2)
        received = event({"payload": {"fail_runs": 99}})
        key = f"{received.id}:test.record:0"
        w.deliver(received)
        w.clock.advance(3600)
        (last,) = w.outbox.run_due()
        assert (last.outcome, last.attempt) == ("dead", 2)
        w.clock.advance(86400)
        assert w.outbox.run_due() == []
        assert w.runs.attempts(key) == [1, 2]
        task = w.task(key)
        assert (task["status"], task["attempts"], task["next_attempt_at"]) == ("dead", 2, None)
        assert w.outbox.run_key(key).outcome == "skipped"

    def test_a_run_that_never_finished_is_run_again_after_its_lease(
        self, db: firestore.Client
    ) -> None:
        """The process dies inside the executor (SystemExit here): the task stays running
        until its lease (60 s) ends, then the next run takes it over as attempt 2."""

        def die_on_first_run(run: TaskRun) -> None:
            if run.attempt == 1:
                raise SystemExit("process killed")

        w = world(db, die_on_first_run, lease_seconds=60)
        received = event()
        key = f"{received.id}:test.record:0"
        with pytest.raises(SystemExit):
            w.deliver(received)
        assert w.ledger.ref(received.id).get().get("status") == "completed"
        assert w.task(key)["status"] == "running"
        w.clock.advance(59)
        assert w.outbox.run_due() == []
        w.clock.advance(1)
        (taken_over,) = w.outbox.run_due()
        assert (taken_over.outcome, taken_over.attempt) == ("done", 2)
        assert w.task(key)["last_error"] == (
            "run 1 did not finish within its lease (crash or timeout)"
        )
        assert w.runs.attempts(key) == [1, 2]

    def test_a_task_whose_every_run_dies_is_dead_lettered(self, db: firestore.Client) -> None:
        """A run that dies on the last allowed attempt leaves the task dead once its lease
        ends, instead of crashing every runner forever."""

        def always_die(run: TaskRun) -> None:
            raise SystemExit("process killed")

        w = world(db, always_die, lease_seconds=60, task_max_attempts=1)
        received = event()
        with pytest.raises(SystemExit):
            w.deliver(received)
        w.clock.advance(60)
        (dead,) = w.outbox.run_due()
        assert dead.outcome == "dead"
        assert w.task(f"{received.id}:test.record:0")["status"] == "dead"
        assert len(w.runs.calls) == 1


class TestClaims:
    def test_concurrent_runners_run_a_due_task_once(self, w: World) -> None:
        """Five runners (the scheduled job overlapping an operator's `outbox run`) see the
        same due task at once: the compare-and-set lets one run it."""
        received = event({"payload": {"fail_runs": 1}})
        key = f"{received.id}:test.record:0"
        w.deliver(received)
        w.clock.advance(30)
        barrier = threading.Barrier(5)

        def runner() -> list[str]:
            snapshots = w.outbox.due(10)
            barrier.wait()
            return [w.outbox.run_snapshot(s).outcome for s in snapshots]

        with ThreadPoolExecutor(5) as pool:
            outcomes = sorted(o for found in pool.map(lambda _: runner(), range(5)) for o in found)
        assert outcomes == ["done"] + ["in_flight"] * 4
        assert w.runs.attempts(key) == [1, 2]

    def test_a_run_past_its_lease_cannot_overwrite_the_takeover(self, db: firestore.Client) -> None:
        """Run 2 outlives its 60 s lease; meanwhile another runner takes the task over and
        completes it (run 3). Run 2's own result is refused by its claim's precondition: it
        reports `lease_lost`, and the task stays done by run 3."""
        holder: list[World] = []
        takeovers: list[str] = []

        def slow_second_run(run: TaskRun) -> None:
            if run.attempt == 1:
                raise RuntimeError("first run fails")
            if run.attempt == 2:
                w = holder[0]
                w.clock.advance(61)  # the lease has ended while this run works
                takeovers.extend(f"{r.outcome} {r.attempt}" for r in w.outbox.run_due())

        w = world(db, slow_second_run, lease_seconds=60)
        holder.append(w)
        received = event()
        key = f"{received.id}:test.record:0"
        w.deliver(received)
        w.clock.advance(30)
        (overtaken,) = w.outbox.run_due()
        assert takeovers == ["done 3"]
        assert (overtaken.outcome, overtaken.attempt) == ("lease_lost", 2)
        assert overtaken.error is not None
        assert "another run took the task over" in overtaken.error
        task = w.task(key)
        assert (task["status"], task["attempts"]) == ("done", 3)
        assert w.runs.attempts(key) == [1, 2, 3]

    def test_a_dry_run_writes_nothing(self, w: World) -> None:
        """`dry_run` lists the due tasks as `would_run` and changes no document."""
        received = event({"payload": {"fail_runs": 1}})
        w.deliver(received)
        w.clock.advance(30)
        before = w.tasks()
        (would,) = w.outbox.run_due(dry_run=True)
        assert (would.outcome, would.attempt) == ("would_run", 2)
        assert w.tasks() == before
        assert len(w.runs.calls) == 1

    def test_a_task_without_an_executor_here_is_left_pending(self, w: World) -> None:
        """A runner that lacks the executor (its STRIPE_HANDLER_MODULES differ) reports
        `no_executor` and leaves the task as it was, attempts uncounted."""
        received = event({"payload": {"fail_runs": 1}})
        w.deliver(received)
        w.clock.advance(30)
        bare = Outbox(w.db, w.settings, HandlerRegistry(), w.clock)
        before = w.tasks()
        (result,) = bare.run_due()
        assert result.outcome == "no_executor"
        assert not result.ok
        assert w.tasks() == before

    def test_the_run_budget_defers_the_rest(self, w: World) -> None:
        """With its deadline passed, a run starts no task: each is `deferred`, untouched."""
        for _ in range(2):
            w.deliver(event({"payload": {"fail_runs": 1}}))
        w.clock.advance(30)
        results = w.outbox.run_due(deadline=0.0)
        assert [r.outcome for r in results] == ["deferred", "deferred"]
        assert all(r.ok for r in results)
        assert len(w.runs.calls) == 2


class TestRevive:
    def test_a_dead_task_revived_runs_again_from_its_first_run(self, db: firestore.Client) -> None:
        """Once its cause is fixed, `revive` makes a dead task pending and due now with its
        runs counted from 0, noted and counted in `revived`; its next run is run 1 again."""
        broken = [True]

        def until_fixed(run: TaskRun) -> None:
            if broken[0]:
                raise RuntimeError("provider down")

        w = world(db, until_fixed, task_max_attempts=1)
        w.deliver(event({"key": "revive-me"}))
        assert w.task("revive-me")["status"] == "dead"
        broken[0] = False
        revived = w.outbox.revive("revive-me", note="revived by a test")
        assert (revived.outcome, revived.status_before) == ("revived", "dead")
        task = w.task("revive-me")
        assert (task["status"], task["attempts"], task["revived"]) == ("pending", 0, 1)
        assert task["last_note"] == "revived by a test"
        (run,) = w.outbox.run_due()
        assert (run.outcome, run.attempt) == ("done", 1)
        assert w.runs.attempts("revive-me") == [1, 1]

    def test_only_dead_tasks_are_revived(self, w: World) -> None:
        """A done task is `skipped`, an unknown key `missing`, a dry run writes nothing."""
        w.deliver(event({"key": "done-already"}))
        before = w.tasks()
        assert w.outbox.revive("done-already", note="x").outcome == "skipped"
        assert w.outbox.revive("no-such-key", note="x").outcome == "missing"
        assert w.tasks() == before


class TestListing:
    def test_tasks_are_listed_newest_first_with_filters(self, w: World) -> None:
        """`list_tasks` filters by status and task, newest first, without payloads, and says
        when there are more."""
        done = event({"key": "list-done"})
        w.deliver(done)
        w.clock.advance(1)
        w.deliver(event({"key": "list-pending", "payload": {"fail_runs": 1}}))
        page = w.outbox.list_tasks()
        assert [r["key"] for r in page.records] == ["list-pending", "list-done"]
        assert "payload" not in page.records[0]
        assert not page.more
        assert [r["key"] for r in w.outbox.list_tasks(status="pending").records] == ["list-pending"]
        assert w.outbox.list_tasks(task="other").records == []
        limited = w.outbox.list_tasks(limit=1)
        assert (len(limited.records), limited.more) == (1, True)
